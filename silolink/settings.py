"""How a setting declares what it may hold, and how a config is loaded and checked.

Every setting of ``silolink.config`` is declared with ``setting(default, ...)``, which
records what is allowed beside the default: a numeric range (both ends required for
numbers; floats must also be finite), a choice set, or a ``Kind`` of string (an address, a
name). Config classes subclass ``Settings``, whose ``__post_init__`` checks every field
against its declaration, so a config built from a file, the environment, a command-line
override (``dataclasses.replace``) or a test is checked the same way. ``load`` names where
a bad value came from: the file and the key with its table, or the environment variable.

A unit test (tests/unit/test_config.py) fails when a setting is declared without a range.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import tomli_w

from silolink.errors import InvalidArgument

T = TypeVar("T")
# Strings and list items longer than this are refused whatever their kind: no setting
# needs more, and a runaway value should not reach a certificate or a log line.
MAX_STRING_CHARS = 1024


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of string setting: a test and the words telling a user what is allowed."""

    test: Callable[[str], bool]
    describe: str


@dataclasses.dataclass(frozen=True)
class Allowed:
    """What one setting may hold (for a list, what each item may hold)."""

    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    kind: Kind | None = None
    fold_case: bool = False  # choices compared case-insensitively (log levels)
    min_items: int = 0
    max_items: int | None = None
    why: str = ""  # appended to the error, when the range alone would puzzle a user

    def describe(self) -> str:
        if self.choices is not None:
            text = "use one of " + ", ".join(str(c) for c in self.choices)
        elif self.kind is not None:
            text = f"use {self.kind.describe}"
        elif self.min is not None and self.max is not None:
            text = f"use a number from {_number(self.min)} to {_number(self.max)}"
        else:
            text = "use true or false"
        if self.max_items is not None:
            text += f" (between {self.min_items} and {self.max_items} items)"
        return f"{text}; {self.why}" if self.why else text

    def problem(self, value: Any, hint: Any) -> str | None:
        """None when ``value`` is allowed, else what is allowed (for the error message)."""
        if typing.get_origin(hint) is tuple:
            if not isinstance(value, tuple) or not self.min_items <= len(value) <= (self.max_items or 0):
                return self.describe()
            (item_hint,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            return next((self.describe() for item in value if self._item_problem(item, item_hint)), None)
        return self.describe() if self._item_problem(value, hint) else None

    def _item_problem(self, value: Any, hint: Any) -> bool:
        if hint is bool:
            return not isinstance(value, bool)
        if hint in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float) if hint is float else int):
                return True
            if hint is float and not math.isfinite(value):
                return True
            return not (self.min is not None and self.max is not None and self.min <= value <= self.max)
        if hint is str:
            if not isinstance(value, str) or len(value) > MAX_STRING_CHARS:
                return True
            if self.choices is not None:
                fold = str.casefold if self.fold_case else str
                return fold(value) not in {fold(c) for c in self.choices}
            return self.kind is not None and not self.kind.test(value)
        return True


def setting(
    default: Any,
    *,
    min: float | None = None,  # noqa: A002 - the natural names in a declaration
    max: float | None = None,  # noqa: A002
    choices: tuple[Any, ...] | None = None,
    kind: Kind | None = None,
    fold_case: bool = False,
    min_items: int = 0,
    max_items: int | None = None,
    why: str = "",
) -> Any:
    """A config field with its default and what it may hold (checked whenever a config is built).

    Numbers need ``min`` and ``max`` (floats are also checked finite); strings need
    ``choices`` or a ``kind``; lists also need ``max_items``; booleans need nothing more.
    """
    sample = default[0] if isinstance(default, tuple) and default else default
    if isinstance(default, tuple) and max_items is None:
        raise TypeError("a list setting needs max_items")
    if isinstance(sample, (int, float)) and not isinstance(sample, bool) and (min is None or max is None):
        raise TypeError("a numeric setting needs both min and max")
    if isinstance(sample, str) and choices is None and kind is None:
        raise TypeError("a string setting needs choices or a kind")
    allowed = Allowed(min, max, choices, kind, fold_case, min_items, max_items, why)
    return dataclasses.field(default=default, metadata={"allowed": allowed})


class SettingError(InvalidArgument):
    """A setting holds a value it may not: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key} = {value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class Settings:
    """Base of every config class: checks each declared setting when an instance is built.

    Subclasses may add ``check()`` for rules across settings (raise ``SettingError``).
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            allowed = f.metadata.get("allowed")
            if allowed is None:
                continue
            value = getattr(self, f.name)
            problem = allowed.problem(value, hints[f.name])
            if problem:
                raise SettingError(f.name, value, problem)
        self.check()

    def check(self) -> None:
        """Rules across settings; the base has none."""

    def require_order(self, low: str, high: str, strict: bool = False, why: str = "") -> None:
        """Refuse ``low`` above ``high`` (or equal to it, when ``strict``)."""
        lo, hi = getattr(self, low), getattr(self, high)
        if lo > hi or (strict and lo == hi):
            allowed = f"use {'less than' if strict else 'at most'} {high} ({_number(hi)})"
            raise SettingError(low, lo, f"{allowed}; {why}" if why else allowed)


