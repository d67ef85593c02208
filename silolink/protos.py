"""Conversions between protobuf messages and plain Python, shared by both sides."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from silolink.errors import InvalidArgument
from silolink.gen.common.v1 import site_pb2


def timestamp(ts: float | None) -> Timestamp | None:
    """Epoch seconds to a Timestamp (None stays None, leaving the field unset)."""
    if ts is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(ts * 1e9))
    return stamp


def epoch(message: Any, field: str) -> float | None:
    """A Timestamp field of ``message`` as epoch seconds, None when unset; InvalidArgument
    naming the field when a request carries one protobuf itself calls invalid (nanos out of range)."""
    if not message.HasField(field):
        return None
    try:
        return getattr(message, field).ToNanoseconds() / 1e9
    except ValueError:
        raise InvalidArgument(f"{field} is not a valid timestamp (nanos must be in [0, 999999999])") from None


def resources_to_dict(report: site_pb2.ResourceReport) -> dict[str, Any]:
    return {
        "cpu_count": report.cpu_count,
        "load_average_1m": round(report.load_average_1m, 2),
        "memory_total_bytes": report.memory_total_bytes,
        "memory_available_bytes": report.memory_available_bytes,
        "disk_free_bytes": report.disk_free_bytes,
        "gpus": [{"name": g.name, "memory_total_bytes": g.memory_total_bytes} for g in report.gpus],
        "agent_version": report.agent_version,
    }


def resources_from_dict(data: dict[str, Any]) -> site_pb2.ResourceReport:
    return site_pb2.ResourceReport(
        cpu_count=int(data.get("cpu_count", 0)),
        load_average_1m=float(data.get("load_average_1m", 0.0)),
        memory_total_bytes=int(data.get("memory_total_bytes", 0)),
        memory_available_bytes=int(data.get("memory_available_bytes", 0)),
        disk_free_bytes=int(data.get("disk_free_bytes", 0)),
        gpus=[
            site_pb2.GpuInfo(name=g["name"], memory_total_bytes=int(g["memory_total_bytes"]))
            for g in data.get("gpus", [])
        ],
        agent_version=str(data.get("agent_version", "")),
    )


def config_value(value: bool | int | float | str):
    """A Flower run_config value as a ``silolink.apps.v1.ConfigValue``."""
    from silolink.gen.apps.v1 import apps_pb2

    if isinstance(value, bool):  # before int: bool is an int in Python
        return apps_pb2.ConfigValue(bool_value=value)
    if isinstance(value, int):
        return apps_pb2.ConfigValue(int_value=value)
    if isinstance(value, float):
        return apps_pb2.ConfigValue(float_value=value)
    if isinstance(value, str):
        return apps_pb2.ConfigValue(string_value=value)
    raise TypeError(f"a run_config value is a bool, int, float or str, not {type(value).__name__}")


def config_to_proto(config: dict[str, Any]) -> dict[str, Any]:
    """A run_config dict as the values of a ``map<string, ConfigValue>`` field."""
    return {key: config_value(value) for key, value in config.items()}


def config_from_proto(values: Any) -> dict[str, bool | int | float | str]:
    """A ``map<string, ConfigValue>`` field as a run_config dict (unset values are left out)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        kind = value.WhichOneof("value")
        if kind is not None:
            out[key] = getattr(value, kind)
    return out
