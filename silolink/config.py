"""Typed, frozen configuration, loaded from TOML and then overridden from the environment.

Each daemon has one file in its data directory (``coordinator.toml``, ``agent.toml``).
Every setting can be overridden by an environment variable named after it:
``SILOLINK_COORDINATOR_HEARTBEAT_INTERVAL_S=5`` or, for a nested table,
``SILOLINK_AGENT_INFERENCE__MAX_BATCH=64``. Units are in the field names.
Capabilities add their own nested tables here, so one file describes a whole daemon.

Every setting declares what it may hold, with its default (``silolink.settings``):

    max_batch_rows: int = setting(256, min=1, max=1_000_000)
    log_level: str = setting("INFO", choices=LOG_LEVELS, fold_case=True)
    listen: str = setting("0.0.0.0:7443", kind=ADDRESS)

and every table subclasses ``Settings``; a bad value is then refused when the config is
built, in one line naming the file, the key with its table, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses

from silolink.envelope import PURPOSE_RE, SUITES
from silolink.identity import SITE_NAME_RE
from silolink.settings import (
    ADDRESS,
    ADDRESS_OR_EMPTY,
    HOSTNAME,
    LOCAL_ADDRESS,
    RELATIVE_PATH,
    Kind,
    SettingError,
    Settings,
    dump,
    load,
    override,
    pattern,
    setting,
)
from silolink.settings import _build as _build  # noqa: F401 - for tests of nested tables

__all__ = ["Settings", "SettingError", "dump", "load", "override", "setting"]

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4
DAY = 24 * 3600
YEAR = 365 * DAY
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# gRPC takes message limits as a C int.
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1
SITE_NAME = Kind(lambda t: SITE_NAME_RE.fullmatch(t) is not None, "a site name (lowercase letters, digits, '-')")
SITE_NAME_OR_EMPTY = Kind(lambda t: t == "" or SITE_NAME.test(t), 'a site name or "" before enrollment')
PURPOSE = Kind(lambda t: PURPOSE_RE.fullmatch(t) is not None, "a purpose (lowercase letters, digits, '.', '_', '-')")
# Catalog dataset names, as edge_agent/catalog names them.
SQL_DIALECT = pattern(r"[a-z][a-z0-9_]{0,31}", 'a SQLAlchemy dialect name, such as "mssql"')
ENV_NAME = pattern(r"[A-Za-z_][A-Za-z0-9_]{0,127}", "an environment variable's name")
DATASET = pattern(r"[A-Za-z][A-Za-z0-9_]{0,62}", "a dataset name (a letter, then letters, digits, '_')")
DATASET_OR_ALL = pattern(r"\*|[A-Za-z][A-Za-z0-9_]{0,62}", '"*" (every dataset) or a dataset name')
SENSITIVE_FOR_APP = pattern(
    r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}=[A-Za-z][A-Za-z0-9_]{0,62}\.[^\s]{1,200}",
    "APP=DATASET.COLUMN (an app allowed one sensitive column of a dataset)",
)
APP = pattern(
    r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}(=[A-Za-z_][\w.]*:[A-Za-z_]\w*)?",
    'a built-in app name or "NAME=package.module:attribute"',
)


@dataclasses.dataclass(frozen=True)
class CoordinatorExchangeConfig(Settings):
    """``[exchange]``: the envelope broker's limits."""

    # The largest envelope (plaintext bytes) the broker accepts.
    max_envelope_bytes: int = setting(1 * GiB, min=1 * KiB, max=64 * GiB)
    # Bytes a site may have waiting in the broker as a sender, across its recipients.
    quota_bytes_per_site: int = setting(4 * GiB, min=1 * KiB, max=16 * TiB)
    # The longest time-to-live a sender may ask for.
    max_ttl_s: int = setting(7 * DAY, min=1, max=YEAR)
    # Envelopes up to this many ciphertext bytes are stored in the database, larger ones in files.
    inline_max_bytes: int = setting(64 * KiB, min=0, max=16 * MiB)
    # How often expired envelopes are dropped.
    sweep_interval_s: float = setting(60.0, min=0.05, max=DAY)
    # Envelopes committed together at most (group commit: one fsync for many).
    commit_batch_max: int = setting(4096, min=1, max=1_000_000)


