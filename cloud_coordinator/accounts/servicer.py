"""AccountService, AccountSetupService and ConsoleSessionService: unpack, call, pack."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from silolink import errors
from silolink.gen.accounts.v1 import accounts_pb2 as pb
from silolink.gen.accounts.v1 import accounts_pb2_grpc
from silolink.identity import Role
from silolink.protos import timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .service import AccountService, IssuedSetup
from .store import AccountRecord

ROLE_TO_PROTO = {
    "viewer": pb.ACCOUNT_ROLE_VIEWER,
    "operator": pb.ACCOUNT_ROLE_OPERATOR,
    "admin": pb.ACCOUNT_ROLE_ADMIN,
}
ROLE_FROM_PROTO = {v: k for k, v in ROLE_TO_PROTO.items()}
MAX_FIELD_CHARS = 1024


def account_to_proto(record: AccountRecord) -> pb.Account:
    return pb.Account(
        name=record.name,
        role=ROLE_TO_PROTO[record.role],
        disabled=record.disabled,
        set_up=record.set_up_at is not None,
        has_password=record.password_hash is not None,
        totp=record.totp_secret is not None,
        created_at=timestamp(record.created_at),
        created_by=record.created_by,
        last_login_at=timestamp(record.last_login_at),
    )


def _role(value: int) -> str:
    role = ROLE_FROM_PROTO.get(value)
    if role is None:
        raise errors.InvalidArgument("the role is required: viewer, operator or admin")
    return role


class AccountServicer(accounts_pb2_grpc.AccountServiceServicer):
    def __init__(self, accounts: AccountService, addresses: Callable[[], tuple[str, str]]) -> None:
        self._accounts = accounts
        self._addresses = addresses

    def _setup(self, issued: IssuedSetup) -> pb.SetupCode:
        coordinator_address, enroll_address = self._addresses()
        return pb.SetupCode(
            code=issued.code,
            expires_at=timestamp(issued.expires_at),
            ca_fingerprint=issued.ca_fingerprint,
            coordinator_address=coordinator_address,
            enroll_address=enroll_address,
        )

    def AddAccount(self, request: pb.AddAccountRequest, context: grpc.ServicerContext):
        issued = self._accounts.add(request.name, _role(request.role), str(current_identity()), request.setup_ttl_s)
        return pb.AddAccountResponse(account=account_to_proto(issued.account), setup=self._setup(issued))

    def ListAccounts(self, request: pb.ListAccountsRequest, context: grpc.ServicerContext):
        return pb.ListAccountsResponse(accounts=[account_to_proto(a) for a in self._accounts.list()])

    def DisableAccount(self, request: pb.DisableAccountRequest, context: grpc.ServicerContext):
        record = self._accounts.disable(request.name, str(current_identity()))
        return pb.DisableAccountResponse(account=account_to_proto(record))

    def SetAccountRole(self, request: pb.SetAccountRoleRequest, context: grpc.ServicerContext):
        record = self._accounts.set_role(request.name, _role(request.role), str(current_identity()))
        return pb.SetAccountRoleResponse(account=account_to_proto(record))

    def ResetAccount(self, request: pb.ResetAccountRequest, context: grpc.ServicerContext):
        issued = self._accounts.reset(request.name, str(current_identity()), request.setup_ttl_s)
        return pb.ResetAccountResponse(account=account_to_proto(issued.account), setup=self._setup(issued))

    def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.ServicerContext):
        identity = current_identity()
        return pb.WhoAmIResponse(account=account_to_proto(self._accounts.get(identity.name)), via=identity.via)

    def SetPassword(self, request: pb.SetPasswordRequest, context: grpc.ServicerContext):
        identity = current_identity()
        if identity.via:
            # Changing the password needs the holder's own certificate, not a console session
            # (a session left open in a browser must not be enough to take the account over).
            raise errors.PermissionDenied("set your console password with `cloud-coordinator users password`")
        uri = self._accounts.set_password(identity.name, request.password, request.enable_totp)
        return pb.SetPasswordResponse(totp_uri=uri)


class AccountSetupServicer(accounts_pb2_grpc.AccountSetupServiceServicer):
    def __init__(self, accounts: AccountService, addresses: Callable[[], tuple[str, str]]) -> None:
        self._accounts = accounts
        self._addresses = addresses

    def RedeemSetupCode(self, request: pb.RedeemSetupCodeRequest, context: grpc.ServicerContext):
        if not request.code:
            raise errors.InvalidArgument("the setup code is missing")
        if not request.csr_pem:
            raise errors.InvalidArgument("the certificate signing request is missing")
        result = self._accounts.redeem(request.code, request.csr_pem, request.password, request.enable_totp)
        return pb.RedeemSetupCodeResponse(
            account=account_to_proto(result.account),
            certificate_pem=result.certificate_pem,
            ca_certificate_pem=result.ca_certificate_pem,
            totp_uri=result.totp_uri,
            coordinator_address=self._addresses()[0],
        )


class ConsoleSessionServicer(accounts_pb2_grpc.ConsoleSessionServiceServicer):
    def __init__(self, accounts: AccountService) -> None:
        self._accounts = accounts

    def Login(self, request: pb.LoginRequest, context: grpc.ServicerContext):
        if len(request.name) > MAX_FIELD_CHARS or len(request.totp_code) > 16:
            raise errors.Unauthenticated("wrong account name, password or code")
        token, session = self._accounts.login(
            request.name, request.password, request.totp_code, request.client_address[:64]
        )
        return pb.LoginResponse(
            session=token,
            account=account_to_proto(self._accounts.get(session.account)),
            expires_at=timestamp(session.expires_at),
        )

    def Logout(self, request: pb.LogoutRequest, context: grpc.ServicerContext):
        self._accounts.logout(request.session)
        return pb.LogoutResponse()


def mounts(accounts: AccountService, addresses: Callable[[], tuple[str, str]]) -> list[ServiceMount]:
    admin = AccountServicer(accounts, addresses)
    setup = AccountSetupServicer(accounts, addresses)
    sessions = ConsoleSessionServicer(accounts)
    return [
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["AccountService"].full_name,
            register=lambda s: accounts_pb2_grpc.add_AccountServiceServicer_to_server(admin, s),
            rules={
                "AddAccount": {Role.ADMIN},
                "ListAccounts": {Role.ADMIN},
                "DisableAccount": {Role.ADMIN},
                "SetAccountRole": {Role.ADMIN},
                "ResetAccount": {Role.ADMIN},
                "WhoAmI": {Role.VIEWER},
                "SetPassword": {Role.VIEWER},
            },
        ),
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["AccountSetupService"].full_name,
            register=lambda s: accounts_pb2_grpc.add_AccountSetupServiceServicer_to_server(setup, s),
            rules={"RedeemSetupCode": {Role.ANONYMOUS}},
        ),
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["ConsoleSessionService"].full_name,
            register=lambda s: accounts_pb2_grpc.add_ConsoleSessionServiceServicer_to_server(sessions, s),
            rules={"Login": {Role.CONSOLE}, "Logout": {Role.CONSOLE}},
        ),
    ]
