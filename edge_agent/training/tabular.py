"""The built-in ``tabular`` Flower app: softmax regression (or a small MLP, when the job's
global model has hidden layers) on a catalog table.

Messages:
- ``query.stats``: per-feature count, sum and sum of squares and the largest class label, so
  the coordinator can standardize features the same way everywhere (aggregates, no rows).
- ``train``: local SGD epochs from the global arrays; replies with arrays and metrics.
- ``evaluate``: loss and accuracy of the global arrays on the site's held-out rows.

Rows come from the job's dataset through the data helper; every fifth row is held
out for evaluation. Errors in ``AppInputError`` name columns only, never values, so the
site can pass them on to the coordinator.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from silolink import softmax

from ..apps.data import DatasetError, load_dataset
from ..catalog.reading import open_dataset

app = ClientApp()
EVAL_EVERY = 5  # rows with rowid % 5 == 0 are held out


class AppInputError(DatasetError):
    """A problem with the site's data or the job's model that is safe to report (names only)."""


@dataclass(frozen=True)
class SiteData:
    features: list[str]
    X_train: np.ndarray
    y_train: np.ndarray
    X_eval: np.ndarray
    y_eval: np.ndarray


CACHE_ENTRIES = 64
_cache: dict[tuple, SiteData] = {}
_cache_lock = threading.Lock()


def load(context: Context, config) -> SiteData:
    """The job's dataset through the public data helper, split train/eval by row id, cached
    while the dataset stays the same."""
    dataset = open_dataset(context.node_config).dataset
    name = dataset.name
    label, features = str(config.get("label", "") or ""), tuple(config.get("features", []) or ())
    where = tuple(sorted((k, str(v)) for k, v in context.node_config.items()))
    key = (where, dataset.created_at, dataset.row_count, features, label)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    site = load_dataset(context, features=features or None, label=label or None)
    if not len(site.y):
        raise AppInputError(f"dataset {name!r} has no rows with a label")
    y = site.y
    if y.dtype != np.int64 and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)  # a REAL column holding 0.0, 1.0, ...
    if y.dtype != np.int64 or (y < 0).any():
        raise AppInputError(f"label column {site.label!r} must hold class numbers 0, 1, ...")
    held_out = site.row_ids % EVAL_EVERY == 0
    data = SiteData(list(site.features), site.X[~held_out], y[~held_out], site.X[held_out], y[held_out])
    with _cache_lock:
        # One entry at a site (its worker serves one job); one per node where many nodes share
        # a process (an in-process simulation); bounded either way.
        while len(_cache) >= CACHE_ENTRIES:
            _cache.pop(next(iter(_cache)))
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
