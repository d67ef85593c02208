"""Batch scoring of a catalog table: every row through a model, predictions to a new table.

Runs in the calling process (the CLI), reading the catalog through its own snapshot and
writing the predictions in one transaction, so the output table appears whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from silolink import errors
from silolink.onnx_models import load_session

from ..catalog.schema import Column
from ..catalog.store import Catalog, Dataset
from ..models.store import ModelRecord, ModelStore

MAX_OUTPUT_COLUMNS = 64


@dataclass(frozen=True)
class ScoringResult:
    dataset: str
    output: str
    model: str
    version: str
    rows: int
    columns: list[str]


def _image_column(dataset: Dataset, record: ModelRecord, features: list[str] | None) -> str | None:
    """The image column to feed, flattened, for an image/DICOM dataset scored by a model
    taking [rows, pixels]; None for tables."""
    images = [c.name for c in dataset.columns if c.type == "IMAGE"]
    if not images or (features and features != images[:1]):
        return None
    inputs = record.signature.inputs
    pixels = int(np.prod(dataset.options.get("shape", [0])))
    if len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].shape[1] not in (-1, pixels):
        shapes = "; ".join(s.describe() for s in inputs)
        raise errors.InvalidArgument(
            f"scoring the images of {dataset.name!r} needs a model with one input of shape [rows, {pixels}] "
            f"(the pixels of each image, flattened); {record.ref} has {shapes}"
        )
    return images[0]


def _feature_columns(dataset: Dataset, record: ModelRecord, features: list[str] | None) -> list[str]:
    image = _image_column(dataset, record, features)
    if image:
        return [image]
    inputs = record.signature.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        shapes = "; ".join(s.describe() for s in inputs)
        raise errors.InvalidArgument(
            f"scoring a table needs a model with one input of shape [rows, features]; {record.ref} has {shapes}"
        )
    spec = inputs[0]
    if spec.dtype not in ("float32", "float64", "int32", "int64"):
        raise errors.InvalidArgument(f"{record.ref} takes {spec.dtype}; table scoring feeds numbers")
    chosen = features or dataset.features
    for name in chosen:
        column = dataset.column(name)
        if not column.numeric:
            raise errors.InvalidArgument(
                f"column {name!r} of {dataset.name!r} holds text; models take numeric features "
                "(choose columns with --features)"
            )
    width = spec.shape[1]
    if width >= 0 and width != len(chosen):
        raise errors.InvalidArgument(
            f"model {record.ref} takes {width} features; {len(chosen)} columns of {dataset.name!r} were chosen "
            f"({', '.join(chosen)}); choose {width} with --features"
        )
    return chosen


def _output_columns(record: ModelRecord) -> list[tuple[int, Column, int | None]]:
    """(output index, column, index within a 2-D output or None) for each prediction column."""
    out = []
    for i, spec in enumerate(record.signature.outputs):
        sql_type = "REAL" if spec.dtype.startswith("float") else "INTEGER"
        if len(spec.shape) == 1:
            out.append((i, Column(spec.name, sql_type), None))
        elif len(spec.shape) == 2 and 0 < spec.shape[1] <= MAX_OUTPUT_COLUMNS:
            out += [(i, Column(f"{spec.name}_{j}", sql_type), j) for j in range(spec.shape[1])]
    if not out:
        raise errors.InvalidArgument(
            f"model {record.ref} has no output of shape [rows] or [rows, k<= {MAX_OUTPUT_COLUMNS}] to store"
        )
    return out


def score_table(
    catalog: Catalog,
    models: ModelStore,
    dataset_name: str,
    model: str,
    version: str | None,
    output: str,
    features: list[str] | None = None,
    batch_rows: int = 4096,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ScoringResult:
    dataset = catalog.describe(dataset_name)
    record = models.get(model, version)
    chosen = _feature_columns(dataset, record, features)
    outputs = _output_columns(record)
    session = load_session(models.blob_path(record.sha256))
    input_name = record.signature.inputs[0].name
    dtype = np.dtype(record.signature.inputs[0].dtype)
    output_names = [s.name for s in record.signature.outputs]
    key = dataset.id_column or "rowid"
    key_column = dataset.column(key) if dataset.id_column else Column("row", "INTEGER")
    columns = [key_column, *(c for _, c, _ in outputs), Column("model_version", "TEXT")]
    tag = record.ref

    source = catalog.source(dataset_name)

    def batches() -> Iterator[list[tuple]]:
        for batch in source.scan([key, *chosen], batch_rows=batch_rows):
            keys = batch[key].tolist()
            # Through the catalog's reading interface: numbers arrive as arrays, empty as NaN;
            # an image column arrives as (rows, *shape) and is fed flattened.
            if len(chosen) == 1 and batch[chosen[0]].ndim > 1:
                values = batch[chosen[0]].reshape(len(keys), -1).astype(np.float64)
            else:
                values = np.column_stack([batch[c].astype(np.float64, copy=False) for c in chosen])
            if dtype.kind in "iu" and np.isnan(values).any():
                raise errors.InvalidArgument(
                    f"{dataset_name!r} has empty values in the features and {record.ref} takes integers"
                )
            results = session.run(output_names, {input_name: values.astype(dtype, copy=False)})
            cells = []
            for index, _column, j in outputs:
                data = results[index] if j is None else results[index][:, j]
                cells.append(data.tolist())
            yield [(k, *row, tag) for k, row in zip(keys, zip(*cells, strict=True), strict=True)]

    created = catalog.create_table(
        output,
        columns,
        batches(),
        source=f"predictions:{dataset_name}:{record.ref}",
        id_column=key_column.name if dataset.id_column else None,
        replace=replace,
        progress=progress,
    )
    return ScoringResult(
        dataset_name, output, record.name, record.version, created.row_count, [c.name for c in columns]
    )
