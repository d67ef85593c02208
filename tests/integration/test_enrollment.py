"""Enrollment over real TLS: the happy path and every rejection, leaving no partial state."""

import datetime as dt
import hashlib
import stat

import grpc
import pytest

from edge_agent import enroll as enroll_mod
from edge_agent.identity import load_identity
from edge_agent.layout import AgentLayout
from silolink import errors, pki
from silolink.gen.enrollment.v1 import enrollment_pb2, enrollment_pb2_grpc
from silolink.rpc.channels import tls_channel
from tests import support


def add(coordinator, name="hospital-a", **kwargs):
    with support.operator(coordinator) as client:
        return client.add_site(name, "hospital", **kwargs)


def do_enroll(coordinator, agent_dir, token, fingerprint):
    return enroll_mod.enroll(agent_dir, coordinator.address, token, fingerprint, coordinator.enroll_address)


def test_enrollment_stores_a_local_key_and_a_certificate_for_it(coordinator, tmp_path):
    added = add(coordinator, tags={"region": "north"})
    assert added["token"].startswith("slt_") and added["ca_fingerprint"] == coordinator.ca.fingerprint
    result = do_enroll(coordinator, tmp_path / "a", added["token"], added["ca_fingerprint"])
    assert result.site == "hospital-a" and result.kind == "hospital"
    layout = AgentLayout(tmp_path / "a")
    identity = load_identity(layout)
    assert identity.site == "hospital-a"
    assert stat.S_IMODE(layout.identity.stat().st_mode) == 0o600
    assert pki.issued_by(identity.cert, coordinator.ca.cert)
    # The coordinator never saw the private key: only a hash of the token and the cert serial.
    dump = "\n".join(coordinator.db.iterdump())
    assert added["token"] not in dump
    assert hashlib.sha256(added["token"].encode()).hexdigest() in dump


def test_reused_token_is_refused(coordinator, tmp_path):
    added = add(coordinator)
    do_enroll(coordinator, tmp_path / "a", added["token"], added["ca_fingerprint"])
    with pytest.raises(errors.Unauthenticated, match="already used"):
        do_enroll(coordinator, tmp_path / "b", added["token"], added["ca_fingerprint"])
    assert not AgentLayout(tmp_path / "b").identity.exists()


def test_wrong_token_is_refused_and_nothing_is_written(coordinator, tmp_path):
    added = add(coordinator)
    with pytest.raises(errors.Unauthenticated, match="not recognised"):
        do_enroll(coordinator, tmp_path / "a", "slt_" + "A" * 43, added["ca_fingerprint"])
    assert not (tmp_path / "a").exists()


def test_expired_token_is_refused(coordinator, tmp_path):
    added = add(coordinator, token_ttl_s=1)
    # expires_at is printed to the second; wait until a full second past it.
    expiry = dt.datetime.fromisoformat(added["expires_at"]) + dt.timedelta(seconds=1)
    support.wait_for(lambda: expiry < pki.utcnow(), 4, "token expiry")
    with pytest.raises(errors.Unauthenticated, match="expired"):
        do_enroll(coordinator, tmp_path / "a", added["token"], added["ca_fingerprint"])


def test_wrong_ca_fingerprint_stops_before_sending_the_token(coordinator, tmp_path):
    added = add(coordinator)
    other = pki.CertificateAuthority.create("impostor", dt.timedelta(days=1))
    with pytest.raises(errors.Unauthenticated, match="did not present a CA certificate"):
        do_enroll(coordinator, tmp_path / "a", added["token"], other.fingerprint)
    # The token was never presented, so it still works with the right fingerprint.
    do_enroll(coordinator, tmp_path / "a", added["token"], added["ca_fingerprint"])


def test_enrolling_an_enrolled_data_dir_is_refused(coordinator, tmp_path):
    added = add(coordinator)
    do_enroll(coordinator, tmp_path / "a", added["token"], added["ca_fingerprint"])
    second = add(coordinator, name="hospital-b")
    with pytest.raises(errors.AlreadyExists):
        do_enroll(coordinator, tmp_path / "a", second["token"], second["ca_fingerprint"])


def test_malformed_csr_is_invalid_argument_and_keeps_the_token(coordinator):
    added = add(coordinator)
    channel = tls_channel(coordinator.enroll_address, pki.cert_to_pem(coordinator.ca.cert))
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Enroll(enrollment_pb2.EnrollRequest(token=added["token"], csr_pem=b"not a csr"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "certificate signing request" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.Enroll(enrollment_pb2.EnrollRequest(token=added["token"]), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
    with support.operator(coordinator) as client:
        assert client.list_sites()[0]["state"] == "pending"
