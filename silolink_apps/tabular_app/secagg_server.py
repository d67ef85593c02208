"""The built-in ``tabular-secagg`` app's ServerApp: the tabular model under Flower's SecAgg+.

Flower 1.41 offers SecAgg+ only through its legacy workflow API (``LegacyContext`` and
``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))``), so this app runs that path with
Flower's legacy FedAvg. The coordinator sees only the masked updates and their sum, which is
the point, so it cannot check one site's update as the ``tabular`` app does; the sites'
SecAgg+ mod clips and quantizes every value.

Legacy workflows do not run through ``Strategy.start``, so this app checkpoints itself with
``silolink.serverapp.save_checkpoint`` (through the strategy's per-round evaluation hook)
and resumes with ``load_checkpoint`` after a coordinator restart.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from silolink import serverapp, softmax

from .server_app import JobFailed, Settings, federated_scaling, publish, train_config, wait_for_sites

log = logging.getLogger(__name__)
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    settings = Settings.from_run_config(context.run_config)
    base = {"lr": settings.lr, "local-epochs": settings.local_epochs, "seed": settings.seed}
    scaling = federated_scaling(grid, settings, base)
    checkpoint = serverapp.load_checkpoint()
    if checkpoint is not None:
        first_round = checkpoint.round + 1
        latest = {k: checkpoint.arrays[k].numpy() for k in checkpoint.arrays.keys()}
    else:
        first_round = 1
        latest = softmax.init(len(scaling["mean"]), scaling["classes"], settings.hidden)
    remaining = settings.rounds - first_round + 1
    if remaining <= 0:
        publish(latest, scaling)
        return
    nodes = wait_for_sites(grid, settings)
    names = list(latest)
    done = [0]
    # Legacy configs carry scalars only: the feature scaling travels as JSON text.
    wire_config = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in train_config(settings, scaling).items()}

    def fit_config(server_round: int) -> dict:
        return {**wire_config, "server-round": first_round + server_round - 1}

    def weighted(metrics: list[tuple[int, dict]]) -> dict:
        total = sum(n for n, _ in metrics) or 1
        keys = {k for _, m in metrics for k in m}
        return {k: sum(n * float(m.get(k, 0.0)) for n, m in metrics) / total for k in keys}

    def checkpoint_round(server_round: int, parameters: list[np.ndarray], _config: dict):
        if server_round == 0:
            return None
        latest.update(zip(names, parameters, strict=True))
        serverapp.save_checkpoint(server_round, ArrayRecord({k: Array(v) for k, v in latest.items()}))
        done[0] += 1
        return None

    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=settings.min_sites,
        min_evaluate_clients=settings.min_sites,
        min_available_clients=settings.min_sites,
        evaluate_fn=checkpoint_round,
        on_fit_config_fn=fit_config,
        on_evaluate_config_fn=fit_config,
        initial_parameters=ndarrays_to_parameters([latest[k] for k in names]),
        fit_metrics_aggregation_fn=weighted,
        evaluate_metrics_aggregation_fn=weighted,
        accept_failures=False,
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=remaining, round_timeout=settings.round_timeout_s),
        strategy=strategy,
    )
    shares = len(nodes)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=shares,
            reconstruction_threshold=max(2, shares // 2 + 1),
            # SecAgg+ quantizes each update weighted by its share of this bound: no site may exceed it.
            max_weight=max(1000.0, scaling["rows"]),
            timeout=settings.round_timeout_s,
        )
    )
    workflow(grid, legacy)
    if done[0] < remaining:
        raise JobFailed(
            f"secure aggregation completed {done[0]} of {remaining} rounds: a site dropped out or sent no "
            "usable share (Flower's SecAgg+ log is in `cloud-coordinator train logs`)"
        )
    publish(latest, scaling)
