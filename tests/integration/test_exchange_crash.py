"""kill -9 of the coordinator while envelopes stream in: after a restart every envelope it
had acknowledged is still there and opens; nothing half-written is served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cloud_coordinator import bootstrap
from cloud_coordinator.cli.exchange import ExchangeAdmin
from cloud_coordinator.exchange.audit_entries import envelope_ids
from cloud_coordinator.operator_client import OperatorClient, OperatorCredentials
from edge_agent import enroll as enroll_mod
from edge_agent.exchange.keys import KeyRing
from edge_agent.exchange.remote import CoordinatorExchange
from edge_agent.identity import load_identity
from edge_agent.layout import AgentLayout
from silolink import envelope, errors
from silolink.audit.remote import fetch_all
from silolink.exchange_protos import header_from_proto, header_to_proto, key_to_proto, upload_requests
from silolink.gen.exchange.v1 import exchange_pb2
from tests import support


def spawn(data_dir, listen="127.0.0.1:0", enroll_listen="127.0.0.1:0"):
    endpoints = data_dir / "run" / "endpoints.json"
    endpoints.unlink(missing_ok=True)
    log = open(data_dir / "coordinator.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud_coordinator",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            listen,
            "--enroll-listen",
            enroll_listen,
            "--metrics-listen",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "SILOLINK_COORDINATOR_HEARTBEAT_INTERVAL_S": "0.5"},
    )
    log.close()
    support.wait_for(lambda: endpoints.exists() or process.poll() is not None, 30, "the coordinator to start")
    assert process.poll() is None, (data_dir / "coordinator.log").read_text()
    return process, json.loads(endpoints.read_text())


@pytest.mark.parametrize("whole", [False, True], ids=["one-per-request", "whole-batches"])
def test_every_acknowledged_envelope_survives_kill_9(tmp_path, whole):
    data_dir = tmp_path / "coordinator"
    bootstrap.init(data_dir, ["localhost", "127.0.0.1"])
    process, ends = spawn(data_dir)
    try:
        creds = OperatorCredentials.resolve(data_dir=data_dir)
        remotes = {}
        with OperatorClient(creds) as op:
            for name in ("hospital-a", "hospital-b"):
                added = op.add_site(name, "hospital")
                enroll_mod.enroll(
                    tmp_path / name, ends["address"], added["token"], added["ca_fingerprint"], ends["enroll_address"]
                )
                layout = AgentLayout(tmp_path / name)
                remotes[name] = CoordinatorExchange(ends["address"], lambda lay=layout: load_identity(lay), 16 << 20)
            agreement = ExchangeAdmin(op).add_agreement("hospital-a", "hospital-b", "stream")
        ring = KeyRing(tmp_path / "hospital-b" / "keys")
        b_key = ring.current(envelope.CLASSIC)
        b_identity = remotes["hospital-b"].identity()
        remotes["hospital-b"].publish_key(key_to_proto(b_key.published("hospital-b").signed(b_identity.key)))
        remotes["hospital-b"].accept(agreement["id"])

        a_identity = remotes["hospital-a"].identity()
        published = b_key.published("hospital-b")
        payloads = {}
        sealed = []
        for i in range(600):
            data = os.urandom(1024 if i % 50 else 200_000)  # mostly inline, some stored as files
            item = envelope.seal(data, "hospital-a", published, "stream", a_identity.key, chunk_size=64 * 1024)
            payloads[item.header.envelope_id] = data
            sealed.append(item)

        def requests():
            if whole:  # small ones whole, 20 to a request (stored in segments), large in parts
                for i in range(0, len(sealed), 20):
                    time.sleep(0.01)
                    yield from upload_requests(sealed[i : i + 20])
                return
            for i, item in enumerate(sealed):
                if i % 20 == 0:
                    time.sleep(0.01)  # keep the stream going long enough to be cut
                yield exchange_pb2.SendEnvelopesRequest(
                    header=header_to_proto(item.header),
                    sealed_key=item.sealed_key,
                    chunks=item.chunks,
                    signature=item.signature,
                )

        acked: list[str] = []
        failure: list[Exception] = []

        def stream():
            try:
                acked.extend(r.envelope_id for r in remotes["hospital-a"].send(requests()))
            except errors.SiloError as e:
                failure.append(e)

        sender = threading.Thread(target=stream)
        # Receipts arrive as the thread runs: read them through a live view of ``acked``.
        sender.start()
        support.wait_for(lambda: len(acked) >= 100 or not sender.is_alive(), 30, "receipts to arrive")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        sender.join(30)
        assert failure, "the stream should have been cut by the kill"
        assert 100 <= len(acked) < len(sealed)

        process, ends = spawn(data_dir, listen=ends["address"], enroll_listen=ends["enroll_address"])
        b = remotes["hospital-b"]
        waiting = {e.header.envelope_id for e in b.inbox()}
        assert set(acked) <= waiting
        a_cert = a_identity.cert
        for envelope_id in acked:
            messages = list(b.fetch(envelope_id))
            stored = messages[0].envelope
            header = header_from_proto(stored.header)
            opener = envelope.Opener(header, stored.sealed_key, b_key.pair)
            pieces = (p for m in messages[1:] for p in m.chunks)
            data = b"".join(opener.open(i, c) for i, c in enumerate(envelope.split_ciphertext(header, pieces)))
            opener.finish(stored.signature, a_cert.public_key())
            assert data == payloads[envelope_id]
        with OperatorClient(OperatorCredentials.resolve(data_dir=data_dir)) as op:
            admin = ExchangeAdmin(op)
            verified = admin.verify_audit(tmp_path / "audit-pin.json")["entries"]
            if not whole:
                assert verified > len(acked)
            recorded = {i for e in fetch_all(admin.audit_page)[0] for i in envelope_ids(e)}
            assert set(acked) <= recorded
        assert not list((data_dir / "state" / "exchange" / "tmp").iterdir())  # half-written uploads cleared
    finally:
        for remote in locals().get("remotes", {}).values():
            remote.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
