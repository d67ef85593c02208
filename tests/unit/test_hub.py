import pytest

from cloud_coordinator.control.hub import ControlHub
from silolink import errors
from silolink.gen.control.v1 import control_pb2


def test_request_is_resolved_by_the_matching_result():
    hub = ControlHub()
    session = hub.open("hospital-a")
    future = hub.request("hospital-a", ping=control_pb2.PingCommand(payload=b"hi"))
    command = session.next_command(1.0)
    assert command.ping.payload == b"hi"
    session.resolve(
        control_pb2.CommandResult(command_id=command.command_id, ping=control_pb2.PingResult(payload=b"hi"))
    )
    assert future.result(1).ping.payload == b"hi"


def test_failed_result_raises_the_typed_error():
    hub = ControlHub()
    session = hub.open("hospital-a")
    future = hub.request("hospital-a", ping=control_pb2.PingCommand())
    command = session.next_command(1.0)
    session.resolve(control_pb2.CommandResult(command_id=command.command_id, status_code=5, status_message="no model"))
    with pytest.raises(errors.NotFound, match="no model"):
        future.result(1)


def test_disconnect_fails_pending_commands_and_new_requests():
    hub = ControlHub()
    changes = []
    hub.on_change(lambda site, up: changes.append((site, up)))
    hub.open("hospital-a")
    future = hub.request("hospital-a", ping=control_pb2.PingCommand())
    hub.disconnect("hospital-a", errors.PermissionDenied("revoked"))
    with pytest.raises(errors.Unavailable, match="revoked"):
        future.result(1)
    with pytest.raises(errors.Unavailable, match="not connected"):
        hub.request("hospital-a", ping=control_pb2.PingCommand())
    assert changes == [("hospital-a", True), ("hospital-a", False)]


def test_a_newer_connection_replaces_the_old_one():
    hub = ControlHub()
    old = hub.open("hospital-a")
    new = hub.open("hospital-a")
    assert old.closed.is_set() and isinstance(old.close_reason, errors.Aborted)
    hub.close(old)  # the old stream ending must not unregister the new one
    assert hub.is_connected("hospital-a") and not new.closed.is_set()
