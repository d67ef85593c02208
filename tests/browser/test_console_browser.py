"""The console in a real browser (Debian's Chromium, headless, through chromium-driver)
against a real coordinator and real agents: log in, watch sites come online, start a job and
watch its chart fill, roll its model out and watch each site turn active, a viewer refused, a
forged CSRF token refused, an idle session expired, a wrong password rate-limited. The same
run saves a screenshot of each page to docs/console/.

One browser session serves every test in this module (they run in order), to stay fast.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloud_coordinator.accounts.client import AccountsClient
from cloud_coordinator.analytics.client import AnalyticsClient
from cloud_coordinator.cli.exchange import ExchangeAdmin
from edge_agent.catalog.store import Catalog
from silolink import errors
from silolink.config import AccountsConfig, ConsoleConfig, CoordinatorSitesConfig, TrainingConfig
from silolink_demo import datasets
from tests import support
from tests.integration.test_accounts import PASSWORD, new_account

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The screenshots in docs/console/ come from this test: SILOLINK_UPDATE_SCREENSHOTS=1 writes them
# there; otherwise they go to a temporary folder (taken all the same, the tree stays clean).
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
SHOTS = (
    DOCS_SHOTS
    if os.environ.get("SILOLINK_UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "silolink-console-shots"
)
HOSPITALS = {"hospital-a": "north", "hospital-b": "south", "hospital-c": "north"}
IDLE_S = 8.0

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (scripts/install-system-packages.sh installs them)",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    coordinator = support.start_coordinator(
        tmp / "coordinator",
        console=ConsoleConfig(listen="127.0.0.1:0", refresh_s=0.5),
        accounts=AccountsConfig(session_idle_s=IDLE_S, login_max_failures=3, login_lockout_s=20),
        # A resource sample every half second, so the site chart has a history within the run.
        sites=CoordinatorSitesConfig(resource_interval_s=0.5),
    )
    admin = support.operator(coordinator)
    AccountsClient(admin).set_password(PASSWORD)
    new_account(admin, coordinator, tmp, "vera", "viewer", password=PASSWORD).close()
    new_account(admin, coordinator, tmp, "omar", "operator", password=PASSWORD).close()
    _, splits = datasets.breast_cancer_splits(list(HOSPITALS))
    agent_dirs = {}
    for name, region in HOSPITALS.items():
        agent_dirs[name] = tmp / name
        added = admin.add_site(name, "hospital", {"region": region})
        from edge_agent import enroll as enroll_mod

        enroll_mod.enroll(
            agent_dirs[name], coordinator.address, added["token"], added["ca_fingerprint"], coordinator.enroll_address
        )
        source = datasets.write_csv(tmp / f"{name}.csv", splits[name])
        Catalog.open(agent_dirs[name] / "catalog.db").import_csv(
            source, "patients", label="diagnosis", id_column="patient_id"
        )
    admin.add_site("factory-a", "factory", {"line": "3"})  # pending: never enrolls
    agents = []

    def start_agents():
        for name in HOSPITALS:
            agents.append(support.start_agent(agent_dirs[name], training=TrainingConfig(datasets=("patients",))))

    start_agents.agents = agents  # the running hospitals, once started
    yield coordinator, admin, start_agents
    for agent in agents:
        agent.stop(0)
    admin.close()
    coordinator.stop(0)


@pytest.fixture(scope="module")
def browser(world):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    coordinator = world[0]
    cert = x509.load_pem_x509_certificates(coordinator.layout.server_cert.read_bytes())[0]
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={coordinator.layout.root.parent / 'chromium-profile'}",
        # Trust exactly the coordinator's server key (our own CA is not in the browser's store).
        "--ignore-certificate-errors-spki-list=" + base64.b64encode(hashlib.sha256(spki).digest()).decode(),
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.base = f"https://localhost:{coordinator.console_address.rsplit(':', 1)[1]}"
    yield driver
    driver.quit()


def go(driver, path: str) -> None:
    driver.get(driver.base + path)


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def wait_until(driver, condition, timeout_s: float, what: str):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    # htmx swaps live fragments under us: an element read mid-swap is simply read again.
    # Chromium reports some such reads as a generic error naming a node no longer in the
    # document: that one is the same race, and nothing else is ignored.
    def mid_swap_is_not_yet(d):
        try:
            return condition(d)
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return False
            raise

    ignored = [StaleElementReferenceException, NoSuchElementException]
    wait = WebDriverWait(driver, timeout_s, poll_frequency=0.1, ignored_exceptions=ignored)
    return wait.until(mid_swap_is_not_yet, f"waiting for {what}")


def shot(driver, name: str) -> None:
    """The whole page (up to 1,800 px tall), as a person scrolling it would see it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(800, min(1800, height + 100)))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(1280, 900)


