"""A fleet of sites on one coordinator, measured from outside.

    python -m bench.fleet [--quick] [--sites N] [--procs P] [--heartbeat-s S]

N simulated agents (``bench.fleet_sim``, P processes of grpc.aio clients) each with its
own certificate (issued by the coordinator's CA through its real enrollment code) and its
own TLS connection speak the real control protocol from ``proto/`` to a real
``cloud-coordinator serve`` process. Beside it, in the same run, the floor: the same
simulated agents against a bare grpc.aio server (``bench.fleet_floor``) that holds the
streams and reads heartbeats, with the same mutual TLS and nothing else.

Measured, for both where it applies (ratios are coordinator / floor):
- the time for all N to connect (Welcome received);
- the server's CPU (share of one core) and RSS over a steady window at the heartbeat
  interval (the coordinator's default, 10 s; --quick 1 s);
- heartbeat delay p50/p99, agent send (its ``sent_at``) to the server's record (the
  coordinator's ``silolink_heartbeat_delay_seconds`` histogram, diffed over the window);
- operator ``ListSites`` p50/p99 under that load;
- a rollout of a 5 MB model to 1,000 sites (--quick: all), and to all N: from the call
  until every site reported it active (each site checks the signed manifest, downloads
  and checks the SHA-256);
- a secure count over 1,000 sites and over all N (real keys, signatures, sparse masks),
  checked against the known total;
- a reconnect storm: the coordinator stopped (SIGTERM) and started again on the same
  ports; the time until every site is back, and how many healthy sites the coordinator
  ever dropped as silent.
Targets (issue 14, 10,000 sites on 2 cores): heartbeat p99 < 100 ms, ListSites p99 <
250 ms, idle CPU < 25% of a core, RSS < 1.5 GB, rollout to 1,000 < 60 s, count over
1,000 < 10 s, every site back within 60 s of a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from bench.common import median, percentile, report, wait_for_file
from cloud_coordinator import bootstrap
from cloud_coordinator.analytics.client import AnalyticsClient
from cloud_coordinator.audit.store import AuditLog
from cloud_coordinator.layout import CoordinatorLayout
from cloud_coordinator.operator_client import OperatorClient, OperatorCredentials
from cloud_coordinator.registry.client import RegistryClient
from cloud_coordinator.sites.service import SiteService
from cloud_coordinator.sites.store import SiteStore
from silolink import pki
from silolink.db import lock_of, open_database
from silolink.gen.admin.v1 import admin_pb2, admin_pb2_grpc
from silolink.polling import wait_for
from tests.onnx_builders import mlp_model

FIRST_GROUP = 1000  # sites tagged group=first: the 1,000-site rollout and query
MODEL_SIZES = [1024, 1280, 2]  # float32 weights: a 5.2 MB ONNX model


def provision(data_dir: Path, count: int, sites_file: Path) -> float:
    """A coordinator data directory with ``count`` enrolled sites (the coordinator's own
    site service: one-time token, a CSR from a fresh key, a certificate from its CA), and
    the sites' keys and certificates for the simulators. Returns the seconds it took."""
    start = time.perf_counter()
    bootstrap.init(data_dir, ["localhost", "127.0.0.1"])
    layout = CoordinatorLayout(data_dir)
    db = open_database(layout.database)
    lock = lock_of(db)
    audit = AuditLog(db, bootstrap.load_audit_key(layout), time.time, lock=lock)
    store = SiteStore(db, lock)
    sites = SiteService(store, bootstrap.load_ca(layout), audit, token_ttl_s=3600, site_cert_lifetime_s=90 * 86400)
    with sites_file.open("w") as out:
        out.write(json.dumps({"ca_pem": layout.ca_cert.read_text()}) + "\n")
        for batch in range(0, count, 500):
            with store.atomic():  # one commit per 500 sites
                for i in range(batch, min(count, batch + 500)):
                    name = f"site-{i:05d}"
                    issued = sites.add_site(name, "factory", {"group": "first" if i < FIRST_GROUP else "rest"})
                    key = pki.generate_key()
                    enrolled = sites.enroll(issued.token, pki.make_csr(key, name), "sim")
                    out.write(json.dumps({"name": name, "key_pem": pki.key_to_pem(key).decode(),
                                          "cert_pem": enrolled.certificate_pem.decode()}) + "\n")  # fmt: skip
    db.close()
    return time.perf_counter() - start


