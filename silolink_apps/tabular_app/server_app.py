"""The built-in ``tabular`` app's ServerApp: an ordinary Flower ServerApp.

1. Federated feature scaling: each site sends per-feature counts, sums and sums of squares
   (``query.stats``), never rows; the means and deviations go to every site with the model.
2. Rounds of Flower's own FedAvg, FedProx or FedAdam (``strategy`` in run_config), wrapped in
   Flower's server-side DP with an RDP accountant when ``dp-noise`` > 0. Each site's reply is
   checked first: the wrong arrays, NaN or no examples leave the site out of the round, with
   the reason (``silolink.serverapp.exclude``); a round with fewer than ``min-sites`` usable
   replies ends the job, with every reason.
3. The global model is exported to ONNX (``X`` -> ``label``, ``probabilities``) and published
   to the registry (``silolink.serverapp.publish_model``).

Rounds run through ``Strategy.start``, so silolink checkpoints and resumes them on its own.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as flower

from silolink import serverapp, softmax

log = logging.getLogger(__name__)
app = ServerApp()
DP_DELTA = 1e-5


class JobFailed(RuntimeError):
    """The job cannot go on; the message says why."""


@dataclass(frozen=True)
class Settings:
    rounds: int
    strategy: str
    min_sites: int
    round_timeout_s: float
    local_epochs: int
    lr: float
    proximal_mu: float
    server_lr: float
    dp_noise: float
    dp_clip: float
    hidden: tuple[int, ...]
    seed: int

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> Settings:
        hidden = tuple(int(units) for units in str(config.get("hidden", "")).split(",") if units.strip())
        return cls(
            rounds=int(config.get("num-server-rounds", 3)),
            strategy=str(config.get("strategy", "fedavg")),
            min_sites=int(config.get("min-sites", 2)),
            round_timeout_s=float(config.get("round-timeout", 60.0)),
            local_epochs=int(config.get("local-epochs", 1)),
            lr=float(config.get("lr", 0.1)),
            proximal_mu=float(config.get("proximal-mu", 0.0)),
            server_lr=float(config.get("server-lr", 0.1)),
            dp_noise=float(config.get("dp-noise", 0.0)),
            dp_clip=float(config.get("dp-clip", 0.0)),
            hidden=hidden,
            seed=int(config.get("seed", 0)),
        )


def site_name(grid: Grid, message: Message) -> str:
    return serverapp.site_of(message) or f"node {message.metadata.src_node_id}"


def wait_for_sites(grid: Grid, settings: Settings) -> list[int]:
    deadline = time.monotonic() + settings.round_timeout_s
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= settings.min_sites:
            return nodes
        if time.monotonic() >= deadline:
            raise JobFailed(
                f"{len(nodes)} of the job's sites connected within {settings.round_timeout_s:g} s, "
                f"--min-sites is {settings.min_sites}"
            )
        time.sleep(0.2)


def _reasons(replies: list[Message]) -> list[str]:
    return [reply.error.reason for reply in replies if reply.has_error()]


def _missing(nodes: list[int], answered: set[int]) -> list[str]:
    return [f"{serverapp.site_of(n) or f'node {n}'}: no answer" for n in nodes if n not in answered]


def federated_scaling(grid: Grid, settings: Settings, config: dict[str, Any]) -> dict[str, Any]:
    """Feature means and standard deviations over all the job's sites, from their sums."""
    nodes = wait_for_sites(grid, settings)
    messages = [grid.create_message(RecordDict({"config": ConfigRecord(config)}), "query.stats", n, "0") for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout_s))
    usable, reasons = [], _reasons(replies)
    reasons += _missing(nodes, {r.metadata.src_node_id for r in replies})
    for reply in replies:
        if reply.has_error():
            continue
        if "stats" not in reply.content.metric_records:
            reasons.append(f"{site_name(grid, reply)}: no feature statistics")
            continue
        usable.append((site_name(grid, reply), reply.content.metric_records["stats"]))
    widths = {site: len(stats["sum"]) for site, stats in usable}
    if len(set(widths.values())) > 1:
        raise JobFailed(
            "the sites disagree on the number of features: " + ", ".join(f"{s}: {w}" for s, w in widths.items())
        )
    if len(usable) < settings.min_sites:
        raise JobFailed(
            f"feature statistics: {len(usable)} usable repl(ies), --min-sites is {settings.min_sites} "
            f"({'; '.join(reasons) or 'no site was reachable'})"
        )
    count = np.sum([np.asarray(s["count"]) for _, s in usable], axis=0)
    total = np.sum([np.asarray(s["sum"]) for _, s in usable], axis=0)
    squares = np.sum([np.asarray(s["sumsq"]) for _, s in usable], axis=0)
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean**2, 0.0))
    return {
        "mean": mean.tolist(),
        "std": np.where(std > 1e-12, std, 1.0).tolist(),
        "classes": max(2, 1 + max(int(s["max-label"]) for _, s in usable)),
        "rows": float(sum(int(s["num-examples"]) for _, s in usable)),
    }


