from edge_agent.control.commands import CommandDispatcher
from silolink import errors
from silolink.gen.control.v1 import control_pb2


def test_ping_is_answered_in_the_same_field():
    result = CommandDispatcher().dispatch(
        control_pb2.Command(command_id="c1", ping=control_pb2.PingCommand(payload=b"x"))
    )
    assert result.command_id == "c1" and result.status_code == 0 and result.ping.payload == b"x"


def test_errors_become_failed_results_with_their_code():
    dispatcher = CommandDispatcher()

    def refuse(_):
        raise errors.PermissionDenied("policy forbids it")

    dispatcher.register("ping", refuse)
    result = dispatcher.dispatch(control_pb2.Command(command_id="c2", ping=control_pb2.PingCommand()))
    assert result.status_code == errors.NUMBERS[errors.Code.PERMISSION_DENIED]
    assert result.status_message == "policy forbids it"


def test_unexpected_exceptions_are_internal_without_details():
    dispatcher = CommandDispatcher()
    dispatcher.register("ping", lambda _: 1 / 0)
    result = dispatcher.dispatch(control_pb2.Command(command_id="c3", ping=control_pb2.PingCommand()))
    assert result.status_code == errors.NUMBERS[errors.Code.INTERNAL]
    assert "division" not in result.status_message and "ref" in result.status_message


def test_an_empty_command_is_refused():
    result = CommandDispatcher().dispatch(control_pb2.Command(command_id="c4"))
    assert result.status_code == errors.NUMBERS[errors.Code.FAILED_PRECONDITION]
