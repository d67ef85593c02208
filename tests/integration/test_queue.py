"""The work queue with a real coordinator and agents: offers, declines, restarts, refusals."""

from __future__ import annotations

import time

import pytest

from cloud_coordinator.scheduling import JobNeeds
from cloud_coordinator.scheduling.service import Launcher, Offer
from cloud_coordinator.studies.client import QueueClient, StudiesClient
from edge_agent.studies import offers
from silolink import errors
from silolink.gen.studies.v1 import studies_pb2 as pb
from tests import support
from tests.integration.test_studies import HOSPITALS, allowance, local
from tests.integration.test_studies import hospitals as hospitals  # noqa: F401 - the fixture

GIB = 1024**3


class Launches:
    """A capability that records what the queue starts (as training would run it)."""

    def __init__(self) -> None:
        self.started: dict[str, list[str]] = {}
        self.failed: dict[str, str] = {}

    def launcher(self) -> Launcher:
        return Launcher(lambda job, sites: self.started.__setitem__(job, sites),
                        lambda job, reason: self.failed.__setitem__(job, reason))  # fmt: skip


@pytest.fixture
def cardio(coordinator, hospitals):  # noqa: F811
    client = StudiesClient(support.operator(coordinator))
    client.create("cardio")
    client.invite("cardio", ["kind=hospital"])
    for agent in hospitals.values():
        agent.dispatcher.register("offer_work", offers(1000.0))  # never too busy on a shared test machine
        local(agent).accept(
            "cardio",
            allowance(datasets=["ecg"], apps=["tabular"],
                      share=pb.ComputeShare(max_jobs=1, cpu=1, memory_bytes=GIB, utc_offset_s=0)),
        )  # fmt: skip
    support.wait_for(lambda: all(s.resources for s in coordinator.sites.list_sites()), 10, "heartbeats")
    return hospitals


def needs(job_id: str, min_sites: int = 2, **kw) -> JobNeeds:
    settings = {"cpu": 1, "memory_bytes": GIB // 2, "duration_s": 600, "min_sites": min_sites,
                "max_sites": min_sites, "sites": HOSPITALS, **kw}  # fmt: skip
    return JobNeeds(job_id, "cardio", **settings)


def test_jobs_queue_start_on_sites_that_say_yes_and_wait_for_room(coordinator, cardio):
    launches = Launches()
    coordinator.queue.register("test", launches.launcher())
    assert coordinator.queue.submit("test", needs("j1", 3), Offer("ecg", "tabular")) == 1
    support.wait_for(lambda: "j1" in launches.started, 10, "j1 started")
    assert sorted(launches.started["j1"]) == list(HOSPITALS)
    # Each site gives cardio one job at a time: j2 waits, saying why.
    coordinator.queue.submit("test", needs("j2", 2), Offer("ecg", "tabular"))
    with support.operator(coordinator) as op:
        listed = QueueClient(op).list()
    [waiting] = [w for w in listed["work"] if w["state"] == "queued"]
    assert waiting["job"] == "j2" and waiting["position"] == 1
    assert "3 of 3 sites already run as many jobs of study 'cardio' as they allow" in waiting["reason"]
    assert listed["shares"]["cardio"]["dominant_share"] > 0
    running = [w for w in listed["work"] if w["state"] == "running"]
    assert running[0]["job"] == "j1" and running[0]["sites"] == list(HOSPITALS)
    coordinator.queue.finish("j1")
    support.wait_for(lambda: "j2" in launches.started, 10, "j2 started")
    # A job no site could ever hold is refused at once, saying so.
    with pytest.raises(errors.FailedPrecondition, match="give study 'cardio' less than 64 CPU"):
        coordinator.queue.submit("test", needs("huge", 1, cpu=64), Offer("ecg"))


def test_a_site_that_declines_is_replaced_or_the_job_waits(coordinator, cardio):
    launches = Launches()
    coordinator.queue.register("test", launches.launcher())
    busy = cardio["hospital-a"]
    busy.dispatcher.register("offer_work", offers(0.5, load=lambda: (64.0, 0.0, 0.0)))
    coordinator.queue.submit("test", needs("j1", 2, max_sites=3), Offer("ecg", "tabular"))
    support.wait_for(lambda: "j1" in launches.started, 10, "j1 started")
    assert launches.started["j1"] == ["hospital-b", "hospital-c"]  # the busy site declined, the rest took it
    coordinator.queue.submit("test", needs("j2", 1, sites=("hospital-a",)), Offer("ecg", "tabular"))
    support.wait_for(lambda: "declined this job" in (coordinator.queue.position("j2") or (0, ""))[1], 10, "j2 waits")
    busy.dispatcher.register("offer_work", offers(1000.0))  # no longer busy: taken once its cooldown (2 s) ends
    support.wait_for(lambda: "j2" in launches.started, 10, "j2 started once the site is free")


