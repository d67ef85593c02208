"""What a Flower ServerApp can ask of silolink, beyond Flower's own API.

A ServerApp runs unchanged on silolink; these calls are optional extras for apps that want
them, and each one is harmless elsewhere: outside a silolink training job (Flower's
simulation, Flower's deployment engine) they log what they would have done and return
None, so the same app runs everywhere.

- ``publish_model(onnx, name=None, description="")``: register the job's result (ONNX bytes
  or a file path) in the coordinator's model registry, signed, with the job's provenance
  (creator ``job:<id>``, source job ``<id>``); it can then be rolled out and served like any
  model. Returns ``"name:version"``.
- ``exclude(reply, reason)``: record why a site's reply was left out of the round (for
  ``cloud-coordinator train status``); for strategies that check replies themselves.
- ``site_of(message or node id)``: the site name behind a node id.
- ``save_checkpoint(round, arrays)`` / ``load_checkpoint()``: for apps whose rounds do not run
  through a Flower strategy's ``start()`` (which silolink checkpoints by itself every
  round). After a coordinator restart the job's ServerApp runs again from the top;
  ``load_checkpoint()`` returns the last round saved and its arrays, and declares that this
  run continues after that round.

This module is the only silolink API a ServerApp needs; it lives in the shared package so
that apps never import coordinator code. The coordinator's job process installs the
implementation (``install``) before it imports the app.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Message

log = logging.getLogger(__name__)

__all__ = ["Checkpoint", "exclude", "in_silolink", "load_checkpoint", "publish_model", "save_checkpoint", "site_of"]


@dataclass(frozen=True)
class Checkpoint:
    """The last round an earlier run of this job completed, and the model after it."""

    round: int
    arrays: ArrayRecord


class Host(Protocol):
    """What the job process provides (cloud_coordinator.training.runner)."""

    def publish_model(self, data: bytes, name: str | None, description: str) -> str: ...

    def exclude(self, reply: Message, reason: str) -> None: ...

    def site_of(self, node_id: int) -> str | None: ...

    def save_checkpoint(self, server_round: int, arrays: ArrayRecord) -> None: ...

    def load_checkpoint(self) -> Checkpoint | None: ...


_host: Host | None = None


def install(host: Host | None) -> None:
    """Set (or clear) the implementation; called by silolink's job process only."""
    global _host
    _host = host


def in_silolink() -> bool:
    """True inside a silolink training job."""
    return _host is not None


def publish_model(onnx: bytes | str | Path, name: str | None = None, description: str = "") -> str | None:
    """Register an ONNX model (bytes or a path) under the job's provenance; ``"name:version"``.

    ``name`` defaults to the job's model name (``--model-name``, else ``<dataset>-<app>``).
    The coordinator loads the model in onnxruntime first: a file that does not load is
    refused (``silolink.errors.InvalidArgument``).
    """
    data = onnx if isinstance(onnx, bytes) else Path(onnx).read_bytes()
    if _host is None:
        log.info("not in a silolink job: the model (%d bytes) is not published", len(data))
        return None
    return _host.publish_model(data, name, description)


def exclude(reply: Message, reason: str) -> None:
    """Record that ``reply``'s site was left out of the current round, and why."""
    if _host is not None:
        _host.exclude(reply, reason)


def site_of(message: Message | int) -> str | None:
    """The site behind a node id, or that sent ``message`` (or that it is addressed to).

    None outside silolink, or for a node id no site of the job has.
    """
    if _host is None:
        return None
    if isinstance(message, int):
        return _host.site_of(message)
    return _host.site_of(message.metadata.src_node_id or message.metadata.dst_node_id)


def save_checkpoint(server_round: int, arrays: ArrayRecord) -> None:
    """Keep ``arrays`` as the model after ``server_round``, for a resume after a restart."""
    if _host is not None:
        _host.save_checkpoint(server_round, arrays)


def load_checkpoint() -> Checkpoint | None:
    """The last checkpoint of an earlier run of this job, or None (a fresh start)."""
    return _host.load_checkpoint() if _host is not None else None
