"""Operator accounts: setup codes, per-call roles, disabling, the audit naming accounts, the
console's sessions and failed-login throttling. Real coordinator, real TLS."""

import sqlite3
import time

import grpc
import pytest

from cloud_coordinator.accounts.client import AccountsClient, redeem_setup_code
from cloud_coordinator.accounts.console_credentials import issue_console_credentials
from cloud_coordinator.operator_client import OperatorClient, OperatorCredentials
from silolink import errors
from silolink.config import AccountsConfig
from silolink.gen.admin.v1 import admin_pb2, admin_pb2_grpc
from silolink.gen.registry.v1 import registry_pb2, registry_pb2_grpc
from tests import support

PASSWORD = "correct horse battery"


def new_account(
    admin: OperatorClient, coordinator, tmp_path, name: str, role: str, password: str = ""
) -> OperatorClient:
    """Add ``name`` and redeem its setup code as its holder would; a client with its credentials."""
    added = AccountsClient(admin).add(name, role)
    creds_file = tmp_path / f"{name}.json"
    redeem_setup_code(
        creds_file,
        coordinator.address,
        added["setup_code"],
        added["ca_fingerprint"],
        coordinator.enroll_address,
        password=password,
    )
    return OperatorClient(OperatorCredentials.from_file(creds_file))


def deprecate_missing_model(client: OperatorClient):
    """An operator-only call: an operator gets NOT_FOUND (no such model), a viewer PERMISSION_DENIED."""
    stub = registry_pb2_grpc.RegistryServiceStub(client.channel)
    return client.call(stub.DeprecateModel, registry_pb2.DeprecateModelRequest(name="nothing", version="1"))


def test_the_init_credential_is_the_first_admin(coordinator):
    with support.operator(coordinator) as admin:
        me = AccountsClient(admin).whoami()
        assert (me["name"], me["role"], me["via"]) == ("admin", "admin", None)
        assert [a["name"] for a in AccountsClient(admin).list()] == ["admin"]


def test_roles_are_enforced_per_call_and_follow_changes_at_once(coordinator, tmp_path):
    with support.operator(coordinator) as admin, new_account(admin, coordinator, tmp_path, "alice", "viewer") as alice:
        assert AccountsClient(alice).whoami()["role"] == "viewer"
        alice.list_sites()  # viewers read
        with pytest.raises(errors.PermissionDenied, match="alice has the viewer role; AddSite needs the admin role"):
            alice.add_site("st-marys", "hospital")
        with pytest.raises(errors.PermissionDenied, match="DeprecateModel needs the operator role"):
            deprecate_missing_model(alice)

        AccountsClient(admin).set_role("alice", "operator")
        with pytest.raises(errors.NotFound):  # let through: the model just does not exist
            deprecate_missing_model(alice)
        with pytest.raises(errors.PermissionDenied, match="needs the admin role"):
            AccountsClient(alice).add("bob", "viewer")

        AccountsClient(admin).disable("alice")
        with pytest.raises(errors.PermissionDenied, match="account alice is disabled"):
            alice.list_sites()
        assert [(a["name"], a["disabled"]) for a in AccountsClient(admin).list()] == [
            ("admin", False),
            ("alice", True),
        ]


def test_the_audit_log_names_the_account_behind_each_action(coordinator, tmp_path):
    with support.operator(coordinator) as admin, new_account(admin, coordinator, tmp_path, "carol", "admin") as carol:
        carol.add_site("st-marys", "hospital")
    actions = {(e.actor, e.action, e.subject) for e in coordinator.audit.entries()}
    assert ("operator:admin", "account.add", "carol") in actions
    assert ("operator:carol", "account.setup", "carol") in actions
    assert ("operator:carol", "site.add", "st-marys") in actions


def test_setup_codes_are_single_use_and_checked(coordinator, tmp_path):
    with support.operator(coordinator) as admin:
        added = AccountsClient(admin).add("dave", "viewer")
    redeem = dict(
        coordinator=coordinator.address,
        ca_fingerprint=added["ca_fingerprint"],
        enroll_address=coordinator.enroll_address,
    )
    with pytest.raises(errors.InvalidArgument, match="at least 10 characters"):
        redeem_setup_code(tmp_path / "a.json", code=added["setup_code"], password="short", **redeem)
    with pytest.raises(errors.Unauthenticated, match="malformed"):
        redeem_setup_code(tmp_path / "b.json", code="nonsense", **redeem)
    redeem_setup_code(tmp_path / "c.json", code=added["setup_code"], **redeem)
    with pytest.raises(errors.Unauthenticated, match="already used"):
        redeem_setup_code(tmp_path / "d.json", code=added["setup_code"], **redeem)
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "d.json").exists()


def test_the_last_admin_cannot_be_disabled_or_demoted(coordinator):
    with support.operator(coordinator) as admin:
        with pytest.raises(errors.FailedPrecondition, match="last enabled admin"):
            AccountsClient(admin).disable("admin")
        with pytest.raises(errors.FailedPrecondition, match="last enabled admin"):
            AccountsClient(admin).set_role("admin", "viewer")


def test_a_reset_revokes_the_old_certificate(coordinator, tmp_path):
    with support.operator(coordinator) as admin, new_account(admin, coordinator, tmp_path, "erin", "viewer") as erin:
        erin.list_sites()
        AccountsClient(admin).reset("erin")
        with pytest.raises(errors.PermissionDenied, match="not \\(or no longer\\) valid"):
            erin.list_sites()


