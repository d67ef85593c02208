"""ClientApps of the user apps in test_apps_training (Flower's own API: the message API, the
legacy NumPyClient API, SecAgg+ through its mod). This file is the ``client_app.py`` of those
apps' bundles, with ``app`` bound to the one an app uses; sites run it only once approved."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

PATIENT_MARKER = "PATIENT-7731-SECRET"


def _step(arrays: list[np.ndarray], lr: float) -> list[np.ndarray]:
    return [a + lr * (1.0 - a) for a in arrays]


step_app = ClientApp()


@step_app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    lr = float(msg.content["config"].get("lr", 0.5))
    new = _step(arrays, lr)
    metrics = {"train_loss": float(np.abs(1.0 - new[0]).mean()), "num-examples": 10}
    # What this site's Context says (only numbers reach the record): run_config arrives with the task.
    metrics["seen-rounds"] = int(context.run_config.get("num-server-rounds", -1))
    if "proximal-mu" in msg.content["config"]:  # FedProx sends its mu; a real app adds mu/2 * |w - w_global|^2
        metrics["proximal-mu"] = float(msg.content["config"]["proximal-mu"])
    return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics)}), reply_to=msg)


@step_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    metrics = MetricRecord({"eval_loss": float(np.abs(1.0 - arrays[0]).mean()), "num-examples": 5})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


picky_app = ClientApp()


@picky_app.train()
def picky_train(msg: Message, context: Context) -> Message:
    from edge_agent.apps.data import load_arrays

    if len(load_arrays(context)[1]) == 21:  # this one site's data (21 rows) trips the app
        raise ValueError(f"row 12 of {PATIENT_MARKER} is malformed")  # a message that must stay at the site
    return train(msg, context)


@picky_app.evaluate()
def picky_evaluate(msg: Message, context: Context) -> Message:
    return evaluate(msg, context)


class StepClient(NumPyClient):
    def fit(self, parameters, config):
        loss = float(np.abs(1 - parameters[0]).mean())
        return _step(parameters, float(config.get("lr", 0.5))), 10, {"train_loss": loss}

    def evaluate(self, parameters, config):
        return float(np.abs(1.0 - parameters[0]).mean()), 5, {"eval_gap": float(np.abs(1 - parameters[0]).max())}


# Client-side DP as Flower documents it: the clipping mod on the train function of a ClientApp
# that runs with DifferentialPrivacyClientSide{Fixed,Adaptive}Clipping at the server.
fixedclip_app = ClientApp()
fixedclip_app.train(mods=[fixedclipping_mod])(train)
fixedclip_app.evaluate()(evaluate)
adaptiveclip_app = ClientApp()
adaptiveclip_app.train(mods=[adaptiveclipping_mod])(train)
adaptiveclip_app.evaluate()(evaluate)

legacy_app = ClientApp(client_fn=lambda context: StepClient().to_client())
secagg_app = ClientApp(client_fn=lambda context: StepClient().to_client(), mods=[secaggplus_mod])


slow_app = ClientApp()


@slow_app.train()
def slow_train(msg: Message, context: Context) -> Message:
    import time

    time.sleep(0.3)  # a round long enough to kill the coordinator in the middle of one
    return train(msg, context)


@slow_app.evaluate()
def slow_evaluate(msg: Message, context: Context) -> Message:
    return evaluate(msg, context)
