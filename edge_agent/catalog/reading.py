"""The catalog's reading API for code that runs at the site on the site's data: Flower
ClientApps (through the public training data helper) and anything else given a dataset.

    reader = open_dataset(context.node_config)
    X, y = reader.arrays()                        # features and label as numpy arrays
    for batch in reader.batches(["age", "bmi"]):   # or stream, in bounded memory
        ...

It reads through each dataset's ``Source`` (catalog table, Parquet, SQL database, images,
DICOM), so an app never learns where or how the data is kept. Columns the site marked
sensitive are hidden unless the site allows them for this app (``[catalog]
sensitive_for_apps`` in agent.toml).

Two readers, one interface:
- ``DatasetReader`` opens the catalog and the source itself and enforces the policy. The
  agent uses it; so does code the site runs outside an agent (Flower's own engine given a
  ``catalog`` path in ``node_config``, benchmarks).
- ``AgentReader`` is what an app gets inside the agent's ClientApp worker: its
  ``node_config`` names only the dataset, and rows come over the worker's pipe from a
  ``DatasetReader`` in the agent (``edge_agent.training.data_service``). The worker is never
  handed the catalog's path, the source's location or any credential, so the helper is the
  only way to the rows it is given. (Approved code still runs as the agent's OS user: keeping
  it from the agent's files is the deployment's choice; see docs/security.md.)
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from silolink import errors

from .schema import Column
from .sources import DEFAULT_BATCH_ROWS, Batch, open_source
from .store import Catalog, Dataset

# node_config keys. Inside an agent's worker: DATASET_KEY and SITE_KEY only. Outside an
# agent (Flower's own engine at a site): CATALOG_KEY, DATASET_KEY and SENSITIVE_KEY.
CATALOG_KEY = "catalog"
DATASET_KEY = "dataset"
SENSITIVE_KEY = "sensitive-allowed"
SITE_KEY = "silolink-site"
# Asks the agent's data service for the job's dataset: set in a worker by ``connect_agent``.
_agent_request: Callable[[dict[str, Any]], Any] | None = None


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


def node_config_for(dataset: str) -> dict[str, str]:
    """The ``node_config`` an agent gives an app in its worker: the dataset's name, no path."""
    return {DATASET_KEY: dataset, SITE_KEY: "agent"}


def connect_agent(request: Callable[[dict[str, Any]], Any] | None) -> None:
    """In a ClientApp worker: ``request(op)`` asks the agent for data (None disconnects)."""
    global _agent_request
    _agent_request = request


def agent_connected() -> bool:
    return _agent_request is not None


class _Reader(abc.ABC):
    """What both readers share: the columns an app may see and the arrays built from them."""

    dataset: Dataset
    _hidden: set[str]

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

    @abc.abstractmethod
    def scan(
        self, columns: Sequence[str], present: Sequence[str] = (), batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[Batch]:
        """Rows in order as arrays by column (``rowid`` too), rows with a value in every
        column of ``present`` only."""

    def batches(self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Batch]:
        """The dataset's rows in order, ``batch_rows`` at a time, as arrays by column."""
        return self.scan(columns, batch_rows=batch_rows)

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
        xs, ys = [], []
        for batch in self.scan(wanted, present=[label] if label else (), batch_rows=batch_rows):
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


class DatasetReader(_Reader):
    """One dataset as an app may see it, read here and checked here: the policy's enforcer."""

    def __init__(self, catalog_path: Path, name: str, sensitive_allowed: Sequence[str] = ()) -> None:
        catalog = Catalog.open(Path(catalog_path))
        try:
            dataset = catalog.describe(name)
        finally:
            catalog.db.conn.close()
        self.dataset: Dataset = dataset
        self.source = open_source(dataset, Path(catalog_path))
        self._hidden = set(dataset.sensitive) - set(sensitive_allowed)

    def check(self, columns: Sequence[str]) -> None:
        """PermissionDenied for a column hidden from this app; InvalidArgument for no such column."""
        for name in columns:
            if name in self._hidden:
                raise errors.PermissionDenied(
                    f"column {name!r} of dataset {self.dataset.name!r} is marked sensitive at this site and not "
                    "allowed for this app ([catalog] sensitive_for_apps in agent.toml)"
                )
            if name != "rowid":
                self.dataset.column(name)

    def scan(
        self, columns: Sequence[str], present: Sequence[str] = (), batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[Batch]:
        self.check([*columns, *present])
        return self.source.scan(columns, present=present, batch_rows=batch_rows)

    def visible(self) -> dict[str, Any]:
        """The dataset as the app may know it: its allowed columns, label and id column and
        its size; never where it lives, how it is read, or the names of hidden columns."""
        shown = {c.name for c in self.columns}
        return {
            "name": self.dataset.name,
            "kind": self.dataset.kind,
            "columns": [[c.name, c.type] for c in self.columns],
            "label": self.dataset.label if self.dataset.label in shown else None,
            "id_column": self.dataset.id_column if self.dataset.id_column in shown else None,
            "row_count": self.dataset.row_count,
            "created_at": self.dataset.created_at,
        }


class AgentReader(_Reader):
    """The job's dataset inside a ClientApp worker: every read is a request to the agent,
    which checks it against the site's policy and sends back only what this app may see."""

    def __init__(self, request: Callable[[dict[str, Any]], Any]) -> None:
        self._request = request
        seen = request({"op": "describe"})
        columns = tuple(Column(name, kind) for name, kind in seen["columns"])
        self.dataset = Dataset(
            seen["name"], columns, seen["label"], seen["id_column"], seen["row_count"], "", seen["created_at"],
            kind=seen["kind"],
        )  # fmt: skip
        self._hidden = set()  # the agent sent the allowed columns only

    def scan(
        self, columns: Sequence[str], present: Sequence[str] = (), batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[Batch]:
        request = {"op": "scan", "columns": list(columns), "present": list(present), "batch_rows": int(batch_rows)}
        cursor = self._request(request)  # checked by the agent now, before the first batch is asked for
        return self._batches(cursor)

    def _batches(self, cursor: int) -> Iterator[Batch]:
        done = False
        try:
            while (batch := self._request({"op": "next", "cursor": cursor})) is not None:
                yield batch
            done = True
        finally:
            if not done:  # left early: the agent closes the scan now rather than at the message's end
                try:
                    self._request({"op": "close", "cursor": cursor})
                except errors.SiloError:
                    pass


def open_dataset(node_config: Mapping[str, Any]) -> _Reader:
    """The dataset a site's host gave an app, from the app's ``Context.node_config``."""
    request = _agent_request
    if request is not None:  # in the agent's ClientApp worker: the agent reads, checks and sends
        return AgentReader(request)
    try:
        path, name = node_config[CATALOG_KEY], node_config[DATASET_KEY]
    except KeyError as e:
        raise errors.FailedPrecondition(f"node_config has no {e} entry: run the app through the site's agent") from None
    allowed = [c for c in str(node_config.get(SENSITIVE_KEY, "") or "").split(",") if c]
    return DatasetReader(Path(str(path)), str(name), allowed)
