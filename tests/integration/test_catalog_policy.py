"""The coordinator learns about a site's datasets only what the site's policy allows."""

from __future__ import annotations

import pytest

from edge_agent.catalog.store import Catalog
from silolink import errors
from tests import support

CSV = "id,age,marker_value,outcome\np1,50,SECRET-ROW-1,1\np2,61,SECRET-ROW-2,0\n"


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        ("nothing", []),
        ("name", [{"name": "patients"}]),
        (
            "schema",
            [
                {
                    "name": "patients",
                    "label": "outcome",
                    "columns": [
                        {"name": "id", "type": "TEXT"},
                        {"name": "age", "type": "INTEGER"},
                        {"name": "marker_value", "type": "TEXT"},
                        {"name": "outcome", "type": "INTEGER"},
                    ],
                }
            ],
        ),
    ],
)
def test_operator_sees_what_the_policy_shares(coordinator, make_agent, tmp_path, share, expected):
    from silolink.config import CatalogConfig

    agent = make_agent("hospital-a", catalog=CatalogConfig(share_with_coordinator=share))
    source = tmp_path / "patients.csv"
    source.write_text(CSV)
    Catalog.open(agent.layout.catalog_db).import_csv(source, "patients", label="outcome", id_column="id")
    with support.operator(coordinator) as client:
        answer = client.list_site_datasets("hospital-a")
    assert answer == {"site": "hospital-a", "share": share, "datasets": expected}
    assert "SECRET-ROW" not in repr(answer)


def test_count_level_adds_row_counts_and_offline_sites_are_unavailable(coordinator, make_agent, tmp_path):
    from silolink.config import CatalogConfig

    agent = make_agent("hospital-a", catalog=CatalogConfig(share_with_coordinator="count"))
    source = tmp_path / "patients.csv"
    source.write_text(CSV)
    Catalog.open(agent.layout.catalog_db).import_csv(source, "patients")
    with support.operator(coordinator) as client:
        assert client.list_site_datasets("hospital-a")["datasets"][0]["row_count"] == 2
        agent.stop(0)
        support.wait_for(lambda: not coordinator.hub.is_connected("hospital-a"), 10, "disconnect")
        with pytest.raises(errors.Unavailable, match="not connected"):
            client.list_site_datasets("hospital-a")
        with pytest.raises(errors.NotFound, match="no site named"):
            client.list_site_datasets("nowhere")
