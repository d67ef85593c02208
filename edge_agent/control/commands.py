"""Dispatch of coordinator commands to the agent's handlers.

A capability registers a handler for its field of ``Command.body``; the handler gets that
message and returns the result message for the field of the same name in
``CommandResult.body``. A SiloError becomes a failed result with its code and message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from google.protobuf.message import Message

from silolink import errors
from silolink.gen.control.v1 import control_pb2

log = logging.getLogger(__name__)
Handler = Callable[[Message], Message]
# Runs before every handler with the body's field name and message; raising refuses the command.
Gate = Callable[[str, Message], None]


class CommandDispatcher:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._gates: list[Gate] = []
        self.register("ping", lambda ping: control_pb2.PingResult(payload=ping.payload))

    def register(self, body_field: str, handler: Handler) -> None:
        if body_field not in control_pb2.Command.DESCRIPTOR.fields_by_name:
            raise ValueError(f"Command has no body field {body_field!r}")
        self._handlers[body_field] = handler

    def add_gate(self, gate: Gate) -> None:
        """Check every command before its handler (studies: is this work of a study the site accepted)."""
        self._gates.append(gate)

    def dispatch(self, command: control_pb2.Command) -> control_pb2.CommandResult:
        kind = command.WhichOneof("body")
        handler = self._handlers.get(kind or "")
        try:
            if handler is None:
                raise errors.FailedPrecondition(f"this agent cannot run {kind or 'an empty'} command; upgrade it")
            for gate in self._gates:
                gate(kind, getattr(command, kind))  # type: ignore[arg-type]
            body = handler(getattr(command, kind))  # type: ignore[arg-type]
            result = control_pb2.CommandResult(command_id=command.command_id)
            if body is not None:
                getattr(result, kind).CopyFrom(body)  # type: ignore[arg-type]
            return result
        except errors.SiloError as e:
            detail = f" [{e.site_detail}]" if e.site_detail else ""  # for this site's log only
            log.warning("command %s (%s) refused: %s%s", command.command_id, kind, e.message, detail)
            return _failure(command.command_id, e)
        except Exception:  # noqa: BLE001 - a failing command must not take the agent down
            ref = uuid.uuid4().hex[:12]
            log.exception("command %s (%s) failed (ref %s)", command.command_id, kind, ref)
            return _failure(command.command_id, errors.Internal(f"the agent failed to run it (ref {ref})"))


def _failure(command_id: str, error: errors.SiloError) -> control_pb2.CommandResult:
    return control_pb2.CommandResult(
        command_id=command_id, status_code=errors.NUMBERS[error.code], status_message=error.message
    )
