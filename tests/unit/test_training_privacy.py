"""What DP a training job declares to the sites (FlowerTask.dp_*), from which the sites' ledgers spend."""

import pytest

from cloud_coordinator.training.jobs import JobService, privacy_declared
from cloud_coordinator.training.store import Job, JobSpec
from silolink import errors


def job(run_config: dict, **spec) -> Job:
    return Job(id="j1", spec=JobSpec(app="tabular", dataset="ecg", sites=("kind=hospital",), **spec), state="running",
               error="", model="", dp_epsilon=None, dp_delta=None, created_by="operator:admin", created_at=0.0,
               updated_at=0.0, resumed=0, scaling=None, run_config=run_config)  # fmt: skip


def test_the_tabular_app_declares_its_noise_and_rounds_and_other_apps_declare_their_own():
    tabular = {"dp-noise": 1.5, "num-server-rounds": 4}
    assert privacy_declared(job(tabular), builtin=True) == (1.5, 4, 1e-5)
    assert privacy_declared(job({"dp-noise": 0.0, "num-server-rounds": 4}), builtin=True) == (0.0, 0, 0.0)
    # A user's app's run_config means nothing to silolink: only what the job declares counts.
    assert privacy_declared(job(tabular), builtin=False) == (0.0, 0, 0.0)
    declared = job({}, privacy_noise_multiplier=0.8, privacy_rounds=10)
    assert privacy_declared(declared, builtin=False) == (0.8, 10, 1e-5)
    declared = job({}, privacy_noise_multiplier=0.8, privacy_rounds=10, privacy_delta=1e-6)
    assert privacy_declared(declared, builtin=False) == (0.8, 10, 1e-6)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"privacy_noise_multiplier": 1.0}, "gives both --privacy-noise"),
        ({"privacy_rounds": 3}, "gives both --privacy-noise"),
        ({"privacy_noise_multiplier": 1.0, "privacy_rounds": 3, "privacy_delta": 1.0}, "--privacy-delta"),
        ({"cpu": -1.0}, "--cpu, --memory and --gpus"),
        ({"expected_duration_s": 40 * 24 * 3600.0}, "--duration"),
        ({"min_sites": 3, "max_sites": 2}, "--max-sites 2 is below --min-sites 3"),
    ],
)
def test_bad_needs_and_declarations_are_refused_before_anything_is_queued(spec, message):
    with pytest.raises(errors.InvalidArgument, match=message):
        JobService._check(None, JobSpec(app="tabular", dataset="ecg", sites=("kind=hospital",), **spec))