@dataclasses.dataclass(frozen=True)
class CoordinatorAppsConfig(Settings):
    """``[apps]``: what a Flower App Bundle may weigh (Flower's own limits by default)."""

    # The largest .fab accepted (Flower's own FAB limit is 10 MiB).
    max_bundle_bytes: int = setting(10 * MiB, min=1 * KiB, max=1 * GiB)
    # The most bytes a bundle may unpack to (a zip bomb declares small sizes it then exceeds).
    max_unpacked_bytes: int = setting(64 * MiB, min=1 * KiB, max=4 * GiB)
    # The most files a bundle may hold.
    max_files: int = setting(1000, min=1, max=100_000)


@dataclasses.dataclass(frozen=True)
class CoordinatorTrainingConfig(Settings):
    """``[training]``: training jobs (each runs the app's ServerApp in a process of its own)."""

    # How long a job's ServerApp may run, unless the job sets --timeout.
    default_timeout_s: float = setting(float(DAY), min=1.0, max=30.0 * DAY)
    # A job process that finds its coordinator gone exits within about this time.
    orphan_check_s: float = setting(0.5, min=0.05, max=60.0)


@dataclasses.dataclass(frozen=True)
class AccountsConfig(Settings):
    """``[accounts]``: operator accounts, console sessions and failed-login limits."""

    # How long a setup code from `users add` stays valid.
    setup_ttl_s: int = setting(DAY, min=60, max=30 * DAY)
    # A console session ends after this long without a request...
    session_idle_s: float = setting(1800.0, min=1, max=DAY)
    # ...and after this long in any case.
    session_max_s: float = setting(12 * 3600.0, min=1, max=7 * DAY)
    # Failed console logins for one account or from one address within login_window_s
    # that lock further attempts out for login_lockout_s.
    login_max_failures: int = setting(5, min=1, max=100)
    # The window in which failed logins are counted.
    login_window_s: float = setting(300.0, min=1, max=DAY)
    # How long logins stay refused after too many failures.
    login_lockout_s: float = setting(60.0, min=1, max=DAY)


@dataclasses.dataclass(frozen=True)
class ConsoleConfig(Settings):
    """``[console]``: the web console (HTTPS with the coordinator's certificate)."""

    # Serve the console; without `listen` it listens on loopback only (127.0.0.1:7445).
    enabled: bool = setting(False)
    # Where the console listens, e.g. "127.0.0.1:7445"; setting it also turns the console on.
    # A non-loopback address opens the login page to that network: keep it behind your VPN.
    listen: str = setting("", kind=ADDRESS_OR_EMPTY)
    # How often live values on a page refresh.
    refresh_s: float = setting(2.0, min=0.2, max=60)

    @property
    def address(self) -> str:
        """Where the console listens; "" when it is off."""
        if self.listen:
            return self.listen
        return DEFAULT_CONSOLE_LISTEN if self.enabled else ""


DEFAULT_CONSOLE_LISTEN = "127.0.0.1:7445"


def console_listen(text: str) -> str:
    """``--console-listen`` as typed: a bare port (``7445``) or ``:PORT`` means loopback,
    so that turning the console on never opens it to the network by accident."""
    text = text.strip()
    if text.isdigit():
        return f"127.0.0.1:{text}"
    if text.startswith(":"):
        return f"127.0.0.1{text}"
    return text


@dataclasses.dataclass(frozen=True)
class CoordinatorAnalyticsConfig(Settings):
    """``[analytics]``: the coordinator's history of federated queries (totals only)."""

    # Queries kept in the history; the oldest are deleted past this many.
    history_max_entries: int = setting(10_000, min=100, max=10_000_000)
    # Queries older than this are deleted from the history.
    history_max_age_s: int = setting(365 * DAY, min=3600, max=10 * YEAR)


