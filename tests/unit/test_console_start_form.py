"""The console's start form: what a filled-in form sends to StartJob (only what was filled in,
typed as the app declares it), and which app version's fields it shows."""

import pytest

from cloud_coordinator.console.start_form import app_choices, chosen, field_kind, job_spec
from silolink import errors

DECLARED = {"num-server-rounds": 3, "lr": 0.1, "mode": "fast", "verbose": False, "hidden": ""}


def test_only_what_was_filled_in_is_sent_typed_as_flwr_run_reads_it():
    form = {
        "csrf": "x", "app": "my-app:1.2.0", "dataset": " patients ", "sites": "kind=hospital; region=north\nsite=h-c",
        "rc.num-server-rounds": "5", "rc.lr": "1", "rc.mode": "", "rc.verbose": "true", "rc.hidden": "64,32",
        "timeout_s": "", "model_name": "",
    }  # fmt: skip
    assert job_spec(form, DECLARED) == {
        "app": "my-app",
        "app_version": "1.2.0",
        "dataset": "patients",
        "sites": ["kind=hospital", "region=north", "site=h-c"],
        # lr is sent as typed (1); the coordinator makes it the declared float.
        "run_config": {"num-server-rounds": 5, "lr": 1, "verbose": True, "hidden": "64,32"},
    }
    # A key the app declares as text keeps exactly what was typed, even when it looks like a number.
    assert job_spec({"app": "a", "rc.mode": "5"}, DECLARED)["run_config"] == {"mode": "5"}
    with pytest.raises(errors.InvalidArgument, match="numbers, booleans or text, not '\\[1, 2\\]'"):
        job_spec({"app": "a", "rc.lr": "[1, 2]"}, DECLARED)
    # A value of the wrong type, or an undeclared key, goes to the coordinator as typed: it refuses it.
    assert job_spec({"app": "a", "rc.num-server-rounds": "many", "rc.nope": "1"}, DECLARED)["run_config"] == {
        "num-server-rounds": "many",
        "nope": 1,
    }


def test_timeout_study_and_what_the_job_needs_at_each_site():
    form = {"app": "tabular", "timeout_s": "90", "study": " trial-7 ", "cpu": "2.5", "memory_gib": "1.5",
            "gpus": "1", "expected_duration_s": "600", "priority": "-2", "max_sites": "4"}  # fmt: skip
    spec = job_spec(form, {})
    assert (spec["app"], spec["app_version"], spec["timeout_s"], spec["study"]) == ("tabular", "", 90.0, "trial-7")
    assert (spec["cpu"], spec["memory_bytes"], spec["gpus"]) == (2.5, 3 << 29, 1)
    assert (spec["expected_duration_s"], spec["priority"], spec["max_sites"]) == (600.0, -2, 4)
    for field, value, message in [
        ("timeout_s", "soon", "the job timeout \\(s\\) must be a number, not 'soon'"),
        ("timeout_s", "0", "between 1 and 2592000 seconds"),
        ("gpus", "1.5", "GPUs per site must be a whole number, not '1.5'"),
        ("memory_gib", "lots", "memory per site \\(GiB\\) must be a number"),
    ]:
        with pytest.raises(errors.InvalidArgument, match=message):
            job_spec({"app": "tabular", field: value}, {})


def test_the_form_shows_the_fields_of_the_version_chosen():
    listed = [
        {"name": "numpy-app", "version": "1.0.0", "config": {"a": 1}},
        {"name": "numpy-app", "version": "1.1.0", "config": {"a": 1, "b": 2.0}},
        {"name": "tabular", "version": "1.0.0", "config": {"strategy": "fedavg"}},
    ]
    choices = app_choices(listed)
    assert [(c.name, c.newest["version"]) for c in choices] == [("numpy-app", "1.1.0"), ("tabular", "1.0.0")]
    assert chosen(choices, "numpy-app") == ("numpy-app", listed[1])  # the newest
    assert chosen(choices, "numpy-app:1.0.0") == ("numpy-app:1.0.0", listed[0])
    assert chosen(choices, "tabular:9") == ("numpy-app", listed[1])  # unknown: the first app
    assert chosen([], "x") == ("", None)
    assert [field_kind(v) for v in (True, 3, 0.5, "x")] == ["bool", "int", "float", "text"]
