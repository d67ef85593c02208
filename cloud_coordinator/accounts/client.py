"""The operator's calls to AccountService (CLI, console, demo), and redeeming a setup code:
make a key here, pin the coordinator's CA, get an operator certificate, write a credentials
file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from silolink import errors, pki
from silolink.cli_util import iso
from silolink.config import default_enroll_address
from silolink.files import private_dir, write_atomic
from silolink.gen.accounts.v1 import accounts_pb2 as pb
from silolink.gen.accounts.v1 import accounts_pb2_grpc
from silolink.identity import Role
from silolink.protos import epoch
from silolink.rpc.channels import call_enrollment_listener, pin_ca, split_address

from ..operator_client import OperatorClient
from .servicer import ROLE_FROM_PROTO, ROLE_TO_PROTO


def account_to_dict(account: pb.Account) -> dict[str, Any]:
    return {
        "name": account.name,
        "role": ROLE_FROM_PROTO.get(account.role, "unknown"),
        "disabled": account.disabled,
        "set_up": account.set_up,
        "console_password": account.has_password,
        "totp": account.totp,
        "created_at": iso(epoch(account, "created_at")),
        "created_by": account.created_by,
        "last_login_at": iso(epoch(account, "last_login_at")),
    }


def setup_to_dict(account: pb.Account, setup: pb.SetupCode) -> dict[str, Any]:
    return {
        "account": account.name,
        "role": ROLE_FROM_PROTO.get(account.role, "unknown"),
        "setup_code": setup.code,
        "expires_at": iso(epoch(setup, "expires_at")),
        "ca_fingerprint": setup.ca_fingerprint,
        "coordinator_address": setup.coordinator_address,
        "enroll_address": setup.enroll_address,
    }


def _role(name: str) -> int:
    if name not in ROLE_TO_PROTO:
        raise errors.InvalidArgument(f"unknown role {name!r}: use viewer, operator or admin")
    return ROLE_TO_PROTO[name]


class AccountsClient:
    """Typed calls to AccountService and ConsoleSessionService on an OperatorClient's channel."""

    def __init__(self, operator: OperatorClient) -> None:
        self._operator = operator
        self._stub = accounts_pb2_grpc.AccountServiceStub(operator.channel)
        self._sessions = accounts_pb2_grpc.ConsoleSessionServiceStub(operator.channel)

    def add(self, name: str, role: str, setup_ttl_s: int = 0) -> dict[str, Any]:
        reply = self._operator.call(
            self._stub.AddAccount, pb.AddAccountRequest(name=name, role=_role(role), setup_ttl_s=setup_ttl_s)
        )
        return setup_to_dict(reply.account, reply.setup)

    def reset(self, name: str, setup_ttl_s: int = 0) -> dict[str, Any]:
        reply = self._operator.call(self._stub.ResetAccount, pb.ResetAccountRequest(name=name, setup_ttl_s=setup_ttl_s))
        return setup_to_dict(reply.account, reply.setup)

    def list(self) -> list[dict[str, Any]]:
        return [
            account_to_dict(a) for a in self._operator.call(self._stub.ListAccounts, pb.ListAccountsRequest()).accounts
        ]

    def disable(self, name: str) -> dict[str, Any]:
        return account_to_dict(
            self._operator.call(self._stub.DisableAccount, pb.DisableAccountRequest(name=name)).account
        )

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        reply = self._operator.call(self._stub.SetAccountRole, pb.SetAccountRoleRequest(name=name, role=_role(role)))
        return account_to_dict(reply.account)

    def whoami(self) -> dict[str, Any]:
        reply = self._operator.call(self._stub.WhoAmI, pb.WhoAmIRequest())
        return {**account_to_dict(reply.account), "via": reply.via or None}

    def set_password(self, password: str, enable_totp: bool = False) -> dict[str, Any]:
        reply = self._operator.call(
            self._stub.SetPassword, pb.SetPasswordRequest(password=password, enable_totp=enable_totp)
        )
        return {"totp_uri": reply.totp_uri or None}

    def login(self, name: str, password: str, totp_code: str, client_address: str) -> dict[str, Any]:
        """Open a console session (the console's own certificate only)."""
        reply = self._operator.call(
            self._sessions.Login,
            pb.LoginRequest(name=name, password=password, totp_code=totp_code, client_address=client_address),
        )
        return {
            "session": reply.session,
            "account": account_to_dict(reply.account),
            "expires_at": epoch(reply, "expires_at"),
        }

    def logout(self, session: str) -> None:
        self._operator.call(self._sessions.Logout, pb.LogoutRequest(session=session))


def redeem_setup_code(
    output: Path,
    coordinator: str,
    code: str,
    ca_fingerprint: str,
    enroll_address: str | None = None,
    password: str = "",
    enable_totp: bool = False,
    timeout_s: float = 15.0,
) -> dict[str, Any]:
    """Redeem ``code`` for an operator certificate whose key is made here, and write the
    credentials file ``output`` (the format ``--credentials`` reads)."""
    output = Path(output)
    if output.exists():
        raise errors.AlreadyExists(f"{output} exists; choose another file for the new credentials")
    split_address(coordinator)
    enroll_address = enroll_address or default_enroll_address(coordinator)
    ca_pem = pin_ca(enroll_address, ca_fingerprint)
    key = pki.generate_key()
    request = pb.RedeemSetupCodeRequest(
        code=code.strip(), csr_pem=pki.make_csr(key, "silolink-operator"), password=password, enable_totp=enable_totp
    )
    reply = call_enrollment_listener(
        enroll_address,
        ca_pem,
        lambda channel: accounts_pb2_grpc.AccountSetupServiceStub(channel).RedeemSetupCode(request, timeout=timeout_s),
    )
    cert = pki.load_cert(reply.certificate_pem)
    identity = pki.identity_of(cert)
    if not pki.issued_by(cert, pki.load_cert(ca_pem)) or identity is None or identity.role is not Role.OPERATOR:
        raise errors.Internal("the coordinator returned a certificate that does not check out; nothing was saved")
    if not output.parent.exists():  # an existing folder keeps its mode; the file itself is 0600
        private_dir(output.parent)
    credentials = {
        "coordinator": coordinator,
        "operator": identity.name,
        "ca_pem": ca_pem.decode(),
        "cert_pem": reply.certificate_pem.decode(),
        "key_pem": pki.key_to_pem(key).decode(),
    }
    write_atomic(output, json.dumps(credentials, indent=2).encode())
    return {
        **account_to_dict(reply.account),
        "credentials_file": str(output.resolve()),
        "certificate_expires_at": cert.not_valid_after_utc.isoformat(timespec="seconds"),
        "totp_uri": reply.totp_uri or None,
    }
