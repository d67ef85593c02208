"""Numbers no request may carry, checked once at the request boundary for every RPC.

The servers call ``check_request`` on every incoming message right after parsing it, so a
new RPC is covered without code of its own. Two rules hold for every field, however deep:

* ``float`` and ``double`` values must be finite: NaN and infinity are never a timeout, a
  learning rate or a bound, and they poison comparisons (``nan <= 0`` is false).
* ``uint64`` values must fit a signed 64-bit integer: they are counts, sizes and sequence
  numbers, stored in SQLite, which cannot hold anything larger. (Raw 64-bit words, such as
  masked sums in secure aggregation, are ``fixed64`` and are not limited.)
* ``google.protobuf.Timestamp`` and ``Duration`` values must be valid (a time in the years
  1 to 9999, nanos within their range): protobuf refuses to convert any other.

Ranges that depend on a field's meaning (a timeout of at most a week) stay with the logic
that uses it.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from silolink import errors

MAX_UINT64 = 2**63 - 1
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
# The ranges protobuf's well-known types allow (google/protobuf/timestamp.proto, duration.proto).
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 to 9999-12-31
_DURATION_SECONDS = 315_576_000_000  # 10,000 years either way
_TIME_TYPES = {"google.protobuf.Timestamp": "timestamp", "google.protobuf.Duration": "duration"}
_RULES = {
    "float": "numbers in requests must be finite",
    "uint64": f"numbers in requests must be at most {MAX_UINT64:,} (2^63 - 1)",
    "timestamp": "not a valid time (years 1 to 9999, nanos 0 to 999,999,999)",
    "duration": "not a valid duration (at most 10,000 years, nanos below a second, of the seconds' sign)",
}

# A step of a message's check plan: (field name, what to check, repeated?, map?, plan of
# the nested message or None).
_Step = tuple[str, str, bool, bool, Any]


def check_request(message: Any) -> None:
    """Raise InvalidArgument naming the first field holding a value no request may carry."""
    found = _find(message, _plan(message.DESCRIPTOR))
    if found is not None:
        path, value, kind = found
        raise errors.InvalidArgument(f"{message.DESCRIPTOR.name}.{path} = {value}: {_RULES[kind]}")


def _find(message: Any, plan: list[_Step]) -> tuple[str, str, str] | None:
    for name, kind, repeated, is_map, inner in plan:
        value = getattr(message, name)
        if is_map:
            items = list(value.items())
        elif repeated:
            items = list(enumerate(value))
        else:
            if kind in ("message", "timestamp", "duration") and not message.HasField(name):
                continue
            items = [(None, value)]
        for key, item in items:
            where = name if key is None else f"{name}[{key!r}]"
            if kind == "message":
                found = _find(item, inner)
                if found is not None:
                    return f"{where}.{found[0]}", found[1], found[2]
            elif not _valid(kind, item):
                is_time = kind in _TIME_TYPES.values()
                shown = f"{{seconds: {item.seconds}, nanos: {item.nanos}}}" if is_time else repr(item)
                return where, shown, kind
    return None


def _valid(kind: str, value: Any) -> bool:
    if kind == "float":
        return math.isfinite(value)
    if kind == "uint64":
        return value <= MAX_UINT64
    if kind == "timestamp":
        return _TIMESTAMP_SECONDS[0] <= value.seconds <= _TIMESTAMP_SECONDS[1] and 0 <= value.nanos <= 999_999_999
    seconds, nanos = value.seconds, value.nanos  # a duration
    same_sign = seconds == 0 or nanos == 0 or (seconds < 0) == (nanos < 0)
    return abs(seconds) <= _DURATION_SECONDS and abs(nanos) <= 999_999_999 and same_sign


_PLANS: dict[str, list[_Step]] = {}
_PLANS_LOCK = threading.Lock()


def _plan(descriptor: Descriptor) -> list[_Step]:
    """The fields of ``descriptor`` that can hold a limited number, directly or nested.

    Built once per message type (a message without such fields then costs one look-up),
    under a lock, and published only when whole, so no thread sees a plan half made.
    """
    plan = _PLANS.get(descriptor.full_name)
    if plan is None:
        with _PLANS_LOCK:
            building: dict[str, list[_Step]] = {}
            _build_plan(descriptor, building)
            for name, built in building.items():
                _PLANS.setdefault(name, built)
            plan = _PLANS[descriptor.full_name]
    return plan


def _build_plan(descriptor: Descriptor, building: dict[str, list[_Step]]) -> list[_Step]:
    existing = _PLANS.get(descriptor.full_name) or building.get(descriptor.full_name)
    if existing is not None:  # built, or being built higher up (a recursive message type)
        return existing
    plan = building[descriptor.full_name] = []
    for field in descriptor.fields:
        repeated = field.is_repeated
        target, is_map = field, False
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            target, is_map = field.message_type.fields_by_name["value"], True
        if target.type == FieldDescriptor.TYPE_MESSAGE and target.message_type.full_name in _TIME_TYPES:
            plan.append((field.name, _TIME_TYPES[target.message_type.full_name], repeated, is_map, None))
        elif target.type in _FLOATS:
            plan.append((field.name, "float", repeated, is_map, None))
        elif target.type == FieldDescriptor.TYPE_UINT64:
            plan.append((field.name, "uint64", repeated, is_map, None))
        elif target.type == FieldDescriptor.TYPE_MESSAGE and _may_hold(target.message_type):
            plan.append((field.name, "message", repeated, is_map, _build_plan(target.message_type, building)))
    return plan


@functools.cache
def _may_hold(descriptor: Descriptor, _seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message of this type can hold a limited number anywhere inside."""
    if descriptor.full_name in _TIME_TYPES:
        return True
    seen = _seen | {descriptor.full_name}
    for field in descriptor.fields:
        if field.type in _FLOATS or field.type == FieldDescriptor.TYPE_UINT64:
            return True
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in seen:
            if _may_hold(field.message_type, seen):
                return True
    return False
