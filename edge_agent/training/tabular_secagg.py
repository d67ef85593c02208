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


def _scaling(config: dict) -> tuple:
    """Legacy configs carry scalars only: the coordinator sends the scaling as JSON text."""
    return tuple(json.loads(config[k]) if isinstance(config.get(k), str) else None for k in ("mean", "std"))


def _params(parameters: list) -> softmax.Params:
    try:
        return softmax.from_list([np.asarray(p, dtype=np.float64) for p in parameters])
    except ValueError as e:
        raise tabular.AppInputError(f"the job's model: {e}") from None


class TabularClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context

    def fit(self, parameters, config):
        params, metrics = tabular.fit_local(tabular.load(self.context, config), _params(parameters), config,
                                            _scaling(config))  # fmt: skip
        examples = metrics.pop("num-examples")
        return softmax.to_list(params), examples, metrics

    def evaluate(self, parameters, config):
        metrics = tabular.evaluate_local(tabular.load(self.context, config), _params(parameters), _scaling(config))
        examples = metrics.pop("num-examples")
        return metrics["eval_loss"], examples, metrics


def stats_mod(message: Message, context: Context, call_next) -> Message:
    """Answer the job's feature-statistics query as the tabular app does."""
    if message.metadata.message_type == "query.stats":
        return tabular.stats(message, context)
    return call_next(message, context)


app = ClientApp(client_fn=lambda context: TabularClient(context).to_client(), mods=[stats_mod, secaggplus_mod])