@dataclasses.dataclass(frozen=True)
class CoordinatorSitesConfig(Settings):
    """``[sites]``: what the coordinator keeps of each site's resource reports over time."""

    # Sites' resource reports over time: one sample per interval (the first heartbeat of
    # each), kept in memory for the console's charts and GetSite.
    resource_interval_s: float = setting(60.0, min=0.1, max=DAY)
    # Samples kept per site (360 at 60 s: six hours); 0 keeps none. Each costs 20 bytes,
    # so 10,000 sites at 360 take about 72 MB (python -m bench.site_history).
    resource_samples: int = setting(360, min=0, max=100_000)


@dataclasses.dataclass(frozen=True)
class CoordinatorLimitsConfig(Settings):
    """``[limits]``: how much of each kind of work the coordinator takes on at once.

    Calls are served in classes, each with threads of its own (for sync handlers) and a
    limit on calls in flight; a call beyond its class's limit is answered
    RESOURCE_EXHAUSTED at once (agents retry with backoff), and never takes another
    class's place. Control streams are coroutines: they need no threads.
    """

    # Agent control streams held open at once.
    control_streams: int = setting(20000, min=1, max=1_000_000)
    # New control streams admitted per second; more wait their turn, so a reconnect storm
    # after a restart is taken in at this pace.
    admit_per_s: float = setting(1000.0, min=1, max=100_000)
    # New control streams admitted at once before the rate applies.
    admit_burst: int = setting(200, min=1, max=100_000)
    # Threads for operator calls (admin API, registry, training, ...).
    operator_threads: int = setting(8, min=1, max=256)
    # Operator calls in flight at once.
    operator_calls: int = setting(64, min=1, max=10_000)
    # Threads for agents' short calls (status reports, keys, renewals).
    agent_threads: int = setting(16, min=1, max=256)
    # Agents' short calls in flight at once.
    agent_calls: int = setting(2048, min=1, max=100_000)
    # Threads for agents' streams (model downloads, envelope uploads and fetches).
    bulk_threads: int = setting(16, min=1, max=256)
    # Agents' streams in flight at once.
    bulk_calls: int = setting(256, min=1, max=100_000)
    # Health and reflection calls in flight on the mTLS port.
    probe_calls: int = setting(64, min=1, max=10_000)
    # Threads for Enroll calls on the anonymous enrollment port.
    enroll_threads: int = setting(4, min=1, max=64)
    # Enroll calls in flight at once.
    enroll_calls: int = setting(32, min=1, max=10_000)
    # Health and reflection calls in flight on the enrollment port.
    enroll_probe_calls: int = setting(16, min=1, max=10_000)
    # How often heartbeats held in memory are written to the database (one transaction).
    presence_flush_s: float = setting(2.0, min=0.05, max=300)
    # Control streams opened or closed (at least; or a tenth of those open) before the
    # coordinator, once they settle, freezes the objects they hold out of Python's full
    # garbage collections (cloud_coordinator/control/gc_policy.py); 0 never does.
    gc_freeze_after_streams: int = setting(1000, min=0, max=10_000_000)
    # Sites a rollout is delivered to at once: each holds its slot until it has the model
    # (or fails, or leaves); the rest wait their turn.
    rollout_concurrency: int = setting(64, min=1, max=100_000)
    # A site that holds a delivery slot this long gives it up to the next site.
    rollout_slot_timeout_s: float = setting(300.0, min=1, max=DAY)
    # How long each round of a secure query waits for every site's answer.
    query_round_timeout_s: float = setting(60.0, min=1, max=DAY)


