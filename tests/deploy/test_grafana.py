"""The Grafana dashboard in deploy/grafana: it loads, and every panel's query names only
metrics a real coordinator exports (scraped from its /metrics after real calls)."""

import json
import re
import urllib.request
from pathlib import Path

import pytest

from silolink import errors
from tests import support

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "silolink-coordinator.json"
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values",
    "rate", "irate", "increase", "histogram_quantile", "time", "le", "inf",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels left out)."""
    text = re.sub(r'"[^"]*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        after = text[match.end() :].lstrip()
        if after.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_are_read_from_promql():
    expr = 'histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{x="a b"}[5m])))'
    assert metric_names(expr) == {"grpc_server_handling_seconds_bucket"}
    assert metric_names('sum(a_total) - sum by (m) (b_total{c!="OK"})') == {"a_total", "b_total"}


def exported_names(text: str) -> set[str]:
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for kind, suffixes in (("histogram", ("_bucket", "_sum", "_count")), ("counter", ("_total",))):
        for name in re.findall(rf"^# TYPE (\S+) {kind}$", text, re.M):
            names |= {name + s for s in suffixes}
    names |= set(re.findall(r"^# TYPE (\S+) gauge$", text, re.M))
    return names


@pytest.fixture
def scraped(tmp_path, make_agent, coordinator):
    make_agent("hospital-a")
    with support.operator(coordinator) as client:
        client.list_sites()
        with pytest.raises(errors.NotFound):  # a refused call is counted too (grpc_code NOT_FOUND)
            client.get_job("nope")
    return urllib.request.urlopen(f"http://{coordinator.metrics_address}/metrics", timeout=10).read().decode()


@pytest.fixture
def coordinator(tmp_path):
    coord = support.start_coordinator(tmp_path / "coordinator", metrics_listen="127.0.0.1:0")
    yield coord
    coord.stop(0)


def test_every_panel_queries_metrics_the_coordinator_exports(scraped):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    exported = exported_names(scraped)
    missing = {}
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {target['expr']!r}"
            if names - exported:
                missing[panel["title"]] = sorted(names - exported)
    assert missing == {}


def test_grpc_metrics_use_the_names_stock_dashboards_use(scraped):
    labels = 'grpc_method="ListSites",grpc_service="silolink.admin.v1.AdminService",grpc_type="unary"'
    assert f"grpc_server_started_total{{{labels}}}" in scraped
    assert re.search(r'grpc_server_handled_total\{grpc_code="OK",' + labels + r"\} [1-9]", scraped)
    assert 'grpc_code="NOT_FOUND",grpc_method="GetJob"' in scraped
    assert 'grpc_method="Connect",grpc_service="silolink.control.v1.ControlService",grpc_type="bidi_stream"' in scraped
    assert "grpc_server_handling_seconds_bucket{" in scraped
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "silolink_build_info{"):
        assert name in scraped
    assert re.search(r'silolink_site_heartbeat_age_seconds\{site="hospital-a"\} \d', scraped)
    assert 'silolink_certificate_expiry_timestamp_seconds{kind="site",name="hospital-a"}' in scraped
    assert 'silolink_training_jobs{state="running"} 0.0' in scraped
