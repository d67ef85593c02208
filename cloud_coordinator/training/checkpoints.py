"""Checkpoints of a job's model, one file per source, in ``training/<job>/checkpoints/``.

- ``start-<n>.ckpt``: written by silolink after every round of the n-th call of a Flower
  strategy's ``start()`` in the ServerApp (``observe``), so any app built on Flower's
  strategies resumes without doing anything;
- ``app.ckpt``: written by the app itself through ``silolink.serverapp.save_checkpoint``.

A file holds the round it was taken after and the arrays, as Flower's own ``ArrayRecord``
protobuf (any array Flower can carry, numpy or not). Files are replaced atomically, so a
crash leaves the previous checkpoint whole. Only names and numbers are read by the
coordinator (``latest_round``); the arrays are read by the job process.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.app import ArrayRecord

FOLDER = "checkpoints"
APP_SOURCE = "app"
_HEADER = struct.Struct(">4sI")  # magic, round
_MAGIC = b"SLCK"


def path(job_dir: Path, source: str) -> Path:
    return Path(job_dir) / FOLDER / f"{source}.ckpt"


def start_source(call: int) -> str:
    return f"start-{call}"


def save(job_dir: Path, source: str, server_round: int, arrays: ArrayRecord) -> None:
    from flwr.common.serde import array_record_to_proto

    target = path(job_dir, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = array_record_to_proto(arrays).SerializeToString()
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(_HEADER.pack(_MAGIC, server_round))
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def load(job_dir: Path, source: str) -> tuple[int, ArrayRecord] | None:
    from flwr.common.serde import array_record_from_proto
    from flwr.proto.recorddict_pb2 import ArrayRecord as ArrayRecordProto

    target = path(job_dir, source)
    if not target.is_file():
        return None
    data = target.read_bytes()
    server_round = _round(data)
    if server_round is None:
        return None
    proto = ArrayRecordProto()
    proto.ParseFromString(data[_HEADER.size :])
    return server_round, array_record_from_proto(proto)


def _round(data: bytes) -> int | None:
    if len(data) < _HEADER.size:
        return None
    magic, server_round = _HEADER.unpack_from(data)
    return server_round if magic == _MAGIC else None


def latest_round(job_dir: Path) -> int:
    """The round a resumed run continues after: its first start() call's or the app's own."""
    found = [0]
    for source in (start_source(1), APP_SOURCE):
        target = path(job_dir, source)
        if target.is_file():
            with target.open("rb") as f:
                found.append(_round(f.read(_HEADER.size)) or 0)
    return max(found)
