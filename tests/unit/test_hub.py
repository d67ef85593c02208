import pytest

from cloud_coordinator.control.hub import MAX_OUTSTANDING, ControlHub
from silolink import errors
from silolink.gen.control.v1 import control_pb2


def test_request_is_resolved_by_the_matching_result():
    hub = ControlHub()
    session = hub.open("hospital-a")
    future = hub.request("hospital-a", ping=control_pb2.PingCommand(payload=b"hi"))
    (command,) = session.take_commands()
    assert command.ping.payload == b"hi"
    session.resolve(
        control_pb2.CommandResult(command_id=command.command_id, ping=control_pb2.PingResult(payload=b"hi"))
    )
    assert future.result(1).ping.payload == b"hi"


def test_failed_result_raises_the_typed_error():
    hub = ControlHub()
    session = hub.open("hospital-a")
    future = hub.request("hospital-a", ping=control_pb2.PingCommand())
    (command,) = session.take_commands()
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


def test_a_queued_command_wakes_the_sender_at_once():
    hub = ControlHub()
    session = hub.open("hospital-a")
    wakes = []
    session.on_wake(lambda: wakes.append(1))
    hub.request("hospital-a", ping=control_pb2.PingCommand())
    assert len(wakes) == 2  # once when the sender registered, once for the command
    assert len(session.take_commands()) == 1 and session.take_commands() == []


def test_a_site_that_does_not_keep_up_gets_no_more_commands_queued():
    hub = ControlHub()
    hub.open("hospital-a")
    futures = [hub.request("hospital-a", ping=control_pb2.PingCommand()) for _ in range(MAX_OUTSTANDING)]
    with pytest.raises(errors.ResourceExhausted, match="not keeping up"):
        hub.request("hospital-a", ping=control_pb2.PingCommand())
    futures[0].cancel()  # a caller that gives up frees its slot
    hub.request("hospital-a", ping=control_pb2.PingCommand())


def test_results_and_events_go_through_the_dispatchers():
    calls = []
    hub = ControlHub(dispatch=lambda fn, *a: calls.append("result") or fn(*a),
                     notify=lambda fn, *a: calls.append("event") or fn(*a))  # fmt: skip
    hub.on_change(lambda site, up: None)
    session = hub.open("hospital-a")
    future = hub.request("hospital-a", ping=control_pb2.PingCommand())
    (command,) = session.take_commands()
    session.resolve(control_pb2.CommandResult(command_id=command.command_id))
    assert future.done() and calls == ["event", "result"]
