"""The console over real HTTPS against a real coordinator: login, roles, CSRF, sessions,
headers, and hostile text rendered harmless. (The browser-driven tests are in tests/browser.)"""

import re
import ssl
import time

import httpx
import pytest

from cloud_coordinator.accounts.client import AccountsClient
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
