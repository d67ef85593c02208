"""The built-in ``tabular`` Flower app: softmax regression (or a small MLP, when the job's
global model has hidden layers) on a catalog table.

Messages:
- ``query.stats``: per-feature count, sum and sum of squares and the largest class label, so
  the coordinator can standardize features the same way everywhere (aggregates, no rows).
- ``train``: local SGD epochs from the global arrays; replies with arrays and metrics.
- ``evaluate``: loss and accuracy of the global arrays on the site's held-out rows.

Rows come from the site's catalog (``node_config["catalog"]``); every fifth row is held
out for evaluation. Errors in ``AppInputError`` name columns only, never values, so the
site can pass them on to the coordinator.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from silolink import softmax

from ..catalog.store import Catalog

app = ClientApp()
EVAL_EVERY = 5  # rows with rowid % 5 == 0 are held out


class AppInputError(ValueError):
    """A problem with the site's data that is safe to report to the coordinator (names only)."""


@dataclass(frozen=True)
class SiteData:
    features: list[str]
    X_train: np.ndarray
    y_train: np.ndarray
    X_eval: np.ndarray
    y_eval: np.ndarray


_cache: dict[tuple, SiteData] = {}
_cache_lock = threading.Lock()


def load(context: Context, config) -> SiteData:
    path = Path(str(context.node_config["catalog"]))
    catalog = Catalog.open(path)
    name = str(context.node_config["dataset"])
    dataset = catalog.describe(name)
    label = str(config.get("label", "") or dataset.label or "")
    if not label:
        raise AppInputError(f"dataset {name!r} has no label column; import it with --label")
    if label not in [c.name for c in dataset.columns]:
        raise AppInputError(f"dataset {name!r} has no label column {label!r}")
    wanted = list(config.get("features", []) or [])
    columns = {c.name: c for c in dataset.columns}
    missing = [f for f in wanted if f not in columns]
    if missing:
        raise AppInputError(f"dataset {name!r} lacks feature column(s) {', '.join(missing)}")
    features = wanted or [f for f in dataset.features if columns[f].numeric and f != label]
    text = [f for f in features if not columns[f].numeric]
    if text:
        raise AppInputError(f"feature column(s) {', '.join(text)} of {name!r} hold text; choose numeric features")
    key = (path, name, dataset.created_at, dataset.row_count, tuple(features), label)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    rows = [r for batch in catalog.read_batches(name, ["rowid", label, *features], 10_000) for r in batch]
    catalog.db.conn.close()
    labelled = [r for r in rows if r[1] is not None]
    if not labelled:
        raise AppInputError(f"dataset {name!r} has no rows with a label")
    rowid = np.array([r[0] for r in labelled])
    try:
        y = np.array([r[1] for r in labelled], dtype=np.int64)
    except (TypeError, ValueError):
        raise AppInputError(f"label column {label!r} must hold class numbers 0, 1, ...") from None
    if (y < 0).any():
        raise AppInputError(f"label column {label!r} must hold class numbers 0, 1, ...")
    X = np.array([r[2:] for r in labelled], dtype=np.float64)
    held_out = rowid % EVAL_EVERY == 0
    data = SiteData(features, X[~held_out], y[~held_out], X[held_out], y[held_out])
    with _cache_lock:
        _cache.clear()  # one dataset per job at a time is the common case; keep memory flat
        _cache[key] = data
    return data


def _config(message: Message):
    return message.content.config_records.get("config", {})


def _params(message: Message) -> softmax.Params:
    record = message.content.array_records["arrays"]
    return {name: array.numpy() for name, array in record.items()}


def feature_scaling(mean, std, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The job's federated feature means and deviations (identity if the job sent none)."""
    mean = np.asarray(mean if mean is not None else [0.0] * width, dtype=np.float64)
    std = np.asarray(std if std is not None else [1.0] * width, dtype=np.float64)
    if mean.shape != (width,) or std.shape != (width,):
        raise AppInputError(f"the job's feature scaling is for {mean.shape[0]} features; this site has {width}")
    return mean, np.where(std > 0, std, 1.0)


def standardized(data: SiteData, params: softmax.Params, X: np.ndarray, y: np.ndarray, scaling) -> np.ndarray:
    """``X`` scaled for the job's model; AppInputError if the model does not fit this site."""
    try:
        chain = softmax.layers(params)
    except ValueError as e:
        raise AppInputError(f"the job's model: {e}") from None
    width, classes = chain[0][0].shape[0], chain[-1][0].shape[1]
    if width != len(data.features):
        raise AppInputError(f"the global model takes {width} features; this site has {len(data.features)}")
    if len(y) and y.max() >= classes:
        raise AppInputError(f"the site has class labels beyond the job's {classes} classes")
    return softmax.standardize(X, *feature_scaling(*scaling, width))


def fit_local(data: SiteData, params: softmax.Params, config, scaling) -> tuple[softmax.Params, dict]:
    """Local epochs from the global arrays: (arrays, metrics with num-examples)."""
    Z = standardized(data, params, data.X_train, data.y_train, scaling)
    rng = np.random.default_rng(int(config.get("seed", 0)) + int(config.get("server-round", 0)))
    params = softmax.train(
        params,
        Z,
        data.y_train,
        epochs=int(config.get("local-epochs", 1)),
        lr=float(config.get("lr", 0.1)),
        rng=rng,
        proximal_mu=float(config.get("proximal-mu", 0.0)),
    )
    loss, accuracy = softmax.loss_accuracy(params, Z, data.y_train)
    return params, {"train_loss": loss, "train_accuracy": accuracy, "num-examples": int(len(data.y_train))}


def evaluate_local(data: SiteData, params: softmax.Params, scaling) -> dict:
    """Loss and accuracy of the global arrays on the held-out rows, with num-examples."""
    Z = standardized(data, params, data.X_eval, data.y_eval, scaling)
    loss, accuracy = softmax.loss_accuracy(params, Z, data.y_eval)
    return {"eval_loss": loss, "eval_accuracy": accuracy, "num-examples": int(len(data.y_eval))}


@app.query("stats")
def stats(message: Message, context: Context) -> Message:
    data = load(context, _config(message))
    X = np.vstack([data.X_train, data.X_eval])
    present = ~np.isnan(X)
    values = np.where(present, X, 0.0)
    record = MetricRecord(
        {
            "count": present.sum(axis=0).astype(float).tolist(),
            "sum": values.sum(axis=0).tolist(),
            "sumsq": (values**2).sum(axis=0).tolist(),
            "max-label": int(max(data.y_train.max(initial=0), data.y_eval.max(initial=0))),
            "num-examples": int(len(X)),
        }
    )
    return Message(RecordDict({"stats": record}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    config = _config(message)
    params, metrics = fit_local(
        load(context, config), _params(message), config, (config.get("mean"), config.get("std"))
    )
    arrays = ArrayRecord({name: Array(value) for name, value in params.items()})
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    config = _config(message)
    metrics = evaluate_local(load(context, config), _params(message), (config.get("mean"), config.get("std")))
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)
