"""The imaging app's ClientApp: learns to classify a site's images (PNG/JPEG or DICOM datasets).

It reads the site's dataset with the public data helper (``edge_agent.apps.data.
load_dataset``, over the catalog's reading API: the images as one numpy array, the labels
beside them),
flattens each image into its pixels and trains softmax regression, or a small MLP when
the job's model has hidden layers, on them. It answers the same messages as the built-in
tabular app (``query.stats``, ``train``, ``evaluate``), so the tabular ServerApp (this app's server half),
its federated pixel scaling and its ONNX export run it unchanged; the exported model takes
[rows, pixels] and ``edge-agent infer table`` scores an image dataset with it.

Publish with ``cloud-coordinator apps push examples/imaging-app``; each site approves it
with ``edge-agent apps approve imaging:1.0.0``.
"""

from __future__ import annotations

import threading

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edge_agent.apps.data import load_dataset
from edge_agent.training import tabular

app = ClientApp()
_cache: dict[tuple, tabular.SiteData] = {}
_lock = threading.Lock()


def load(context: Context) -> tabular.SiteData:
    """The site's images as pixel rows (through the public data helper, over the catalog's
    reading API), every fifth catalog row held out for evaluation."""
    key = tuple(sorted((k, str(v)) for k, v in context.node_config.items()))
    with _lock:
        if key in _cache:
            return _cache[key]
    site = load_dataset(context)  # an image dataset's default feature is its image column
    if site.X.ndim < 3:
        raise tabular.AppInputError(f"dataset {site.name!r} holds no images; the imaging app trains on image datasets")
    X = site.X.reshape(len(site.X), -1).astype(np.float64)
    if site.y.dtype != np.int64 or (site.y < 0).any():
        raise tabular.AppInputError(f"the labels of {site.name!r} must be class numbers 0, 1, ...")
    held_out = site.row_ids % tabular.EVAL_EVERY == 0
    features = [f"pixel_{i}" for i in range(X.shape[1])]
    data = tabular.SiteData(features, X[~held_out], site.y[~held_out], X[held_out], site.y[held_out])
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
