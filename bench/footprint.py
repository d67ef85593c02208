"""Agent footprint: start-up time to ready (connected) and idle resident memory, beside a
bare grpcio server (health service only) started the same way in the same run.

    python -m bench.footprint [--quick]

Targets (issue 2): ready within 3 s, idle RSS at most 150 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import median, parse_args, report, wait_for_file
from tests import support

BARE_SERVER = """
import sys
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(4))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
open(sys.argv[1] + ".tmp", "w").write(str(port))
import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])  # whole, never seen empty
server.wait_for_termination()
"""
IDLE_S = 3.0


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def bare_grpc(tmp: Path) -> tuple[float, float]:
    ready = tmp / "bare.port"
    ready.unlink(missing_ok=True)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(ready)])
    try:
        wait_for_file(ready, process)
        elapsed = time.perf_counter() - start
        time.sleep(IDLE_S)
        return elapsed, _rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(10)


def agent(agent_dir: Path) -> tuple[float, float]:
    """Spawn ``edge-agent run``; ready = local API up and control stream connected."""
    from edge_agent.client import LocalClient

    endpoints = agent_dir / "run" / "endpoints.json"
    endpoints.unlink(missing_ok=True)
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--data-dir", str(agent_dir), "--listen", "127.0.0.1:0"],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SILOLINK_AGENT_LOG_LEVEL": "WARNING"},
    )
    try:
        wait_for_file(endpoints, process)
        address = json.loads(endpoints.read_text())["local_address"]
        with LocalClient(address, timeout_s=5) as client:
            while client.status()["state"] != "connected":
                if time.perf_counter() - start > 30:
                    raise RuntimeError("agent did not connect within 30 s")
                time.sleep(0.005)
        elapsed = time.perf_counter() - start
        time.sleep(IDLE_S)
        return elapsed, _rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(10)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__.splitlines()[0], argv)
    runs = 3 if args.quick else 7
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        coordinator = support.start_coordinator(tmp / "coordinator", heartbeat_interval_s=5.0)
        try:
            support.enroll_site(coordinator, "hospital-a", tmp / "agent")
            bare = [bare_grpc(tmp) for _ in range(runs)]
            agents = [agent(tmp / "agent") for _ in range(runs)]
        finally:
            coordinator.stop(0)
    figures = {
        "runs": runs,
        "bare_grpc_ready_s": round(median([b[0] for b in bare]), 3),
        "bare_grpc_idle_rss_mb": round(median([b[1] for b in bare]), 1),
        "agent_ready_s": round(median([a[0] for a in agents]), 3),
        "agent_idle_rss_mb": round(median([a[1] for a in agents]), 1),
    }
    figures["ready_ratio_to_bare_grpc"] = round(figures["agent_ready_s"] / figures["bare_grpc_ready_s"], 2)
    figures["rss_ratio_to_bare_grpc"] = round(figures["agent_idle_rss_mb"] / figures["bare_grpc_idle_rss_mb"], 2)
    figures["ready_target_met"] = figures["agent_ready_s"] <= 3.0
    figures["rss_target_met"] = figures["agent_idle_rss_mb"] <= 150.0
    met = {True: "met", False: "MISSED"}
    report(
        f"Agent footprint (median of {runs} starts)",
        [
            ("bare grpcio server: start to serving", f"{figures['bare_grpc_ready_s']:.3f} s", "baseline"),
            (
                "edge-agent: start to connected",
                f"{figures['agent_ready_s']:.3f} s",
                f"{figures['ready_ratio_to_bare_grpc']}x bare; target <= 3 s: {met[figures['ready_target_met']]}",
            ),
            ("bare grpcio server: idle RSS", f"{figures['bare_grpc_idle_rss_mb']:.1f} MB", "baseline"),
            (
                "edge-agent: idle RSS, connected",
                f"{figures['agent_idle_rss_mb']:.1f} MB",
                f"{figures['rss_ratio_to_bare_grpc']}x bare; target <= 150 MB: {met[figures['rss_target_met']]}",
            ),
        ],
        figures,
    )
    return figures


if __name__ == "__main__":
    main()
