"""Who may call what: certificates, roles, revocation, malformed and oversized requests."""

import datetime as dt
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from edge_agent.identity import load_identity
from edge_agent.layout import AgentLayout
from silolink import pki
from silolink.gen.admin.v1 import admin_pb2, admin_pb2_grpc
from silolink.gen.control.v1 import control_pb2, control_pb2_grpc
from silolink.identity import Role
from silolink.rpc.channels import Credentials, mtls_channel, tls_channel
from tests import support


def ca_pem(coordinator):
    return pki.cert_to_pem(coordinator.ca.cert)


def site_channel(coordinator, agent_dir):
    return mtls_channel(coordinator.address, load_identity(AgentLayout(agent_dir)).credentials)


def operator_channel(coordinator):
    creds = json.loads(coordinator.layout.operator_credentials.read_text())
    return mtls_channel(
        coordinator.address,
        Credentials(creds["ca_pem"].encode(), creds["cert_pem"].encode(), creds["key_pem"].encode()),
    )


def code_of(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=5, **kwargs)
    return info.value.code(), info.value.details()


def test_no_client_certificate_is_refused_by_the_mtls_listener(coordinator):
    channel = tls_channel(coordinator.address, ca_pem(coordinator))
    code, _ = code_of(admin_pb2_grpc.AdminServiceStub(channel).ListSites, admin_pb2.ListSitesRequest())
    assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake itself fails


def test_anonymous_callers_reach_only_enrollment_and_health(coordinator):
    channel = tls_channel(coordinator.enroll_address, ca_pem(coordinator))
    code, details = code_of(admin_pb2_grpc.AdminServiceStub(channel).ListSites, admin_pb2.ListSitesRequest())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "client certificate" in details
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_certificate_from_another_ca_is_refused(coordinator):
    other = pki.CertificateAuthority.create("other", dt.timedelta(days=1))
    key = pki.generate_key()
    cert = other.issue_client(key.public_key(), Role.OPERATOR, "admin", dt.timedelta(days=1))
    channel = mtls_channel(
        coordinator.address, Credentials(ca_pem(coordinator), pki.cert_to_pem(cert), pki.key_to_pem(key))
    )
    code, _ = code_of(admin_pb2_grpc.AdminServiceStub(channel).ListSites, admin_pb2.ListSitesRequest())
    assert code == grpc.StatusCode.UNAVAILABLE


def test_our_ca_but_an_unrecorded_certificate_is_refused(coordinator):
    # Signed by the real CA key but never issued through enrollment (e.g. a stolen CA backup
    # from before a restore): the serial is unknown, so it is refused.
    key = pki.generate_key()
    cert = coordinator.ca.issue_client(key.public_key(), Role.OPERATOR, "admin", dt.timedelta(days=1))
    channel = mtls_channel(
        coordinator.address, Credentials(ca_pem(coordinator), pki.cert_to_pem(cert), pki.key_to_pem(key))
    )
    code, details = code_of(admin_pb2_grpc.AdminServiceStub(channel).ListSites, admin_pb2.ListSitesRequest())
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not (or no longer) valid" in details


