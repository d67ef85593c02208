"""The scheduler as plain logic: placement, reservations, fairness, refusals and its reasons."""

from __future__ import annotations

import pytest

from cloud_coordinator.scheduling import JobNeeds, Scheduler, SiteCapacity, StudyShare
from silolink import errors
from silolink import windows as win
from silolink.windows import TimeWindow, parse_windows

GIB = 1024**3
# Monday 2026-11-02 12:00 UTC.
NOON = 1793620800.0
NIGHT = parse_windows(["22:00-06:00"])


def share(**kw) -> StudyShare:
    return StudyShare(**{"max_jobs": 4, "cpu": 8, "memory_bytes": 32 * GIB, **kw})


def site(name: str, gpus: int = 0, cpus: float = 8, offset_h: int = 0, **shares: StudyShare) -> SiteCapacity:
    return SiteCapacity(name, cpus, 32 * GIB, gpus, offset_h * 3600, shares)


def job(job_id: str, study: str = "cardio", **kw) -> JobNeeds:
    return JobNeeds(job_id, study, **{"cpu": 1, "memory_bytes": GIB, "duration_s": 3600, **kw})


def started(placements) -> dict[str, tuple[str, ...]]:
    return {p.job_id: p.sites for p in placements}


# --- time windows ------------------------------------------------------------------------


def test_a_window_past_midnight_holds_work_that_ends_before_it_closes():
    night = TimeWindow.parse("22:00-06:00")
    at_23 = NOON + 11 * 3600
    assert win.fits((night,), 0, at_23, 7 * 3600)
    assert not win.fits((night,), 0, at_23, 7 * 3600 + 1)
    assert not win.fits((night,), 0, NOON, 60)
    # 03:00 the next morning is inside the window that opened the evening before.
    assert win.fits((night,), 0, NOON + 15 * 3600, 3 * 3600)
    assert win.next_fit((night,), 0, NOON, 3600) == NOON + 10 * 3600
    # A site 8 hours ahead of UTC: its 22:00 is 14:00 UTC.
    assert win.next_fit((night,), 8 * 3600, NOON, 3600) == NOON + 2 * 3600
    assert win.next_fit((night,), 0, NOON, 9 * 3600) is None  # longer than the window
    assert win.next_fit((), 0, NOON, 10**6) == NOON


@pytest.mark.parametrize("text", ["22:00", "25:00-06:00", "22:00-06:60", "10:00-10:00", "night"])
def test_a_bad_window_is_refused_naming_it(text):
    with pytest.raises(errors.InvalidArgument, match="time window"):
        TimeWindow.parse(text)


def test_all_day_is_written_0_to_24():
    assert TimeWindow.parse("00:00-24:00").length_s == win.DAY_S


# --- placement and reservations ----------------------------------------------------------


def test_two_jobs_never_hold_one_gpu():
    s = Scheduler()
    s.put_site(site("a", gpus=1, cardio=share(gpus=1)))
    s.put_site(site("b", cardio=share()))
    s.submit(job("j1", gpus=1))
    s.submit(job("j2", gpus=1))
    first = started(s.schedule(NOON))
    assert first == {"j1": ("a",)}
    assert s.schedule(NOON + 60) == []
    [waiting] = s.waiting(NOON + 60)
    assert waiting.job_id == "j2" and "1 of 2 sites have no free GPU until 13:00 UTC" in waiting.reason
    assert "1 of 2 sites cannot give study 'cardio' a GPU" in waiting.reason
    s.finish("j1", NOON + 1800)
    assert started(s.schedule(NOON + 1800)) == {"j2": ("a",)}


def test_a_job_starts_only_when_min_sites_have_room_and_takes_up_to_max_sites():
    s = Scheduler()
    for name in "abcd":
        s.put_site(site(name, cardio=share(max_jobs=1)))
    s.submit(job("big", min_sites=3, max_sites=3))
    s.submit(job("wide", min_sites=1))  # max_sites 0: every candidate with room
    placed = started(s.schedule(NOON))
    assert len(placed["big"]) == 3 and len(placed["wide"]) == 1
    assert set(placed["big"]) | set(placed["wide"]) == set("abcd")


