"""Site data for Flower ClientApps: the job's dataset as numpy arrays.

At a silolink site a ClientApp's ``context.node_config`` holds ``dataset``, the name of the
dataset the job trains on (which the site allowed), and nothing about where the site keeps
it: the rows come from the agent, which reads them and applies the site's policy. This is
the public helper that turns them into arrays::

    from edge_agent.apps.data import load_arrays, at_silolink_site

    @app.train()
    def train(msg, context):
        X, y = load_arrays(context)          # features (float64, NULL -> nan) and label

``load_dataset`` gives the same with column names and catalog row ids (for stable splits).
An app that should also run on Flower's own engine checks ``at_silolink_site(context)``
first and loads its data there the way it always did.

Errors are ``DatasetError`` (a ValueError) and name columns only, never values: the site
passes their message on to the coordinator, unlike other exceptions of an app.
The helper is thin over the catalog's reading API (``edge_agent.catalog.reading``), so it
reads every kind of dataset the site registered (catalog tables, Parquet, ...) and gets no
column the site marked sensitive unless it allows that column for this app. Outside an
agent (Flower's own engine at a site) ``node_config`` may name the ``catalog`` file instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DatasetError", "SiteDataset", "at_silolink_site", "load_arrays", "load_dataset"]


class DatasetError(ValueError):
    """A problem with the site's data that is safe to report to the coordinator (names only)."""


@dataclass(frozen=True)
class SiteDataset:
    """A dataset's rows that have a label: features, label and catalog row ids."""

    name: str
    features: tuple[str, ...]
    label: str
    X: np.ndarray  # (rows, features) float64; NULL becomes nan
    y: np.ndarray  # (rows,) int64 for an INTEGER label, float64 for REAL
    row_ids: np.ndarray  # (rows,) the catalog's rowid of each row, stable across reads


def at_silolink_site(context: Any) -> bool:
    """Whether the ClientApp runs at a silolink site: in an agent's worker, or given a
    catalog and dataset in node_config."""
    from edge_agent.catalog.reading import agent_connected

    config = getattr(context, "node_config", {}) or {}
    return bool(config.get("dataset")) and (agent_connected() or bool(config.get("catalog")))


def load_arrays(context: Any, features=None, label: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of the job's dataset at this site; see ``load_dataset``."""
    data = load_dataset(context, features=features, label=label)
    return data.X, data.y


def load_dataset(context: Any, features=None, label: str | None = None) -> SiteDataset:
    """The job's dataset at this site, rows with a label only.

    ``label`` defaults to the column the dataset was imported with (``--label``);
    ``features`` to every numeric column but the label and the id column. Columns the site
    marked sensitive are left out unless the site allows them for this app.
    """
    from edge_agent.catalog.reading import open_dataset

    if not at_silolink_site(context):
        raise DatasetError("node_config names no silolink catalog and dataset; is this app running at a silolink site?")
    reader = open_dataset(context.node_config)
    name = reader.dataset.name
    label = label or reader.label or ""
    if not label:
        raise DatasetError(f"dataset {name!r} has no label column; import it with --label")
    if label not in {c.name for c in reader.columns}:
        raise DatasetError(f"dataset {name!r} has no label column {label!r}")
    if reader.dataset.column(label).type not in ("INTEGER", "REAL"):
        raise DatasetError(f"label column {label!r} of {name!r} holds text; use a numeric label")
    chosen = list(features or reader.features)
    X, y = reader.arrays(chosen, label)
    row_ids = [batch["rowid"] for batch in reader.scan(["rowid"], present=[label])]
    ids = np.concatenate(row_ids).astype(np.int64) if row_ids else np.zeros(0, dtype=np.int64)
    return SiteDataset(name, tuple(chosen), label, X, y, ids)
