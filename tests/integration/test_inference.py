"""Infer on a running agent's local API: real gRPC, real onnxruntime, real model files."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from edge_agent.client import LocalClient
from edge_agent.models.store import ModelStore
from silolink import errors
from silolink.gen.inference.v1 import inference_pb2 as pb
from silolink.gen.inference.v1 import inference_pb2_grpc
from tests.onnx_builders import linear_model

W1 = np.arange(8, dtype=np.float32).reshape(4, 2)
W2 = -W1


@pytest.fixture
def site(make_agent, tmp_path):
    agent = make_agent("hospital-a")
    store = ModelStore.open(agent.layout.state_db, agent.layout.model_blobs)  # as the CLI does
    store.install(linear_model(tmp_path / "v1.onnx", W1), "risk", "1")
    with LocalClient(agent.local_address) as client:
        yield agent, store, client


def test_infer_matches_the_model(site):
    _, _, client = site
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    result = client.infer("risk", {"x": x})
    assert (result.model, result.version) == ("risk", "1")
    np.testing.assert_allclose(result["scores"], x @ W1, rtol=1e-5)
    assert result["label"].tolist() == np.argmax(x @ W1, axis=1).tolist()


def test_stream_scores_in_order(site):
    _, _, client = site
    batches = [{"x": np.full((3, 4), float(i), np.float32)} for i in range(20)]
    replies = list(client.infer_stream("risk", batches))
    assert len(replies) == 20
    for i, reply in enumerate(replies):
        np.testing.assert_allclose(reply["scores"], np.full((3, 4), float(i)) @ W1)


@pytest.mark.parametrize(
    ("model", "version", "inputs", "error", "message"),
    [
        ("nope", None, {"x": np.ones((1, 4), np.float32)}, errors.NotFound, "no model named 'nope'"),
        ("risk", "7", {"x": np.ones((1, 4), np.float32)}, errors.NotFound, "has no version '7'; installed: 1"),
        ("risk", None, {"y": np.ones((1, 4), np.float32)}, errors.InvalidArgument, r"expects inputs \(x: float32"),
        (
            "risk",
            None,
            {"x": np.ones((1, 4), np.float64)},
            errors.InvalidArgument,
            "expects dtype float32, got float64",
        ),
        (
            "risk",
            None,
            {"x": np.ones((1, 5), np.float32)},
            errors.InvalidArgument,
            r"expects shape \[\?, 4\], got \[1, 5\]",
        ),
        ("risk", None, {"x": np.ones((0, 4), np.float32)}, errors.InvalidArgument, "is empty"),
        ("risk", None, {"x": np.ones((70000, 4), np.float32)}, errors.ResourceExhausted, "the limit is 65536"),
    ],
)
def test_bad_requests_get_clear_errors(site, model, version, inputs, error, message):
    _, _, client = site
    with pytest.raises(error, match=message):
        client.infer(model, inputs, version=version)


def test_malformed_tensor_is_invalid_argument(site):
    agent, _, _ = site
    with grpc.insecure_channel(agent.local_address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        bad = pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[1, 4], data=b"\0" * 15)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Infer(pb.InferRequest(model="risk", inputs=[bad]), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs 16 bytes of data, got 15" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Infer(pb.InferRequest(inputs=[bad]), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_requests_do_not_disturb_good_ones(site):
    _, _, client = site
    good = {"x": np.ones((1, 4), np.float32)}
    bad = {"x": np.ones((1, 3), np.float32)}

    def call(i):
        try:
            return client.infer("risk", bad if i % 3 == 0 else good)["label"].tolist()
        except errors.InvalidArgument:
            return "refused"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(90)))
    assert results.count("refused") == 30
    assert all(r == [1] for r in results if r != "refused")


def test_new_version_activates_without_a_failed_request(site, tmp_path):
    _, store, client = site
    x = np.ones((1, 4), np.float32)
    stop = threading.Event()
    seen: list[str] = []
    failures: list[Exception] = []

    def hammer():
        while not stop.is_set():
            try:
                reply = client.infer("risk", {"x": x})
                expected = x @ (W1 if reply.version == "1" else W2)
                np.testing.assert_allclose(reply["scores"], expected)
                seen.append(reply.version)
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                failures.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        from tests.support import wait_for

        wait_for(lambda: len(seen) > 50, 10, "requests on version 1")
        store.install(linear_model(tmp_path / "v2.onnx", W2), "risk", "2")
        wait_for(lambda: seen[-1] == "2" and seen.count("2") > 50, 10, "requests on version 2")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert client.infer("risk", {"x": x}, version="1").version == "1"  # older versions stay callable
    assert [(m["version"], m["active"]) for m in client.list_models()] == [("1", False), ("2", True)]


def test_metrics_count_requests_runs_and_the_link_when_asked_for(make_agent, tmp_path):
    import json
    import urllib.request

    agent = make_agent("hospital-m", metrics_listen="127.0.0.1:0")
    ModelStore.open(agent.layout.state_db, agent.layout.model_blobs).install(
        linear_model(tmp_path / "m.onnx", W1), "risk", "1"
    )
    x = np.ones((1, 4), dtype=np.float32)
    with LocalClient(agent.local_address) as client:
        for _ in range(3):
            client.infer("risk", {"x": x})
        with pytest.raises(errors.NotFound):
            client.infer("nope", {"x": x})
    assert json.loads(agent.layout.endpoints.read_text())["metrics_address"] == agent.metrics_address
    text = urllib.request.urlopen(f"http://{agent.metrics_address}/metrics", timeout=5).read().decode()
    infer = "/silolink.inference.v1.InferenceService/Infer"
    assert f'silolink_rpc_requests_total{{code="OK",method="{infer}"}} 3.0' in text
    assert f'silolink_rpc_requests_total{{code="NOT_FOUND",method="{infer}"}} 1.0' in text
    assert 'silolink_inference_requests_total{model="risk:1"} 3.0' in text
    assert 'silolink_inference_runs_total{model="risk:1"} 3.0' in text  # one at a time: no batches formed
    assert f'silolink_agent_connected{{coordinator="{agent.config.coordinator}"}} 1.0' in text


def test_no_metrics_port_unless_asked_for(site):
    agent, _, _ = site
    assert agent.metrics is None and agent.metrics_address == ""


def test_a_metrics_port_in_use_stops_the_agent_before_it_serves(make_agent):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(errors.Unavailable, match=f"cannot serve metrics on {address}"):
            make_agent("hospital-busy", metrics_listen=address)