def declared(cls: type) -> list[tuple[str, dataclasses.Field]]:
    """Every leaf setting of a config class, as (dotted key, field), nested tables included."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += [(f"{f.name}.{key}", inner) for key, inner in declared(hints[f.name])]
        else:
            out.append((f.name, f))
    return out


# Kinds of string shared by the config tables.
def _is_port(text: str) -> bool:
    return text.isdigit() and int(text) <= 65535


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return bool(re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?", text))


def _is_address(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep) and _is_host(host) and _is_port(port)


def _is_relative_path(text: str) -> bool:
    path = PurePosixPath(text)
    return bool(text) and not path.is_absolute() and ".." not in path.parts and "\0" not in text


ADDRESS = Kind(_is_address, "HOST:PORT (port 0 to 65535)")
ADDRESS_OR_EMPTY = Kind(lambda t: t == "" or _is_address(t), 'HOST:PORT (port 0 to 65535) or "" for none')
HOSTNAME = Kind(_is_host, "a DNS name or an IP address")
LOCAL_ADDRESS = Kind(
    lambda t: (t.startswith("unix:") and len(t) > 5 and "\0" not in t) or _is_address(t),
    '"unix:PATH" or HOST:PORT (port 0 to 65535)',
)
RELATIVE_PATH = Kind(_is_relative_path, "a path inside the data directory (relative, no '..')")


def pattern(regex: str, describe: str) -> Kind:
    """A kind of string matching ``regex`` whole."""
    compiled = re.compile(regex)
    return Kind(lambda t: compiled.fullmatch(t) is not None, describe)


# Loading: TOML, then the environment.


def load(cls: type[T], path: Path | None, env_prefix: str, environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the TOML file at ``path`` (if it exists), then the environment."""
    data: dict[str, Any] = {}
    if path is not None and Path(path).exists():
        try:
            data = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"{path}: not valid TOML: {e}") from None
    environ = os.environ if environ is None else environ
    return _build(cls, data, f"{env_prefix}_", environ, str(path or "defaults"))


def override(cfg: T, source: str = "command line", **overrides: Any) -> T:
    """``cfg`` with the non-None ``overrides`` applied, checked; errors name ``source``."""
    try:
        return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]
    except SettingError as e:
        raise InvalidArgument(f"{source}: {e.message}") from None


def dump(config: Any) -> str:
    """TOML text for a config object (round-trips through ``load``)."""
    return tomli_w.dumps(_plain(dataclasses.asdict(config)))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _build(
    cls: type[T], data: dict[str, Any], prefix: str, environ: Mapping[str, str], where: str, table: str = ""
) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    in_table = f"[{table}] " if table else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidArgument(f"{where}: {in_table}unknown setting(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    sources: dict[str, tuple[str, Any]] = {}  # key -> (where the value came from, raw value)
    for name, hint in hints.items():
        if name not in fields:
            continue
        env_name = (prefix + name).upper()
        if dataclasses.is_dataclass(hint):
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise InvalidArgument(f"{where}: [{name}] must be a table")
            inner_table = f"{table}.{name}" if table else name
            values[name] = _build(hint, section, env_name + "__", environ, where, inner_table)  # type: ignore[arg-type]
            continue
        if env_name in environ:
            sources[name] = (f"environment {env_name}", environ[env_name])
        elif name in data:
            sources[name] = (f"{where}: {in_table}{name}", data[name])
        else:
            continue
        source, raw = sources[name]
        try:
            values[name] = _coerce(hint, raw)
        except (TypeError, ValueError, OverflowError) as e:
            allowed = fields[name].metadata.get("allowed")
            raise InvalidArgument(f"{source} = {raw!r}: {allowed.describe() if allowed else e} ({e})") from None
    try:
        return cls(**values)
    except SettingError as e:
        source, raw = sources.get(e.key, (f"{where}: {in_table}{e.key}", e.value))
        raise InvalidArgument(f"{source} = {raw!r}: {e.allowed}") from None


def _coerce(hint: Any, raw: Any) -> Any:
    """``raw`` (from TOML or an environment string) as ``hint``; ValueError when it is not one."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        items = [s.strip() for s in raw.split(",") if s.strip()] if isinstance(raw, str) else list(raw)
        return tuple(_coerce(item, v) for v in items)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if raw in ("", None) else _coerce(inner[0], raw)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if hint in (int, float):
        expected = "a whole number" if hint is int else "a number"
        if isinstance(raw, bool) or (hint is int and isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"expected {expected}")
        try:
            return hint(raw)
        except ValueError:
            raise ValueError(f"expected {expected}") from None
    if hint is str:
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        return raw
    raise TypeError(f"unsupported setting type {hint}")


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"
