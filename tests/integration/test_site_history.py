"""GetSite over real mTLS: a site with its resource reports over time as the coordinator
sampled them from real heartbeats, for every account role; the CLI's `sites show`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cloud_coordinator.cli import main
from silolink import errors
from silolink.config import CoordinatorSitesConfig
from tests import support
from tests.integration.test_accounts import new_account

SAMPLES = 4


def test_get_site_returns_the_resource_history_sampled_from_heartbeats(tmp_path):
    coordinator = support.start_coordinator(
        tmp_path / "c",
        heartbeat_interval_s=0.1,
        sites=CoordinatorSitesConfig(resource_interval_s=0.25, resource_samples=SAMPLES),
    )
    support.enroll_site(coordinator, "hospital-a", tmp_path / "a")
    agent = support.start_agent(tmp_path / "a")
    admin = support.operator(coordinator)
    vera = new_account(admin, coordinator, tmp_path, "vera", "viewer")
    try:
        assert agent.wait_connected(10)
        history = coordinator.sites.presence.history
        # Heartbeats every 0.1 s, one sample per 0.25 s, four kept: the ring fills, then wraps.
        support.wait_for(lambda: history.samples("hospital-a") and len(history.samples("hospital-a")) == SAMPLES, 10)
        first = history.samples("hospital-a")[0].at
        support.wait_for(lambda: history.samples("hospital-a")[0].at > first, 10)

        site = vera.get_site("hospital-a")  # a viewer may read it
        assert site["name"] == "hospital-a" and site["state"] == "online"
        assert site["history_interval_s"] == 0.25 and site["history_capacity"] == SAMPLES
        assert len(site["history"]) == SAMPLES
        times = [h["at"] for h in site["history"]]
        assert times == sorted(times)
        live = site["resources"]
        for sample in site["history"]:
            assert sample["memory_total_bytes"] == pytest.approx(live["memory_total_bytes"], rel=1e-6)
            assert 0 < sample["memory_available_bytes"] <= sample["memory_total_bytes"]
            assert sample["disk_free_bytes"] > 0 and sample["load_average_1m"] >= 0
        newer = vera.get_site("hospital-a", history_after=times[-1])
        assert all(h["at"] > times[-1] for h in newer["history"])

        with pytest.raises(errors.NotFound, match="no site named 'nowhere'"):
            vera.get_site("nowhere")
        with pytest.raises(errors.InvalidArgument, match="name the site"):
            vera.get_site("")

        runner = CliRunner()
        base = ["sites", "show", "hospital-a", "--data-dir", str(coordinator.layout.root)]
        done = runner.invoke(main, [*base, "--json"])
        assert done.exit_code == 0, done.output
        shown = json.loads(done.output)
        assert shown["name"] == "hospital-a" and len(shown["history"]) == SAMPLES
        done = runner.invoke(main, [*base, "--samples", "2"])
        assert done.exit_code == 0, done.output
        assert "site hospital-a (hospital): online" in done.output
        assert f"resources over time: {SAMPLES} samples, one per 0.25 s (up to {SAMPLES} kept)" in done.output
        assert done.output.count(" GiB ") >= 2 and "MEM USED" in done.output
    finally:
        vera.close()
        admin.close()
        agent.stop(0)
        coordinator.stop(0)