def test_a_job_needing_more_than_any_site_gives_is_refused_at_once_saying_so():
    s = Scheduler()
    s.put_site(site("a", gpus=1, cardio=share(gpus=1, windows=NIGHT)))
    s.put_site(site("b", cardio=share(cpu=2, cpu_hours_per_day=1)))
    with pytest.raises(errors.FailedPrecondition) as e:
        s.submit(job("gpu2", gpus=2))
    assert "2 of 2 cannot give study 'cardio' 2 GPUs; 0 could" in e.value.message
    with pytest.raises(errors.FailedPrecondition, match="no time window as long as 9 h"):
        s.submit(job("long", duration_s=9 * 3600, sites=("a",)))
    with pytest.raises(errors.FailedPrecondition, match="daily compute budget under the job's 4 CPU-hours"):
        s.submit(job("hungry", cpu=2, duration_s=2 * 3600, sites=("b",)))
    with pytest.raises(errors.FailedPrecondition, match="give study 'onco' nothing"):
        s.submit(job("elsewhere", study="onco"))
    with pytest.raises(errors.FailedPrecondition, match="1 named site"):
        s.submit(job("ghost", sites=("a", "nowhere"), min_sites=2))
    with pytest.raises(errors.FailedPrecondition, match="no site matches"):
        s.submit(job("nobody", sites=()))
    assert s.waiting(NOON) == []  # nothing refused was queued
    s.submit(job("ok", sites=("b",), cpu=1, duration_s=1800))
    with pytest.raises(errors.AlreadyExists):
        s.submit(job("ok"))


def test_a_nights_only_site_waits_for_its_night_and_the_reason_says_until_when():
    s = Scheduler()
    s.put_site(site("a", gpus=1, cardio=share(gpus=1, windows=NIGHT)))
    s.put_site(site("b", gpus=1, offset_h=1, cardio=share(gpus=1, windows=NIGHT)))
    s.submit(job("scan", gpus=1, min_sites=2))
    assert s.schedule(NOON) == []
    [waiting] = s.waiting(NOON)
    # Site b's 22:00 is 21:00 UTC, site a's 22:00 UTC: the sooner one is named.
    assert "2 of 2 sites have no time window open for the study's 1 h job until 21:00 UTC" in waiting.reason
    assert waiting.next_change_at == NOON + 9 * 3600
    assert s.schedule(NOON + 9 * 3600) == []  # only b is open
    assert started(s.schedule(NOON + 10 * 3600)) == {"scan": ("a", "b")}


def test_external_load_from_heartbeats_leaves_less_room():
    s = Scheduler()
    s.put_site(site("a", cpus=8, cardio=share()))
    s.report("a", cpu_load=7.5, memory_available=30 * GIB)
    s.submit(job("j", cpu=1))
    assert s.schedule(NOON) == []
    assert "have less than 1 CPU free" in s.waiting(NOON)[0].reason
    s.report("a", cpu_load=1.0, memory_available=30 * GIB)
    assert started(s.schedule(NOON)) == {"j": ("a",)}
    s.report("a", cpu_load=0.0, memory_available=0, online=False)
    s.submit(job("k"))
    assert "1 of 1 sites are offline" in s.waiting(NOON)[0].reason


def test_a_daily_compute_budget_is_charged_and_resets_at_the_sites_midnight():
    s = Scheduler()
    s.put_site(site("a", cardio=share(cpu_hours_per_day=3)))
    for name in ("j1", "j2", "j3"):
        s.submit(job(name, cpu=1, duration_s=3600))
    assert len(s.schedule(NOON)) == 3
    s.submit(job("j4", cpu=1, duration_s=3600))
    for name in ("j1", "j2", "j3"):
        s.finish(name, NOON + 3600)
    assert s.schedule(NOON + 3600) == []
    assert "used study 'cardio''s compute budget for today until 00:00 UTC" in s.waiting(NOON + 3600)[0].reason
    assert started(s.schedule(NOON + 12 * 3600)) == {"j4": ("a",)}


def test_a_job_that_ends_early_is_charged_only_what_it_ran():
    s = Scheduler()
    s.put_site(site("a", cardio=share(cpu_hours_per_day=2)))
    s.submit(job("j1", cpu=1, duration_s=2 * 3600))
    s.schedule(NOON)
    s.finish("j1", NOON + 1800)  # half an hour of a 2 h reservation
    s.submit(job("j2", cpu=1, duration_s=3600))
    assert started(s.schedule(NOON + 1800)) == {"j2": ("a",)}


# --- order and fairness ------------------------------------------------------------------


