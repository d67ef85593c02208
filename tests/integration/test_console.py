"""The console over real HTTPS against a real coordinator: login, roles, CSRF, sessions,
headers, and hostile text rendered harmless. (The browser-driven tests are in tests/browser.)"""

import re
import ssl
import time

import httpx
import pytest

from cloud_coordinator.accounts.client import AccountsClient
from cloud_coordinator.cli.exchange import ExchangeAdmin
from silolink.config import AccountsConfig, ConsoleConfig
from tests import support
from tests.integration.test_accounts import PASSWORD, new_account

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    coordinator = support.start_coordinator(
        tmp / "coordinator",
        console=ConsoleConfig(listen="127.0.0.1:0", refresh_s=1),
        accounts=AccountsConfig(session_idle_s=3, login_max_failures=3, login_lockout_s=2, login_window_s=60),
    )
    admin = support.operator(coordinator)
    AccountsClient(admin).set_password(PASSWORD)
    viewer = new_account(admin, coordinator, tmp, "vera", "viewer", password=PASSWORD)
    admin.add_site("evil-tags", "hospital", {"note": HOSTILE})
    yield coordinator
    viewer.close()
    admin.close()
    coordinator.stop(0)


def browser(coordinator) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(coordinator.layout.ca_cert))
    port = coordinator.console_address.rsplit(":", 1)[1]
    return httpx.Client(base_url=f"https://localhost:{port}", verify=context, follow_redirects=False, timeout=20)


def login(client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"csrf": token, "name": name, "password": password, "totp": ""})


def csrf_of(client: httpx.Client, path: str = "/") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def test_login_sets_a_strict_session_cookie_and_pages_carry_a_strict_csp(world):
    with browser(world) as client:
        page = client.get("/")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        answer = login(client, "admin")
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("__Host-silolink-session=sls_")
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert flag.lower() in cookie.lower()
        overview = client.get("/")
        assert overview.status_code == 200 and "Federation overview" in overview.text
        csp = overview.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert overview.headers["x-frame-options"] == "DENY" and overview.headers["cache-control"] == "no-store"
        assert "<script>" not in overview.text.replace('<script src="/static/', "")  # no inline script at all
        for path in ("/sites", "/sites/evil-tags", "/training", "/models", "/exchange", "/analytics", "/audit"):
            assert client.get(path).status_code == 200, path
        assert "every hash link" in client.get("/audit").text


def test_a_wrong_password_is_refused_and_then_rate_limited(world):
    with browser(world) as client:
        for _ in range(3):
            refused = login(client, "vera", "not the password")
            assert refused.status_code == 401 and "wrong account name, password or code" in refused.text
        locked = login(client, "vera")  # the right password, but locked out
        assert locked.status_code == 429 and "too many failed logins" in locked.text
        time.sleep(2.2)  # login_lockout_s
        assert login(client, "vera").status_code == 303


def test_a_viewer_is_refused_a_mutation(world):
    with browser(world) as client:
        login(client, "vera")
        sites = client.get("/sites")
        assert "Add a site" not in sites.text  # no form offered...
        token = csrf_of(client, "/sites")
        answer = client.post("/sites", data={"csrf": token, "name": "sneaky", "kind": "hospital"})
        # ...and the coordinator refuses the call itself if one is posted anyway.
        assert answer.status_code == 403 and "vera has the viewer role; AddSite needs the admin role" in answer.text
        answer = client.post("/training", data={"csrf": token, "dataset": "patients", "sites": "all"})
        assert answer.status_code == 403 and "StartJob needs the operator role" in answer.text