def test_an_operator_certificate_may_not_assert_a_session(coordinator):
    with support.operator(coordinator) as admin, admin.acting_for("sls_forged") as forged:
        with pytest.raises(errors.PermissionDenied, match="only the console may act for an account"):
            forged.list_sites()


@pytest.fixture
def console_coordinator(tmp_path):
    limits = AccountsConfig(session_idle_s=1.5, login_max_failures=3, login_lockout_s=30)
    coord = support.start_coordinator(tmp_path / "coordinator", accounts=limits)
    yield coord
    coord.stop(0)


def console_client(coordinator) -> OperatorClient:
    creds = issue_console_credentials(coordinator.ca, coordinator.sites)
    return OperatorClient(OperatorCredentials(coordinator.address, creds))


def test_the_console_acts_only_for_logged_in_accounts_with_their_role(console_coordinator, tmp_path):
    coordinator = console_coordinator
    with (
        support.operator(coordinator) as admin,
        new_account(admin, coordinator, tmp_path, "frank", "viewer", password=PASSWORD),
        console_client(coordinator) as console,
    ):
        # The console alone may log accounts in, and nothing else.
        with pytest.raises(errors.PermissionDenied, match="role console may not call"):
            console.list_sites()
        session = AccountsClient(console).login("frank", PASSWORD, "", "127.0.0.1")["session"]
        with console.acting_for(session) as frank:
            assert AccountsClient(frank).whoami()["via"] == "console"
            frank.list_sites()
            with pytest.raises(errors.PermissionDenied, match="frank has the viewer role"):
                frank.add_site("x-ray", "hospital")
            # Changing the password takes the holder's own certificate, not a browser session.
            with pytest.raises(errors.PermissionDenied, match="users password"):
                AccountsClient(frank).set_password("another long password")
            time.sleep(1.7)  # idle past session_idle_s
            with pytest.raises(errors.Unauthenticated, match="session has expired"):
                frank.list_sites()
        with console.acting_for("sls_guessed") as guessed, pytest.raises(errors.Unauthenticated, match="expired"):
            guessed.list_sites()
        # Disabling an account ends its sessions at once.
        session = AccountsClient(console).login("frank", PASSWORD, "", "127.0.0.1")["session"]
        AccountsClient(admin).set_role("frank", "operator")
        AccountsClient(admin).disable("frank")
        with console.acting_for(session) as frank, pytest.raises(errors.Unauthenticated):
            frank.list_sites()


def test_failed_logins_are_rate_limited(console_coordinator, tmp_path):
    coordinator = console_coordinator
    with (
        support.operator(coordinator) as admin,
        new_account(admin, coordinator, tmp_path, "gina", "viewer", password=PASSWORD),
        console_client(coordinator) as console,
    ):
        accounts = AccountsClient(console)
        for _ in range(3):
            with pytest.raises(errors.Unauthenticated, match="wrong account name, password or code"):
                accounts.login("gina", "wrong password!", "", "10.0.0.9")
        # Locked out: even the right password is refused without being checked.
        with pytest.raises(errors.ResourceExhausted, match="too many failed logins; try again in"):
            accounts.login("gina", PASSWORD, "", "10.0.0.8")
        # An unknown account fails the same way as a wrong password.
        with pytest.raises(errors.Unauthenticated, match="wrong account name, password or code"):
            accounts.login("nobody", PASSWORD, "", "10.0.0.7")
    assert any(e.action == "account.login_locked" for e in coordinator.audit.entries())


def test_totp_is_required_once_enabled(console_coordinator, tmp_path):
    import pyotp

    coordinator = console_coordinator
    with (
        support.operator(coordinator) as admin,
        new_account(admin, coordinator, tmp_path, "hank", "viewer") as hank,
        console_client(coordinator) as console,
    ):
        uri = AccountsClient(hank).set_password(PASSWORD, enable_totp=True)["totp_uri"]
        totp = pyotp.parse_uri(uri)
        with pytest.raises(errors.Unauthenticated):
            AccountsClient(console).login("hank", PASSWORD, "", "127.0.0.1")
        code = totp.now()
        assert AccountsClient(console).login("hank", PASSWORD, code, "127.0.0.1")["session"].startswith("sls_")
        with pytest.raises(errors.Unauthenticated):  # the same code twice: no replay
            AccountsClient(console).login("hank", PASSWORD, code, "127.0.0.1")


def test_a_data_dir_from_before_accounts_makes_its_operator_the_first_admin(tmp_path):
    data_dir = support.init_coordinator(tmp_path / "coordinator")
    db = sqlite3.connect(data_dir / "state" / "coordinator.db")
    db.execute("DROP TABLE accounts")
    db.execute("DELETE FROM _sqlite_migrations WHERE migration_set = 'coordinator.accounts'")
    db.commit()
    db.close()
    coordinator = support.start_coordinator(data_dir)
    try:
        with support.operator(coordinator) as admin:
            assert AccountsClient(admin).whoami()["role"] == "admin"
    finally:
        coordinator.stop(0)


def test_raw_grpc_status_codes(coordinator, tmp_path):
    with support.operator(coordinator) as admin, new_account(admin, coordinator, tmp_path, "ivan", "viewer") as ivan:
        stub = admin_pb2_grpc.AdminServiceStub(ivan.channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.RevokeSite(admin_pb2.RevokeSiteRequest(name="st-marys"), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_role_names_are_checked(coordinator):
    with support.operator(coordinator) as admin, pytest.raises(errors.InvalidArgument, match="unknown role"):
        AccountsClient(admin).add("judy", "superuser")
