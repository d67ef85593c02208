"""A running agent answers the coordinator over data read in place, and keeps serving when a
source goes away: the failure names the dataset, the next query after the fix succeeds."""

from __future__ import annotations

import shutil

import pytest

pa = pytest.importorskip("pyarrow", reason="pyarrow is in the [sources] extra (pip install -e '.[dev]')")

from cloud_coordinator.analytics.client import AnalyticsClient  # noqa: E402
from edge_agent.catalog.sources import add_source  # noqa: E402
from silolink import errors  # noqa: E402
from silolink.config import AnalyticsConfig, CatalogConfig  # noqa: E402
from tests import support  # noqa: E402


def test_queries_over_parquet_and_a_vanished_file(coordinator, make_agent, tmp_path):
    import pyarrow.parquet as pq

    settings = {"analytics": AnalyticsConfig(min_cohort=1), "catalog": CatalogConfig(share_with_coordinator="count")}
    files = {}
    for i, name in enumerate(("hospital-a", "hospital-b")):
        agent = make_agent(name, **settings)
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"age": list(range(20 + i, 80)), "ward": ["n", "s"] * 30 if i == 0 else ["n"] * 59,
                                 "mrn": [f"m{j}" for j in range(60 - i)]}), path)  # fmt: skip
        add_source(agent.catalog, "visits", str(path), sensitive=["mrn", "ward"])
        files[name] = path
    with support.operator(coordinator) as op:
        client = AnalyticsClient(op)
        assert client.run_query("visits", "count", ("kind=hospital",), where="age >= 50")["count"] == 30 + 30
        described = op.list_site_datasets("hospital-a")["datasets"][0]
        assert described["row_count"] == 60 and [c["name"] for c in described["columns"]] == ["age"]
        with pytest.raises(errors.PermissionDenied, match="'ward' of dataset 'visits' is marked sensitive"):
            client.run_query("visits", "count", ("kind=hospital",), where="ward = 'n'")
        moved = files["hospital-b"].with_suffix(".moved")
        shutil.move(files["hospital-b"], moved)
        with pytest.raises(errors.NotFound, match=r"dataset 'visits': .*hospital-b.parquet does not exist"):
            client.run_query("visits", "mean age", ("kind=hospital",))
        assert "row_count" not in op.list_site_datasets("hospital-b")["datasets"][0]
        shutil.move(moved, files["hospital-b"])
        result = client.run_query("visits", "mean age", ("kind=hospital",))
        assert result["count"] == 60 + 59
