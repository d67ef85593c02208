"""Folders of DICOM files read in place with pydicom.

The dataset's metadata table holds only the attributes the site allows: by default a short
list with nothing that identifies a patient (no names, ids, dates, addresses, UIDs,
institutions or free text). pydicom is asked for those attributes only (``specific_tags``),
so identifying ones are never parsed, let alone put in the table; ``--tags`` may choose
others, but never one of the identifying attributes listed below (after DICOM PS3.15's
Basic Application Level Confidentiality Profile). Pixel data reaches readers as numpy
arrays (the ``image`` column), decoded only for the rows asked for.

Only transfer syntaxes pydicom decodes by itself are read (uncompressed and RLE); a file
in another (JPEG, JPEG 2000...) is reported with the conversion to make.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from silolink import errors

from ..schema import Column
from .base import DEFAULT_BATCH_ROWS
from .images import IMAGE_COLUMN, FolderSource, _labels_columns, _size, labels_path

DEFAULT_TAGS = (
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsStored",
    "SliceThickness",
    "KVP",
    "Manufacturer",
    "ManufacturerModelName",
)
# Never read into the table, whatever --tags says: they identify patients, staff, places or
# the study (PS3.15 E.1-1, the attributes most often present).
IDENTIFYING_TAGS = frozenset(
    """PatientName PatientID OtherPatientIDs OtherPatientIDsSequence OtherPatientNames PatientBirthDate
    PatientBirthTime PatientBirthName PatientAddress PatientTelephoneNumbers PatientMotherBirthName
    PatientAge PatientSex PatientSize PatientWeight EthnicGroup Occupation MedicalRecordLocator
    PatientComments AdditionalPatientHistory PatientInsurancePlanCodeSequence MilitaryRank BranchOfService
    CountryOfResidence RegionOfResidence ResponsiblePerson ResponsibleOrganization IssuerOfPatientID
    ReferringPhysicianName ReferringPhysicianAddress ReferringPhysicianTelephoneNumbers PerformingPhysicianName
    NameOfPhysiciansReadingStudy OperatorsName PhysiciansOfRecord RequestingPhysician ScheduledPerformingPhysicianName
    InstitutionName InstitutionAddress InstitutionalDepartmentName StationName DeviceSerialNumber
    AccessionNumber StudyID StudyInstanceUID SeriesInstanceUID SOPInstanceUID FrameOfReferenceUID
    MediaStorageSOPInstanceUID RequestAttributesSequence RequestedProcedureID ScheduledProcedureStepID
    PerformedProcedureStepID StudyDate SeriesDate AcquisitionDate ContentDate StudyTime SeriesTime AcquisitionTime
    ContentTime AcquisitionDateTime InstanceCreationDate InstanceCreationTime StudyDescription SeriesDescription
    ImageComments ProtocolName DerivationDescription RequestedProcedureDescription
    PerformedProcedureStepDescription AdmittingDiagnosesDescription""".split()
)
READABLE_SYNTAXES = {
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
}
# What pydicom needs to decode pixel data: reading just these keeps the rest of the file
# (names, ids, dates) out of memory while decoding too.
PIXEL_TAGS = [
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "PixelData",
]
CONVERT = "convert it to Explicit VR Little Endian (for example: gdcmconv --raw IN OUT, or dcmdjpeg IN OUT)"


def looks_like_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then "DICM"."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def check_tags(name: str, tags: Sequence[str]) -> tuple[str, ...]:
    from pydicom.datadict import tag_for_keyword

    for tag in tags:
        if tag in IDENTIFYING_TAGS:
            raise errors.PermissionDenied(
                f"dataset {name!r}: --tags {tag} identifies a patient, staff member, place or study; it is never "
                "read into the catalog"
            )
        if tag_for_keyword(tag) is None:
            raise errors.InvalidArgument(f"dataset {name!r}: --tags {tag} is not a DICOM attribute keyword")
    return tuple(tags)


def _value(element) -> Any:
    """A DICOM element's value as a plain int, float or str (multi-values joined by '\\')."""
    from pydicom.multival import MultiValue

    if element is None or element.value is None or element.value == "":
        return None
    value = element.value
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, int | float):
        return value
    try:  # IS and DS values are int and float subclasses in pydicom; others are text
        return int(value) if element.VR == "IS" else float(value) if element.VR == "DS" else str(value)
    except (TypeError, ValueError):
        return str(value)


