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
    return [servicer.mount(servicer.InferenceServicer(engine, agent.models))]