@dataclasses.dataclass(frozen=True)
class SchedulingConfig(Settings):
    """The work queue (``[scheduling]`` in coordinator.toml)."""

    # Count what heartbeats say others use (load average, memory in use) against a site's
    # room; false schedules by what sites declare alone (hosts shared with other work).
    heartbeat_load: bool = setting(True)
    # How often the queue looks for work to place when nothing else wakes it.
    tick_s: float = setting(1.0, min=0.05, max=600.0)
    # How long a site may take to answer an offer before it counts as a no.
    offer_timeout_s: float = setting(10.0, min=0.1, max=600.0)
    # How long a declining site is skipped for that job.
    decline_cooldown_s: float = setting(600.0, min=0.0, max=DAY)


@dataclasses.dataclass(frozen=True)
class CoordinatorConfig(Settings):
    """Settings of ``cloud-coordinator serve``."""

    # Where agents and operators connect (mTLS).
    listen: str = setting("0.0.0.0:7443", kind=ADDRESS)
    # Where new sites enroll (server TLS only; the one call allowed without a certificate).
    # Empty: the host of listen and the next port (7444 by default), which is where
    # `edge-agent enroll` looks unless given --enroll-address.
    enroll_listen: str = setting("", kind=ADDRESS_OR_EMPTY)
    # Prometheus metrics over HTTP; empty to disable.
    metrics_listen: str = setting("127.0.0.1:9464", kind=ADDRESS_OR_EMPTY)
    # The addresses sites dial, as printed in enrollment instructions; empty means the
    # first hostname with the port actually bound.
    public_address: str = setting("", kind=ADDRESS_OR_EMPTY)
    # The same for the enrollment address; empty means the first hostname with the enroll port.
    public_enroll_address: str = setting("", kind=ADDRESS_OR_EMPTY)
    # Names and IPs the server certificate covers.
    hostnames: tuple[str, ...] = setting(("localhost", "127.0.0.1"), kind=HOSTNAME, min_items=1, max_items=64)
    # How often connected sites send a heartbeat (the coordinator tells them).
    heartbeat_interval_s: float = setting(10.0, min=0.05, max=3600)
    # A connected site that sends nothing for this long is disconnected.
    stale_after_s: float = setting(45.0, min=0.1, max=DAY)
    # How long an enrollment token stays valid.
    token_ttl_s: int = setting(DAY, min=60, max=30 * DAY)
    # Lifetime of the certificates the CA issues to sites (agents renew them before they expire).
    site_cert_lifetime_s: int = setting(30 * DAY, min=1, max=5 * YEAR)
    # Lifetime of operator certificates.
    operator_cert_lifetime_s: int = setting(YEAR, min=60, max=10 * YEAR)
    # Lifetime of the server certificate; `serve` renews it when a third of it remains.
    server_cert_lifetime_s: int = setting(YEAR, min=60, max=10 * YEAR)
    # The largest gRPC message sent or received, in bytes.
    max_message_bytes: int = setting(16 * MiB, min=4 * KiB, max=MAX_GRPC_MESSAGE_BYTES)
    # No longer used (the [limits] table sizes each class of calls); kept so that older
    # coordinator.toml files still load.
    max_workers: int = setting(256, min=1, max=65536)
    # How long in-flight calls may finish after SIGTERM.
    shutdown_grace_s: float = setting(5.0, min=0, max=3600)
    # How much the coordinator logs (logs never hold payloads, tokens or keys).
    log_level: str = setting("INFO", choices=LOG_LEVELS, fold_case=True)
    exchange: CoordinatorExchangeConfig = dataclasses.field(default_factory=CoordinatorExchangeConfig)
    apps: CoordinatorAppsConfig = dataclasses.field(default_factory=CoordinatorAppsConfig)
    training: CoordinatorTrainingConfig = dataclasses.field(default_factory=CoordinatorTrainingConfig)
    limits: CoordinatorLimitsConfig = dataclasses.field(default_factory=CoordinatorLimitsConfig)
    scheduling: SchedulingConfig = dataclasses.field(default_factory=SchedulingConfig)
    accounts: AccountsConfig = dataclasses.field(default_factory=AccountsConfig)
    console: ConsoleConfig = dataclasses.field(default_factory=ConsoleConfig)
    analytics: CoordinatorAnalyticsConfig = dataclasses.field(default_factory=CoordinatorAnalyticsConfig)
    sites: CoordinatorSitesConfig = dataclasses.field(default_factory=CoordinatorSitesConfig)

    def check(self) -> None:
        self.require_order("heartbeat_interval_s", "stale_after_s", strict=True, why="or connected sites flap")
        if not self.enroll_listen and self.listen.endswith(":65535"):
            raise SettingError("enroll_listen", "", "set it: the port after listen's 65535 does not exist")

    @property
    def enroll_bind(self) -> str:
        """The address the enrollment listener binds: ``enroll_listen``, or its default."""
        return self.enroll_listen or default_enroll_address(self.listen)


