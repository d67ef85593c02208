"""ONNX inference for the site's own systems, next to the site's data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent


def attach(agent: Agent) -> list[ServiceMount]:
    from . import servicer
    from .engine import InferenceEngine

    engine = InferenceEngine(agent.models, agent.config.inference)
    if agent.metrics is not None:
        agent.metrics.counter(
            "silolink_inference_requests", "Infer requests served, by loaded model version", "model",
            lambda: {ref: float(requests) for ref, (requests, _) in engine.counts().items()},
        )  # fmt: skip
        agent.metrics.counter(
            "silolink_inference_runs", "onnxruntime runs (requests / runs is the mean micro-batch)", "model",
            lambda: {ref: float(runs) for ref, (_, runs) in engine.counts().items()},
        )  # fmt: skip
    return [servicer.mount(servicer.InferenceServicer(engine, agent.models))]
