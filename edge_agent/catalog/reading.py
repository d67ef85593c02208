"""The catalog's reading API for code that runs at the site on the site's data: Flower
ClientApps (through the public training data helper) and anything else given a dataset.

    reader = open_dataset(context.node_config)
    X, y = reader.arrays()                        # features and label as numpy arrays
    for batch in reader.batches(["age", "bmi"]):   # or stream, in bounded memory
        ...

It reads through each dataset's ``Source`` (catalog table, Parquet, SQL database, images,
DICOM), so an app never learns where or how the data is kept. Columns the site marked
sensitive are hidden unless the site allows them for this app (``[catalog]
sensitive_for_apps`` in agent.toml); the host passes the allowed ones in ``node_config``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from silolink import errors

from .schema import Column
from .sources import DEFAULT_BATCH_ROWS, Batch, open_source
from .store import Catalog, Dataset

# node_config keys the site's host sets for an app.
CATALOG_KEY = "catalog"
DATASET_KEY = "dataset"
SENSITIVE_KEY = "sensitive-allowed"


def allowed_sensitive(entries: Sequence[str], app: str, dataset: str) -> list[str]:
    """Sensitive columns of ``dataset`` the site allows ``app`` to read, from entries of the
    form ``APP=DATASET.COLUMN`` (``[catalog] sensitive_for_apps``)."""
    allowed = []
    for entry in entries:
        who, _, what = entry.partition("=")
        table, _, column = what.strip().partition(".")
        if who.strip() == app and table == dataset and column:
            allowed.append(column)
    return allowed


def node_config_for(catalog_path: Path, dataset: str, sensitive_allowed: Sequence[str] = ()) -> dict[str, str]:
    """The ``node_config`` entries a host gives an app so it can open its dataset."""
    return {CATALOG_KEY: str(catalog_path), DATASET_KEY: dataset, SENSITIVE_KEY: ",".join(sensitive_allowed)}


class DatasetReader:
    """One dataset as an app may see it."""

    def __init__(self, catalog_path: Path, name: str, sensitive_allowed: Sequence[str] = ()) -> None:
        catalog = Catalog.open(Path(catalog_path))
        try:
            dataset = catalog.describe(name)
        finally:
            catalog.db.conn.close()
        self.dataset: Dataset = dataset
        self.source = open_source(dataset, Path(catalog_path))
        self._hidden = set(dataset.sensitive) - set(sensitive_allowed)

    @property
    def columns(self) -> list[Column]:
        """The columns this app may read."""
        return [c for c in self.dataset.columns if c.name not in self._hidden]

    @property
    def label(self) -> str | None:
        return self.dataset.label if self.dataset.label not in self._hidden else None

    @property
    def features(self) -> list[str]:
        """The default features: an image dataset's image, else every numeric column but
        the label and id (sensitive ones only where the site allows this app)."""
        images = [c.name for c in self.columns if c.type == "IMAGE"]
        if images:
            return images[:1]
        skip = (self.dataset.label, self.dataset.id_column)
        return [c.name for c in self.columns if c.numeric and c.name not in skip]

    def _check(self, columns: Sequence[str]) -> None:
        for name in columns:
            if name in self._hidden:
                raise errors.PermissionDenied(
                    f"column {name!r} of dataset {self.dataset.name!r} is marked sensitive at this site and not "
                    "allowed for this app ([catalog] sensitive_for_apps in agent.toml)"
                )
            if name != "rowid":
                self.dataset.column(name)

    def batches(self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Batch]:
        """The dataset's rows in order, ``batch_rows`` at a time, as arrays by column."""
        self._check(columns)
        return self.source.scan(columns, batch_rows=batch_rows)

    def arrays(
        self, features: Sequence[str] | None = None, label: str | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(X, y) in row order: X float64 of shape (rows, features), or for one image column
        the images themselves (rows, *image shape); y the label as int64 when it holds
        whole numbers (float64 otherwise), None when the dataset has no label. Rows without
        a label are left out. Loads the whole dataset: use ``batches`` for more than fits."""
        features = list(features or self.features)
        label = label or self.label
        if not features:
            raise errors.FailedPrecondition(f"dataset {self.dataset.name!r} has no numeric columns to use as features")
        kinds = {c.name: c.type for c in self.dataset.columns}
        image = len(features) == 1 and kinds.get(features[0]) == "IMAGE"
        text = [f for f in features if kinds.get(f) == "TEXT"]
        if text:
            raise errors.InvalidArgument(f"feature column(s) {', '.join(text)} of {self.dataset.name!r} hold text")
        wanted = [*features, *([label] if label else [])]
        self._check(wanted)
        xs, ys = [], []
        for batch in self.source.scan(wanted, present=[label] if label else (), batch_rows=batch_rows):
            if image:
                xs.append(batch[features[0]])
            else:
                xs.append(np.column_stack([batch[f].astype(np.float64, copy=False) for f in features]))
            if label:
                ys.append(batch[label])
        if not xs:
            width = () if image else (len(features),)
            return np.zeros((0, *width)), (np.zeros(0, dtype=np.int64) if label else None)
        X = np.concatenate(xs)
        if not label:
            return X, None
        y = np.concatenate(ys)
        if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        return X, y


def open_dataset(node_config: Mapping[str, Any]) -> DatasetReader:
    """The dataset a site's host gave an app, from the app's ``Context.node_config``."""
    try:
        path, name = node_config[CATALOG_KEY], node_config[DATASET_KEY]
    except KeyError as e:
        raise errors.FailedPrecondition(f"node_config has no {e} entry: run the app through the site's agent") from None
    allowed = [c for c in str(node_config.get(SENSITIVE_KEY, "") or "").split(",") if c]
    return DatasetReader(Path(str(path)), str(name), allowed)