def default_enroll_address(address: str) -> str:
    """The enrollment listener of a coordinator whose mTLS listener is ``address``: the same
    host, the next port (port 0, any free port, stays 0). The coordinator binds it and
    `edge-agent enroll` dials it by default, so the two always agree."""
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + 1 if int(port) else 0}"


@dataclasses.dataclass(frozen=True)
class AgentExchangeConfig(Settings):
    """``[exchange]``: this site's keys and what it may send."""

    # HPKE suite of the site's key: MLKEM768_X25519 (hybrid post-quantum) or X25519.
    suite: str = setting("MLKEM768_X25519", choices=tuple(SUITES))
    # Time-to-live of sent envelopes unless a sender asks otherwise.
    ttl_s: int = setting(DAY, min=1, max=YEAR)
    # Sites this site may send to; empty allows any site an agreement names.
    allowed_recipients: tuple[str, ...] = setting((), kind=SITE_NAME, max_items=100_000)
    # Purposes this site may send; empty allows any purpose an agreement names.
    allowed_purposes: tuple[str, ...] = setting((), kind=PURPOSE, max_items=10_000)
    # Where received files go, relative to the data directory.
    inbox_dir: str = setting("inbox", kind=RELATIVE_PATH)
    # How long a rotated-out key is kept for envelopes still sealed to it.
    key_retention_s: int = setting(8 * DAY, min=0, max=2 * YEAR)
    # How often the agent fetches and verifies new audit entries (and republishes its key).
    audit_poll_s: float = setting(30.0, min=0.05, max=DAY)


# What the coordinator may learn about each dataset in the site's catalog, least first.
SHARE_LEVELS = ("nothing", "name", "schema", "count")


@dataclasses.dataclass(frozen=True)
class CatalogConfig(Settings):
    """The site's policy for its catalog (``[catalog]`` in agent.toml)."""

    # nothing | name | schema (name and columns) | count (schema and row count).
    share_with_coordinator: str = setting("schema", choices=SHARE_LEVELS)
    # Sensitive columns an app may still read, as "APP=DATASET.COLUMN" (none by default):
    # a column marked sensitive (edge-agent data sensitive) is hidden from every other app.
    sensitive_for_apps: tuple[str, ...] = setting((), kind=SENSITIVE_FOR_APP, max_items=10_000)
    # SQLAlchemy dialects ("mssql", "oracle", ...) whose databases this site reads although
    # silolink cannot make their sessions read-only (it can for postgresql, mysql, mariadb
    # and sqlite). Empty by default: such a source is refused. Allow one only for a database
    # account that may do nothing but read (SQL Server: db_datareader, no other role).
    sql_without_read_only: tuple[str, ...] = setting((), kind=SQL_DIALECT, max_items=50)


