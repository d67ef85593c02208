"""ClientApps that misbehave, installed at a site under the name ``tabular`` to test how a
job treats a site that sends NaN, the wrong arrays, or never answers."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edge_agent.training import tabular


def _like_tabular(train_reply) -> ClientApp:
    app = ClientApp()
    app.query("stats")(tabular.stats)
    app.evaluate()(tabular.evaluate)
    app.train()(train_reply)
    return app


def _nan(message: Message, context: Context) -> Message:
    reply = tabular.train(message, context)
    arrays = reply.content.array_records["arrays"]
    W = arrays["W"].numpy().copy()
    W[0, 0] = np.nan
    content = RecordDict(
        {"arrays": ArrayRecord({"W": Array(W), "b": arrays["b"]}), "metrics": reply.content.metric_records["metrics"]}
    )
    return Message(content, reply_to=message)


def _wrong_shape(message: Message, context: Context) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"W": Array(np.zeros((3, 2))), "b": Array(np.zeros(2))}),
            "metrics": MetricRecord({"num-examples": 10}),
        }
    )
    return Message(content, reply_to=message)


def _silent(message: Message, context: Context) -> Message:
    time.sleep(8)
    return tabular.train(message, context)


def _slow(message: Message, context: Context) -> Message:
    time.sleep(0.4)
    return tabular.train(message, context)


nan_app = _like_tabular(_nan)
wrong_shape_app = _like_tabular(_wrong_shape)
silent_app = _like_tabular(_silent)
slow_app = _like_tabular(_slow)
