"""Background delivery of model orders: bounded concurrency, slots given back, timeouts."""

import threading

from cloud_coordinator.registry.delivery import Delivery
from silolink.polling import wait_for


class Sender:
    def __init__(self, refuse=()):
        self.sent: list[tuple[str, str]] = []
        self.refuse = set(refuse)
        self.lock = threading.Lock()

    def __call__(self, rollout_id: str, site: str) -> bool:
        with self.lock:
            if site in self.refuse:
                return False
            self.sent.append((rollout_id, site))
            return True


def test_at_most_concurrency_sites_hold_an_order_at_once():
    sender = Sender()
    delivery = Delivery(sender, concurrency=2, slot_timeout_s=60)
    try:
        delivery.enqueue(("r1", f"site-{i}") for i in range(5))
        wait_for(lambda: len(sender.sent) == 2, 5, "two sent")
        assert delivery.in_flight() == 2 and delivery.queued() == 3
        delivery.release("r1", "site-0")  # it has the model: the next site gets its turn
        wait_for(lambda: len(sender.sent) == 3, 5, "third sent")
        delivery.release_site("site-1")  # it disconnected: its slot is free too
        wait_for(lambda: len(sender.sent) == 4, 5, "fourth sent")
        assert [s for _, s in sender.sent] == ["site-0", "site-1", "site-2", "site-3"]
        delivery.enqueue([("r1", "site-3")])  # already in flight: not queued twice
        assert delivery.queued() == 1
    finally:
        delivery.stop()


def test_an_unsent_order_frees_its_slot_and_a_slow_site_gives_it_up():
    sender = Sender(refuse={"site-0"})
    now = [0.0]
    delivery = Delivery(sender, concurrency=1, slot_timeout_s=10, clock=lambda: now[0])
    try:
        delivery.enqueue([("r1", "site-0"), ("r1", "site-1"), ("r1", "site-2")])
        wait_for(lambda: len(sender.sent) == 1, 5, "site-1 sent")  # site-0 was skipped at once
        now[0] = 11.0  # site-1 holds its slot past the timeout
        wait_for(lambda: len(sender.sent) == 2, 5, "site-2 sent")
        assert delivery.timed_out == 1 and sender.sent[-1] == ("r1", "site-2")
    finally:
        delivery.stop()
