"""The built-in ``tabular-secagg`` app: the tabular model under Flower's SecAgg+.

Flower 1.41 runs secure aggregation only through its legacy client API, so this is the
``tabular`` app's training and evaluation behind a ``NumPyClient``, with Flower's
``secaggplus_mod`` masking each update before it leaves the site. Feature statistics
(``query.stats``) are answered by the tabular app itself, through a mod.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Context, Message
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod

from silolink import softmax

from . import tabular


def _scaling(config: dict, width: int) -> tuple[np.ndarray, np.ndarray]:
    decoded = {k: json.loads(config[k]) for k in ("mean", "std") if isinstance(config.get(k), str)}
    return tabular._scaling(decoded, width)


class TabularClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context

    def fit(self, parameters, config):
        data = tabular.load(self.context, config)
        W, b = (np.asarray(p, dtype=np.float64) for p in parameters)
        if W.shape[0] != len(data.features):
            raise tabular.AppInputError(
                f"the global model takes {W.shape[0]} features; this site has {len(data.features)}"
            )
        mean, std = _scaling(config, W.shape[0])
        Z = softmax.standardize(data.X_train, mean, std)
        rng = np.random.default_rng(int(config.get("seed", 0)) + int(config.get("server-round", 0)))
        W, b = softmax.train(
            W, b, Z, data.y_train, int(config.get("local-epochs", 1)), float(config.get("lr", 0.1)), rng
        )
        loss, accuracy = softmax.loss_accuracy(W, b, Z, data.y_train)
        return [W, b], int(len(data.y_train)), {"train_loss": loss, "train_accuracy": accuracy}

    def evaluate(self, parameters, config):
        data = tabular.load(self.context, config)
        W, b = (np.asarray(p, dtype=np.float64) for p in parameters)
        mean, std = _scaling(config, W.shape[0])
        loss, accuracy = softmax.loss_accuracy(W, b, softmax.standardize(data.X_eval, mean, std), data.y_eval)
        return loss, int(len(data.y_eval)), {"eval_loss": loss, "eval_accuracy": accuracy}


def stats_mod(message: Message, context: Context, call_next) -> Message:
    """Answer the job's feature-statistics query as the tabular app does."""
    if message.metadata.message_type == "query.stats":
        return tabular.stats(message, context)
    return call_next(message, context)


app = ClientApp(client_fn=lambda context: TabularClient(context).to_client(), mods=[stats_mod, secaggplus_mod])
