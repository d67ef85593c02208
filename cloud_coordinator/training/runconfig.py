"""A job's run_config: the app's ``[tool.flwr.app.config]`` defaults with the job's overrides.

Overrides come from ``--run-config KEY=VALUE`` and from the built-in tabular app's flags
(``--rounds`` is ``num-server-rounds``, ``--strategy`` is ``strategy``, ...). Every key must
be one the app declares: a typo would otherwise be ignored by the app and the operator
would never know. Values keep the declared type (an integer given for a float setting
becomes a float; anything else of the wrong type is refused).
"""

from __future__ import annotations

import math
import tomllib
from typing import Any

from silolink import errors, softmax

from .store import JobSpec

# JobSpec field -> (run_config key, the flag an operator types)
FLAG_KEYS = {
    "rounds": ("num-server-rounds", "--rounds"),
    "strategy": ("strategy", "--strategy"),
    "min_sites": ("min-sites", "--min-sites"),
    "round_timeout_s": ("round-timeout", "--round-timeout"),
    "local_epochs": ("local-epochs", "--local-epochs"),
    "learning_rate": ("lr", "--lr"),
    "proximal_mu": ("proximal-mu", "--proximal-mu"),
    "server_learning_rate": ("server-lr", "--server-lr"),
    "dp_noise_multiplier": ("dp-noise", "--dp-noise"),
    "dp_clipping_norm": ("dp-clip", "--dp-clip"),
    "secure_aggregation": ("secagg", "--secagg"),
    "hidden_units": ("hidden", "--hidden"),
}
STRATEGIES = ("fedavg", "fedprox", "fedadam")
MAX_KEYS = 256
MAX_ROUND_TIMEOUT_S = 7 * 24 * 3600
MAX_STRING = 4096


def value_from_text(text: str) -> bool | int | float | str:
    """A run_config value typed by hand, read as ``flwr run --run-config`` reads it: TOML
    (``5``, ``0.1``, ``true``, ``"text"``); anything else that is not TOML (``64,32``,
    ``fast``) is text. A TOML array or table is refused (InvalidArgument): Flower's run_config
    holds no such values. The coordinator then checks the value against the declared type."""
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if not isinstance(value, bool | int | float | str):
        raise errors.InvalidArgument(f"run_config values are numbers, booleans or text, not {text!r}")
    return value


def overrides(spec: JobSpec) -> dict[str, tuple[Any, str]]:
    """key -> (value, where it came from) for every flag given and every --run-config."""
    out: dict[str, tuple[Any, str]] = {}
    for field, (key, flag) in FLAG_KEYS.items():
        value = getattr(spec, field)
        if not value:  # zero, empty or False: not given
            continue
        if field == "hidden_units":
            value = ",".join(str(units) for units in value)
        out[key] = (value, flag)
    for key, value in spec.run_config.items():
        if key in out and out[key][0] != value:
            raise errors.InvalidArgument(f"run_config {key} is given twice ({out[key][1]} and --run-config)")
        out[key] = (value, f"--run-config {key}")
    return out


def effective(app_ref: str, defaults: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The app's defaults with the job's overrides on top; InvalidArgument for a key the app
    does not declare or a value of the wrong type."""
    if len(spec.run_config) > MAX_KEYS:
        raise errors.InvalidArgument(f"at most {MAX_KEYS} --run-config settings")
    config = dict(defaults)
    for key, (value, source) in overrides(spec).items():
        if key not in defaults:
            declared = ", ".join(sorted(defaults)) or "nothing"
            raise errors.InvalidArgument(
                f"{source}: app {app_ref} does not declare run_config key {key!r} in its [tool.flwr.app.config] "
                f"(it declares: {declared})"
            )
        config[key] = _typed(key, value, defaults[key], source)
    return config


def _typed(key: str, value: Any, default: Any, source: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise errors.InvalidArgument(f"{source}: {key} = {value} is not a finite number")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise errors.InvalidArgument(f"{source}: {key} is longer than {MAX_STRING} characters")
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, int | float):
        return float(value)
    elif isinstance(default, int) and isinstance(value, int):
        return value
    elif isinstance(default, str):
        return value if isinstance(value, str) else str(value)
    raise errors.InvalidArgument(
        f"{source}: {key} is declared as {type(default).__name__} (default {default!r}); {value!r} is not one"
    )


def check_tabular(config: dict[str, Any]) -> None:
    """The built-in tabular apps' settings, checked before the job starts (as the flags were)."""
    strategy = config.get("strategy", "fedavg")
    if strategy not in STRATEGIES:
        raise errors.InvalidArgument(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if not 1 <= config.get("num-server-rounds", 1) <= 10_000:
        raise errors.InvalidArgument("rounds must be between 1 and 10000")
    if config.get("min-sites", 1) < 1:
        raise errors.InvalidArgument("min-sites must be at least 1")
    if config.get("round-timeout", 1.0) <= 0 or config.get("lr", 1.0) <= 0 or config.get("local-epochs", 1) < 1:
        raise errors.InvalidArgument("round timeout, learning rate and local epochs must be positive")
    if config.get("round-timeout", 1.0) > MAX_ROUND_TIMEOUT_S:  # beyond this, the job process's waits overflow
        raise errors.InvalidArgument(f"the round timeout must be at most {MAX_ROUND_TIMEOUT_S} s (7 days)")
    noise, clip = config.get("dp-noise", 0.0), config.get("dp-clip", 0.0)
    if noise < 0 or (noise > 0 and clip <= 0):
        raise errors.InvalidArgument("differential privacy needs a noise multiplier >= 0 and a clipping norm > 0")
    if config.get("secagg"):
        if strategy != "fedavg" or noise > 0:
            raise errors.InvalidArgument("secure aggregation runs with --strategy fedavg and without --dp-noise")
        if config.get("min-sites", 3) < 3:
            raise errors.InvalidArgument(
                "secure aggregation needs --min-sites 3 or more: with two sites each could work out the other's "
                "update from the sum"
            )
    hidden = parse_hidden(str(config.get("hidden", "")))
    if len(hidden) > softmax.MAX_HIDDEN_LAYERS or not all(1 <= u <= softmax.MAX_HIDDEN_UNITS for u in hidden):
        raise errors.InvalidArgument(
            f"hidden layers {hidden}: give at most {softmax.MAX_HIDDEN_LAYERS} layers "
            f"of 1 to {softmax.MAX_HIDDEN_UNITS} units (e.g. --hidden 32)"
        )


def parse_hidden(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise errors.InvalidArgument(f"hidden layers {text!r}: give units per layer, e.g. 64,32") from None
