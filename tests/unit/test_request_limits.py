"""The request boundary's number rules, over real generated messages (no sockets)."""

from __future__ import annotations

import math

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as FieldType
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from silolink import errors
from silolink.gen.admin.v1 import admin_pb2
from silolink.gen.analytics.v1 import analytics_pb2
from silolink.gen.audit.v1 import audit_pb2
from silolink.gen.training.v1 import training_pb2
from silolink.request_limits import MAX_UINT64, check_request


@pytest.mark.parametrize(
    "message, named",
    [
        (training_pb2.StartJobRequest(spec=training_pb2.JobSpec(round_timeout_s=math.inf)), "spec.round_timeout_s"),
        (training_pb2.StartJobRequest(spec=training_pb2.JobSpec(learning_rate=math.nan)), "spec.learning_rate"),
        (audit_pb2.ListAuditEntriesRequest(after_seq=MAX_UINT64 + 1), "after_seq"),
        (analytics_pb2.Query(bin_edges=[0.0, 1.0, -math.inf]), "bin_edges[2]"),
        (
            struct_pb2.Struct(
                fields={
                    "k": struct_pb2.Value(
                        list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=math.nan)])
                    )
                }
            ),
            "fields['k'].list_value.values[0].number_value",
        ),
        (
            admin_pb2.ListSitesRequest(certificate_expires_before=Timestamp(seconds=1, nanos=-1)),
            "certificate_expires_before",
        ),
        (
            admin_pb2.ListSitesRequest(certificate_expires_before=Timestamp(seconds=-(2**62))),
            "certificate_expires_before",
        ),
        (struct_pb2.Value(struct_value=struct_pb2.Struct()), None),
    ],
)
def test_the_first_bad_number_is_named_with_its_path(message, named):
    if named is None:  # a control: nothing wrong in it
        check_request(message)
        return
    with pytest.raises(errors.InvalidArgument) as caught:
        check_request(message)
    assert caught.value.message.startswith(f"{message.DESCRIPTOR.name}.{named} = ")


@pytest.mark.parametrize(
    "message",
    [
        training_pb2.StartJobRequest(spec=training_pb2.JobSpec(round_timeout_s=1e300, learning_rate=-0.0)),
        audit_pb2.ListAuditEntriesRequest(after_seq=MAX_UINT64),
        # Raw 64-bit words (secure aggregation's masked sums) are fixed64 and unlimited.
        analytics_pb2.AnalyticsMaskResult(masked=[2**64 - 1]),
        struct_pb2.Struct(fields={"k": struct_pb2.Value(number_value=1e308)}),
        training_pb2.StartJobRequest(),
    ],
)
def test_finite_numbers_and_raw_words_pass(message):
    check_request(message)


@pytest.mark.parametrize(
    "seconds, nanos, valid",
    [(0, 0, True), (-62_135_596_800, 0, True), (253_402_300_799, 999_999_999, True), (253_402_300_800, 0, False),
     (5, 1_000_000_000, False), (5, -1, False)],
)  # fmt: skip
def test_timestamps_must_be_valid_times(seconds, nanos, valid):
    request = admin_pb2.ListSitesRequest(certificate_expires_before=Timestamp(seconds=seconds, nanos=nanos))
    if valid:
        check_request(request)
        request.certificate_expires_before.ToNanoseconds()  # what the servicer does with it
    else:
        with pytest.raises(errors.InvalidArgument, match="not a valid time"):
            check_request(request)


def _duration_holder():
    """A message type with one Duration field (no API message has one yet), in the default pool."""
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName("silolink_test.DurationHolder"))
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto(
        name="silolink_test/duration_holder.proto", package="silolink_test", syntax="proto3",
        dependency=["google/protobuf/duration.proto"],
    )  # fmt: skip
    proto.message_type.add(name="DurationHolder").field.add(
        name="d",
        number=1,
        type=FieldType.TYPE_MESSAGE,
        type_name=".google.protobuf.Duration",
        label=FieldType.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("silolink_test.DurationHolder"))


@pytest.mark.parametrize(
    "seconds, nanos, valid",
    [(0, 0, True), (-5, -3, True), (315_576_000_000, 0, True), (315_576_000_001, 0, False), (5, -3, False)],
)
def test_durations_must_be_valid(seconds, nanos, valid):
    holder = _duration_holder()(d=Duration(seconds=seconds, nanos=nanos))
    if valid:
        check_request(holder)
    else:
        with pytest.raises(errors.InvalidArgument, match="not a valid duration"):
            check_request(holder)
