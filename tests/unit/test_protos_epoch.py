"""A malformed timestamp in a request is the caller's error, not the server's."""

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from silolink import errors
from silolink.gen.admin.v1 import admin_pb2
from silolink.protos import epoch


def test_a_timestamp_with_negative_nanos_is_invalid_argument():
    request = admin_pb2.ListSitesRequest(certificate_expires_before=Timestamp(seconds=5, nanos=-305))
    with pytest.raises(errors.InvalidArgument, match="certificate_expires_before"):
        epoch(request, "certificate_expires_before")
    assert epoch(admin_pb2.ListSitesRequest(), "certificate_expires_before") is None
    assert (
        epoch(admin_pb2.ListSitesRequest(certificate_expires_before=Timestamp(seconds=5)), "certificate_expires_before")
        == 5.0
    )
