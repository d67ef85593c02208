"""The coordinator never sees what sites exchange: unique markers planted in the files sent
(contents and names) appear nowhere in its data directory, database or logs."""

from __future__ import annotations

import base64
import logging
import uuid

from tests.integration.exchange_world import start_world


def forms(marker: bytes) -> list[bytes]:
    return [marker, marker.hex().encode(), base64.b64encode(marker)[:-4]]


def leaks(root, markers: list[bytes], log_text: bytes) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {m!r}" for marker in markers for m in forms(marker) if m in data]
    found += [f"log: {m!r}" for marker in markers for m in forms(marker) if m in log_text]
    return found


def test_markers_in_exchanged_files_never_reach_the_coordinator(tmp_path):
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep(logging.DEBUG)
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    world = start_world(tmp_path / "world")
    try:
        world.add_site("hospital-a")
        world.add_site("hospital-b")
        world.wait_published("hospital-a")
        world.wait_published("hospital-b")
        world.agree("hospital-a", "hospital-b", "referral")
        markers = [f"MARKER-{uuid.uuid4().hex}".encode() for _ in range(3)]
        small = tmp_path / f"patient-{markers[0].decode()}.csv"
        small.write_bytes(b"id,diagnosis\n" + b"\n".join(b"%d,%s" % (i, markers[1]) for i in range(100)))
        large = tmp_path / "scan.raw"
        large.write_bytes((markers[2] + b"\0" * 1000) * 3000)  # 3 MB: stored as a file, streamed in chunks
        site_a, site_b = world.site("hospital-a"), world.site("hospital-b")
        sent = [site_a.send(small, "hospital-b", "referral"), site_a.send(large, "hospital-b", "referral")]
        site_b.inbox()
        coordinator_root = world.coordinator.layout.root
        # While the envelopes wait at the coordinator...
        assert leaks(coordinator_root, markers, "\n".join(records).encode()) == []
        received = [site_b.receive(s["envelope_id"]) for s in sent]
        assert markers[0].decode() in received[0]["path"]  # the recipient does see the name
        assert open(received[1]["path"], "rb").read() == large.read_bytes()
        site_a.verify_audit()
        site_b.verify_audit()
        site_b.agreements()
    finally:
        world.stop()
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
    # ...and after delivery, with the database closed and every log line in.
    assert leaks(coordinator_root, markers, "\n".join(records).encode()) == []
    assert any("envelope" in line for line in records)  # the logs did record the flows
    # The scan does find markers where they belong: in the recipient's inbox.
    assert len(leaks(world.root / "hospital-b" / "inbox", markers, b"")) >= 2