class Sims:
    """P simulator processes; their latest counters, summed."""

    def __init__(self, address: str, sites_file: Path, count: int, procs: int, logs: Path) -> None:
        self.started = time.monotonic()
        self.procs: list[subprocess.Popen] = []
        self.latest: list[dict] = []
        per = -(-count // procs)
        for p in range(procs):
            first, n = p * per, min(per, count - p * per)
            if n <= 0:
                break
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.fleet_sim", address, str(sites_file), str(first), str(n)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(logs / f"sim-{p}.log").open("ab"), text=True,
            )  # fmt: skip
            self.procs.append(proc)
            self.latest.append({})
            threading.Thread(target=self._read, args=(len(self.procs) - 1, proc), daemon=True).start()

    def _read(self, i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            try:
                self.latest[i] = json.loads(line)
            except ValueError:
                pass

    def total(self, key: str) -> int:
        return sum(int(s.get(key, 0)) for s in self.latest)

    def wait(self, key: str, value: int, timeout_s: float, what: str) -> float:
        """Seconds until the summed counter reaches ``value``."""
        start = time.monotonic()
        wait_for(lambda: self.total(key) >= value, timeout_s, what)
        return time.monotonic() - start

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            try:
                proc.stdin.write("stop\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError):
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def steady(pid: int, window_s: float) -> tuple[float, float]:
    """(CPU as a share of one core, RSS in MB) of ``pid`` over ``window_s``."""
    before = cpu_seconds(pid)
    time.sleep(window_s)
    return (cpu_seconds(pid) - before) / window_s, psutil.Process(pid).memory_info().rss / 1e6


def histogram(metrics_address: str, name: str) -> dict[float, float]:
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10).read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def counter(metrics_address: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of the observations between two scrapes (linear within a bucket)."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0.0) for e in edges]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for edge, cumulative in zip(edges, counts, strict=True):
        if cumulative >= rank:
            if edge == float("inf"):
                return lower
            return lower + (edge - lower) * (rank - below) / max(cumulative - below, 1e-9)
        lower, below = edge, cumulative
    return lower


class CoordinatorProcess:
    def __init__(self, data_dir: Path, logs: Path, env: dict, listen: str = "127.0.0.1:0",
                 enroll: str = "127.0.0.1:0") -> None:  # fmt: skip
        self.layout = CoordinatorLayout(data_dir)
        self.layout.endpoints.unlink(missing_ok=True)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_coordinator", "serve", "--data-dir", str(data_dir), "--listen", listen,
             "--enroll-listen", enroll, "--metrics-listen", "127.0.0.1:0", "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=(logs / "coordinator.log").open("ab"), env=env,
        )  # fmt: skip
        wait_for_file(self.layout.endpoints, self.proc, 120, logs / "coordinator.log")
        self.ready_s = time.monotonic() - self.started
        endpoints = json.loads(self.layout.endpoints.read_text())
        self.address, self.enroll_address = endpoints["address"], endpoints["enroll_address"]
        self.metrics = endpoints["metrics_address"]

    def operator(self) -> OperatorClient:
        creds = OperatorCredentials.resolve(data_dir=self.layout.root)
        return OperatorClient(OperatorCredentials(self.address, creds.credentials))

    def stop(self) -> float:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        return time.monotonic() - start


def rollout(coordinator: CoordinatorProcess, model: Path, version: str, target: str, count: int,
            timeout_s: float) -> float:  # fmt: skip
    """Seconds from the rollout call until ``count`` sites report ``name:version`` active."""
    with coordinator.operator() as op:
        registry = RegistryClient(op)
        registry.push(model, "fleet", version=version)
        start = time.monotonic()
        registry.rollout("fleet", version, [target])

        def done() -> bool:
            states = [s["state"] for s in registry.status("fleet", version)]
            if "failed" in states:
                raise RuntimeError(f"a site failed the rollout of fleet:{version}")
            return states.count("active") >= count

        wait_for(done, timeout_s, f"rollout of fleet:{version} to {count} sites", interval_s=0.5)
        return time.monotonic() - start


def secure_count(coordinator: CoordinatorProcess, target: str, count: int) -> float:
    """Seconds for a secure count over ``count`` sites; checked against the known total."""
    with coordinator.operator() as op:
        start = time.monotonic()
        result = AnalyticsClient(op, timeout_s=600).run_query("sim", "count", [target])
        seconds = time.monotonic() - start
    expected = sum(100 + i % 7 for i in range(count))
    if len(result["sites"]) != count or round(result["count"]) != expected:
        raise RuntimeError(f"the secure count over {count} sites gave {result['count']}, expected {expected}")
    return seconds


def list_sites_latency(coordinator: CoordinatorProcess, calls: int, count: int, page_size: int = 0) -> list[float]:
    """Seconds per ListSites call, as the operator's channel sees it (request sent, reply
    parsed): the whole fleet in one reply (``page_size`` 0) or one console page. The CLI's
    own formatting of ten thousand rows is the client's time, not the coordinator's."""
    seconds = []
    with coordinator.operator() as op:
        admin = admin_pb2_grpc.AdminServiceStub(op.channel)
        for _ in range(calls):
            start = time.perf_counter()
            reply = admin.ListSites(admin_pb2.ListSitesRequest(page_size=page_size), timeout=60)
            seconds.append(time.perf_counter() - start)
            if reply.total_size != count or len(reply.sites) != (min(page_size, count) if page_size else count):
                raise RuntimeError(f"ListSites listed {len(reply.sites)} of {reply.total_size} sites, expected {count}")
    return seconds


def run_floor(work: Path, sites_file: Path, count: int, procs: int, heartbeat_s: float, window_s: float,
              logs: Path) -> dict:  # fmt: skip
    layout = CoordinatorLayout(work / "coordinator")
    ready = work / "floor.port"
    floor = subprocess.Popen(
        [sys.executable, "-m", "bench.fleet_floor", str(ready), str(layout.ca_cert), str(layout.server_cert),
         str(layout.server_key), str(heartbeat_s)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(logs / "floor.log").open("ab"), text=True,
    )  # fmt: skip
    sims = None
    try:
        wait_for_file(ready, floor, 60, logs / "floor.log")
        sims = Sims(f"127.0.0.1:{ready.read_text()}", sites_file, count, procs, logs)
        sims.wait("connected", count, 600, "all sites connected to the floor")
        connect_s = time.monotonic() - sims.started
        time.sleep(min(heartbeat_s, 5))

        def buckets() -> dict[float, float]:
            floor.stdin.write("report\n")  # type: ignore[union-attr]
            floor.stdin.flush()  # type: ignore[union-attr]
            reply = json.loads(floor.stdout.readline())  # type: ignore[union-attr]
            return {float(le): float(n) for le, n in reply["buckets"].items()}

        before = buckets()
        cpu, rss = steady(floor.pid, window_s)
        after = buckets()
        return {"connect_s": connect_s, "cpu": cpu, "rss_mb": rss, "hb_p50_ms": quantile(before, after, 0.5) * 1000,
                "hb_p99_ms": quantile(before, after, 0.99) * 1000,
                "hb_samples": after[float("inf")] - before[float("inf")]}  # fmt: skip
    finally:
        if sims is not None:
            sims.stop()
        try:
            floor.stdin.write("stop\n")  # type: ignore[union-attr]
            floor.stdin.flush()  # type: ignore[union-attr]
            floor.wait(30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            floor.kill()


def phase(figures: dict, name: str, run) -> None:
    """Run one measured phase; a failure is recorded (and shown) instead of ending the run."""
    try:
        figures[name] = run()
    except Exception as e:  # noqa: BLE001 - the other phases still run and report
        figures[f"{name}_error"] = str(e)[:300]
        print(f"  {name} failed: {str(e)[:300]}", flush=True)


def shown(figures: dict, name: str, fmt: str) -> str:
    if name in figures:
        return fmt.format(figures[name])
    return "failed" if f"{name}_error" in figures else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 sites, short windows: under a minute")
    parser.add_argument("--sites", type=int, help="simulated sites (default 10,000; --quick 300)")
    parser.add_argument("--procs", type=int, help="simulator processes (default one per 2,500 sites)")
    parser.add_argument("--heartbeat-s", type=float, help="heartbeat interval (default the coordinator's, 10 s)")
    parser.add_argument("--window-s", type=float, help="steady-state window (default 30 s; --quick 4 s)")
    parser.add_argument("--skip-full-rollout", action="store_true", help="roll out to 1,000 sites only")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    count = args.sites or (300 if args.quick else 10_000)
    procs = args.procs or max(1, -(-count // 2500))
    heartbeat_s = args.heartbeat_s or (1.0 if args.quick else 10.0)
    window_s = args.window_s or (4.0 if args.quick else 30.0)
    group = min(count, FIRST_GROUP)
    target = "group=first"

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        sites_file = work / "sites.jsonl"
        print(f"provisioning {count} sites (keys, CSRs, certificates from the coordinator's CA)...", flush=True)
        provision_s = provision(work / "coordinator", count, sites_file)

        print(f"floor: a bare grpc.aio server, {count} streams from {procs} simulator process(es)...", flush=True)
        floor = run_floor(work, sites_file, count, procs, heartbeat_s, window_s, logs)

        # The simulated sites do their masking work on these same cores, one after another,
        # where real sites would work in parallel: give query rounds room for that.
        env = {
            **os.environ,
            "SILOLINK_COORDINATOR_HEARTBEAT_INTERVAL_S": str(heartbeat_s),
            "SILOLINK_COORDINATOR_LIMITS__QUERY_ROUND_TIMEOUT_S": "900",
        }
        if heartbeat_s * 4.5 > 45:
            env["SILOLINK_COORDINATOR_STALE_AFTER_S"] = str(heartbeat_s * 4.5)
        print("coordinator: cloud-coordinator serve, the same simulated sites...", flush=True)
        coordinator = CoordinatorProcess(work / "coordinator", logs, env)
        sims = Sims(coordinator.address, sites_file, count, procs, logs)
        figures: dict = {"sites": count, "procs": procs, "heartbeat_s": heartbeat_s, "provision_s": provision_s}
        try:
            sims.wait("connected", count, 900, "all sites connected to the coordinator")
            figures["connect_s"] = time.monotonic() - sims.started
            time.sleep(heartbeat_s)  # steady state: every site has sent a heartbeat since the storm
            before = histogram(coordinator.metrics, "silolink_heartbeat_delay_seconds")
            gc_before = histogram(coordinator.metrics, "silolink_gc_pause_seconds")
            figures["idle_cpu"], figures["rss_mb"] = steady(coordinator.proc.pid, window_s)
            after = histogram(coordinator.metrics, "silolink_heartbeat_delay_seconds")
            gc_after = histogram(coordinator.metrics, "silolink_gc_pause_seconds")
            gcs = {edge: gc_after[edge] - gc_before.get(edge, 0.0) for edge in gc_after}
            figures["gc_pauses"] = gcs.get(float("inf"), 0.0)
            figures["gc_pauses_over_50ms"] = figures["gc_pauses"] - gcs.get(0.05, 0.0)
            figures["hb_p50_ms"] = quantile(before, after, 0.50) * 1000
            figures["hb_p99_ms"] = quantile(before, after, 0.99) * 1000
            figures["hb_samples"] = after.get(float("inf"), 0) - before.get(float("inf"), 0)
            listed = list_sites_latency(coordinator, 20 if args.quick else 50, count)
            figures["list_sites_p50_ms"] = median(listed) * 1000
            figures["list_sites_p99_ms"] = percentile(listed, 99) * 1000
            paged = list_sites_latency(coordinator, 50 if args.quick else 200, count, page_size=50)
            figures["list_page_p50_ms"] = median(paged) * 1000
            figures["list_page_p99_ms"] = percentile(paged, 99) * 1000

            model = mlp_model(work / "fleet.onnx", MODEL_SIZES)
            figures["model_mb"] = model.stat().st_size / 1e6
            print(f"rollout of {figures['model_mb']:.1f} MB to {group} sites...", flush=True)
            phase(figures, "rollout_group_s", lambda: rollout(coordinator, model, "1", target, group, 900))
            if count > group and not args.skip_full_rollout:
                print(f"rollout of {figures['model_mb']:.1f} MB to all {count} sites...", flush=True)
                phase(figures, "rollout_all_s", lambda: rollout(coordinator, model, "2", "all", count, 3600))
            print(f"secure counts over {group} and {count} sites...", flush=True)
            phase(figures, "count_group_s", lambda: secure_count(coordinator, target, group))
            if count > group:
                phase(figures, "count_all_s", lambda: secure_count(coordinator, "all", count))
            figures["dropped_silent"] = counter(coordinator.metrics, "silolink_control_streams_closed_silent_total")

            print("reconnect storm: the coordinator stopped and started again on the same ports...", flush=True)
            restart_at = time.monotonic()
            figures["stop_s"] = coordinator.stop()
            coordinator = CoordinatorProcess(work / "coordinator", logs, env, coordinator.address,
                                             coordinator.enroll_address)  # fmt: skip
            figures["restart_ready_s"] = coordinator.ready_s
            sessions, failed = sims.total("sessions"), sims.total("failed_connects")
            wait_for(lambda: sims.total("connected") >= count and sims.total("sessions") >= sessions + count, 600,
                     "every site back after the restart")  # fmt: skip
            figures["storm_back_s"] = time.monotonic() - restart_at
            figures["storm_failed_connects"] = sims.total("failed_connects") - failed
            time.sleep(min(heartbeat_s, 5))
            figures["storm_cpu"], figures["storm_rss_mb"] = steady(coordinator.proc.pid, min(window_s, 10))
            figures["dropped_silent_after_storm"] = counter(
                coordinator.metrics, "silolink_control_streams_closed_silent_total"
            )
            figures["refused_busy"] = counter(coordinator.metrics, "silolink_rpc_calls_refused_busy_mtls_total")
            figures["sim_retries"] = sims.total("retried")
        finally:
            sims.stop()
            coordinator.stop()

    for key, value in floor.items():
        figures[f"floor_{key}"] = value
    figures["ratio_connect"] = figures["connect_s"] / floor["connect_s"]
    figures["ratio_cpu"] = figures["idle_cpu"] / max(floor["cpu"], 1e-3)
    figures["ratio_rss"] = figures["rss_mb"] / floor["rss_mb"]
    figures["ratio_hb_p99"] = figures["hb_p99_ms"] / max(floor["hb_p99_ms"], 1e-3)
    rows = [
        ("sites (simulator processes)", f"{count} ({procs})", f"provisioned in {provision_s:.0f} s"),
        ("time to connect all", f"{figures['connect_s']:.1f} s",
         f"floor {floor['connect_s']:.1f} s, x{figures['ratio_connect']:.2f}"),
        ("idle CPU (share of a core)", f"{figures['idle_cpu'] * 100:.1f}%",
         f"floor {floor['cpu'] * 100:.1f}%, x{figures['ratio_cpu']:.2f}; target < 25%"),
        ("RSS", f"{figures['rss_mb']:.0f} MB",
         f"floor {floor['rss_mb']:.0f} MB, x{figures['ratio_rss']:.2f}; target < 1500 MB"),
        ("heartbeat p50 / p99", f"{figures['hb_p50_ms']:.1f} / {figures['hb_p99_ms']:.1f} ms",
         f"floor {floor['hb_p50_ms']:.1f} / {floor['hb_p99_ms']:.1f} ms; {figures['hb_samples']:.0f} samples, "
         f"every {heartbeat_s:g} s; target p99 < 100 ms"),
        ("garbage collections", f"{figures['gc_pauses']:.0f}",
         f"{figures['gc_pauses_over_50ms']:.0f} of them over 50 ms, in the steady window"),
        ("operator ListSites p50 / p99",
         f"{figures['list_sites_p50_ms']:.0f} / {figures['list_sites_p99_ms']:.0f} ms",
         f"all {count} sites in one reply; target p99 < 250 ms"),
        ("operator ListSites page p50 / p99",
         f"{figures['list_page_p50_ms']:.1f} / {figures['list_page_p99_ms']:.1f} ms",
         "a console page: 50 sites of the fleet, with the state counts; target p99 < 250 ms"),
        (f"rollout {figures['model_mb']:.1f} MB to {group}", shown(figures, "rollout_group_s", "{:.1f} s"),
         "until all active; target < 60 s for 1,000"),
    ]  # fmt: skip
    if count > group and not args.skip_full_rollout:
        rows.append((f"rollout {figures['model_mb']:.1f} MB to {count}", shown(figures, "rollout_all_s", "{:.1f} s"),
                     "until all active; target: completes"))  # fmt: skip
    rows.append((f"secure count over {group}", shown(figures, "count_group_s", "{:.2f} s"), "target < 10 s for 1,000"))
    if count > group:
        rows.append((f"secure count over {count}", shown(figures, "count_all_s", "{:.2f} s"), "sparse masking graph"))
    rows += [
        ("restart: every site back", f"{figures['storm_back_s']:.1f} s",
         f"from SIGTERM (stop {figures['stop_s']:.1f} s, start {figures['restart_ready_s']:.1f} s); target < 60 s"),
        ("failed connects during the restart", f"{figures.get('storm_failed_connects', 0):.0f}",
         "dials refused while no process listened, or cut; each retried with backoff"),
        ("healthy sites dropped as silent",
         f"{figures['dropped_silent']:.0f} / {figures['dropped_silent_after_storm']:.0f}",
         "before / after the restart"),
        ("calls refused busy after restart", f"{figures['refused_busy']:.0f}",
         f"RESOURCE_EXHAUSTED by class limits; simulator retries {figures['sim_retries']}"),
    ]  # fmt: skip
    report(f"bench.fleet: {count} sites on one coordinator (ratios: coordinator / bare grpc.aio floor)", rows,
           figures)  # fmt: skip


if __name__ == "__main__":
    main()
