"""The round loop: Flower's strategy methods, with each site's reply checked first.

We drive the rounds ourselves rather than through ``Strategy.start`` so that every round
is checkpointed and recorded as it completes (a restarted coordinator resumes from the
last one), a stop request takes effect between rounds, and replies with the wrong arrays,
NaN or no answer are excluded with a reason instead of breaking the aggregation.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message

from .grid import SiloGrid
from .store import JobSpec, RoundRecord

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job cannot go on; the message says why, for the job's record."""


@dataclass(frozen=True)
class RoundPlan:
    spec: JobSpec
    train_config: ConfigRecord
    evaluate_config: ConfigRecord


def _site(grid: SiloGrid, reply: Message) -> str:
    return grid.sites.get(reply.metadata.src_node_id, f"node {reply.metadata.src_node_id}")


def check_train_reply(reply: Message, reference: ArrayRecord) -> str | None:
    """Why a training reply can't be aggregated, or None if it can."""
    if reply.has_error():
        return f"the app reported an error: {reply.error.reason[:200]}"
    arrays = list(reply.content.array_records.values())
    if len(arrays) != 1:
        return f"sent {len(arrays)} array records, expected 1"
    got = arrays[0]
    if list(got.keys()) != list(reference.keys()):
        return f"sent arrays {list(got.keys())}, expected {list(reference.keys())}"
    for name in reference.keys():
        theirs, ours = got[name].numpy(), reference[name].numpy()
        if theirs.shape != ours.shape:
            return f"array {name} has shape {list(theirs.shape)}, expected {list(ours.shape)}"
        if not np.all(np.isfinite(theirs)):
            return f"array {name} holds NaN or infinite values"
    return _check_metrics(reply)


def _check_metrics(reply: Message) -> str | None:
    if reply.has_error():
        return f"the app reported an error: {reply.error.reason[:200]}"
    metrics = list(reply.content.metric_records.values())
    if len(metrics) != 1:
        return f"sent {len(metrics)} metric records, expected 1"
    examples = metrics[0].get("num-examples")
    if not isinstance(examples, int | float) or not examples > 0:
        return "reported no examples (num-examples)"
    if any(isinstance(v, float) and not np.isfinite(v) for v in metrics[0].values()):
        return "reported NaN or infinite metrics"
    return None


def _partition(grid: SiloGrid, replies, check) -> tuple[list[Message], list[dict[str, str]]]:
    good, excluded = [], [{"site": s, "reason": r} for s, r in grid.exclusions]
    for reply in replies:
        reason = check(reply)
        if reason is None:
            good.append(reply)
        else:
            excluded.append({"site": _site(grid, reply), "reason": reason})
    return good, excluded


def _too_few(stage: str, round_: int, good: int, asked: int, spec: JobSpec, excluded) -> JobFailed:
    reasons = "; ".join(f"{e['site']}: {e['reason']}" for e in excluded) or "no site was reachable"
    return JobFailed(
        f"round {round_} {stage}: {good} usable repl{'y' if good == 1 else 'ies'} from {asked} site(s), "
        f"--min-sites is {spec.min_sites} ({reasons})"
    )


def run_rounds(
    strategy,
    grid: SiloGrid,
    plan: RoundPlan,
    arrays: ArrayRecord,
    first_round: int,
    on_round: Callable[[int, ArrayRecord, RoundRecord], None],
) -> ArrayRecord:
    spec = plan.spec
    grid.timeout_s = spec.round_timeout_s
    for round_ in range(first_round, spec.rounds + 1):
        started = time.monotonic()
        nodes = grid.wait_for_nodes(spec.min_sites, spec.round_timeout_s)
        if len(nodes) < spec.min_sites:
            raise JobFailed(
                f"round {round_}: {len(nodes)} of the job's sites connected within {spec.round_timeout_s:.0f} s, "
                f"--min-sites is {spec.min_sites}"
            )
        messages = list(strategy.configure_train(round_, arrays, plan.train_config, grid))
        replies = grid.send_and_receive(messages, timeout=spec.round_timeout_s)
        good, excluded = _partition(grid, replies, functools.partial(check_train_reply, reference=arrays))
        if len(good) < spec.min_sites:
            raise _too_few("training", round_, len(good), len(messages), spec, excluded)
        new_arrays, train_metrics = strategy.aggregate_train(round_, good)
        if new_arrays is None:
            raise JobFailed(f"round {round_}: the strategy produced no model from {len(good)} replies")
        arrays = new_arrays
        participants = sorted(_site(grid, r) for r in good)

        messages = list(strategy.configure_evaluate(round_, arrays, plan.evaluate_config, grid))
        replies = grid.send_and_receive(messages, timeout=spec.round_timeout_s)
        good_eval, eval_excluded = _partition(grid, replies, _check_metrics)
        eval_metrics = strategy.aggregate_evaluate(round_, good_eval) if good_eval else None
        excluded += [{**e, "reason": f"evaluation: {e['reason']}"} for e in eval_excluded]

        record = RoundRecord(
            round=round_,
            participants=participants,
            excluded=excluded,
            train_metrics={k: float(v) for k, v in (train_metrics or {}).items() if isinstance(v, int | float)},
            eval_metrics={k: float(v) for k, v in (eval_metrics or {}).items() if isinstance(v, int | float)},
            duration_s=time.monotonic() - started,
        )
        on_round(round_, arrays, record)
        log.info(
            "round %d/%d: %d sites, train %s, eval %s", round_, spec.rounds, len(good), record.train_metrics,
            record.eval_metrics,
        )  # fmt: skip
    return arrays
