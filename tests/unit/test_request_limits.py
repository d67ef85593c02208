"""The request boundary's number rules, over real generated messages (no sockets)."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2

from silolink import errors
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
    ],
)
def test_the_first_bad_number_is_named_with_its_path(message, named):
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
