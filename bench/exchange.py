"""Exchange throughput: small durable envelopes per second, and payload MB/s for 64 MiB
envelopes, each beside a baseline measured in the same run on the same machine.

    python -m bench.exchange [--quick]

* Envelopes/s: 1 KiB envelopes (hybrid ML-KEM-768 + X25519, sealed beforehand) streamed
  over mTLS to a coordinator running as its own process, whole and many to a request
  (``upload_requests``), counted when their receipts (sent only after the group commit is
  on disk) arrive. This is the broker's durable accept rate: sealing is the senders' work,
  done beforehand here and shown apart (one core seals far fewer a second than the broker
  accepts, so one sender site cannot feed the broker alone). Also shown: the same envelopes
  one per request, as senders before ``WholeEnvelope`` send them. Baseline: SQLite inserting 1 KiB rows,
  1,000 per commit, WAL with synchronous=FULL, in the same folder. Target >= 0.3.
* MB/s for 64 MiB: sealing (HPKE key wrap, chunked AES-256-GCM, signature) and opening
  (decrypt, verify), against raw AES-256-GCM over the same bytes in 1 MiB calls (the
  faster way to call it). Target >= 0.25. End to end through the coordinator (seal,
  upload, fsync, commit, download, open) is shown beside it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import median, parse_args, report
from cloud_coordinator import bootstrap
from cloud_coordinator.cli.exchange import ExchangeAdmin
from cloud_coordinator.operator_client import OperatorClient, OperatorCredentials
from edge_agent import enroll as enroll_mod
from edge_agent.exchange.remote import CoordinatorExchange
from edge_agent.identity import load_identity
from edge_agent.layout import AgentLayout
from silolink import envelope
from silolink.exchange_protos import header_from_proto, header_to_proto, key_to_proto, upload_requests
from silolink.gen.exchange.v1 import exchange_pb2
from silolink.polling import wait_for

MIB = 1024 * 1024


def spawn_coordinator(data_dir: Path) -> tuple[subprocess.Popen, dict]:
    endpoints = data_dir / "run" / "endpoints.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud_coordinator",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--enroll-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: endpoints.exists() or process.poll() is not None, 30, "the coordinator to start")
    return process, json.loads(endpoints.read_text())


class Sites:
    """Two enrolled sites talking straight to the coordinator's ExchangeService."""

    def __init__(self, root: Path, ends: dict, suite: str) -> None:
        creds = OperatorCredentials.resolve(data_dir=root / "coordinator")
        self.remote = {}
        with OperatorClient(creds) as op:
            for name in ("hospital-a", "hospital-b"):
                added = op.add_site(name, "hospital")
                enroll_mod.enroll(
                    root / name, ends["address"], added["token"], added["ca_fingerprint"], ends["enroll_address"]
                )
                layout = AgentLayout(root / name)
                self.remote[name] = CoordinatorExchange(
                    ends["address"], lambda lay=layout: load_identity(lay), 16 * MIB
                )
            agreement = ExchangeAdmin(op).add_agreement("hospital-a", "hospital-b", "bench")
        self.key = envelope.KeyPair.generate(suite)
        b = self.remote["hospital-b"]
        self.published = envelope.PublishedKey(
            "hospital-b", suite, self.key.key_id, self.key.public_bytes, int(time.time() * 1000)
        )
        b.publish_key(key_to_proto(self.published.signed(b.identity().key)))
        b.accept(agreement["id"])
        self.a_identity = self.remote["hospital-a"].identity()

    def close(self) -> None:
        for remote in self.remote.values():
            remote.close()


def _request(item: envelope.SealedEnvelope) -> exchange_pb2.SendEnvelopesRequest:
    return exchange_pb2.SendEnvelopesRequest(
        header=header_to_proto(item.header), sealed_key=item.sealed_key, chunks=item.chunks, signature=item.signature
    )


def seal_small(sites: Sites, n: int) -> tuple[list[envelope.SealedEnvelope], float]:
    """``n`` sealed 1 KiB envelopes, and how many one core sealed per second."""
    payload = os.urandom(1024)
    start = time.perf_counter()
    sealed = [envelope.seal(payload, "hospital-a", sites.published, "bench", sites.a_identity.key) for _ in range(n)]
    return sealed, n / (time.perf_counter() - start)


