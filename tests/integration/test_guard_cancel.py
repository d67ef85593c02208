"""A client that cancels a stream while the server reads it is not a server failure."""

from __future__ import annotations

import logging
import threading

import grpc
from grpc_reflection.v1alpha import reflection_pb2

from tests import support


def test_a_request_stream_cancelled_mid_read_is_logged_as_such_not_as_a_failure(coordinator, make_agent, caplog):
    # Found by the RPC fuzz test: the sync guard logged "failed unexpectedly" with a traceback.
    agent = make_agent("hospital-a")
    release = threading.Event()

    def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        release.wait(10)  # keep the stream open until the client cancels it

    with grpc.insecure_channel(agent.local_address) as channel, caplog.at_level(logging.DEBUG, "silolink.rpc.guard"):
        call = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(requests(), timeout=10)
        assert next(call).list_services_response.service
        call.cancel()
        release.set()
        # The guard logs every finished call (DEBUG): wait for this one to finish.
        done = "ServerReflectionInfo by local: "
        support.wait_for(lambda: done in caplog.text, 30, "the server to finish the cancelled call")
    assert "failed unexpectedly" not in caplog.text and "Traceback" not in caplog.text