def test_fair_share_serves_the_study_that_holds_least():
    s = Scheduler()
    s.put_site(site("a", cpus=4, cardio=share(cpu=4), onco=share(cpu=4)))
    for i in range(4):
        s.submit(job(f"c{i}", cpu=1, duration_s=600 * (i + 1)))
    s.submit(job("o0", study="onco", cpu=1))
    # One pass starts two cardio jobs and the onco one: each study in turn while it holds less.
    placed = started(s.schedule(NOON))
    assert "o0" in placed and len(placed) == 4
    s.submit(job("c9", cpu=1))
    s.submit(job("o1", study="onco", cpu=1))
    s.finish("c0", NOON + 600)
    # cardio holds 2 CPUs, onco 1: onco goes first though cardio's job was queued earlier.
    assert started(s.schedule(NOON + 600)) == {"o1": ("a",)}
    assert [w.job_id for w in s.waiting(NOON + 600)] == ["c3", "c9"]


def test_weights_give_a_study_a_larger_share():
    s = Scheduler(weights={"cardio": 3})
    s.put_site(site("a", cpus=4, cardio=share(cpu=4), onco=share(cpu=4)))
    for i in range(4):
        s.submit(job(f"c{i}"))
        s.submit(job(f"o{i}", study="onco"))
    placed = started(s.schedule(NOON))
    assert sum(j.startswith("c") for j in placed) == 3 and sum(j.startswith("o") for j in placed) == 1


def test_priority_orders_jobs_within_a_study():
    s = Scheduler()
    s.put_site(site("a", cpus=1, cardio=share(cpu=1)))
    s.submit(job("low"))
    s.submit(job("high", priority=5))
    assert started(s.schedule(NOON)) == {"high": ("a",)}
    assert s.waiting(NOON)[0].position == 1


def test_fifo_blocks_behind_the_first_job_and_the_fair_policy_backfills():
    for policy, expect in (("fifo", set()), ("fair", {"small"})):
        s = Scheduler(policy=policy)
        s.put_site(site("a", gpus=0, cardio=share()))
        s.put_site(site("b", gpus=1, cardio=share(gpus=1, windows=NIGHT)))
        s.submit(job("night", gpus=1))
        s.submit(job("small"))
        assert set(started(s.schedule(NOON))) == expect, policy


def test_a_blocked_job_holds_the_sites_it_gets_soonest_so_it_is_not_starved():
    s = Scheduler()
    s.put_site(site("a", cpus=2, cardio=share(cpu=2)))
    s.put_site(site("b", cpus=2, cardio=share(cpu=2)))
    s.submit(job("first", cpu=2, duration_s=3600, max_sites=1))
    s.schedule(NOON)  # "first" holds one site until 13:00
    s.submit(job("wide", cpu=2, min_sites=2))
    s.submit(job("long", cpu=2, duration_s=2 * 3600, max_sites=1))
    s.submit(job("short", cpu=2, duration_s=1800, max_sites=1))
    # "wide" cannot start; the free site is held for it from 13:00. "long" would run past
    # that and waits; "short" ends before and backfills.
    assert set(started(s.schedule(NOON))) == {"short"}
    assert s.held_for == "wide"
    reasons = {w.job_id: w.reason for w in s.waiting(NOON)}
    assert "held for job wide" in reasons["long"] or "have less than 2 CPU free" in reasons["long"]
    s.finish("first", NOON + 3000)
    s.finish("short", NOON + 1800)
    assert set(started(s.schedule(NOON + 3600))) == {"wide"}


# --- sites stay in charge ----------------------------------------------------------------


def test_a_site_that_declines_is_replaced_or_the_job_waits_without_it():
    s = Scheduler(decline_cooldown_s=600)
    for name in "abc":
        s.put_site(site(name, cardio=share(max_jobs=1)))
    s.submit(job("j", min_sites=2, max_sites=3))
    [placement] = s.schedule(NOON)
    assert placement.sites == ("a", "b", "c")
    rest = s.decline("j", "a", NOON)
    assert rest is not None and rest.sites == ("b", "c")  # goes on with the rest
    assert s.decline("j", "b", NOON) is None  # below min_sites: back in the queue
    assert s.running_on("c") == []
    # a and b are skipped for this job until their cooldowns end; c alone is too few.
    assert s.schedule(NOON) == []
    assert "2 of 3 sites declined this job a moment ago until 12:10 UTC" in s.waiting(NOON)[0].reason
    assert started(s.schedule(NOON + 600)) == {"j": ("a", "b", "c")}
    with pytest.raises(errors.NotFound):
        s.decline("j", "nowhere", NOON)


def test_a_declining_site_is_skipped_until_its_cooldown_ends():
    s = Scheduler(decline_cooldown_s=600)
    s.put_site(site("a", cardio=share()))
    s.submit(job("j"))
    s.schedule(NOON)
    assert s.decline("j", "a", NOON) is None
    assert s.schedule(NOON + 60) == []
    assert "declined this job a moment ago until 12:10 UTC" in s.waiting(NOON + 60)[0].reason
    assert started(s.schedule(NOON + 600)) == {"j": ("a",)}


