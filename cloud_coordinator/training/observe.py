"""Watch the user's strategy run, without changing what it computes; checkpoint and resume it.

Runs in the job process before the ServerApp is imported:

- ``Strategy.start`` of Flower's message API (every strategy in ``flwr.serverapp.strategy``,
  user subclasses and the DP wrappers) is wrapped so that each call sees its strategy's
  ``aggregate_train`` / ``aggregate_evaluate`` results and its ``evaluate_fn`` results, and
  records them as the round's metrics. After each round the model is checkpointed
  (``checkpoints.start_source(n)`` for the n-th call). When the job is resumed after a
  coordinator restart, that call starts from the checkpointed arrays and runs only the
  rounds left, numbered as they would have been (the strategy's own state, such as FedAdam's
  moments, starts afresh: Flower keeps it in memory only). A call whose rounds were all done
  returns at once with the checkpointed arrays.
- Flower's legacy ``History`` (``ServerApp(server_fn=...)`` and the legacy workflows,
  SecAgg+ included) reports the metrics it is given per round. Legacy apps are not
  checkpointed by silolink; they can use ``silolink.serverapp.save_checkpoint``.

The wrappers live on the strategy instance only while its ``start()`` runs; the values
returned to the strategy are the strategy's own.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from pathlib import Path

from . import checkpoints
from .recorder import RoundRecorder

log = logging.getLogger(__name__)


def install(recorder: RoundRecorder, job_dir: Path) -> None:
    _wrap_strategy_start(recorder, Path(job_dir))
    _wrap_legacy_history(recorder)


def _wrap_strategy_start(recorder: RoundRecorder, job_dir: Path) -> None:
    from flwr.serverapp.strategy import Result, Strategy

    original = Strategy.start
    signature = inspect.signature(original)
    calls = itertools.count(1)

    def start(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        params = bound.arguments
        source = checkpoints.start_source(next(calls))
        saved = checkpoints.load(job_dir, source)
        offset = 0
        if saved is not None:
            done, arrays = saved
            if done >= params["num_rounds"]:
                log.info("%s: all %d rounds were done before the restart", type(self).__name__, done)
                return Result(arrays=arrays)
            log.info("%s: resuming after round %d of %d (from its checkpoint)", type(self).__name__, done,
                     params["num_rounds"])  # fmt: skip
            offset, params["initial_arrays"] = done, arrays
            params["num_rounds"] -= done
        latest = {"arrays": params["initial_arrays"]}
        configure_train, aggregate_train = self.configure_train, self.aggregate_train
        configure_evaluate, aggregate_evaluate = self.configure_evaluate, self.aggregate_evaluate

        def wrapped_configure_train(server_round, arrays, config, grid):
            recorder.begin(server_round + offset)
            return configure_train(server_round + offset, arrays, config, grid)

        def wrapped_aggregate_train(server_round, replies):
            arrays, metrics = aggregate_train(server_round + offset, replies)
            if arrays is not None:
                latest["arrays"] = arrays
            recorder.metrics(server_round + offset, "train", metrics, shifted=True)
            return arrays, metrics

        def wrapped_configure_evaluate(server_round, arrays, config, grid):
            recorder.begin(server_round + offset)
            return configure_evaluate(server_round + offset, arrays, config, grid)

        def wrapped_aggregate_evaluate(server_round, replies):
            metrics = aggregate_evaluate(server_round + offset, replies)
            recorder.metrics(server_round + offset, "evaluate", metrics, shifted=True)
            spent = self.privacy_spent() if callable(getattr(self, "privacy_spent", None)) else None
            if spent is not None:  # a Flower DP wrapper with a privacy accountant
                recorder.privacy(server_round + offset, float(spent.epsilon), float(spent.delta))
            recorder.flush()  # the round's record first, then its checkpoint: a resume redoes at most one round
            checkpoints.save(job_dir, source, server_round + offset, latest["arrays"])
            return metrics

        evaluate_fn = params.get("evaluate_fn")
        if evaluate_fn is not None:

            def wrapped_evaluate_fn(server_round, arrays):
                result = evaluate_fn(server_round + offset, arrays)
                if server_round + offset > 0 and result is not None:
                    recorder.metrics(server_round + offset, "server", result, shifted=True)
                    recorder.flush()
                return result

            params["evaluate_fn"] = wrapped_evaluate_fn
        wrappers = {
            "configure_train": wrapped_configure_train,
            "aggregate_train": wrapped_aggregate_train,
            "configure_evaluate": wrapped_configure_evaluate,
            "aggregate_evaluate": wrapped_aggregate_evaluate,
        }
        self.__dict__.update(wrappers)
        try:
            return original(*bound.args, **bound.kwargs)
        finally:
            for name in wrappers:
                self.__dict__.pop(name, None)

    start.__doc__ = original.__doc__
    Strategy.start = start  # type: ignore[method-assign]


def _wrap_legacy_history(recorder: RoundRecorder) -> None:
    from flwr.server.history import History

    def hook(method_name: str, kind: str, as_metrics=lambda value: value):
        original = getattr(History, method_name)

        def wrapped(self, server_round, *args, **kwargs):
            original(self, server_round, *args, **kwargs)
            value = args[0] if args else next(iter(kwargs.values()), None)
            if server_round > 0 and value is not None:
                recorder.metrics(server_round, kind, as_metrics(value))
                recorder.flush()

        setattr(History, method_name, wrapped)

    hook("add_metrics_distributed_fit", "train")
    hook("add_metrics_distributed", "evaluate")
    hook("add_loss_distributed", "evaluate", lambda loss: {"loss": loss})
    hook("add_metrics_centralized", "server")
    hook("add_loss_centralized", "server", lambda loss: {"loss": loss})
