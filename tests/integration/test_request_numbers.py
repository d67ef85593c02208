"""Numbers no request may carry are INVALID_ARGUMENT at the request boundary, on a real
coordinator over mTLS (issue 15 items 3 and 4)."""

from __future__ import annotations

import math

import pytest

from silolink import errors
from silolink.gen.audit.v1 import audit_pb2, audit_pb2_grpc
from tests import support


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    c = support.start_coordinator(tmp_path_factory.mktemp("numbers") / "c")
    yield c
    c.stop()


SPEC = dict(app="tabular", dataset="patients", sites=["kind=hospital"], rounds=1, min_sites=1, learning_rate=0.1)


@pytest.mark.parametrize(
    "field, value",
    [
        ("round_timeout_s", math.inf),
        ("round_timeout_s", -math.inf),
        ("round_timeout_s", math.nan),
        ("learning_rate", math.nan),
        ("proximal_mu", math.inf),
        ("dp_noise_multiplier", math.nan),
    ],
)
def test_start_job_refuses_non_finite_numbers(coordinator, field, value):
    with support.operator(coordinator) as op, pytest.raises(errors.InvalidArgument, match=f"{field} = .*finite"):
        op.start_training(**{**SPEC, "round_timeout_s": 10.0, field: value})


def test_start_job_refuses_an_absurd_round_timeout(coordinator):
    # 1e300 s used to reach the job process, whose waits overflowed ("exited with code 1").
    with support.operator(coordinator) as op, pytest.raises(errors.InvalidArgument, match="round timeout"):
        op.start_training(**{**SPEC, "round_timeout_s": 1e300})


@pytest.mark.parametrize("timeout_s", [0.5, -1.0, 30 * 24 * 3600 + 1.0])
def test_start_job_takes_a_timeout_of_1_s_to_30_days_or_0_for_the_default(coordinator, timeout_s):
    with support.operator(coordinator) as op:
        with pytest.raises(errors.InvalidArgument, match=r"--timeout must be between 1 s and 30 days \(or 0 for"):
            op.start_training(**{**SPEC, "timeout_s": timeout_s})
        for fine in (0.0, 1.0):  # 0: the coordinator's [training] default_timeout_s
            try:
                op.start_training(**{**SPEC, "timeout_s": fine})
            except errors.SiloError as e:  # refused for want of sites, say, but not for the timeout
                assert "--timeout" not in e.message, e.message


@pytest.mark.parametrize("after_seq", [2**63, 2**64 - 1])
def test_audit_entries_after_a_sequence_beyond_sqlite_is_invalid_not_internal(coordinator, after_seq):
    with support.operator(coordinator) as op:
        stub = audit_pb2_grpc.AuditServiceStub(op.channel)
        with pytest.raises(errors.InvalidArgument, match="after_seq"):
            op.call(stub.ListAuditEntries, audit_pb2.ListAuditEntriesRequest(after_seq=after_seq))
        largest = op.call(stub.ListAuditEntries, audit_pb2.ListAuditEntriesRequest(after_seq=2**63 - 1))
        assert list(largest.entries) == []


def test_list_sites_refuses_a_timestamp_protobuf_cannot_convert(coordinator):
    # Found by the long fuzz run: certificate_expires_before with nanos < 0 was INTERNAL.
    from google.protobuf.timestamp_pb2 import Timestamp

    from silolink.gen.admin.v1 import admin_pb2, admin_pb2_grpc

    with support.operator(coordinator) as op:
        stub = admin_pb2_grpc.AdminServiceStub(op.channel)
        for bad in (Timestamp(seconds=1, nanos=-1), Timestamp(seconds=2**62)):
            request = admin_pb2.ListSitesRequest(certificate_expires_before=bad)
            with pytest.raises(errors.InvalidArgument, match="certificate_expires_before = .*not a valid time"):
                op.call(stub.ListSites, request)
        op.call(stub.ListSites, admin_pb2.ListSitesRequest(certificate_expires_before=Timestamp(seconds=10**10)))