def test_every_decline_of_an_offer_is_recorded_also_after_the_job_went_back_to_the_queue():
    s = Scheduler(decline_cooldown_s=600)
    for name in "abc":
        s.put_site(site(name, cardio=share()))
    s.submit(job("j", min_sites=3))
    s.schedule(NOON)
    assert s.decline("j", "a", NOON) is None  # below min_sites: back in the queue
    assert s.decline("j", "b", NOON) is None and s.decline("j", "c", NOON) is None  # still recorded
    assert "0 have room now: 3 of 3 sites declined this job a moment ago until 12:10 UTC" in s.waiting(NOON)[0].reason
    assert s.hopeless("j") == ""  # busy sites may say yes later: the job waits


def test_a_job_the_sites_refuse_by_policy_is_hopeless_once_too_few_remain():
    s = Scheduler(decline_cooldown_s=600)
    for name in "abc":
        s.put_site(site(name, cardio=share()))
    s.submit(job("j", min_sites=1, max_sites=2))
    assert started(s.schedule(NOON)) == {"j": ("a", "b")}
    s.decline("j", "a", NOON, refusal="study 'cardio' may not use dataset 'x' at this site")
    assert s.decline("j", "b", NOON) is None  # b was only busy
    assert s.hopeless("j") == ""  # b and c may still take it
    reason = s.waiting(NOON)[0].reason
    assert "1 of 3 sites refused this job (their policy for the study does not cover it)" in reason
    assert "1 of 3 sites declined this job a moment ago" in reason
    # Later c and b refuse too: nobody is left who would take it.
    assert started(s.schedule(NOON + 1)) == {"j": ("c",)}
    assert s.decline("j", "c", NOON + 1, refusal="this site has not accepted study 'cardio'") is None
    assert s.hopeless("j") == ""  # b's last answer was "busy"
    assert started(s.schedule(NOON + 600)) == {"j": ("a", "b")}
    s.decline("j", "a", NOON + 600, refusal="study 'cardio' may not use dataset 'x' at this site")
    assert s.decline("j", "b", NOON + 600, refusal="study 'cardio' may not use app 'y' at this site") is None
    assert s.hopeless("j") == (
        "every eligible site refused this job: a: study 'cardio' may not use dataset 'x' at this site; "
        "b: study 'cardio' may not use app 'y' at this site; c: this site has not accepted study 'cardio'"
    )
    # A site that changes what it gives is asked again at once and its refusal no longer counts.
    s.forget("c")
    assert s.hopeless("j") == ""
    assert started(s.schedule(NOON + 601)) == {"j": ("c",)}


def test_refusals_count_against_the_jobs_minimum_of_sites():
    s = Scheduler(decline_cooldown_s=600)
    for name in "abc":
        s.put_site(site(name, cardio=share()))
    s.submit(job("j", min_sites=2, max_sites=2))
    s.schedule(NOON)
    s.decline("j", "a", NOON, refusal="no a")
    assert s.decline("j", "b", NOON, refusal="no b") is None
    # c alone could never give the job its two sites.
    assert s.hopeless("j") == (
        "the job needs 2 site(s) and only 1 other eligible site(s) remain; refused: a: no a; b: no b"
    )


def test_running_jobs_are_restored_after_a_restart():
    s = Scheduler()
    s.put_site(site("a", gpus=1, cardio=share(gpus=1)))
    s.restore_running(job("old", gpus=1), ["a"], NOON - 600)
    s.submit(job("new", gpus=1))
    assert s.schedule(NOON) == []
    assert s.running_on("a") == ["old"]
    assert s.cancel("old") and started(s.schedule(NOON)) == {"new": ("a",)}


def test_a_site_removed_or_withdrawing_a_study_takes_no_new_work():
    s = Scheduler()
    s.put_site(site("a", cardio=share()))
    s.submit(job("j1"))
    s.schedule(NOON)
    s.put_site(site("a"))  # the site left the study: no share any more
    with pytest.raises(errors.FailedPrecondition, match="give study 'cardio' nothing"):
        s.submit(job("j2"))
    assert s.running_on("a") == ["j1"]  # what runs is the caller's to stop or keep
    s.remove_site("a")
    s.finish("j1", NOON + 60)
    with pytest.raises(errors.FailedPrecondition, match="have been removed"):
        s.submit(job("j3"))
