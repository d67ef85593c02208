"""Model distribution: a signed model to one agent, and one rollout to many.

    python -m bench.distribution [--quick]

Every daemon runs as its own process, as in a deployment: the coordinator
(``cloud-coordinator serve``) and each agent (``edge-agent run``); this process only
drives them and watches.
- Download with verification: a rollout of a 256 MB ONNX model (quick: 64 MB) to one
  agent over loopback, timed from the rollout call until the agent has the whole file
  with its SHA-256 checked against the signed manifest (state ``verified``, read from the
  agent's database), and again until it is installed and active.
- Baselines in the same run, interleaved: a bare grpcio server-streaming call, server in
  one process and client in another, sending the same file in the same chunk size, with
  the message limit silolink's channels use; bytes only (no protobuf, nothing written or
  hashed), the file mapped and each chunk copied once as the coordinator reads it, so the
  baseline pays no costlier read. Once over the same mutual TLS with the coordinator's
  and the site's own certificates, once in cleartext. The headline ratio is against the
  mTLS transfer: silolink never sends a model in the clear, so TLS is part of the
  transfer the issue asks to compare with, not an overhead of silolink's. Target: at
  least 0.6. The ratio to cleartext is shown too.
- CPU seconds (user and system, both ends) beside each transfer: on 2 cores shared with
  other work, the transfer that needs more CPU loses more time to the other work.
- Rollout to 20 agents (quick: 5), 20 agent processes: the time from the rollout call
  until every site reports the model active to the coordinator.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from onnx import TensorProto, helper, numpy_helper

from bench.common import median, parse_args, report, wait_for_file
from cloud_coordinator.layout import CoordinatorLayout
from cloud_coordinator.operator_client import OperatorClient, OperatorCredentials
from cloud_coordinator.registry.client import RegistryClient
from cloud_coordinator.registry.models import CHUNK_BYTES
from edge_agent import enroll as enroll_mod
from edge_agent.identity import load_identity
from edge_agent.layout import AgentLayout
from edge_agent.models.store import ModelStore
from silolink.polling import wait_for
from tests.onnx_builders import mlp_model

MB = 1e6
# The bare transfer's two ends, with the message limit silolink's channels use.
# argv: ready_file path chunk_bytes [ca chain key] / port size [ca cert key].
BARE_SERVER = """
import mmap, sys
from concurrent import futures
import grpc
ready, path, chunk_bytes, *tls = sys.argv[1:]
chunk_bytes = int(chunk_bytes)
def stream(request, context):
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        with memoryview(mapped) as view:
            for at in range(0, len(mapped), chunk_bytes):
                yield bytes(view[at : at + chunk_bytes])
