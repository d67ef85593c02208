"""The agent's calls to the coordinator's DistributionService (download, report)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from silolink import model_chunks
from silolink.config import AgentConfig
from silolink.gen.registry.v1 import registry_pb2 as pb
from silolink.gen.registry.v1 import registry_pb2_grpc
from silolink.rpc.channels import mtls_channel
from silolink.rpc.status import from_rpc_error

from ..identity import load_identity
from ..layout import AgentLayout

REPORT_TIMEOUT_S = 5.0


class DistributionClient:
    """One mTLS channel with the site's current certificate; failures raise silolink.errors."""

    def __init__(self, layout: AgentLayout, config: AgentConfig) -> None:
        self._peer = f"the coordinator at {config.coordinator}"
        identity = load_identity(layout)
        self._channel = mtls_channel(config.coordinator, identity.credentials, config.max_message_bytes)
        self._stub = registry_pb2_grpc.DistributionServiceStub(self._channel)
        # Chunks decoded by hand: the data stays a view of the buffer gRPC received.
        self._download = self._channel.unary_stream(
            f"/{pb.DESCRIPTOR.services_by_name['DistributionService'].full_name}/DownloadModel",
            request_serializer=pb.DownloadModelRequest.SerializeToString,
            response_deserializer=model_chunks.decode,
        )

    def __enter__(self) -> DistributionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def download(self, name: str, version: str, offset: int) -> Iterator[tuple[int, memoryview]]:
        """(offset, bytes) chunks of ``name:version`` from ``offset`` on."""
        call = self._download(pb.DownloadModelRequest(name=name, version=version, offset=offset))
        try:
            yield from call
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=self._peer) from None
        finally:
            call.cancel()

    def report(self, rollout_id: str, state: int, reason: str, bytes_received: int) -> None:
        request = pb.ReportRolloutStatusRequest(
            rollout_id=rollout_id, state=state, reason=reason, bytes_received=bytes_received
        )
        try:
            self._stub.ReportRolloutStatus(request, timeout=REPORT_TIMEOUT_S)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=self._peer) from None
