"""Console pages' logic and templates without a server: filters, pages, chart series,
alerts, and hostile text (job names, metric keys, reasons) rendered harmless."""

import math
from types import SimpleNamespace

from cloud_coordinator.console import views
from cloud_coordinator.console.web import Console

HOSTILE = '<script>alert("x")</script>'


def site(name, state="online", kind="hospital", tags=None, cert="2099-01-01T00:00:00+00:00", beat=None):
    return {
        "name": name,
        "state": state,
        "kind": kind,
        "tags": tags or {},
        "certificate_expires_at": cert,
        "last_heartbeat": beat,
        "version": "0.1.0",
        "resources": {},
    }


def test_sites_filter_and_paginate():
    sites = [site(f"h-{i:03}", tags={"region": "north" if i % 2 else "south"}) for i in range(120)]
    sites.append(site("f-001", kind="factory", state="revoked"))
    north = views.filter_sites(sites, views.SiteFilter(tag="region=north"))
    assert len(north) == 60
    assert len(views.filter_sites(sites, views.SiteFilter(tag="region"))) == 120
    assert [s["name"] for s in views.filter_sites(sites, views.SiteFilter(kind="factory", state="revoked"))] == [
        "f-001"
    ]
    page = views.paginate(north, 2, size=50)
    assert (page.number, page.pages, page.total, len(page.items), page.has_next, page.has_previous) == (
        2,
        2,
        60,
        10,
        False,
        True,
    )
    assert views.paginate([], 7).number == 1 and views.page_number("x") == 1 and views.page_number("-3") == 1


def test_alerts_for_expiring_certificates_stale_sites_and_failed_jobs():
    now = 2_000_000_000.0
    soon = "2033-05-20T00:00:00+00:00"  # within 14 days of now
    sites = [site("a", cert=soon), site("b", state="offline", beat="2033-05-01T00:00:00+00:00"), site("c")]
    texts = [a.text for a in views.site_alerts(sites, now, stale_after_s=45)]
    assert any(t.startswith("site a: certificate expires in") for t in texts)
    assert any(t.startswith("site b: no heartbeat for") for t in texts)
    assert not any(t.startswith("site c") for t in texts)
    jobs = [{"job": "j1", "state": "failed", "error": "too few sites"}, {"job": "j2", "state": "completed"}]
    assert [a.text for a in views.job_alerts(jobs)] == ["job j1 failed: too few sites"]


def test_round_series_has_one_line_per_metric_and_no_nan():
    job = {
        "rounds": [
            {"round": 1, "train_metrics": {"loss": 0.7}, "eval_metrics": {"accuracy": 0.8}, "duration_s": 0.1},
            {"round": 2, "train_metrics": {"loss": math.nan}, "eval_metrics": {"accuracy": 0.9}, "duration_s": 0.1},
        ]
    }
    series = views.round_series(job)
    assert series["rounds"] == [1, 2]
    assert series["series"] == {"accuracy": [0.8, 0.9], "loss": [0.7, None]}
    job["rounds"][0]["eval_metrics"]["loss"] = 0.75  # a key both phases report
    assert set(views.round_series(job)["series"]) == {"accuracy", "train loss", "eval loss"}


def render(template, **values):
    console = Console(base=None)
    ctx = SimpleNamespace(
        account={"name": "ann", "role": "admin"},
        role="admin",
        csrf="t",
        can=lambda role: True,
        request=SimpleNamespace(url=SimpleNamespace(path="/training/x")),
    )
    return console.env.get_template(template).render(ctx=ctx, **values)


def test_hostile_job_names_metric_keys_and_reasons_are_escaped():
    job = {
        "job": "job1",
        "state": "failed",
        "spec": {"app": "tabular", "dataset": "patients", "rounds": 2, "model_name": HOSTILE, "sites": [HOSTILE]},
        "rounds": [
            {
                "round": 1,
                "participants": ["a"],
                "excluded": [{"site": "b", "reason": HOSTILE}],
                "train_metrics": {HOSTILE: 1.0},
                "eval_metrics": {},
                "duration_s": 0.1,
            }
        ],
        "error": HOSTILE,
        "model": HOSTILE,
        "privacy": None,
        "created_by": "operator:ann",
        "created_at": None,
        "resumed": False,
    }
    html = render("job.html", job=job)
    assert HOSTILE not in html and html.count("&lt;script&gt;") >= 5
    # A user app's run_config: its keys and text values are the app's own, shown escaped.
    job["run_config"] = {HOSTILE: HOSTILE, "num-server-rounds": 4}
    html = render("job.html", job=job)
    assert HOSTILE not in html and html.count("&lt;script&gt;") >= 7
    assert "<code>num-server-rounds=4</code>" in html and ">1 of 4<" in html
    page = views.paginate([job], 1)
    html = render("jobs_table.html", page=page, params={})
    assert HOSTILE not in html and "&lt;script&gt;" in html


def test_hostile_log_lines_are_escaped():
    html = render("job_log.html", lines=[HOSTILE, "round 1 done"], cut=3, complete=False)
    assert HOSTILE not in html and "&lt;script&gt;" in html and "3 earlier lines" in html