@dataclasses.dataclass(frozen=True)
class AnalyticsConfig(Settings):
    """Federated queries this site answers (``[analytics]`` in agent.toml)."""

    # Datasets the site answers queries on: "*" for every dataset in its catalog, [] for none.
    datasets: tuple[str, ...] = setting(("*",), kind=DATASET_OR_ALL, max_items=10_000)
    # Refuse any answer computed over fewer rows than this, and any histogram with a bin
    # holding between 1 and min_cohort - 1 rows.
    min_cohort: int = setting(10, min=1, max=1_000_000_000)
    # Take part only in queries across at least this many sites. With 2, the other site
    # together with the operator could work out this site's value from the total.
    min_sites: int = setting(2, min=2, max=100_000, why="secure aggregation needs 2 or more")
    # Differential privacy: 0 sends exact values; above 0, discrete Laplace noise calibrated
    # to this epsilon is added to each answer (sum and mean then need clipping bounds).
    epsilon: float = setting(0.0, min=0.0, max=1000.0, why="0 means no noise")
    # How long a query's round-1 state waits for round 2 before it is dropped.
    pending_ttl_s: float = setting(120.0, min=0.1, max=DAY)


@dataclasses.dataclass(frozen=True)
class SiteStudiesConfig(Settings):
    """How this site takes queued work of its studies (``[studies]`` in agent.toml)."""

    # Decline a job offered from the queue while the host's one-minute load average per CPU
    # is above this (the site is busy with its own work); the scheduler places it elsewhere.
    busy_load_per_cpu: float = setting(2.0, min=0.0, max=1000.0)


@dataclasses.dataclass(frozen=True)
class InferenceConfig(Settings):
    """Model serving on the local API (``[inference]`` in agent.toml)."""

    # Concurrent requests to one model version are run together, up to this many rows.
    batching: bool = setting(True)
    # The most rows one batched model run takes.
    max_batch_rows: int = setting(256, min=1, max=1_000_000)
    # How long a batch may wait for more requests before it runs. 0: batches form only
    # from requests that queued while the previous batch ran (no added latency when idle).
    max_batch_wait_ms: float = setting(0.0, min=0.0, max=10_000.0)
    # Larger requests are refused (use InferStream to score more rows in pieces).
    max_request_rows: int = setting(65536, min=1, max=100_000_000)
    # Model versions kept loaded at once; the least recently used is unloaded first.
    max_loaded_versions: int = setting(8, min=1, max=1024)
    # onnxruntime threads per model run; 0 lets onnxruntime choose (one per core).
    intra_op_threads: int = setting(0, min=0, max=1024)
    # Let idle onnxruntime threads spin (its default): best for large requests; turn off
    # when many models share few cores.
    spin_wait: bool = setting(True)


@dataclasses.dataclass(frozen=True)
class TrainingConfig(Settings):
    """Which Flower apps may run here, on which datasets (``[training]`` in agent.toml).

    Code never travels from the cloud: a job naming an app or dataset not listed here is
    refused by the site.
    """

    # Apps that run from code already in the agent's environment: "tabular" and
    # "tabular-secagg" (built in) or "NAME=package.module:attribute". Apps installed with
    # `edge-agent apps install|approve` are allowed by that approval and need no entry here.
    apps: tuple[str, ...] = setting(("tabular", "tabular-secagg"), kind=APP, max_items=1000)
    # Catalog datasets jobs may train on; none by default.
    datasets: tuple[str, ...] = setting((), kind=DATASET, max_items=10_000)
    # The longest one Flower message may run in a ClientApp; a job's own timeout cuts it
    # shorter. The app's worker process is then stopped (its state is unknown).
    message_timeout_s: float = setting(600.0, min=1, max=DAY)
    # A job's ClientApp worker process ends after this long without a message.
    worker_idle_s: float = setting(900.0, min=10, max=DAY)
    # ClientApp worker processes at once; one per running job.
    max_workers: int = setting(8, min=1, max=64)
    # Environment variables a ClientApp keeps beyond the built-in few (locale, PATH, HOME,
    # temp dir, thread and GPU settings): the rest of the agent's environment, where its
    # secrets may be, is removed before an app's code runs.
    app_environment: tuple[str, ...] = setting((), kind=ENV_NAME, max_items=100)