def envelope_rate(sites: Sites, n: int, whole: bool = True) -> tuple[float, float]:
    """Durable envelopes/s through the broker (whole, many to a request, or one per
    request), and the seal rate of the envelopes sent."""
    sealed, seal_rate = seal_small(sites, n)
    requests = list(upload_requests(sealed)) if whole else [_request(item) for item in sealed]
    start = time.perf_counter()
    count = sum(1 for _ in sites.remote["hospital-a"].send(iter(requests)))
    elapsed = time.perf_counter() - start
    assert count == n, f"{count} receipts for {n} envelopes"
    return n / elapsed, seal_rate


def sqlite_batched_rate(folder: Path, n: int) -> float:
    path = folder / f"baseline-{uuid.uuid4().hex[:6]}.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, sender TEXT, recipient TEXT, purpose TEXT, at REAL, body BLOB)")
    payload = os.urandom(1024)
    rows = [(str(uuid.uuid4()), "hospital-a", "hospital-b", "bench", time.time(), payload) for _ in range(n)]
    start = time.perf_counter()
    for i in range(0, n, 1000):
        with conn:
            conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", rows[i : i + 1000])
    elapsed = time.perf_counter() - start
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return n / elapsed


def aes_rate(data: bytes) -> float:
    aead = AESGCM(AESGCM.generate_key(256))
    view = memoryview(data)
    start = time.perf_counter()
    for i in range(0, len(data), MIB):
        aead.encrypt(i.to_bytes(12, "big"), view[i : i + MIB], b"")
    return len(data) / MIB / (time.perf_counter() - start)


def seal_open_rates(sites: Sites, data: bytes) -> tuple[float, float]:
    """Streaming, as the agents do it: each chunk sealed (or opened) and handed on, like
    the AES baseline, whose output is dropped too."""
    view = memoryview(data)
    start = time.perf_counter()
    header = envelope.Header.new("hospital-a", "hospital-b", "bench", sites.published, len(data), 3600)
    sealer = envelope.Sealer(header, sites.published, sites.a_identity.key)
    for i, chunk in enumerate(envelope.chunks_of(view, header)):
        sealer.seal(i, chunk)
    sealer.finish()
    sealed_s = time.perf_counter() - start
    sealed = envelope.seal(data, "hospital-a", sites.published, "bench", sites.a_identity.key)
    start = time.perf_counter()
    opener = envelope.Opener(sealed.header, sealed.sealed_key, sites.key)
    for i, chunk in enumerate(sealed.chunks):
        opener.open(i, chunk)
    opener.finish(sealed.signature, sites.a_identity.cert.public_key())
    opened_s = time.perf_counter() - start
    return len(data) / MIB / sealed_s, len(data) / MIB / opened_s


