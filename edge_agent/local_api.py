"""AgentService on the local API: the agent's status for the site's own systems."""

from __future__ import annotations

import time

import grpc

from silolink import __version__
from silolink.gen.agent.v1 import agent_pb2, agent_pb2_grpc
from silolink.identity import Role
from silolink.protos import timestamp
from silolink.rpc.server import ServiceMount

from .control.link import LinkStatus
from .identity import load_identity
from .layout import AgentLayout

STATES = {
    "connecting": agent_pb2.CONNECTION_STATE_CONNECTING,
    "connected": agent_pb2.CONNECTION_STATE_CONNECTED,
    "revoked": agent_pb2.CONNECTION_STATE_REVOKED,
    "stopping": agent_pb2.CONNECTION_STATE_STOPPING,
}


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, layout: AgentLayout, coordinator: str, status: LinkStatus) -> None:
        self._layout = layout
        self._coordinator = coordinator
        self._status = status
        self._started = time.monotonic()

    def GetStatus(self, request: agent_pb2.GetStatusRequest, context: grpc.ServicerContext):
        identity = load_identity(self._layout)
        reply = agent_pb2.GetStatusResponse(
            site=identity.site,
            version=__version__,
            coordinator_address=self._coordinator,
            connection_state=STATES[self._status.state],
            last_error=self._status.last_error,
            uptime_s=time.monotonic() - self._started,
        )
        reply.certificate_expires_at.FromDatetime(identity.expires_at)
        if self._status.last_contact is not None:
            reply.last_contact.CopyFrom(timestamp(self._status.last_contact))
        return reply


def mount(servicer: AgentServicer) -> ServiceMount:
    return ServiceMount(
        name=agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
        register=lambda server: agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server),
        rules={"GetStatus": {Role.LOCAL}},
    )
