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