def log_in(driver, name: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    go(driver, "/login")
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def log_out(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "form.who button").click()
    wait_until(driver, lambda d: "/login" in d.current_url, 10, "the login page")


def post_form(driver, action: str, fields: dict[str, str]) -> None:
    """Post a form the page does not offer, as a hostile or curious user could."""
    driver.execute_script(
        "var f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "Object.entries(arguments[1]).forEach(function (kv) { var i = document.createElement('input');"
        "i.type = 'hidden'; i.name = kv[0]; i.value = kv[1]; f.appendChild(i); });"
        "document.body.appendChild(f); f.submit();",
        action,
        fields,
    )


def csrf_on_page(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, "form.who input[name=csrf]").get_attribute("value")


def choose_app(driver, ref: str) -> None:
    """Pick NAME or NAME:VERSION in the start form; htmx swaps in that app's run_config fields."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select

    select = Select(driver.find_element(By.ID, "start-app"))
    if select.first_selected_option.get_attribute("value") == ref:
        return
    before = driver.find_element(By.ID, "app-fields")
    select.select_by_value(ref)
    # htmx replaces the whole #app-fields: wait for the old one to go, so no field read is stale.
    wait_until(driver, expected_conditions.staleness_of(before), 10, f"the fields of {ref} swapped in")
    name = ref.partition(":")[0]
    wait_until(driver, lambda d: text_of(d, "#app-about").startswith(f"{name}:"), 10, f"the fields of {ref}")


def rollout_states(driver) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "table.rollout tr[data-site]")
    return {r.get_attribute("data-site"): r.find_element(By.CSS_SELECTOR, ".state").text for r in rows}


def test_log_in_and_see_sites_come_online(world, browser):
    _, _, start_agents = world
    go(browser, "/")
    assert "/login" in browser.current_url
    shot(browser, "login")
    log_in(browser, "admin")
    wait_until(browser, lambda d: "Federation overview" in d.page_source, 10, "the overview")
    assert text_of(browser, "#sites-online") == "0"
    start_agents()
    wait_until(browser, lambda d: text_of(d, "#sites-online") == "3", 30, "three sites online, live")
    assert text_of(browser, "#account").startswith("admin")


def test_start_a_job_and_watch_its_chart_fill(world, browser):
    from selenium.webdriver.common.by import By

    go(browser, "/training")
    browser.find_element(By.ID, "start-job-link").click()
    wait_until(browser, lambda d: d.find_elements(By.NAME, "rc.num-server-rounds"), 10, "the start form")
    form = browser.find_element(By.ID, "start-job")
    choose_app(browser, "tabular")
    form.find_element(By.NAME, "dataset").send_keys("patients")
    form.find_element(By.NAME, "sites").send_keys("kind=hospital")
    form.find_element(By.NAME, "rc.num-server-rounds").send_keys("30")
    form.find_element(By.NAME, "rc.min-sites").send_keys("3")
    form.find_element(By.ID, "start").click()
    wait_until(browser, lambda d: "/training/" in d.current_url and d.find_elements(By.ID, "job-chart"), 15, "the job")
    seen = set()

    def filled(d):
        seen.add(d.find_element(By.ID, "job-chart").get_attribute("data-points"))
        return (
            text_of(d, "#job-state") == "completed"
            and d.find_element(By.ID, "job-chart").get_attribute("data-points") == "30"
        )

    wait_until(browser, filled, 120, "the job to complete with its chart filled")
    assert len(seen - {None, "0"}) >= 2, f"the chart should fill round by round, saw {sorted(seen - {None})}"
    assert browser.find_elements(By.CSS_SELECTOR, "#job-chart canvas")  # uPlot drew it
    assert "30 of 30" in text_of(browser, "#rounds-done")
    wait_until(browser, lambda d: d.find_elements(By.ID, "job-log"), 10, "the ServerApp log")
    log = text_of(browser, "#job-log")
    assert log and log != "(no output yet)", "the ServerApp's output should show on the job page"
    shot(browser, "training-job")
    go(browser, "/training")
    shot(browser, "training")


def test_roll_out_the_model_and_watch_each_site_turn_active(world, browser):
    from selenium.webdriver.common.by import By

    go(browser, "/training")
    browser.find_element(By.CSS_SELECTOR, "tr[data-job] a").click()
    wait_until(browser, lambda d: d.find_elements(By.LINK_TEXT, "patients-tabular:1"), 10, "the model link")
    browser.find_element(By.LINK_TEXT, "patients-tabular:1").click()
    wait_until(browser, lambda d: "Model patients-tabular:1" in d.page_source, 10, "the model page")
    browser.find_element(By.NAME, "to").send_keys("kind=hospital")
    browser.find_element(By.ID, "rollout").click()

    def all_active(d):
        states = [e.text for e in d.find_elements(By.CSS_SELECTOR, "table.rollout tr[data-site] .state")]
        return len(states) == 3 and all(s == "active" for s in states)

    wait_until(browser, all_active, 60, "every hospital to turn active")
    shot(browser, "model-rollout")


def test_continue_a_canary_and_roll_back_from_the_model_page(world, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from cloud_coordinator.registry.client import RegistryClient
    from tests.integration.test_registry import model_file

    _, admin, _ = world
    pushed = RegistryClient(admin).push(model_file(tmp_path, "v2", 2.0), "patients-tabular", description="retrained")
    assert pushed["version"] == "2"
    go(browser, "/models/patients-tabular/2")
    browser.find_element(By.NAME, "to").send_keys("kind=hospital")
    browser.find_element(By.ID, "canary").clear()
    browser.find_element(By.ID, "canary").send_keys("1")
    browser.find_element(By.ID, "rollout").click()

    def canary_active(d):
        states = sorted(rollout_states(d).values())
        return states == ["active", "held", "held"]

    wait_until(browser, canary_active, 60, "the canary site active, the others held")
    shot(browser, "model-canary")
    browser.find_element(By.ID, "continue-canary").click()
    wait_until(browser, lambda d: list(rollout_states(d).values()) == ["active"] * 3, 60, "every hospital on v2")
    # Rolling back to a version that does not exist: the coordinator's message, nothing changed.
    browser.find_element(By.NAME, "to_version").send_keys("9")
    browser.find_element(By.ID, "rollback").click()
    wait_until(browser, lambda d: d.find_elements(By.ID, "error-message"), 10, "the refusal")
    assert "patients-tabular" in text_of(browser, "#error-message") and "9" in text_of(browser, "#error-message")
    go(browser, "/models/patients-tabular/2")
    browser.find_element(By.NAME, "to_version").send_keys("1")
    browser.find_element(By.ID, "rollback").click()
    wait_until(browser, lambda d: d.current_url.endswith("/models/patients-tabular/1"), 10, "version 1's page")
    wait_until(browser, lambda d: list(rollout_states(d).values()) == ["active"] * 3, 60, "every hospital back on v1")
    states = {s["state"] for s in RegistryClient(admin).status("patients-tabular", "2")}
    assert states == {"superseded"}, states


def test_start_a_pushed_app_with_its_own_run_config(world, browser):
    """The numpy example (no `strategy`, its own keys) from the form: a wrong value shows the
    coordinator's message with the values kept, then the job runs with what was filled in."""
    from selenium.webdriver.common.by import By

    from tests.integration.test_apps_examples import push_and_approve

    coordinator, admin, start_agents = world
    push_and_approve(coordinator, start_agents.agents, "numpy-app")
    go(browser, "/training/new")
    choose_app(browser, "numpy-app:1.0.0")
    assert browser.find_elements(By.NAME, "rc.min-nodes") and not browser.find_elements(By.NAME, "rc.strategy")
    assert browser.find_element(By.NAME, "rc.learning-rate").get_attribute("placeholder") == "0.1"
    form = browser.find_element(By.ID, "start-job")
    form.find_element(By.NAME, "dataset").send_keys("patients")
    form.find_element(By.NAME, "sites").send_keys("kind=hospital")
    form.find_element(By.NAME, "timeout_s").send_keys("300")
    form.find_element(By.NAME, "rc.num-server-rounds").send_keys("many")
    form.find_element(By.NAME, "rc.learning-rate").send_keys("0.5")
    form.find_element(By.ID, "start").click()
    wait_until(browser, lambda d: d.find_elements(By.ID, "start-error"), 15, "the refusal")
    assert "num-server-rounds is declared as int (default 3); 'many' is not one" in text_of(browser, "#start-error")
    # The page kept what was typed, and the app chosen.
    assert browser.find_element(By.NAME, "rc.learning-rate").get_attribute("value") == "0.5"
    assert text_of(browser, "#app-about").startswith("numpy-app:1.0.0")
    rounds = browser.find_element(By.NAME, "rc.num-server-rounds")
    rounds.clear()
    rounds.send_keys("3")
    shot(browser, "training-start")
    browser.find_element(By.ID, "start").click()
    wait_until(browser, lambda d: d.find_elements(By.ID, "job-state"), 15, "the job page")
    wait_until(browser, lambda d: text_of(d, "#job-state") in ("completed", "failed"), 120, "the numpy job to end")
    job = admin.get_job(browser.current_url.rsplit("/", 1)[1])
    assert job["state"] == "completed", job["error"]
    assert job["run_config"]["num-server-rounds"] == 3 and job["run_config"]["learning-rate"] == 0.5
    assert job["spec"]["strategy"] == "" and job["spec"]["timeout_s"] == 300
    assert len(job["rounds"]) == 3 and all(len(r["participants"]) == 3 for r in job["rounds"])


def test_the_queue_page_shows_who_waits_why_what_runs_where_and_each_studys_share(world, browser):
    """Two jobs of study cardio, each needing all three hospitals, which give cardio one job at a time."""
    from selenium.webdriver.common.by import By

    from cloud_coordinator.studies.client import StudiesClient
    from edge_agent.client import LocalClient
    from edge_agent.studies.client import LocalStudiesClient
    from silolink.gen.studies.v1 import studies_pb2 as pb

    coordinator, admin, _ = world
    studies = StudiesClient(admin)
    studies.create("cardio", description="ECG risk", weight=2)
    studies.invite("cardio", ["kind=hospital"])
    share = pb.ComputeShare(max_jobs=1, cpu=1, memory_bytes=2**30)
    for name in HOSPITALS:
        with LocalClient.for_data_dir(coordinator.layout.root.parent / name) as local:
            LocalStudiesClient(local).accept(
                "cardio", pb.Allowance(datasets=["patients"], apps=["tabular"], share=share)
            )
    spec = dict(app="tabular", dataset="patients", sites=["kind=hospital"], study="cardio", cpu=1, min_sites=3)
    first = admin.start_training(**spec, rounds=10_000)
    support.wait_for(lambda: admin.get_job(first["job"])["state"] == "running", 30, "the first job to start")
    second = admin.start_training(**spec, rounds=1)
    try:
        go(browser, "/queue")
        waiting = wait_until(
            browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"#queue-waiting tr[data-job='{second['job']}']"),
            10, "the waiting job",
        )[0]  # fmt: skip
        assert waiting.find_element(By.CSS_SELECTOR, ".position").text == "1"
        assert "3 of 3 sites already run as many jobs of study 'cardio' as they allow" in waiting.text
        placed = browser.find_element(By.CSS_SELECTOR, f"#queue-running tr[data-job='{first['job']}'] .sites")
        assert placed.text == "hospital-a, hospital-b, hospital-c"
        share = browser.find_element(By.CSS_SELECTOR, "#queue-shares tr[data-study='cardio']")
        assert float(share.find_element(By.CSS_SELECTOR, ".share").text.rstrip("%")) > 0
        assert share.text.split()[1] == "2"  # its weight
        shot(browser, "queue")
        # The jobs page shows the queued job's place; its own page says why it waits.
        go(browser, "/training")
        assert "#1" in text_of(browser, f"tr[data-job='{second['job']}']")
        go(browser, f"/training/{second['job']}")
        assert "position 1: needs 3 of 3 site(s), 0 have room now" in text_of(browser, "#job-queue")
        # Stopping the first job frees the hospitals: the second leaves the queue and runs.
        admin.stop_job(first["job"])
        go(browser, "/queue")
        wait_until(
            browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"#queue-running tr[data-job='{second['job']}']")
            or admin.get_job(second["job"])["state"] in ("completed", "failed"), 30, "the second job to be placed",
        )  # fmt: skip
    finally:
        for job in (first, second):
            if admin.get_job(job["job"])["state"] in ("queued", "running"):
                admin.stop_job(job["job"])


def test_every_page_renders_for_the_screenshots(world, browser):
    coordinator, admin, _ = world
    from selenium.webdriver.common.by import By

    ExchangeAdmin(admin).add_agreement("hospital-a", "hospital-b", "referral")
    ask = AnalyticsClient(admin)
    ask.run_query("patients", "count", ["kind=hospital"])
    ask.run_query("patients", "mean mean_radius", ["region=north"], where="diagnosis = 1")
    histogram = ask.run_query("patients", "histogram mean_radius", ["kind=hospital"], bins="0,11,13,16,40")
    with pytest.raises(errors.FailedPrecondition):  # too few rows at each hospital
        ask.run_query("patients", "count", ["kind=hospital"], where="mean_radius > 27")
    for path, name in [
        ("/", "overview"),
        ("/sites", "sites"),
        ("/sites/hospital-a", "site"),
        ("/models", "models"),
        ("/exchange", "exchange"),
        ("/analytics", "analytics"),
        (f"/analytics/{histogram['query_id']}", "analytics-query"),
        ("/audit", "audit"),
    ]:
        go(browser, path)
        assert "Not allowed" not in browser.page_source and "went wrong" not in browser.page_source, path
        if name == "site":
            wait_until(browser, lambda d: "Policy:" in d.page_source, 20, "the site's catalog policy")
            # The chart's first drawing already spans the coordinator's history of the site
            # (a sample per 0.5 s since the agents started), not only what this page saw.
            wait_until(
                browser, lambda d: int(d.find_element(By.ID, "resource-chart").get_attribute("data-points") or 0) > 20,
                10, "the resource chart drawn from the coordinator's history",
            )  # fmt: skip
            assert browser.find_elements(By.CSS_SELECTOR, "#resource-chart canvas")
        if name == "analytics":
            rows = browser.find_elements(By.CSS_SELECTOR, "table.queries tr[data-query]")
            assert [r.get_attribute("data-outcome") for r in rows] == ["refused", "answered", "answered", "answered"]
            assert (
                "refused by hospital-a, hospital-b, hospital-c:" in rows[0].text
                and "minimum cohort of 10" in rows[0].text
            )
            assert "values in 4 bins" in rows[1].text and "count 456" in rows[3].text
        if name == "analytics-query":
            assert text_of(browser, "#query-outcome") == "answered"
            assert len(browser.find_elements(By.CSS_SELECTOR, "table.histogram tbody tr")) == 6
        shot(browser, name)
    assert "every hash link" in browser.page_source


def test_a_viewer_is_refused_a_mutation(world, browser):
    from selenium.webdriver.common.by import By

    log_out(browser)
    log_in(browser, "vera")
    wait_until(browser, lambda d: "Federation overview" in d.page_source, 10, "the overview")
    go(browser, "/sites")
    assert "Add a site" not in browser.page_source
    go(browser, "/training")
    assert not browser.find_elements(By.ID, "start-job")
    post_form(browser, "/training", {"csrf": csrf_on_page(browser), "dataset": "patients", "sites": "all"})
    wait_until(browser, lambda d: d.find_elements(By.ID, "error-message"), 10, "the refusal")
    assert "vera has the viewer role; StartJob needs the operator role" in text_of(browser, "#error-message")
    shot(browser, "viewer-refused")


def test_a_forged_csrf_token_is_refused(world, browser):
    go(browser, "/sites")
    post_form(browser, "/sites", {"csrf": "f" * 64, "name": "forged", "kind": "hospital"})
    wait_until(browser, lambda d: "CSRF token is missing or wrong" in d.page_source, 10, "the CSRF refusal")
    assert "forged" not in [s["name"] for s in world[1].list_sites()]


def test_an_idle_session_expires(world, browser):
    go(browser, "/static/console.css")  # a page that does not poll
    time.sleep(IDLE_S + 0.5)
    go(browser, "/sites")
    wait_until(browser, lambda d: "/login?reason=expired" in d.current_url, 10, "the login page")
    assert "Your session has ended" in browser.page_source


def test_a_wrong_password_is_rate_limited(world, browser):
    for _ in range(3):
        log_in(browser, "omar", "not the password at all")
        wait_until(browser, lambda d: d.find_elements("id", "login-error"), 10, "the refusal")
        assert "wrong account name, password or code" in text_of(browser, "#login-error")
    log_in(browser, "omar")  # the right password now, but locked out
    wait_until(browser, lambda d: "too many failed logins" in d.page_source, 10, "the lockout")
    shot(browser, "login-rate-limited")
