"""ListQueues: what waits in the broker per site, in counts and bytes only; shown by the console."""

import os

from cloud_coordinator.cli.exchange import ExchangeAdmin
from tests.integration.exchange_world import start_world


def test_queues_count_waiting_envelopes_per_site_until_fetched(tmp_path):
    world = start_world(tmp_path)
    try:
        world.add_site("hospital-a")
        world.add_site("hospital-b")
        world.wait_published("hospital-b")
        world.agree("hospital-a", "hospital-b", "referral")
        with world.admin() as op:
            assert ExchangeAdmin(op).list_queues() == []
        (tmp_path / "letter.bin").write_bytes(os.urandom(5000))
        sent = world.site("hospital-a").send(str(tmp_path / "letter.bin"), "hospital-b", "referral")
        with world.admin() as op:
            queues = {q["site"]: q for q in ExchangeAdmin(op).list_queues()}
        assert queues["hospital-b"]["inbound_envelopes"] == 1 and queues["hospital-b"]["inbound_bytes"] > 5000
        assert queues["hospital-a"]["outbound_envelopes"] == 1 and queues["hospital-a"]["inbound_envelopes"] == 0
        world.site("hospital-b").receive(sent["envelope_id"], str(tmp_path / "got.bin"))
        with world.admin() as op:
            assert ExchangeAdmin(op).list_queues() == []
    finally:
        world.stop()


def test_the_fullest_queues_first_with_the_brokers_totals_and_agreements_by_page(tmp_path):
    world = start_world(tmp_path)
    try:
        for name in ("hospital-a", "hospital-b", "hospital-c"):
            world.add_site(name)
            world.wait_published(name)
        ab = world.agree("hospital-a", "hospital-b", "referral")
        ca = world.agree("hospital-c", "hospital-a", "referral")
        pending = world.agree("hospital-b", "hospital-c", "second-opinion", accept=False)
        small, big = tmp_path / "small.bin", tmp_path / "big.bin"
        small.write_bytes(os.urandom(5000))
        big.write_bytes(os.urandom(20000))
        for _ in range(2):
            world.site("hospital-a").send(str(small), "hospital-b", "referral")
        world.site("hospital-c").send(str(big), "hospital-a", "referral")
        with world.admin() as op:
            admin = ExchangeAdmin(op)
            every = admin.find_queues(0)
            assert [q["site"] for q in every["queues"]] == ["hospital-a", "hospital-b", "hospital-c"]  # by name
            assert every["sites"] == 3 and every["envelopes"] == 3
            assert every["bytes"] == sum(q["inbound_bytes"] for q in every["queues"]) > 30000
            # A page: the fullest queue (in + out) first, with the totals over every site.
            fullest = admin.find_queues(1)
            assert [q["site"] for q in fullest["queues"]] == ["hospital-a"]  # 20 KB in, 10 KB out
            assert (fullest["sites"], fullest["envelopes"], fullest["bytes"]) == (3, 3, every["bytes"])
            # One site: what waits for it and what it sent.
            c = admin.find_queues(0, site="hospital-c")
            assert [q["site"] for q in c["queues"]] == ["hospital-c"] and c["envelopes"] == 1
            assert c["queues"][0]["outbound_envelopes"] == 1 and c["queues"][0]["inbound_envelopes"] == 0
            assert admin.find_queues(0, site="nobody") == {"queues": [], "sites": 0, "envelopes": 0, "bytes": 0}

            # Agreements, filtered and paged by the coordinator (oldest first).
            assert [a["id"] for a in admin.find_agreements(0)["agreements"]] == [ab, ca, pending]
            first = admin.find_agreements(2)
            assert [a["id"] for a in first["agreements"]] == [ab, ca] and first["total"] == 3
            assert [a["id"] for a in admin.find_agreements(2, 2)["agreements"]] == [pending]
            by_c = admin.find_agreements(10, site="hospital-c")
            assert [a["id"] for a in by_c["agreements"]] == [ca, pending] and by_c["total"] == 2
            active = admin.find_agreements(10, state="active")
            assert [a["id"] for a in active["agreements"]] == [ab, ca] and active["total"] == 2
            assert admin.find_agreements(1, site="hospital-b", state="pending")["total"] == 1
    finally:
        world.stop()
