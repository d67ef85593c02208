"""Model distribution: a signed model to one agent, and one rollout to many.

    python -m bench.distribution [--quick]

- Download with verification: a rollout of a 256 MB ONNX model (quick: 64 MB) to one
  agent over loopback with mTLS, timed from the rollout call until the agent has the
  whole file, its SHA-256 checked against the signed manifest (state ``verified``), and
  again until it is installed and active. Baselines in the same run: a bare grpcio
  server-streaming call sending the same file's bytes in the same 1 MiB chunks (no
  protobuf message, nothing written or hashed), over the same mutual TLS (the ratio's
  baseline: silolink never sends a model in the clear) and in cleartext (shown too).
  Target: ratio at least 0.6.
- Rollout to 20 agents (quick: 5): the time from the rollout call until every site
  reports the model active.
Coordinator and agents are in-process objects (``tests/support.py``): one Python process,
so they share its GIL and the machine's cores with the baseline's server and client.
"""

from __future__ import annotations

import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from bench.common import median, parse_args, report
from cloud_coordinator.registry.client import RegistryClient
from cloud_coordinator.registry.models import CHUNK_BYTES
from edge_agent.identity import load_identity
from tests import support
from tests.onnx_builders import mlp_model

MB = 1e6


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


def bare_stream_s(path: Path, tls: dict[str, bytes] | None = None) -> float:
    """Seconds for a bare grpcio server-streaming transfer of ``path`` in CHUNK_BYTES chunks,
    in the clear or, with ``tls`` (the PEMs silolink uses), over the same mutual TLS."""

    def stream(request, context):
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk

    handler = grpc.method_handlers_generic_handler("bench.Blob", {"Get": grpc.unary_stream_rpc_method_handler(stream)})
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_send_message_length", 16 << 20)])
    server.add_generic_rpc_handlers((handler,))
    options = [("grpc.max_receive_message_length", 16 << 20)]
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    else:
        server_creds = grpc.ssl_server_credentials(
            [(tls["server_key"], tls["server_chain"])], root_certificates=tls["ca"], require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", server_creds)
        client_creds = grpc.ssl_channel_credentials(tls["ca"], tls["client_key"], tls["client_cert"])
        channel = grpc.secure_channel(f"localhost:{port}", client_creds, options=options)
    server.start()
    try:
        call = channel.unary_stream("/bench.Blob/Get")
        start = time.perf_counter()
        received = sum(len(chunk) for chunk in call(b"", timeout=600))
        elapsed = time.perf_counter() - start
        assert received == path.stat().st_size
        return elapsed
    finally:
        channel.close()
        server.stop(0)


def rollout_times(coordinator, agent, client: RegistryClient, name: str, version: str) -> tuple[float, float]:
    """(seconds to verified, seconds to active) for one rollout to ``agent``."""
    start = time.perf_counter()
    rollout = client.rollout(name, version, [f"site={agent.site}"])
    order_id = rollout["rollout_id"]

    def state():
        order = agent.registry.orders.get(order_id)
        return order.state if order else None

    support.wait_for(lambda: state() in ("verified", "active", "failed"), 600, "verified", interval_s=0.002)
    verified = time.perf_counter() - start
    support.wait_for(lambda: state() in ("active", "failed"), 600, "active", interval_s=0.005)
    active = time.perf_counter() - start
    if state() != "active":
        raise RuntimeError(f"the rollout failed: {agent.registry.orders.get(order_id).reason}")
    return verified, active


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    size = (64 if args.quick else 256) * 2**20
    reps = 2 if args.quick else 3
    fleet = 5 if args.quick else 20
    with tempfile.TemporaryDirectory(prefix="bench-distribution-") as tmp:
        work = Path(tmp)
        model = big_model(work / "big.onnx", size)
        actual_size = model.stat().st_size
        coordinator = support.start_coordinator(work / "coordinator", max_workers=256)
        agents = []
        try:
            support.enroll_site(coordinator, "site-000", work / "site-000")
            one = support.start_agent(work / "site-000", coordinator_address=coordinator.address)
            agents.append(one)
            assert one.wait_connected(30)
            start = time.perf_counter()
            for v in range(1, reps + 1):  # the same bytes under several versions: stored once
                coordinator.registry.push_file(model, "big", str(v))
            push_s = (time.perf_counter() - start) / reps
            blob = coordinator.registry.blob_path(coordinator.registry.store.get_version("big", "1").sha256)
            creds = load_identity(one.layout).credentials
            tls = {
                "ca": creds.ca_pem,
                "server_chain": coordinator.layout.server_cert.read_bytes(),
                "server_key": coordinator.layout.server_key.read_bytes(),
                "client_cert": creds.cert_pem,
                "client_key": creds.key_pem,
            }
            bare, bare_tls, to_verified, to_active = [], [], [], []
            with support.operator(coordinator) as op:
                client = RegistryClient(op)
                for v in range(1, reps + 1):  # interleaved, so drift hits all three
                    bare.append(bare_stream_s(blob))
                    bare_tls.append(bare_stream_s(blob, tls))
                    verified, active = rollout_times(coordinator, one, client, "big", str(v))
                    to_verified.append(verified)
                    to_active.append(active)
                    one.models.remove("big", str(v - 1)) if v > 1 else None  # keep the disk use flat

                # One rollout to a fleet.
                for i in range(1, fleet):
                    name = f"site-{i:03d}"
                    support.enroll_site(coordinator, name, work / name)
                    agents.append(support.start_agent(work / name, coordinator_address=coordinator.address))
                for agent in agents:
                    assert agent.wait_connected(30)
                fleet_model = mlp_model(work / "fleet.onnx", [256, 1024, 1024, 2])  # about 5 MB
                client.push(fleet_model, "fleet")
                fleet_size = fleet_model.stat().st_size
                start = time.perf_counter()
                client.rollout("fleet", "1", ["kind=hospital"])
                support.wait_for(
                    lambda: all(s["state"] == "active" for s in client.status("fleet", "1")), 300, "fleet active",
                    interval_s=0.01,
                )  # fmt: skip
                fleet_s = time.perf_counter() - start
        finally:
            for agent in agents:
                agent.stop(0)
            coordinator.stop(0)

    mb = actual_size / MB
    figures = {
        "model_bytes": actual_size,
        "chunk_bytes": CHUNK_BYTES,
        "bare_grpc_mb_s": mb / median(bare),
        "bare_grpc_mtls_mb_s": mb / median(bare_tls),
        "download_verified_mb_s": mb / median(to_verified),
        "download_to_active_mb_s": mb / median(to_active),
        "push_mb_s": mb / push_s,
        "fleet_sites": fleet,
        "fleet_model_bytes": fleet_size,
        "fleet_rollout_s": fleet_s,
    }
    figures["download_ratio"] = figures["download_verified_mb_s"] / figures["bare_grpc_mtls_mb_s"]
    figures["download_ratio_vs_cleartext"] = figures["download_verified_mb_s"] / figures["bare_grpc_mb_s"]
    rows = [
        (f"bare grpcio stream, {mb:.0f} MB, 1 MiB chunks", f"{figures['bare_grpc_mb_s']:.0f} MB/s",
         "cleartext, bytes received and dropped"),
        ("bare grpcio stream over the same mTLS", f"{figures['bare_grpc_mtls_mb_s']:.0f} MB/s", "baseline"),
        ("rollout to one agent until verified", f"{figures['download_verified_mb_s']:.0f} MB/s",
         f"ratio {figures['download_ratio']:.2f} to mTLS baseline (target >= 0.6), "
         f"{figures['download_ratio_vs_cleartext']:.2f} to cleartext: file written, SHA-256, signature"),
        ("... until installed and active", f"{figures['download_to_active_mb_s']:.0f} MB/s",
         "adds the model store's copy and the onnxruntime load check"),
        ("push (check in onnxruntime, store, sign)", f"{figures['push_mb_s']:.0f} MB/s", "in-process push_file"),
        (f"rollout of a {fleet_size / MB:.1f} MB model to {fleet} agents", f"{fleet_s:.2f} s",
         "until every site reports active; in-process agents"),
    ]  # fmt: skip
    report(f"bench.distribution ({'quick' if args.quick else 'full'}, medians of {reps})", rows, figures)


if __name__ == "__main__":
    main()