def test_a_site_may_not_call_the_admin_api(coordinator, tmp_path):
    support.enroll_site(coordinator, "hospital-a", tmp_path / "a")
    channel = site_channel(coordinator, tmp_path / "a")
    code, details = code_of(
        admin_pb2_grpc.AdminServiceStub(channel).AddSite, admin_pb2.AddSiteRequest(name="evil-site")
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "role agent" in details
    with support.operator(coordinator) as client:
        assert [s["name"] for s in client.list_sites()] == ["hospital-a"]


def test_an_operator_may_not_open_a_control_stream(coordinator):
    channel = operator_channel(coordinator)
    stream = control_pb2_grpc.ControlServiceStub(channel).Connect(
        iter([control_pb2.ConnectRequest(hello=control_pb2.Hello())]), timeout=5
    )
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_malformed_request_bytes_are_invalid_argument(coordinator):
    channel = operator_channel(coordinator)
    raw = channel.unary_unary("/silolink.admin.v1.AdminService/AddSite")
    code, details = code_of(raw, b"\xff\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid protobuf" in details


def test_invalid_fields_are_invalid_argument(coordinator):
    channel = operator_channel(coordinator)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    code, details = code_of(stub.AddSite, admin_pb2.AddSiteRequest(name="Bad Name!", kind=1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "invalid name" in details
    code, details = code_of(stub.AddSite, admin_pb2.AddSiteRequest(name="hospital-x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "kind" in details


def test_oversized_message_is_resource_exhausted(tmp_path):
    coordinator = support.start_coordinator(tmp_path / "c", max_message_bytes=64 * 1024)
    try:
        channel = operator_channel(coordinator)
        code, _ = code_of(
            admin_pb2_grpc.AdminServiceStub(channel).AddSite,
            admin_pb2.AddSiteRequest(name="hospital-a", kind=1, tags=[{"key": "k", "value": "v" * 100_000}]),
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert coordinator.sites.list_sites() == []
    finally:
        coordinator.stop(0)


def reflect(channel, request, service="grpc.reflection.v1alpha.ServerReflection"):
    """One reflection request, over v1alpha or v1 (the same messages on the wire)."""
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return next(call(iter([request]), timeout=5))


LIST = reflection_pb2.ServerReflectionRequest(list_services="")
REFLECTION = {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}


def test_reflection_on_the_mtls_port_lists_the_whole_api_in_v1_and_v1alpha(coordinator):
    channel = operator_channel(coordinator)
    for service in REFLECTION:
        names = {s.name for s in reflect(channel, LIST, service).list_services_response.service}
        assert {
            "silolink.admin.v1.AdminService",
            "silolink.control.v1.ControlService",
            "grpc.health.v1.Health",
        } <= names
        assert REFLECTION <= names
    # v1 describes itself too (its descriptor is v1alpha's under the v1 package).
    reply = reflect(
        channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        "grpc.reflection.v1.ServerReflection",
    )
    from google.protobuf import descriptor_pb2

    described = descriptor_pb2.FileDescriptorProto.FromString(reply.file_descriptor_response.file_descriptor_proto[0])
    assert described.package == "grpc.reflection.v1" and described.service[0].name == "ServerReflection"


def test_reflection_on_the_anonymous_port_shows_only_what_it_serves(coordinator):
    channel = tls_channel(coordinator.enroll_address, ca_pem(coordinator))
    for service in REFLECTION:
        names = {s.name for s in reflect(channel, LIST, service).list_services_response.service}
        assert names == {
            "silolink.enrollment.v1.EnrollmentService",
            "silolink.accounts.v1.AccountSetupService",  # redeeming an operator account's setup code
            "grpc.health.v1.Health",
            *REFLECTION,
        }
    hidden = reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="silolink.admin.v1.AdminService")
    )
    assert hidden.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    shown = reflect(
        channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="silolink.enrollment.v1.EnrollmentService"),
    )
    assert shown.file_descriptor_response.file_descriptor_proto
    # Every service it lists, it can describe (v1alpha was listed but not found before).
    for name in names:
        described = reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=name))
        assert described.file_descriptor_response.file_descriptor_proto, name


def test_metrics_count_rpcs_by_method_and_code(tmp_path):
    import urllib.request

    coordinator = support.start_coordinator(tmp_path / "c", metrics_listen="127.0.0.1:0")
    try:
        with support.operator(coordinator) as client:
            client.list_sites()
        text = urllib.request.urlopen(f"http://{coordinator.metrics_address}/metrics", timeout=5).read().decode()
        assert 'silolink_rpc_requests_total{code="OK",method="/silolink.admin.v1.AdminService/ListSites"} 1.0' in text
        assert 'silolink_sites{state="online"} 0.0' in text
    finally:
        coordinator.stop(0)