def check_train_reply(reply: Message, reference: ArrayRecord) -> str | None:
    """Why a training reply can't be aggregated, or None if it can."""
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
    return check_metrics(reply)


def check_metrics(reply: Message) -> str | None:
    metrics = list(reply.content.metric_records.values())
    if len(metrics) != 1:
        return f"sent {len(metrics)} metric records, expected 1"
    examples = metrics[0].get("num-examples")
    if not isinstance(examples, int | float) or not examples > 0:
        return "reported no examples (num-examples)"
    if any(isinstance(v, float) and not np.isfinite(v) for v in metrics[0].values()):
        return "reported NaN or infinite metrics"
    return None


def checked(strategy, settings: Settings, grid: Grid):
    """``strategy``, whose aggregation first leaves out replies it cannot use (with the reason)
    and fails the job, with every reason, when fewer than ``min-sites`` remain."""
    base = type(strategy)

    def configure_train(self, server_round, arrays, config, grid_):
        wait_for_sites(grid_, settings)
        self._silolink_sent = arrays
        messages = list(base.configure_train(self, server_round, arrays, config, grid_))
        self._silolink_asked = [m.metadata.dst_node_id for m in messages]
        return messages

    def partition(replies, check):
        good, reasons = [], []
        for reply in replies:
            if reply.has_error():
                reasons.append(reply.error.reason)
                continue
            reason = check(reply)
            if reason is None:
                good.append(reply)
            else:
                serverapp.exclude(reply, reason)
                reasons.append(f"{site_name(grid, reply)}: {reason}")
        return good, reasons

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        good, reasons = partition(replies, lambda r: check_train_reply(r, self._silolink_sent))
        reasons += _missing(self._silolink_asked, {r.metadata.src_node_id for r in replies})
        if len(good) < settings.min_sites:
            raise JobFailed(
                f"round {server_round} training: {len(good)} usable repl{'y' if len(good) == 1 else 'ies'} from "
                f"{len(self._silolink_asked)} site(s), --min-sites is {settings.min_sites} "
                f"({'; '.join(reasons) or 'no site was reachable'})"
            )
        return base.aggregate_train(self, server_round, good)

    def aggregate_evaluate(self, server_round, replies):
        good, _ = partition(list(replies), check_metrics)
        return base.aggregate_evaluate(self, server_round, good) if good else None

    strategy.__class__ = type(
        f"Checked{base.__name__}",
        (base,),
        {"configure_train": configure_train, "aggregate_train": aggregate_train,
         "aggregate_evaluate": aggregate_evaluate},
    )  # fmt: skip
    return strategy


def build_strategy(settings: Settings, population: int):
    """Flower's strategy for the settings; wrapped for server-side DP with an RDP accountant if asked."""
    common = dict(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=settings.min_sites,
        min_evaluate_nodes=settings.min_sites,
        min_available_nodes=settings.min_sites,
    )
    if settings.strategy == "fedprox":
        strategy = flower.FedProx(proximal_mu=settings.proximal_mu, **common)
    elif settings.strategy == "fedadam":
        strategy = flower.FedAdam(eta=settings.server_lr, eta_l=settings.lr, **common)
    else:
        strategy = flower.FedAvg(**common)
    if settings.dp_noise > 0:
        from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=DP_DELTA,
                population_size=population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        strategy = flower.DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=settings.dp_noise,
            clipping_norm=settings.dp_clip,
            num_sampled_clients=population,
            accountant=accountant,
        )
    return strategy


def train_config(settings: Settings, scaling: dict[str, Any]) -> dict[str, Any]:
    return {"lr": settings.lr, "local-epochs": settings.local_epochs, "seed": settings.seed,
            "mean": scaling["mean"], "std": scaling["std"]}  # fmt: skip


def publish(params: softmax.Params, scaling: dict[str, Any]) -> str | None:
    """Export the global model to ONNX and publish it (registered and signed by silolink)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = softmax.export_onnx(Path(tmp) / "model.onnx", params, np.asarray(scaling["mean"]),
                                   np.asarray(scaling["std"]))  # fmt: skip
        return serverapp.publish_model(path)


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = Settings.from_run_config(context.run_config)
    base = {"lr": settings.lr, "local-epochs": settings.local_epochs, "seed": settings.seed}
    scaling = federated_scaling(grid, settings, base)
    config = train_config(settings, scaling)  # FedProx adds its proximal-mu itself
    initial = softmax.init(len(scaling["mean"]), scaling["classes"], settings.hidden)
    population = max(settings.min_sites, len(wait_for_sites(grid, settings)))
    strategy = checked(build_strategy(settings, population), settings, grid)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in initial.items()}),
        num_rounds=settings.rounds,
        timeout=settings.round_timeout_s,
        train_config=ConfigRecord(config),
        evaluate_config=ConfigRecord(config),
    )
    final = {k: result.arrays[k].numpy() for k in result.arrays.keys()} if result.arrays else initial
    model = publish(final, scaling)
    log.info("the tabular model is published as %s", model)
