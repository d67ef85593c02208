"""Rounds under secure aggregation: Flower's SecAgg+ workflow over silolink's Grid.

Flower 1.41 offers SecAgg+ only through its legacy workflow API (``LegacyContext`` and
``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))``), so these jobs run that path with
Flower's legacy FedAvg. The coordinator sees only the masked updates and their sum, which is
the point, so it cannot check one site's update for NaN or shape as ordinary rounds do; the
sites' SecAgg+ mod clips and quantizes every value. Rounds are checkpointed through the
strategy's per-round evaluation hook, so a restart resumes as ordinary jobs do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from .store import JobSpec, RoundRecord


def run_secure_rounds(
    grid,
    spec: JobSpec,
    config: dict,
    arrays: dict[str, np.ndarray],
    first_round: int,
    on_round: Callable[[int, dict[str, np.ndarray], RoundRecord], None],
    max_weight: float = 1000.0,
) -> dict[str, np.ndarray]:
    from flwr.app import Context, RecordDict
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from .rounds import JobFailed

    nodes = grid.wait_for_nodes(spec.min_sites, spec.round_timeout_s)
    if len(nodes) < spec.min_sites:
        raise JobFailed(f"{len(nodes)} of the job's sites connected, --min-sites is {spec.min_sites}")
    names = list(arrays)
    remaining = spec.rounds - first_round + 1
    latest = dict(arrays)
    started = [time.monotonic()]
    done = [0]
    # Legacy configs carry scalars only: the feature scaling travels as JSON text.
    wire_config = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in config.items()}

    def fit_config(server_round: int) -> dict:
        return {**wire_config, "server-round": first_round + server_round - 1}

    def weighted(metrics: list[tuple[int, dict]]) -> dict:
        total = sum(n for n, _ in metrics) or 1
        keys = {k for _, m in metrics for k in m}
        return {k: sum(n * float(m.get(k, 0.0)) for n, m in metrics) / total for k in keys}

    def checkpoint(server_round: int, parameters: list[np.ndarray], _config: dict):
        if server_round == 0:
            return None
        latest.update(zip(names, parameters, strict=True))
        history = context.history
        train = {k: v[-1][1] for k, v in history.metrics_distributed_fit.items() if v and v[-1][0] == server_round}
        record = RoundRecord(
            round=first_round + server_round - 1,
            participants=sorted(grid.sites.get(n, str(n)) for n in nodes),
            excluded=[],
            train_metrics={k: float(v) for k, v in train.items()},
            eval_metrics={},
            duration_s=time.monotonic() - started[0],
        )
        on_round(record.round, dict(latest), record)
        started[0] = time.monotonic()
        done[0] += 1
        return None

    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=spec.min_sites,
        min_evaluate_clients=spec.min_sites,
        min_available_clients=spec.min_sites,
        evaluate_fn=checkpoint,
        on_fit_config_fn=fit_config,
        on_evaluate_config_fn=fit_config,
        initial_parameters=ndarrays_to_parameters([arrays[k] for k in names]),
        fit_metrics_aggregation_fn=weighted,
        evaluate_metrics_aggregation_fn=weighted,
        accept_failures=False,
    )
    context = LegacyContext(
        context=Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=remaining, round_timeout=spec.round_timeout_s),
        strategy=strategy,
    )
    shares = len(nodes)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=shares,
            reconstruction_threshold=max(2, shares // 2 + 1),
            max_weight=max_weight,
            timeout=spec.round_timeout_s,
        )
    )
    workflow(grid, context)
    if done[0] < remaining:
        raise JobFailed(
            f"secure aggregation completed {done[0]} of {remaining} rounds: a site dropped out or sent no "
            "usable share (Flower's SecAgg+ log is in the job's runner.log)"
        )
    return latest
