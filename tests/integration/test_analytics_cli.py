"""``cloud-coordinator query run`` against a real coordinator and agents: text, JSON, errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cloud_coordinator.cli import main
from tests.integration.test_analytics import rows_of, write_patients


def test_query_run_prints_totals_and_clear_errors(coordinator, make_agent, tmp_path):
    agents = [make_agent(name) for name in ("hospital-a", "hospital-b")]
    make_agent("factory-a", kind="factory")  # not selected by kind=hospital, holds no patients
    for i, agent in enumerate(agents):
        agent.catalog.import_csv(write_patients(tmp_path / f"{i}.csv", agent.site, 30 + i, i), "patients")
    base = ["query", "run", "--dataset", "patients", "--sites", "kind=hospital", "--data-dir",
            str(coordinator.layout.root)]  # fmt: skip
    runner = CliRunner()

    done = runner.invoke(main, [*base, "count", "--json"])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.output)
    assert answer["count"] == 61 and answer["sites"] == ["hospital-a", "hospital-b"]
    assert answer["statistic"] == "count" and answer["noise"] == {"hospital-a": 0.0, "hospital-b": 0.0}

    done = runner.invoke(main, [*base, "mean", "age", "--where", "age >= 18"])
    ages = [r[0] for a in agents for r in rows_of(a)]
    assert done.exit_code == 0, done.output
    assert "mean age where age >= 18 on patients across 2 sites (hospital-a, hospital-b)" in done.output
    assert f"mean: {sum(ages) / len(ages):.6g}" in done.output and "count: 61" in done.output

    done = runner.invoke(main, [*base, "histogram age --bins 0,55,100"])
    assert done.exit_code == 0, done.output
    assert "[0, 55)" in done.output and "[55, 100]" in done.output

    refused = runner.invoke(main, [*base, "count", "--where", "age > 1; DROP TABLE patients"])
    assert refused.exit_code == 2 and refused.output.startswith("error: --where: cannot read")
    small = runner.invoke(main, [*base, "count", "--where", "age > 200"])
    assert small.exit_code == 1 and "minimum cohort of 10" in small.output
    assert small.output.count("\n") == 1
