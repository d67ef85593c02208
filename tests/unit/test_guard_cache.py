"""The guard wraps a method's handler once and reuses it while the server hands back the same one."""

from collections import namedtuple

import grpc

from silolink.identity import LOCAL, Role
from silolink.rpc.guard import GuardInterceptor, PermissionTable, fixed_authenticator

Details = namedtuple("Details", "method invocation_metadata")


class Context:
    def code(self):
        return None


def test_a_wrapped_handler_is_reused_until_the_server_hands_back_another():
    guard = GuardInterceptor(fixed_authenticator(LOCAL), PermissionTable({"/t.S/M": {Role.LOCAL}}))
    details = Details("/t.S/M", ())
    first = grpc.unary_unary_rpc_method_handler(lambda request, context: b"first " + request)
    second = grpc.unary_unary_rpc_method_handler(lambda request, context: b"second " + request)

    wrapped = guard.intercept_service(lambda d: first, details)
    assert guard.intercept_service(lambda d: first, details) is wrapped
    assert wrapped.unary_unary(b"x", Context()) == b"first x"

    replaced = guard.intercept_service(lambda d: second, details)
    assert replaced is not wrapped
    assert replaced.unary_unary(b"y", Context()) == b"second y"


def test_an_unknown_method_is_not_wrapped_or_remembered():
    guard = GuardInterceptor(fixed_authenticator(LOCAL), PermissionTable())
    assert guard.intercept_service(lambda d: None, Details("/no.Such/Method", ())) is None
    assert guard._wrapped == {}
