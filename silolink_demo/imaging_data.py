"""Small imaging data sets made on the spot, for the demo and the tests: scikit-learn's
handwritten digits (real 8x8 scans shipped in the package) as stand-in medical images,
written as DICOM files with pydicom or as PNG files with Pillow, with a labels file."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits(count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images as uint8 0..255 of shape (count, 8, 8), their digit labels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images[offset : offset + count] * 255 / 16).round().astype(np.uint8)
    return images, data.target[offset : offset + count].astype(np.int64)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    with_pixels: bool = True,
    **attributes,
) -> Path:
    """One secondary-capture DICOM file of 8-bit greyscale ``pixels``, with made-up patient
    attributes (so tests can check they never reach the catalog) and ``attributes``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", f"MRN-{path.stem}", "19700101"
    ds.InstitutionName = "St Example's"
    ds.Modality, ds.BodyPartExamined = "OT", "HAND"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if with_pixels:
        raw = pixels.astype(np.uint8).tobytes()
        if meta.TransferSyntaxUID.is_compressed:  # as a file from another system would come (not really encoded)
            from pydicom.encaps import encapsulate

            raw = encapsulate([raw])
        ds.PixelData = raw
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A folder of DICOM files, one per image, and labels.csv (file,label)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file,label"]
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        write_dicom(folder / f"scan-{i:04d}.dcm", pixels)
        lines.append(f"scan-{i:04d}.dcm,{int(label)}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def png_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A folder of PNG files, one per image, and labels.csv (file,label)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file,label"]
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(pixels, mode="L").save(folder / f"img-{i:04d}.png")
        lines.append(f"img-{i:04d}.png,{int(label)}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder
