"""Typed, frozen configuration, loaded from TOML and then overridden from the environment.

Each daemon has one file in its data directory (``coordinator.toml``, ``agent.toml``).
Every setting can be overridden by an environment variable named after it:
``SILOLINK_COORDINATOR_HEARTBEAT_INTERVAL_S=5`` or, for a nested table,
``SILOLINK_AGENT_INFERENCE__MAX_BATCH=64``. Units are in the field names.
Capabilities add their own nested tables here, so one file describes a whole daemon.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from silolink.errors import InvalidArgument

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class CoordinatorExchangeConfig:
    """``[exchange]``: the envelope broker's limits."""

    # The largest envelope (plaintext bytes) the broker accepts.
    max_envelope_bytes: int = 1024 * 1024 * 1024
    # Bytes a site may have waiting in the broker as a sender, across its recipients.
    quota_bytes_per_site: int = 4 * 1024 * 1024 * 1024
    # The longest time-to-live a sender may ask for.
    max_ttl_s: int = 7 * 24 * 3600
    # Envelopes up to this many ciphertext bytes are stored in the database, larger ones in files.
    inline_max_bytes: int = 64 * 1024
    # How often expired envelopes are dropped.
    sweep_interval_s: float = 60.0
    # Envelopes committed together at most (group commit: one fsync for many).
    commit_batch_max: int = 4096


@dataclasses.dataclass(frozen=True)
class CoordinatorConfig:
    """Settings of ``cloud-coordinator serve``."""

    # Where agents and operators connect (mTLS).
    listen: str = "0.0.0.0:7443"
    # Where new sites enroll (server TLS only; the one call allowed without a certificate).
    enroll_listen: str = "0.0.0.0:7444"
    # Prometheus metrics over HTTP; empty to disable.
    metrics_listen: str = "127.0.0.1:9464"
    # The addresses sites dial, as printed in enrollment instructions; empty means the
    # first hostname with the port actually bound.
    public_address: str = ""
    # The same for the enrollment address; empty means the first hostname with the enroll port.
    public_enroll_address: str = ""
    # Names and IPs the server certificate covers.
    hostnames: tuple[str, ...] = ("localhost", "127.0.0.1")
    # How often connected agents send a heartbeat (the coordinator tells each agent on connect).
    heartbeat_interval_s: float = 10.0
    # A connected site that sends nothing for this long is disconnected.
    stale_after_s: float = 45.0
    # How long an enrollment token stays valid unless `sites add --token-ttl` says otherwise.
    token_ttl_s: int = 24 * 3600
    # Lifetime of the certificates the CA issues to sites (agents renew them before they expire).
    site_cert_lifetime_s: int = 30 * 24 * 3600
    # Lifetime of operator certificates.
    operator_cert_lifetime_s: int = 365 * 24 * 3600
    # Lifetime of the server certificate; `serve` renews it when a third of it remains.
    server_cert_lifetime_s: int = 365 * 24 * 3600
    # The largest gRPC message sent or received, in bytes.
    max_message_bytes: int = 16 * 1024 * 1024
    # Threads serving RPCs, which is also the limit on calls in flight (each open stream holds one).
    max_workers: int = 256
    # On SIGTERM, how long calls in flight may run before they are cancelled.
    shutdown_grace_s: float = 5.0
    # DEBUG, INFO, WARNING or ERROR (logs never hold payloads, tokens or keys).
    log_level: str = "INFO"
    exchange: CoordinatorExchangeConfig = dataclasses.field(default_factory=CoordinatorExchangeConfig)


@dataclasses.dataclass(frozen=True)
class AgentExchangeConfig:
    """``[exchange]``: this site's keys and what it may send."""

    # HPKE suite of the site's key: MLKEM768_X25519 (hybrid post-quantum) or X25519.
    suite: str = "MLKEM768_X25519"
    # Time-to-live of sent envelopes unless a sender asks otherwise.
    ttl_s: int = 24 * 3600
    # Sites this site may send to; empty allows any site an agreement names.
    allowed_recipients: tuple[str, ...] = ()
    # Purposes this site may send; empty allows any purpose an agreement names.
    allowed_purposes: tuple[str, ...] = ()
    # Where received files go, relative to the data directory.
    inbox_dir: str = "inbox"
    # How long a rotated-out key is kept for envelopes still sealed to it.
    key_retention_s: int = 8 * 24 * 3600
    # How often the agent fetches and verifies new audit entries (and republishes its key).
    audit_poll_s: float = 30.0


# What the coordinator may learn about each dataset in the site's catalog, least first.
SHARE_LEVELS = ("nothing", "name", "schema", "count")


@dataclasses.dataclass(frozen=True)
class CatalogConfig:
    """The site's policy for its catalog (``[catalog]`` in agent.toml)."""

    # nothing | name | schema (name and columns) | count (schema and row count).
    share_with_coordinator: str = "schema"

    def __post_init__(self) -> None:
        if self.share_with_coordinator not in SHARE_LEVELS:
            raise InvalidArgument(
                f"[catalog] share_with_coordinator = {self.share_with_coordinator!r}: "
                f"use one of {', '.join(SHARE_LEVELS)}"
            )


@dataclasses.dataclass(frozen=True)
class AnalyticsConfig:
    """Federated queries this site answers (``[analytics]`` in agent.toml)."""

    # Datasets the site answers queries on: "*" for every dataset in its catalog, [] for none.
    datasets: tuple[str, ...] = ("*",)
    # Refuse any answer computed over fewer rows than this, and any histogram with a bin
    # holding between 1 and min_cohort - 1 rows.
    min_cohort: int = 10
    # Take part only in queries across at least this many sites. With 2, the other site
    # together with the operator could work out this site's value from the total.
    min_sites: int = 2
    # Differential privacy: 0 sends exact values; above 0, discrete Laplace noise calibrated
    # to this epsilon is added to each answer (sum and mean then need clipping bounds).
    epsilon: float = 0.0
    # How long a query's round-1 state waits for round 2 before it is dropped.
    pending_ttl_s: float = 120.0

    def __post_init__(self) -> None:
        if self.min_cohort < 1:
            raise InvalidArgument(f"[analytics] min_cohort = {self.min_cohort}: use 1 or more")
        if self.min_sites < 2:
            raise InvalidArgument(f"[analytics] min_sites = {self.min_sites}: secure aggregation needs 2 or more")
        if not self.epsilon >= 0 or self.epsilon == float("inf"):
            raise InvalidArgument(f"[analytics] epsilon = {self.epsilon}: use 0 (no noise) or a positive number")


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """Model serving on the local API (``[inference]`` in agent.toml)."""

    # Concurrent requests to one model version are run together, up to this many rows.
    batching: bool = True
    # The most rows one batched model run takes.
    max_batch_rows: int = 256
    # How long a batch may wait for more requests before it runs. 0: batches form only
    # from requests that queued while the previous batch ran (no added latency when idle).
    max_batch_wait_ms: float = 0.0
    # Larger requests are refused (use InferStream to score more rows in pieces).
    max_request_rows: int = 65536
    # Model versions kept loaded at once; the least recently used is unloaded first.
    max_loaded_versions: int = 8
    # onnxruntime threads per model run; 0 lets onnxruntime choose (one per core).
    intra_op_threads: int = 0
    # Let idle onnxruntime threads spin (its default): best for large requests; turn off
    # when many models share few cores.
    spin_wait: bool = True


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Which Flower apps may run here, on which datasets (``[training]`` in agent.toml).

    Code never travels from the cloud: a job naming an app or dataset not listed here is
    refused by the site.
    """

    # "tabular" and "tabular-secagg" (built in) or "NAME=package.module:attribute" for a
    # ClientApp installed here.
    apps: tuple[str, ...] = ("tabular", "tabular-secagg")
    # Catalog datasets jobs may train on; none by default.
    datasets: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    """Models rolled out from the coordinator's registry (``[registry]`` in agent.toml)."""

    # Hold each verified model until `edge-agent models approve NAME:VERSION` (change control).
    require_approval: bool = False
    # A broken download resumes from its last byte, up to this many times, with backoff.
    download_retries: int = 8
    # The first delay before a download is retried, doubled up to retry_max_s.
    retry_initial_s: float = 0.5
    # The longest delay between download retries.
    retry_max_s: float = 30.0


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Settings of ``edge-agent run``."""

    # The site name, as enrolled (also in the certificate, which is what counts).
    site: str = ""
    # The coordinator's mTLS address.
    coordinator: str = ""
    # The local API for site systems: "unix:PATH" (relative to the data directory) or
    # "HOST:PORT". Non-loopback addresses need allow_remote_local_api.
    local_listen: str = "unix:agent.sock"
    # Allow a local API address that is not loopback (the local API has no TLS: only on a trusted network).
    allow_remote_local_api: bool = False
    # Reconnection backoff of the control stream: the first delay, doubled (with jitter) up to the max.
    reconnect_initial_s: float = 0.5
    # The longest delay between reconnection attempts.
    reconnect_max_s: float = 30.0
    # Renew the site certificate when less than this fraction of its lifetime remains.
    renew_remaining_fraction: float = 0.33
    # The largest gRPC message sent or received, in bytes.
    max_message_bytes: int = 16 * 1024 * 1024
    # Threads serving the local API; concurrent Infer calls each hold one while batched.
    local_max_workers: int = 64
    # On SIGTERM, how long local API calls in flight may run before they are cancelled.
    shutdown_grace_s: float = 5.0
    # DEBUG, INFO, WARNING or ERROR (logs never hold payloads, rows or keys).
    log_level: str = "INFO"
    # Prometheus metrics over HTTP (RPCs, inference, the control link), e.g.
    # "127.0.0.1:9465"; empty (the default) opens no port.
    metrics_listen: str = ""
    catalog: CatalogConfig = dataclasses.field(default_factory=CatalogConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    exchange: AgentExchangeConfig = dataclasses.field(default_factory=AgentExchangeConfig)
    analytics: AnalyticsConfig = dataclasses.field(default_factory=AnalyticsConfig)
    registry: RegistryConfig = dataclasses.field(default_factory=RegistryConfig)


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


def dump(config: Any) -> str:
    """TOML text for a config object (round-trips through ``load``)."""
    return tomli_w.dumps(_plain(dataclasses.asdict(config)))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str, environ: Mapping[str, str], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidArgument(f"{where}: unknown setting(s) {', '.join(unknown)} for {cls.__name__}")
    values: dict[str, Any] = {}
    for name, hint in hints.items():
        if name not in fields:
            continue
        env_name = (prefix + name).upper()
        if dataclasses.is_dataclass(hint):
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise InvalidArgument(f"{where}: [{name}] must be a table")
            values[name] = _build(hint, section, env_name + "__", environ, f"{where} [{name}]")  # type: ignore[arg-type]
        elif env_name in environ:
            values[name] = _coerce(hint, environ[env_name], env_name)
        elif name in data:
            values[name] = _coerce(hint, data[name], f"{where}: {name}")
    return cls(**values)


def _coerce(hint: Any, raw: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            items = [s.strip() for s in raw.split(",") if s.strip()] if isinstance(raw, str) else list(raw)
            return tuple(_coerce(item, v, where) for v in items)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            return None if raw in ("", None) else _coerce(inner[0], raw, where)
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if hint in (int, float):
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            return hint(raw)
        if hint is str:
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            return raw
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{where}: {raw!r} is not a valid {getattr(hint, '__name__', hint)}: {e}") from None
    raise InvalidArgument(f"{where}: unsupported setting type {hint}")
