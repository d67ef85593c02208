"""Datasets read where they live: one reading interface (``Source``) for every kind.

``add_source`` registers a dataset without copying it: the kind comes from the source (a
Parquet/Arrow file or folder, a SQLAlchemy URL, a folder of images or of DICOM files). It
reads everything it needs first (schema, row count, every image's size) and records the
dataset in one transaction only when all of it checks out, so nothing is half-registered.

``open_source(dataset, catalog_path)`` gives the ``Source`` that analytics, ``infer table``,
the share policy and the training data helper read through.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from silolink import errors

from ..store import Catalog, Dataset
from .base import DEFAULT_BATCH_ROWS, Batch, Source

__all__ = ["DEFAULT_BATCH_ROWS", "Batch", "Source", "add_source", "detect_kind", "open_source"]

KINDS = ("table", "parquet", "sql", "images", "dicom")


def _source_class(kind: str) -> type[Source]:
    # Each kind's module imports its heavy library only when a dataset of that kind is read.
    if kind == "table":
        from .table import TableSource

        return TableSource
    if kind == "parquet":
        from .parquet import ParquetSource

        return ParquetSource
    if kind == "sql":
        from .sql import SqlSource

        return SqlSource
    if kind == "images":
        from .images import ImageSource

        return ImageSource
    if kind == "dicom":
        from .dicom import DicomSource

        return DicomSource
    raise errors.FailedPrecondition(f"the catalog records a dataset of kind {kind!r}, which this agent cannot read")


def open_source(dataset: Dataset, catalog_path: Path) -> Source:
    return _source_class(dataset.kind)(dataset, catalog_path)


def detect_kind(source: str, name: str = "") -> str:
    """The kind of a ``--source``: a URL is a database; a path is told by its files."""
    if "://" in source:
        return "sql"
    path = Path(source)
    if not path.exists():
        raise errors.NotFound(
            f"dataset {name!r}: --source {source}: no such file or folder; give the path of the data to register"
        )
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".csv":
        raise errors.InvalidArgument(
            f"{path.name} is a CSV file: CSV files are copied into the catalog with "
            f"edge-agent data import {source} --name NAME"
        )
    from .parquet import file_format

    if file_format(path):
        return "parquet"
    if path.is_dir():
        from .dicom import looks_like_dicom
        from .images import IMAGE_SUFFIXES

        files = [p for p in sorted(path.rglob("*")) if p.is_file()][:1000]
        if any(looks_like_dicom(p) for p in files):
            return "dicom"
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
            return "images"
    raise errors.InvalidArgument(
        f"--source {source}: not a kind this agent reads in place; give a .parquet/.arrow file or folder, a folder "
        "of PNG/JPEG images or DICOM files, or a database URL (postgresql://USER@HOST/DB); CSV files go through "
        "edge-agent data import"
    )


def add_source(
    catalog: Catalog,
    name: str,
    source: str,
    table: str | None = None,
    query: str | None = None,
    label: str | None = None,
    id_column: str | None = None,
    labels_file: str | None = None,
    tags: Sequence[str] | None = None,
    sensitive: Sequence[str] = (),
    replace: bool = False,
) -> Dataset:
    """Register ``source`` as dataset ``name``, reading it in place; all checks first."""
    from ..store import check_dataset_name

    check_dataset_name(name)
    if not replace:
        catalog._refuse_existing(name)
    kind = detect_kind(source, name)
    if kind != "sql" and (table or query):
        raise errors.InvalidArgument("--table and --query apply to database URLs only")
    if kind not in ("images", "dicom") and labels_file:
        raise errors.InvalidArgument("--labels applies to folders of images or DICOM files only")
    if kind != "dicom" and tags:
        raise errors.InvalidArgument("--tags applies to folders of DICOM files only")
    if kind == "parquet":
        from .parquet import probe

        location = str(Path(source).resolve())
        columns, count, options = probe(name, location)
        display = f"parquet:{location}"
    elif kind == "sql":
        from .sql import probe

        location, columns, count, options, display = probe(name, source, table, query, catalog_path=catalog._path())
    elif kind == "images":
        from .images import probe

        location = str(Path(source).resolve())
        columns, count, options = probe(name, location, labels_file)
        display = f"images:{location}"
    else:
        from .dicom import probe

        location = str(Path(source).resolve())
        columns, count, options = probe(name, location, labels_file, tags)
        display = f"dicom:{location}"
    if label is None and kind in ("images", "dicom") and "label" in [c.name for c in columns]:
        label = "label"
    if id_column is None and kind in ("images", "dicom"):
        id_column = "file"
    return catalog.register(
        name, kind, location, options, columns, count, display, label, id_column, sensitive, replace=replace
    )