def test_forged_or_missing_csrf_tokens_and_cross_site_posts_are_refused(world):
    with browser(world) as client:
        login(client, "admin")
        forged = client.post("/sites", data={"csrf": "0" * 64, "name": "forged", "kind": "hospital"})
        assert forged.status_code == 403 and "CSRF token is missing or wrong" in forged.text
        missing = client.post("/sites", data={"name": "forged", "kind": "hospital"})
        assert missing.status_code == 403
        token = csrf_of(client)
        cross = client.post(
            "/sites",
            data={"csrf": token, "name": "forged", "kind": "hospital"},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403
        # Another session's token does not pass either.
        with browser(world) as other:
            login(other, "vera")
            theirs = csrf_of(other)
        assert client.post("/sites", data={"csrf": theirs, "name": "forged", "kind": "hospital"}).status_code == 403
        with support.operator(world) as admin:
            assert "forged" not in [s["name"] for s in admin.list_sites()]
        # The login form has its own token.
        assert client.post("/login", data={"name": "admin", "password": PASSWORD}).status_code == 403


def test_an_idle_session_expires(world):
    with browser(world) as client:
        login(client, "admin")
        assert client.get("/sites").status_code == 200
        time.sleep(3.3)  # session_idle_s
        expired = client.get("/sites")
        assert expired.status_code == 303 and expired.headers["location"] == "/login?reason=expired"
        # htmx polls are told where to go instead of swapping in a login page.
        expired = client.get("/live/sites", headers={"HX-Request": "true"})
        assert expired.headers["hx-redirect"] == "/login?reason=expired"


def test_logging_out_ends_the_session_on_the_coordinator(world):
    with browser(world) as client:
        login(client, "admin")
        session = client.cookies["__Host-silolink-session"]
        client.post("/logout", data={"csrf": csrf_of(client)})
        # The same cookie replayed is dead: the coordinator forgot the session.
        with browser(world) as replay:
            replay.cookies.set("__Host-silolink-session", session, domain="localhost")
            assert replay.get("/").status_code == 303


def test_hostile_text_in_tags_is_escaped(world):
    with browser(world) as client:
        login(client, "admin")
        for path in ("/sites", "/sites/evil-tags", "/live/sites"):
            text = client.get(path).text
            assert HOSTILE not in text and "&lt;script&gt;alert(" in text, path
        # And in a filter echoed back into the page.
        text = client.get("/sites", params={"tag": HOSTILE}).text
        assert HOSTILE not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


def test_an_unknown_page_and_a_missing_site(world):
    with browser(world) as client:
        login(client, "admin")
        assert client.get("/sites/no-such-site").status_code == 404
        assert client.get("/nowhere").status_code == 404


def test_the_analytics_page_shows_totals_and_the_sites_that_refused(world):
    from silolink import errors
    from silolink.analytics.query import build_query

    history = world.query_history
    answered = build_query("patients", "histogram age", bins="0,50,100")
    history.keep(
        query_id="a" * 32, asked_by="operator:admin", asked_at=time.time(), query=answered, selectors=[],
        sites=["hospital-a", "hospital-b"], failures={},
        totals={"bin_counts": [31, 44], "below": 0, "above": 2}, noise={"hospital-a": 0.5, "hospital-b": 0.0},
    )  # fmt: skip
    hostile = build_query("patients", "count")
    hostile.dataset, hostile.where = HOSTILE, f"note = '{HOSTILE}'"
    history.keep(
        query_id="b" * 32, asked_by="operator:vera", asked_at=time.time(), query=hostile, selectors=[],
        sites=["hospital-a", "hospital-b"],
        failures={"hospital-b": errors.PermissionDenied(f"no queries on {HOSTILE}")},
        error=errors.PermissionDenied("site hospital-b refused the query"),
    )  # fmt: skip
    with browser(world) as client:
        login(client, "vera")  # a viewer reads the history
        page = client.get("/analytics")
        assert page.status_code == 200 and HOSTILE not in page.text and "&lt;script&gt;alert(" in page.text
        assert "77 values in 2 bins" in page.text and "(noised)" in page.text
        assert "refused by hospital-b:" in page.text
        refused = client.get("/analytics", params={"outcome": "refused"}).text
        assert 'data-query="' + "b" * 32 in refused and 'data-query="' + "a" * 32 not in refused
        assert 'data-query="' + "a" * 32 in client.get("/analytics", params={"account": "admin"}).text
        detail = client.get("/analytics/" + "a" * 32).text
        assert "<td>[0.0, 50.0)</td><td>31</td>" in detail and "<td>&gt; 100.0</td><td>2</td>" in detail
        detail = client.get("/analytics/" + "b" * 32).text
        assert HOSTILE not in detail and "<code>PERMISSION_DENIED</code>" in detail
        assert client.get("/analytics/" + "c" * 32).status_code == 404
        assert client.get("/analytics", params={"outcome": "maybe"}).status_code == 400


def test_the_site_chart_reads_the_coordinators_resource_history(world):
    from silolink.gen.common.v1.site_pb2 import ResourceReport

    presence = world.sites.presence
    for i in range(5):  # as heartbeats would (the coordinator keeps one per interval)
        report = ResourceReport(load_average_1m=i, memory_total_bytes=100, memory_available_bytes=100 - 10 * i)
        presence.history.add("evil-tags", 1_000_000 + 600 * i, report)
    with browser(world) as client:
        login(client, "admin")
        series = client.get("/sites/evil-tags/resources.json").json()
        assert series["times"] == [1_000_000 + 600 * i for i in range(5)]
        assert series["load"] == [0, 1, 2, 3, 4] and series["memory_percent"] == [0, 10, 20, 30, 40]
        page = client.get("/sites/evil-tags").text
        assert "5 samples kept by the coordinator, one every 60 s (up to 360)" in page


@pytest.fixture
def hospitals_with_numpy_app(tmp_path):
    """A coordinator with its console, two running hospitals holding patients, and the numpy
    example pushed and approved at both (the app declares no ``strategy``)."""
    from silolink.config import TrainingConfig
    from silolink_demo import datasets
    from tests.integration.test_apps_examples import push_and_approve

    coordinator = support.start_coordinator(
        tmp_path / "coordinator", console=ConsoleConfig(listen="127.0.0.1:0", refresh_s=1)
    )
    admin = support.operator(coordinator)
    AccountsClient(admin).set_password(PASSWORD)
    _, parts = datasets.breast_cancer_splits(["hospital-a", "hospital-b"])
    agents = []
    try:
        for name, rows in parts.items():
            support.enroll_site(coordinator, name, tmp_path / name)
            agent = support.start_agent(tmp_path / name, training=TrainingConfig(datasets=("patients",)))
            agents.append(agent)
            source = datasets.write_csv(tmp_path / f"{name}.csv", rows)
            from edge_agent.catalog.store import Catalog

            Catalog.open(agent.layout.catalog_db).import_csv(
                source, "patients", label="diagnosis", id_column="patient_id"
            )
            assert agent.wait_connected(10)
        pushed = push_and_approve(coordinator, agents, "numpy-app")
        yield coordinator, admin, pushed
    finally:
        for agent in agents:
            agent.stop(0)
        admin.close()
        coordinator.stop(0)


def test_the_form_starts_a_pushed_app_with_its_own_run_config(hospitals_with_numpy_app):
    coordinator, admin, pushed = hospitals_with_numpy_app
    with browser(coordinator) as client:
        login(client, "admin")
        assert 'href="/training/new"' in client.get("/training").text
        form = client.get("/training/new", params={"app": "numpy-app"}).text
        # Every app in the registry is offered, and the chosen app's declared keys are the fields,
        # each showing its default; nothing of the built-in app's (no strategy, no rounds).
        assert '<option value="numpy-app" selected>numpy-app (newest: 1.0.0)</option>' in form
        assert '<option value="tabular"' in form and '<option value="numpy-app:1.0.0"' in form
        fields = dict(re.findall(r'<input name="rc\.([\w.-]+)" inputmode="\w+" placeholder="([^"]*)"', form))
        assert fields == {
            "num-server-rounds": "3", "fraction-train": "1.0", "min-nodes": "2", "local-epochs": "5",
            "learning-rate": "0.1", "num-features": "30", "num-classes": "2",
        }  # fmt: skip
        assert 'name="strategy"' not in form and 'name="rc.strategy"' not in form
        # The built-in app's fields come with it.
        assert 'name="rc.strategy"' in client.get("/training/new", params={"app": "tabular"}).text

        token = csrf_of(client, "/training/new")
        filled = {"csrf": token, "app": "numpy-app:1.0.0", "dataset": "patients", "sites": "kind=hospital",
                  "timeout_s": "300", "rc.num-server-rounds": "2", "rc.learning-rate": "0.5",
                  "rc.local-epochs": ""}  # fmt: skip
        # Bad input: the coordinator's own message above the form, the values kept, never a 500.
        for changes, message in [
            (
                {"rc.strategy": "fedprox"},
                "--run-config strategy: app numpy-app:1.0.0 does not declare run_config key &#39;strategy&#39;",
            ),
            (
                {"rc.num-server-rounds": "many"},
                "num-server-rounds is declared as int (default 3); &#39;many&#39; is not one",
            ),
            ({"rc.num-server-rounds": "2.5"}, "num-server-rounds is declared as int"),
            ({"app": "numpy-app:9.9"}, "app &#39;numpy-app&#39; has no version &#39;9.9&#39;"),
            ({"timeout_s": "soon"}, "the job timeout (s) must be a number, not &#39;soon&#39;"),
            ({"sites": "kind=factory"}, "only 0 enrolled site(s) match kind=factory"),
            ({"dataset": "<b>x</b>"}, "dataset &#39;&lt;b&gt;x&lt;/b&gt;&#39; is not a valid dataset name"),
        ]:
            answer = client.post("/training", data={**filled, **changes})
            assert answer.status_code == 400, (changes, answer.status_code, answer.text[-500:])
            assert message in answer.text, (changes, answer.text[-1500:])
            assert (
                'id="start-error"' in answer.text
                and 'name="rc.learning-rate" inputmode="decimal" placeholder="0.1" value="0.5"' in answer.text
            )
        with support.operator(coordinator) as op:
            assert op.find_jobs(10)["total"] == 0  # nothing was started by the refused posts

        started = client.post("/training", data=filled)
        assert started.status_code == 303 and started.headers["location"].startswith("/training/")
        job_id = started.headers["location"].rsplit("/", 1)[1]
    with support.operator(coordinator) as op:
        support.wait_for(lambda: op.get_job(job_id)["state"] not in ("queued", "running"), 120, "the numpy job to end")
        job = op.get_job(job_id)
    assert job["state"] == "completed", job["error"]
    # Only what the form filled in was sent: the app's defaults stand for the rest.
    assert job["run_config"] == {
        "num-server-rounds": 2, "fraction-train": 1.0, "min-nodes": 2, "local-epochs": 5,
        "learning-rate": 0.5, "num-features": 30, "num-classes": 2, "model-name": "numpy-softmax",
    }  # fmt: skip
    assert job["spec"]["strategy"] == "" and job["spec"]["rounds"] == 0 and job["spec"]["timeout_s"] == 300
    assert (job["app_version"], job["app_sha256"]) == ("1.0.0", pushed["sha256"])
    assert [r["round"] for r in job["rounds"]] == [1, 2]
    assert all(r["participants"] == ["hospital-a", "hospital-b"] for r in job["rounds"])
    # The job page's log shows the END of a long log (one read returns at most 1 MiB from where it starts).
    with (coordinator.training.job_dir(job_id) / "server.log").open("a") as log:
        log.writelines(f"line {i} of a long log\n" for i in range(100_000))  # ~2.3 MB
    with browser(coordinator) as client:
        login(client, "admin")
        tail = client.get(f"/training/{job_id}/log").text
    assert "line 99999 of a long log" in tail and "line 99800 of a long log" in tail
    assert "line 99799 of" not in tail and re.search(r"Only the end of the log is shown \(2\.\d MiB before it\)", tail)


def test_the_exchange_page_shows_who_may_send_to_whom_and_filters_by_site_and_state(world):
    with support.operator(world) as admin:
        admin.add_site("calm-clinic", "hospital", {})
        exchange = ExchangeAdmin(admin)
        pending = exchange.add_agreement("evil-tags", "calm-clinic", "referral")
        accepted = exchange.add_agreement("calm-clinic", "evil-tags", "second-opinion")
    world.exchange._agreements.accept("evil-tags", accepted["id"])  # what the recipient site's agent does
    with browser(world) as client:
        login(client, "vera")
        page = client.get("/exchange").text
        row = re.search(rf'<tr data-agreement="{pending["id"]}">(.*?)</tr>', page, re.S).group(1)
        assert "<td>evil-tags</td><td>calm-clinic</td><td>referral</td>" in row and "pending" in row
        by_site = client.get("/exchange", params={"site": "calm-clinic"})  # was a 500 (wrong keys)
        assert by_site.status_code == 200 and by_site.text.count("<tr data-agreement=") == 2
        assert client.get("/exchange", params={"site": "nobody"}).text.count("<tr data-agreement=") == 0
        active = client.get("/exchange", params={"state": "active"}).text
        assert f'data-agreement="{accepted["id"]}"' in active and f'data-agreement="{pending["id"]}"' not in active
        assert "<option selected>active</option>" in active
        overview = client.get("/").text
        assert re.search(r'<span class="big">1</span> agreements in force', overview)