def test_the_queue_survives_a_coordinator_restart(coordinator, cardio, tmp_path):
    launches = Launches()
    coordinator.queue.register("test", launches.launcher())
    coordinator.queue.submit("test", needs("j1", 3), Offer("ecg", "tabular"))
    support.wait_for(lambda: "j1" in launches.started, 10, "j1 started")
    coordinator.queue.submit("test", needs("j2", 3), Offer("ecg", "tabular"))
    assert coordinator.queue.position("j2")[0] == 1
    coordinator.stop(0)
    # The same addresses, so the agents find it again when it is back.
    again = support.start_coordinator(coordinator.layout.root, listen=coordinator.address,
                                      enroll_listen=coordinator.enroll_address)  # fmt: skip
    try:
        relaunches = Launches()
        again.queue.register("test", relaunches.launcher())
        waiting, running, _ = again.queue.snapshot()
        assert [w.job_id for w in waiting] == ["j2"] and [(p.job_id, sorted(p.sites)) for p in running] == [
            ("j1", list(HOSPITALS))
        ]
        for agent in cardio.values():  # the agents reconnect to the restarted coordinator
            support.wait_for(lambda agent=agent: again.hub.is_connected(agent.site), 15, "reconnect")
        # Still queued, and once the queue has seen the sites back (its next pass), for the right reason.
        support.wait_for(
            lambda: "already run as many jobs of study 'cardio'" in (again.queue.position("j2") or (0, ""))[1],
            15,
            "j2 queued behind j1",
        )
        again.queue.finish("j1")
        support.wait_for(lambda: "j2" in relaunches.started, 15, "j2 started after the restart")
    finally:
        again.stop(0)


def test_a_site_leaving_the_study_mid_job_is_released_and_the_job_goes_on(coordinator, cardio):
    launches = Launches()
    coordinator.queue.register("test", launches.launcher())
    coordinator.queue.submit("test", needs("j1", 2, max_sites=3), Offer("ecg", "tabular"))
    support.wait_for(lambda: "j1" in launches.started, 10, "j1 started")
    local(cardio["hospital-c"]).leave("cardio")
    support.wait_for(lambda: coordinator.queue.snapshot()[1][0].sites == ("hospital-a", "hospital-b"), 10, "released")


def test_a_job_every_site_refuses_by_policy_fails_at_once_naming_each_site_and_reason(coordinator, cardio):
    launches = Launches()
    coordinator.queue.register("test", launches.launcher())
    coordinator.queue.scheduler.decline_cooldown_s = 600  # the failure must not wait for a cooldown to end
    offered: list[str] = []
    for agent in cardio.values():  # counts every offer a site gets, before its study gate answers
        agent.dispatcher._gates.insert(
            0, lambda kind, _, site=agent.site: kind == "offer_work" and offered.append(site)
        )
    # Each site's allowance for cardio lists the dataset ecg only: every site refuses labs.
    asked = time.monotonic()
    coordinator.queue.submit("test", needs("labs", 1, max_sites=3), Offer("labs", "tabular"))
    reason = support.wait_for(lambda: launches.failed.get("labs"), 10, "the job to fail")
    assert time.monotonic() - asked < 10
    assert reason.startswith("every eligible site refused this job: hospital-a: "), reason
    for site in HOSPITALS:
        assert f"{site}: study 'cardio' may not use dataset 'labs' at this site" in reason, reason
    assert "labs" not in launches.started and "labs" not in coordinator.queue.known()
    # Not offered again: the queue forgot it.
    time.sleep(1.0)
    assert sorted(offered) == list(HOSPITALS)
    # A site that widens its allowance takes such a job: its refusal is not held against later work.
    local(cardio["hospital-a"]).accept(
        "cardio",
        allowance(datasets=["ecg", "labs"], apps=["tabular"],
                  share=pb.ComputeShare(max_jobs=1, cpu=1, memory_bytes=GIB, utc_offset_s=0)),
    )  # fmt: skip
    coordinator.queue.submit("test", needs("labs2", 1, max_sites=3), Offer("labs", "tabular"))
    support.wait_for(lambda: "labs2" in launches.started, 10, "labs2 started")
    assert launches.started["labs2"] == ["hospital-a"] and "labs2" not in launches.failed


def test_a_job_every_site_declines_as_busy_waits_and_its_reason_counts_every_decline(coordinator, cardio):
    launches = Launches()
    coordinator.queue.register("test", launches.launcher())
    for agent in cardio.values():
        agent.dispatcher.register("offer_work", offers(0.5, load=lambda: (64.0, 0.0, 0.0)))
    coordinator.queue.submit("test", needs("j", 3), Offer("ecg", "tabular"))
    # All three declined in one pass (the first decline already put the job back in the queue).
    reason = support.wait_for(
        lambda: "declined this job" in (found := (coordinator.queue.position("j") or (0, ""))[1]) and found, 10, "j"
    )
    assert "needs 3 of 3 site(s), 0 have room now: 3 of 3 sites declined this job a moment ago" in reason, reason
    # Busy is a passing no: after more than one cooldown (2 s here) the job still waits, not failed.
    time.sleep(3.0)
    assert "j" not in launches.failed and "j" in coordinator.queue.known() and "j" not in launches.started
    for agent in cardio.values():
        agent.dispatcher.register("offer_work", offers(1000.0))
    support.wait_for(lambda: "j" in launches.started, 10, "j started once the sites are free")
    assert sorted(launches.started["j"]) == list(HOSPITALS)
