"""Folders of PNG/JPEG images and of DICOM files, registered in place: pixels to readers as
numpy arrays, only allowed DICOM attributes in the metadata table, and a clear error for
each kind of bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("PIL", reason="Pillow is in the [sources] extra (pip install -e '.[dev]')")
pytest.importorskip("pydicom", reason="pydicom is in the [sources] extra (pip install -e '.[dev]')")

from edge_agent.analytics.compute import compute  # noqa: E402
from edge_agent.catalog.reading import DatasetReader  # noqa: E402
from edge_agent.catalog.sources import add_source  # noqa: E402
from edge_agent.catalog.store import Catalog  # noqa: E402
from silolink import errors  # noqa: E402
from silolink.analytics.query import build_query, decode_totals, to_ring  # noqa: E402
from silolink_demo.imaging_data import dicom_folder, digits, png_folder, write_dicom  # noqa: E402

N = 60


@pytest.fixture
def catalog(tmp_path):
    return Catalog.open(tmp_path / "catalog.db")


@pytest.fixture(scope="module")
def scans():
    return digits(N)


def test_png_folder_with_labels_reads_the_pixels(catalog, tmp_path, scans):
    images, labels = scans
    folder = png_folder(tmp_path / "pngs", images, labels)
    dataset = add_source(catalog, "digits", str(folder))
    assert dataset.kind == "images" and dataset.row_count == N and dataset.label == "label"
    assert [(c.name, c.type) for c in dataset.columns] == [("file", "TEXT"), ("label", "INTEGER"), ("image", "IMAGE")]
    X, y = DatasetReader(catalog._path(), "digits").arrays()
    assert X.shape == (N, 8, 8) and X.dtype == np.uint8
    np.testing.assert_array_equal(X, images)
    np.testing.assert_array_equal(y, labels)
    source = catalog.source("digits")
    query = build_query("digits", "count", where="label = 3")
    assert decode_totals(query, to_ring(compute(source, query, True).values))["count"] == int((labels == 3).sum())
    batches = list(source.scan(["file", "image"], batch_rows=16))
    assert [len(b["file"]) for b in batches] == [16, 16, 16, 12] and batches[0]["image"].shape == (16, 8, 8)


def test_images_without_a_labels_file_and_jpeg(catalog, tmp_path, scans):
    from PIL import Image

    folder = tmp_path / "inspection"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.stack([scans[0][i]] * 3, axis=-1), mode="RGB").save(folder / f"part-{i}.jpg", quality=95)
    dataset = add_source(catalog, "parts", str(folder))
    assert dataset.label is None and dataset.options["shape"] == [8, 8, 3]
    X, y = DatasetReader(catalog._path(), "parts").arrays()
    assert X.shape == (5, 8, 8, 3) and y is None


def test_dicom_folder_reads_allowed_tags_only_and_pixels(catalog, tmp_path, scans):
    images, labels = scans
    folder = dicom_folder(tmp_path / "pacs", images, labels)
    dataset = add_source(catalog, "scans", str(folder))
    assert dataset.kind == "dicom" and dataset.row_count == N and dataset.label == "label"
    names = [c.name for c in dataset.columns]
    assert {"Modality", "BodyPartExamined", "Rows", "image"} <= set(names)
    assert not {"PatientName", "PatientID", "PatientBirthDate", "InstitutionName"} & set(names)
    assert dict((c.name, c.type) for c in dataset.columns)["Rows"] == "INTEGER"
    source = catalog.source("scans")
    rows = [
        r
        for batch in source.scan(["file", "Modality", "Rows", "label"], batch_rows=25)
        for r in zip(*batch.values(), strict=True)
    ]
    assert rows[0] == ("scan-0000.dcm", "OT", 8, labels[0]) and len(rows) == N
    everything = json.dumps(dataset.to_dict()) + repr(rows)
    assert "Doe" not in everything and "MRN-" not in everything and "Example" not in everything
    X, y = DatasetReader(catalog._path(), "scans").arrays()
    np.testing.assert_array_equal(X, images)
    np.testing.assert_array_equal(y, labels)
    query = build_query("scans", "count", where="Modality = 'OT' and label >= 5")
    assert decode_totals(query, to_ring(compute(source, query, True).values))["count"] == int((labels >= 5).sum())
    with pytest.raises(errors.PermissionDenied, match="PatientName identifies a patient"):
        add_source(catalog, "named", str(folder), tags=["Modality", "PatientName"])
    chosen = add_source(catalog, "few", str(folder), tags=["Modality"])
    assert [c.name for c in chosen.columns] == ["file", "label", "Modality", "image"]


def test_bad_dicom_files_are_named_and_nothing_is_registered(catalog, tmp_path, scans):
    images, labels = scans
    no_pixels = dicom_folder(tmp_path / "a", images[:3], labels[:3])
    write_dicom(no_pixels / "scan-0001.dcm", images[1], with_pixels=False)
    with pytest.raises(errors.InvalidArgument, match=r"dataset 'a': scan-0001.dcm has no pixel data.*remove it"):
        add_source(catalog, "a", str(no_pixels))
    jpeg = dicom_folder(tmp_path / "b", images[:3], labels[:3])
    write_dicom(jpeg / "scan-0002.dcm", images[2], transfer_syntax="1.2.840.10008.1.2.4.50")
    with pytest.raises(
        errors.InvalidArgument, match=r"dataset 'b': scan-0002.dcm uses transfer syntax JPEG Baseline.*gdcmconv"
    ):
        add_source(catalog, "b", str(jpeg))
    odd = dicom_folder(tmp_path / "c", images[:3], labels[:3])
    write_dicom(odd / "scan-0002.dcm", np.zeros((16, 16), np.uint8))
    with pytest.raises(errors.InvalidArgument, match=r"dataset 'c': scan-0002.dcm is 16x16, scan-0000.dcm is 8x8"):
        add_source(catalog, "c", str(odd))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(errors.InvalidArgument, match=r"dataset 'd': junk.dcm is not a readable DICOM file"):
        add_source(catalog, "d", str(tmp_path / "d"))
    assert catalog.list() == []


def test_bad_images_are_named_and_a_changed_folder_fails_clearly(catalog, tmp_path, scans):
    from PIL import Image

    images, labels = scans
    folder = png_folder(tmp_path / "pngs", images[:4], labels[:4])
    Image.fromarray(np.zeros((12, 10), np.uint8), mode="L").save(folder / "img-0003.png")
    with pytest.raises(
        errors.InvalidArgument, match=r"dataset 'x': img-0003.png is a 10x12 L image, img-0000.png is 8x8"
    ):
        add_source(catalog, "x", str(folder))
    (folder / "img-0003.png").unlink()
    with pytest.raises(errors.NotFound, match=r"dataset 'x': img-0003.png is missing"):
        add_source(catalog, "x", str(folder))
    (folder / "img-0003.png").write_text("not a png")
    with pytest.raises(errors.InvalidArgument, match=r"dataset 'x': img-0003.png is not a PNG or JPEG image"):
        add_source(catalog, "x", str(folder))
    (folder / "labels.csv").write_text("name,label\nimg-0000.png,1\n")
    with pytest.raises(errors.InvalidArgument, match="needs a column named file"):
        add_source(catalog, "x", str(folder))
    assert catalog.list() == []
    good = png_folder(tmp_path / "good", images[:4], labels[:4])
    add_source(catalog, "good", str(good))
    Image.fromarray(np.zeros((12, 10), np.uint8), mode="L").save(good / "img-0002.png")  # changed after registration
    with pytest.raises(errors.InvalidArgument, match=r"dataset 'good': img-0002.png is 10x12.*resize it to 8x8"):
        DatasetReader(catalog._path(), "good").arrays()
