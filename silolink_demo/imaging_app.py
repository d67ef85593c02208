"""A Flower ClientApp that learns to classify a site's images (PNG/JPEG or DICOM datasets).

It reads the site's dataset through the catalog's reading API (``open_dataset(
context.node_config).arrays()``: the images as one numpy array, the labels beside them),
flattens each image into its pixels and trains softmax regression, or a small MLP when
the job's model has hidden layers, on them. It answers the same messages as the built-in
tabular app (``query.stats``, ``train``, ``evaluate``), so the coordinator's FedAvg job,
its federated pixel scaling and its ONNX export run it unchanged; the exported model takes
[rows, pixels] and ``edge-agent infer table`` scores an image dataset with it.

A site allows it in agent.toml: ``[training] apps = ["imaging=silolink_demo.imaging_app:app"]``.
"""

from __future__ import annotations

import threading

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edge_agent.catalog.reading import open_dataset
from edge_agent.training import tabular

app = ClientApp()
_cache: dict[tuple, tabular.SiteData] = {}
_lock = threading.Lock()


def load(context: Context) -> tabular.SiteData:
    """The site's images as pixel rows, every fifth image held out for evaluation."""
    reader = open_dataset(context.node_config)
    dataset = reader.dataset
    key = (dataset.name, dataset.location, dataset.created_at)
    with _lock:
        if key in _cache:
            return _cache[key]
    images = [c.name for c in reader.columns if c.type == "IMAGE"]
    if not images or not reader.label:
        raise tabular.AppInputError(f"dataset {dataset.name!r} needs an image column and a label (a labels file)")
    X, y = reader.arrays([images[0]], reader.label)
    X = X.reshape(len(X), -1).astype(np.float64)
    if y.dtype.kind != "i" or (y < 0).any():
        raise tabular.AppInputError(f"the labels of {dataset.name!r} must be class numbers 0, 1, ...")
    held_out = np.arange(1, len(X) + 1) % tabular.EVAL_EVERY == 0
    features = [f"pixel_{i}" for i in range(X.shape[1])]
    data = tabular.SiteData(features, X[~held_out], y[~held_out], X[held_out], y[held_out])
    with _lock:
        _cache.clear()  # one data set at a time: memory stays that of one site's images
        _cache[key] = data
    return data


@app.query("stats")
def stats(message: Message, context: Context) -> Message:
    """Per-pixel count, sum and sum of squares and the largest label: aggregates, no image."""
    data = load(context)
    X = np.vstack([data.X_train, data.X_eval])
    record = MetricRecord(
        {
            "count": [float(len(X))] * X.shape[1],
            "sum": X.sum(axis=0).tolist(),
            "sumsq": (X**2).sum(axis=0).tolist(),
            "max-label": int(max(data.y_train.max(initial=0), data.y_eval.max(initial=0))),
            "num-examples": int(len(X)),
        }
    )
    return Message(RecordDict({"stats": record}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Local epochs from the global arrays (the tabular app's training, on pixels)."""
    config = message.content.config_records.get("config", {})
    params = {name: array.numpy() for name, array in message.content.array_records["arrays"].items()}
    scaling = (config.get("mean"), config.get("std"))
    params, metrics = tabular.fit_local(load(context), params, config, scaling)
    arrays = ArrayRecord({name: Array(value) for name, value in params.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Loss and accuracy of the global arrays on this site's held-out images."""
    config = message.content.config_records.get("config", {})
    params = {name: array.numpy() for name, array in message.content.array_records["arrays"].items()}
    metrics = tabular.evaluate_local(load(context), params, (config.get("mean"), config.get("std")))
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)