handler = grpc.method_handlers_generic_handler("bench.Blob", {"Get": grpc.unary_stream_rpc_method_handler(stream)})
options = [("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)]
server = grpc.server(futures.ThreadPoolExecutor(4), options=options)
server.add_generic_rpc_handlers((handler,))
if tls:
    ca, chain, key = (open(p, "rb").read() for p in tls)
    creds = grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
else:
    port = server.add_insecure_port("127.0.0.1:0")
server.start()
open(ready + ".tmp", "w").write(str(port))
import os; os.replace(ready + ".tmp", ready)
server.wait_for_termination()
"""
BARE_CLIENT = """
import os, sys, time
import grpc
port, size, *tls = sys.argv[1:]
options = [("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)]
if tls:
    ca, cert, key = (open(p, "rb").read() for p in tls)
    creds = grpc.ssl_channel_credentials(ca, key, cert)
    channel = grpc.secure_channel(f"localhost:{port}", creds, options=options)
else:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
call = channel.unary_stream("/bench.Blob/Get")
cpu = lambda: sum(os.times()[:2])
cpu_start, start = cpu(), time.perf_counter()
received = sum(len(chunk) for chunk in call(b"", timeout=600))
elapsed, cpu_s = time.perf_counter() - start, cpu() - cpu_start
assert received == int(size), (received, size)
print(elapsed, cpu_s)
"""


def big_model(path: Path, size_bytes: int) -> Path:
    """``y = x * W`` with W a float32 vector of about ``size_bytes`` random bytes."""
    n = size_bytes // 4
    weights = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "W"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


class Daemon:
    """``python -m MODULE ARGS`` with its log in ``log``; ready when ``ready_file`` appears."""

    def __init__(self, args: list[str], ready_file: Path, log: Path) -> None:
        ready_file.unlink(missing_ok=True)
        self.ready_file = ready_file
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.DEVNULL, stderr=log.open("wb"), env={**os.environ}
        )

    def wait_ready(self, timeout_s: float = 60.0) -> Daemon:
        wait_for_file(self.ready_file, self.process, timeout_s, self.log)
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def cpu_s(*pids: int) -> float:
    """CPU seconds (user and system, every thread) the processes have used so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def bare_stream_s(work: Path, path: Path, chunk_bytes: int, tls: dict[str, Path] | None) -> tuple[float, float]:
    """(seconds, CPU seconds of both ends) for the bare transfer of ``path``, as the client
    process times its call."""
    ready = work / "bare.port"
    server_tls = [str(tls["ca"]), str(tls["server_chain"]), str(tls["server_key"])] if tls else []
    client_tls = [str(tls["ca"]), str(tls["client_cert"]), str(tls["client_key"])] if tls else []
    server = Daemon(["-c", BARE_SERVER, str(ready), str(path), str(chunk_bytes), *server_tls], ready,
                    work / "bare-server.log").wait_ready()  # fmt: skip
    try:
        server_cpu = cpu_s(server.process.pid)
        out = subprocess.run(
            [sys.executable, "-c", BARE_CLIENT, ready.read_text(), str(path.stat().st_size), *client_tls],
            capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
        elapsed, client_cpu = map(float, out.stdout.split())
        return elapsed, client_cpu + cpu_s(server.process.pid) - server_cpu
    finally:
        server.stop()


def start_agent(site_dir: Path) -> Daemon:
    return Daemon(
        ["-m", "edge_agent", "run", "--data-dir", str(site_dir), "--listen", "127.0.0.1:0"],
        AgentLayout(site_dir).endpoints,
        site_dir / "agent.log",
    )


def rollout_times(
    client: RegistryClient, site: str, state_db: Path, name: str, version: str, pids: tuple[int, int]
) -> tuple[float, float, tuple[float, float]]:
    """(seconds to verified, seconds to active, (coordinator, agent) CPU seconds to verified)
    for one rollout to ``site``, read from the agent's own database (the daemon is not asked).
    One connection, kept open: a query costs about 12 us of CPU, a new connection 250 us."""
    with contextlib.closing(sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=5)) as db:
        cpu_start = [cpu_s(pid) for pid in pids]
        start = time.perf_counter()
        order_id = client.rollout(name, version, [f"site={site}"])["rollout_id"]

        def state() -> tuple[str, str] | None:
            return db.execute("select state, reason from registry_orders where rollout_id = ?", [order_id]).fetchone()

        wait_for(lambda: (state() or ("",))[0] in ("verified", "active", "failed"), 600, "verified", interval_s=0.002)
        verified = time.perf_counter() - start
        cpu = tuple(cpu_s(pid) - before for pid, before in zip(pids, cpu_start, strict=True))
        wait_for(lambda: (state() or ("",))[0] in ("active", "failed"), 600, "active", interval_s=0.005)
        active = time.perf_counter() - start
        if state()[0] != "active":
            raise RuntimeError(f"the rollout failed: {state()[1]}")
    return verified, active, cpu  # type: ignore[return-value]


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    size = (64 if args.quick else 256) * 2**20
    reps = 3 if args.quick else 7
    fleet = 5 if args.quick else 20
    daemons: list[Daemon] = []
    with tempfile.TemporaryDirectory(prefix="bench-distribution-") as tmp:
        work = Path(tmp)
        model = big_model(work / "big.onnx", size)
        actual_size = model.stat().st_size
        coordinator_dir = work / "coordinator"
        from cloud_coordinator import bootstrap

        bootstrap.init(coordinator_dir, ["localhost", "127.0.0.1"])
        layout = CoordinatorLayout(coordinator_dir)
        try:
            daemons.append(Daemon(
                ["-m", "cloud_coordinator", "serve", "--data-dir", str(coordinator_dir), "--listen", "127.0.0.1:0",
                 "--enroll-listen", "127.0.0.1:0", "--metrics-listen", ""],
                layout.endpoints, work / "coordinator.log",
            ).wait_ready())  # fmt: skip
            op = OperatorClient(OperatorCredentials.resolve(data_dir=coordinator_dir))
            client = RegistryClient(op)

            def enroll(name: str) -> Path:
                added = op.add_site(name, "hospital", {})
                site_dir = work / name
                enroll_mod.enroll(
                    site_dir, added["coordinator_address"], added["token"], added["ca_fingerprint"],
                    added["enroll_address"],
                )  # fmt: skip
                return site_dir

            one_dir = enroll("site-000")
            daemons.append(start_agent(one_dir).wait_ready())
            wait_for(lambda: op.list_sites()[0]["state"] == "online", 30, "site-000 online", interval_s=0.05)
            start = time.perf_counter()
            for v in range(1, reps + 1):  # the same bytes under several versions: stored once
                client.push(model, "big", str(v))
            push_s = (time.perf_counter() - start) / reps

            creds = load_identity(AgentLayout(one_dir)).credentials
            (work / "client.crt").write_bytes(creds.cert_pem)
            (work / "client.key").write_bytes(creds.key_pem)
            tls = {
                "ca": layout.ca_cert,
                "server_chain": layout.server_cert,
                "server_key": layout.server_key,
                "client_cert": work / "client.crt",
                "client_key": work / "client.key",
            }
            one_layout = AgentLayout(one_dir)
            pids = (daemons[0].process.pid, daemons[1].process.pid)
            bare, bare_tls, to_verified, to_active, cpu = [], [], [], [], []
            for v in range(1, reps + 1):  # interleaved, so drift on a shared machine hits all three
                bare.append(bare_stream_s(work, model, CHUNK_BYTES, None))
                bare_tls.append(bare_stream_s(work, model, CHUNK_BYTES, tls))
                verified, active, used = rollout_times(client, "site-000", one_layout.state_db, "big", str(v), pids)
                to_verified.append(verified)
                to_active.append(active)
                cpu.append(used)
                if v > 1:  # keep the disk use flat
                    ModelStore.open(one_layout.state_db, one_layout.model_blobs).remove("big", str(v - 1))

            # One rollout to a fleet of agent processes.
            starting = [start_agent(enroll(f"site-{i:03d}")) for i in range(1, fleet)]
            daemons += starting
            for daemon in starting:
                daemon.wait_ready()
            wait_for(lambda: all(s["state"] == "online" for s in op.list_sites()), 60, "fleet online", interval_s=0.1)
            fleet_model = mlp_model(work / "fleet.onnx", [256, 1024, 1024, 2])  # about 5 MB
            client.push(fleet_model, "fleet")
            fleet_size = fleet_model.stat().st_size
            start = time.perf_counter()
            client.rollout("fleet", "1", ["kind=hospital"])
            wait_for(
                lambda: all(s["state"] == "active" for s in client.status("fleet", "1")), 300, "fleet active",
                interval_s=0.01,
            )  # fmt: skip
            fleet_s = time.perf_counter() - start
            op.close()
        finally:
            for daemon in reversed(daemons):
                daemon.stop()

    mb = actual_size / MB
    figures = {
        "model_bytes": actual_size,
        "chunk_bytes": CHUNK_BYTES,
        "bare_grpc_mb_s": mb / median([s for s, _ in bare]),
        "bare_grpc_mtls_mb_s": mb / median([s for s, _ in bare_tls]),
        "bare_grpc_cpu_s": median([c for _, c in bare]),
        "bare_grpc_mtls_cpu_s": median([c for _, c in bare_tls]),
        "download_coordinator_cpu_s": median([c for c, _ in cpu]),
        "download_agent_cpu_s": median([a for _, a in cpu]),
        "download_verified_mb_s": mb / median(to_verified),
        "download_to_active_mb_s": mb / median(to_active),
        "push_mb_s": mb / push_s,
        "fleet_sites": fleet,
        "fleet_model_bytes": fleet_size,
        "fleet_rollout_s": fleet_s,
    }
    figures["download_ratio"] = figures["download_verified_mb_s"] / figures["bare_grpc_mtls_mb_s"]
    figures["download_ratio_vs_cleartext"] = figures["download_verified_mb_s"] / figures["bare_grpc_mb_s"]
    chunk = f"{CHUNK_BYTES / 2**20:g} MiB chunks"
    rows = [
        (f"bare grpcio stream, {mb:.0f} MB, {chunk}", f"{figures['bare_grpc_mb_s']:.0f} MB/s",
         f"cleartext; server and client processes, bytes received and dropped; "
         f"CPU {figures['bare_grpc_cpu_s']:.2f} s"),
        ("bare grpcio stream over the same mTLS", f"{figures['bare_grpc_mtls_mb_s']:.0f} MB/s",
         f"the baseline: silolink never sends a model in the clear; CPU {figures['bare_grpc_mtls_cpu_s']:.2f} s"),
        ("rollout to one agent until verified", f"{figures['download_verified_mb_s']:.0f} MB/s",
         f"ratio {figures['download_ratio']:.2f} to the mTLS baseline (target >= 0.6), "
         f"{figures['download_ratio_vs_cleartext']:.2f} to cleartext: file written, SHA-256, signature; "
         f"CPU coordinator {figures['download_coordinator_cpu_s']:.2f} s + agent "
         f"{figures['download_agent_cpu_s']:.2f} s"),
        ("... until installed and active", f"{figures['download_to_active_mb_s']:.0f} MB/s",
         "adds the model store's hash and fsync and the onnxruntime load check"),
        ("push (check in onnxruntime, store, sign)", f"{figures['push_mb_s']:.0f} MB/s",
         "cloud-coordinator models push over mTLS"),
        (f"rollout of a {fleet_size / MB:.1f} MB model to {fleet} agents", f"{fleet_s:.2f} s",
         "until every site reports active; one process per agent"),
    ]  # fmt: skip
    report(f"bench.distribution ({'quick' if args.quick else 'full'}, medians of {reps})", rows, figures)


if __name__ == "__main__":
    main()
