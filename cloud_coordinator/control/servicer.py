"""ControlService: holds each agent's stream open, records heartbeats, relays commands."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc

from silolink import errors
from silolink.gen.common.v1 import site_pb2
from silolink.gen.control.v1 import control_pb2, control_pb2_grpc
from silolink.identity import Role
from silolink.protos import resources_to_dict
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from ..sites.service import SiteService
from .hub import ControlHub, Session

log = logging.getLogger(__name__)
# How often the sender wakes to check liveness when there is nothing to send.
POLL_S = 0.5


class ControlServicer(control_pb2_grpc.ControlServiceServicer):
    def __init__(self, hub: ControlHub, sites: SiteService, heartbeat_interval_s: float, stale_after_s: float):
        self._hub = hub
        self._sites = sites
        self._heartbeat_interval_s = heartbeat_interval_s
        self._stale_after_s = stale_after_s

    def Connect(
        self, request_iterator: Iterator[control_pb2.ConnectRequest], context: grpc.ServicerContext
    ) -> Iterator[control_pb2.ConnectResponse]:
        site = current_identity().name
        first = next(request_iterator, None)
        if first is None or not first.HasField("hello"):
            raise errors.InvalidArgument("a control stream must start with Hello")
        self._record(site, first.hello.resources)
        session = self._hub.open(site)
        context.add_callback(lambda: self._hub.close(session))
        reader = threading.Thread(
            target=self._read, args=(session, request_iterator), name=f"control-{site}", daemon=True
        )
        reader.start()
        try:
            yield control_pb2.ConnectResponse(
                welcome=control_pb2.Welcome(
                    site=site, heartbeat_interval_s=self._heartbeat_interval_s, session_id=session.session_id
                )
            )
            while not session.closed.is_set():
                command = session.next_command(POLL_S)
                if command is not None:
                    yield control_pb2.ConnectResponse(command=command)
                elif time.time() - session.last_seen > self._stale_after_s:
                    self._hub.close(session, errors.Unavailable(f"no heartbeat for {self._stale_after_s:.0f} s"))
            if session.close_reason is not None:
                raise session.close_reason
        finally:
            self._hub.close(session)

    def _read(self, session: Session, requests: Iterator[control_pb2.ConnectRequest]) -> None:
        try:
            for message in requests:
                session.touch()
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    self._record(session.site, message.heartbeat.resources)
                elif kind == "result":
                    session.resolve(message.result)
                else:
                    log.warning("site %s sent an unexpected %s on its control stream", session.site, kind)
        except grpc.RpcError:
            pass  # the stream ended; the sender notices through the closed session
        except Exception:  # noqa: BLE001 - never let a bad message kill the coordinator
            log.exception("control stream of %s failed", session.site)
        finally:
            self._hub.close(session)

    def _record(self, site: str, report: site_pb2.ResourceReport) -> None:
        self._sites.record_contact(site, resources_to_dict(report), report.agent_version)


def mount(servicer: ControlServicer) -> ServiceMount:
    return ServiceMount(
        name=control_pb2.DESCRIPTOR.services_by_name["ControlService"].full_name,
        register=lambda server: control_pb2_grpc.add_ControlServiceServicer_to_server(servicer, server),
        rules={"Connect": {Role.AGENT}},
    )