def end_to_end_rate(sites: Sites, data: bytes) -> float:
    """Seal and upload chunk by chunk, then download, open and verify: payload MB/s."""
    view = memoryview(data)
    start = time.perf_counter()
    header = envelope.Header.new("hospital-a", "hospital-b", "bench", sites.published, len(data), 3600)
    sealer = envelope.Sealer(header, sites.published, sites.a_identity.key)

    def requests():
        for i, chunk in enumerate(envelope.chunks_of(view, header)):
            request = exchange_pb2.SendEnvelopesRequest(chunks=[sealer.seal(i, chunk)])
            if i == 0:
                request.header.CopyFrom(header_to_proto(header))
                request.sealed_key = sealer.sealed_key
            if i == header.chunk_count - 1:
                request.signature = sealer.finish()
            yield request

    receipts = list(sites.remote["hospital-a"].send(requests()))
    assert receipts[0].envelope_id == header.envelope_id
    b = sites.remote["hospital-b"]
    messages = b.fetch(header.envelope_id)
    stored = next(messages).envelope
    opener = envelope.Opener(header_from_proto(stored.header), stored.sealed_key, sites.key)
    pieces = (p for m in messages for p in m.chunks)
    size = 0
    for i, chunk in enumerate(envelope.split_ciphertext(opener.header, pieces)):
        size += len(opener.open(i, chunk))
    opener.finish(stored.signature, sites.a_identity.cert.public_key())
    b.ack(header.envelope_id)
    assert size == len(data)
    return len(data) / MIB / (time.perf_counter() - start)


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    runs = 2 if args.quick else 3
    n = 5000 if args.quick else 20000
    big_runs = 2 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-exchange-") as tmp:
        root = Path(tmp)
        bootstrap.init(root / "coordinator", ["localhost", "127.0.0.1"])
        process, ends = spawn_coordinator(root / "coordinator")
        try:
            sites = Sites(root, ends, envelope.DEFAULT_SUITE)
            envelope_rate(sites, 500)  # warm up connections and caches
            rates, baselines, seal_rates = [], [], []
            for _ in range(runs):  # interleaved, so both see the same machine
                rate, seal_rate = envelope_rate(sites, n)
                rates.append(rate)
                seal_rates.append(seal_rate)
                baselines.append(sqlite_batched_rate(root, n))
            single = [envelope_rate(sites, n // 4, whole=False)[0] for _ in range(runs)]
            data = os.urandom(64 * MIB)
            aes = [aes_rate(data) for _ in range(big_runs)]
            seal_open = [seal_open_rates(sites, data) for _ in range(big_runs)]
            e2e = [end_to_end_rate(sites, data) for _ in range(big_runs)]
            sites.close()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    env_rate, base_rate = median(rates), median(baselines)
    single_rate, seal_rate = median(single), median(seal_rates)
    aes_mb = median(aes)
    seal_mb = median([s for s, _ in seal_open])
    open_mb = median([o for _, o in seal_open])
    both_mb = median([1 / (1 / s + 1 / o) for s, o in seal_open])
    e2e_mb = median(e2e)
    figures = {
        "envelopes_per_s_1kib_durable": round(env_rate),
        "sqlite_batched_rows_per_s_1kib": round(base_rate),
        "envelopes_per_s_1kib_one_per_request": round(single_rate),
        "seal_1kib_per_s_one_core": round(seal_rate),
        "envelope_rate_ratio": round(env_rate / base_rate, 3),
        "aes_256_gcm_mb_s": round(aes_mb),
        "seal_mb_s_64mib": round(seal_mb),
        "open_mb_s_64mib": round(open_mb),
        "seal_open_ratio": round(min(seal_mb, open_mb) / aes_mb, 3),
        "end_to_end_mb_s_64mib": round(e2e_mb),
        "end_to_end_ratio": round(e2e_mb / aes_mb, 3),
        "suite": envelope.DEFAULT_SUITE,
        "quick": args.quick,
    }
    report(
        "exchange: sealed envelopes through the coordinator (medians)",
        [
            (
                "1 KiB envelopes/s, durable",
                f"{env_rate:,.0f}",
                f"{runs} runs of {n}, pre-sealed, whole, many per request, one mTLS stream",
            ),
            (
                "SQLite batched insert, 1 KiB rows/s",
                f"{base_rate:,.0f}",
                "1,000 rows per commit, WAL, synchronous=FULL",
            ),
            ("ratio (target >= 0.3)", f"{env_rate / base_rate:.2f}", "the broker's durable accept rate"),
            (
                "  same, one envelope per request",
                f"{single_rate:,.0f}",
                f"{n // 4} a run: senders without WholeEnvelope",
            ),
            ("  sealing 1 KiB envelopes/s", f"{seal_rate:,.0f}", "the sender's work, one core, not in the rate"),
            ("AES-256-GCM, 1 MiB calls, MB/s", f"{aes_mb:,.0f}", "raw, no envelope"),
            ("seal 64 MiB envelope, MB/s", f"{seal_mb:,.0f}", "HPKE wrap + chunked AES-GCM + ECDSA"),
            ("open 64 MiB envelope, MB/s", f"{open_mb:,.0f}", "decrypt + verify signature"),
            ("ratio, slower of seal/open (target >= 0.25)", f"{min(seal_mb, open_mb) / aes_mb:.2f}", ""),
            ("seal + open back to back, MB/s", f"{both_mb:,.0f}", "one site's work then the other's"),
            ("end to end via coordinator, MB/s", f"{e2e_mb:,.0f}", "seal, upload, fsync, download, open"),
            ("end-to-end ratio to AES-GCM", f"{e2e_mb / aes_mb:.2f}", "bounded by gRPC/TLS and the disk"),
        ],
        figures,
    )


if __name__ == "__main__":
    main()