@dataclasses.dataclass(frozen=True)
class AppsConfig(Settings):
    """Flower app bundles this site installs (``[apps]`` in agent.toml)."""

    # The largest .fab accepted (Flower's own limit is 10 MiB).
    max_bundle_bytes: int = setting(10 * 1024 * 1024, min=1024, max=1024**3)
    # The most bytes a bundle may unpack to (a small zip can declare large files).
    max_unpacked_bytes: int = setting(64 * 1024 * 1024, min=1024, max=4 * 1024**3)
    # The most files a bundle may hold (Flower's own limit is 1000).
    max_files: int = setting(1000, min=1, max=100_000)


@dataclasses.dataclass(frozen=True)
class RegistryConfig(Settings):
    """Models rolled out from the coordinator's registry (``[registry]`` in agent.toml)."""

    # Hold each verified model until `edge-agent models approve NAME:VERSION` (change control).
    require_approval: bool = setting(False)
    # A download the coordinator's stream cut short resumes from its last byte, up to this
    # many times in a row before the order fails. A busy or unreachable coordinator
    # (RESOURCE_EXHAUSTED, UNAVAILABLE) is waited out without limit.
    download_retries: int = setting(8, min=0, max=1000)
    # Backoff between retries (downloads and status reports): first delay, then doubling.
    retry_initial_s: float = setting(0.5, min=0.01, max=3600)
    # The longest delay between retries.
    retry_max_s: float = setting(30.0, min=0.01, max=DAY)

    def check(self) -> None:
        self.require_order("retry_initial_s", "retry_max_s")


@dataclasses.dataclass(frozen=True)
class AgentConfig(Settings):
    """Settings of ``edge-agent run``."""

    # The site name, as enrolled (also in the certificate, which is what counts).
    site: str = setting("", kind=SITE_NAME_OR_EMPTY)
    # The coordinator's mTLS address.
    coordinator: str = setting("", kind=ADDRESS_OR_EMPTY)
    # The local API for site systems: "unix:PATH" (relative to the data directory) or
    # "HOST:PORT". Non-loopback addresses need allow_remote_local_api.
    local_listen: str = setting("unix:agent.sock", kind=LOCAL_ADDRESS)
    # Allow a local API address that is not loopback (the local API has no TLS: only on a trusted network).
    allow_remote_local_api: bool = setting(False)
    # Backoff between attempts to reach the coordinator: doubles from initial to max.
    reconnect_initial_s: float = setting(0.5, min=0.01, max=3600)
    # The longest delay between reconnection attempts.
    reconnect_max_s: float = setting(30.0, min=0.01, max=DAY)
    # Renew the site certificate when less than this fraction of its lifetime remains.
    renew_remaining_fraction: float = setting(0.33, min=0.01, max=0.99)
    # The largest gRPC message sent or received, in bytes.
    max_message_bytes: int = setting(16 * MiB, min=4 * KiB, max=MAX_GRPC_MESSAGE_BYTES)
    # Threads serving the local API; concurrent Infer calls each hold one while batched.
    local_max_workers: int = setting(64, min=1, max=65536)
    # How long in-flight local calls may finish after SIGTERM.
    shutdown_grace_s: float = setting(5.0, min=0, max=3600)
    # How much the agent logs (logs never hold payloads, rows or keys).
    log_level: str = setting("INFO", choices=LOG_LEVELS, fold_case=True)
    # Prometheus metrics over HTTP (RPCs, inference, the control link), e.g.
    # "127.0.0.1:9465"; empty (the default) opens no port.
    metrics_listen: str = setting("", kind=ADDRESS_OR_EMPTY)
    catalog: CatalogConfig = dataclasses.field(default_factory=CatalogConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    exchange: AgentExchangeConfig = dataclasses.field(default_factory=AgentExchangeConfig)
    analytics: AnalyticsConfig = dataclasses.field(default_factory=AnalyticsConfig)
    registry: RegistryConfig = dataclasses.field(default_factory=RegistryConfig)
    apps: AppsConfig = dataclasses.field(default_factory=AppsConfig)
    studies: SiteStudiesConfig = dataclasses.field(default_factory=SiteStudiesConfig)

    def check(self) -> None:
        self.require_order("reconnect_initial_s", "reconnect_max_s")