class DicomSource(FolderSource):
    kind = "dicom"
    suffixes = (".dcm",)

    def list_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file() and looks_like_dicom(p)
        )

    def metadata_columns(self) -> list[str]:
        return list(self.dataset.options.get("tags", ()))

    def _header(self, file: str, tags: Sequence[str], defer: bool = True):
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            # Only these attributes are parsed: identifying ones never enter memory.
            # Deferred: large values (pixel data) stay on disk until asked for.
            return pydicom.dcmread(self._path(file), specific_tags=list(tags), defer_size=1024 if defer else None)
        except FileNotFoundError:
            raise self.fail(
                f"{file} is missing from {self.folder}", "restore it or remove its line", errors.NotFound
            ) from None
        except (InvalidDicomError, OSError, ValueError, EOFError) as e:
            raise self.fail(
                f"{file} is not a readable DICOM file ({e})", "replace or remove it", errors.InvalidArgument
            ) from None

    def read_metadata(self, files: list[str], columns: list[str]) -> dict[str, list]:
        out: dict[str, list] = {c: [] for c in columns}
        for file in files:
            header = self._header(file, columns)
            for column in columns:
                out[column].append(_value(header.data_element(column) if column in header else None))
        return out

    def check_pixels(self, file: str, header=None) -> tuple[tuple[int, ...], str]:
        """The image shape and transfer syntax of a file, without decoding its pixels; errors
        for a file without pixel data or in a syntax this site cannot decode."""
        header = header if header is not None else self._header(file, PIXEL_TAGS)
        if "PixelData" not in header:
            raise self.fail(
                f"{file} has no pixel data (a report or structured document?)",
                "remove it from the folder or from the labels file",
                errors.InvalidArgument,
            )
        syntax = str(getattr(header.file_meta, "TransferSyntaxUID", "") or "")
        if syntax not in READABLE_SYNTAXES:
            from pydicom.uid import UID

            label = UID(syntax).name if syntax else "none"
            raise self.fail(
                f"{file} uses transfer syntax {label} ({syntax or 'missing'}), which this site cannot decode", CONVERT,
                errors.InvalidArgument,
            )  # fmt: skip
        shape: tuple[int, ...] = (int(header.Rows), int(header.Columns))
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            shape = (int(header.NumberOfFrames), *shape)
        if int(header.get("SamplesPerPixel", 1) or 1) > 1:
            shape = (*shape, int(header.SamplesPerPixel))
        return shape, syntax

    def decode(self, file: str) -> np.ndarray:
        from pydicom.pixels import pixel_array

        try:
            # pydicom reads just the pixel module and the pixel data, nothing else of the file.
            return pixel_array(self._path(file))
        except FileNotFoundError:
            raise self.fail(
                f"{file} is missing from {self.folder}", "restore it or remove its line", errors.NotFound
            ) from None
        except Exception as e:  # noqa: BLE001 - pydicom raises many types; say which problem it is
            self.check_pixels(file)  # no pixel data, or a syntax this site cannot decode
            raise self.fail(f"{file}: its pixel data cannot be decoded ({type(e).__name__})", CONVERT) from None


def probe(
    name: str, location: str, labels_file: str | None, tags: Sequence[str] | None
) -> tuple[tuple[Column, ...], int, dict[str, Any]]:
    """Columns, rows and options of a DICOM folder, after checking every file's header."""
    from ..store import Dataset
    from .sql import _value_type

    folder = Path(location)
    chosen = check_tags(name, tags if tags is not None else DEFAULT_TAGS)
    labels = labels_path(folder, labels_file)
    base = _labels_columns(name, labels) if labels else (Column("file", "TEXT"),)
    clash = [t for t in chosen if t in [c.name for c in base]]
    if clash:
        raise errors.InvalidArgument(f"dataset {name!r}: the labels file has column(s) {', '.join(clash)}, also tags")
    options: dict[str, Any] = {"labels": str(labels) if labels else "", "tags": list(chosen), "shape": [0], "dtype": ""}
    columns = (*base, *(Column(t, "TEXT") for t in chosen), Column(IMAGE_COLUMN, "IMAGE"))
    draft = DicomSource(Dataset(name, columns, None, "file", 0, "", 0.0, "dicom", str(folder), options), Path())
    values: dict[str, list] = {t: [] for t in chosen}
    first: tuple[str, tuple[int, ...]] | None = None
    rows = 0
    for batch in draft._base_rows(DEFAULT_BATCH_ROWS):
        for file in batch["file"]:
            shape, _ = draft.check_pixels(file)
            if first is None:
                first = (file, shape)
            elif shape != first[1]:
                raise draft.fail(
                    f"{file} is {_size(shape)}, {first[0]} is {_size(first[1])}",
                    "give every image the same size, or remove the odd ones (and their lines)",
                    errors.InvalidArgument,
                )
            rows += 1
        for tag, found in draft.read_metadata(batch["file"], list(chosen)).items():
            values[tag] += found
    if first is None:
        raise errors.InvalidArgument(f"dataset {name!r}: {folder} holds no DICOM files")
    sample = draft.decode(first[0])
    options.update(shape=list(sample.shape), dtype=str(sample.dtype))
    typed = tuple(Column(t, _value_type(values[t])) for t in chosen)
    return (*base, *typed, Column(IMAGE_COLUMN, "IMAGE")), rows, options
