"""The site's calls to the coordinator's AppDistributionService: the offered apps and their
bundles, on an mTLS channel with the site's certificate (failures raise silolink.errors)."""

from __future__ import annotations

import grpc

from silolink import errors, model_chunks
from silolink.config import AgentConfig
from silolink.gen.apps.v1 import apps_pb2 as pb
from silolink.gen.apps.v1 import apps_pb2_grpc
from silolink.rpc.channels import mtls_channel
from silolink.rpc.status import from_rpc_error

from ..identity import load_identity
from ..layout import AgentLayout
from .approve import Offer

LIST_TIMEOUT_S = 15.0
DOWNLOAD_TIMEOUT_S = 300.0


class AppsClient:
    def __init__(self, layout: AgentLayout, config: AgentConfig) -> None:
        if not config.coordinator:
            raise errors.FailedPrecondition(f"{layout.config} names no coordinator; enroll this site first")
        self._peer = f"the coordinator at {config.coordinator}"
        self._channel = mtls_channel(config.coordinator, load_identity(layout).credentials, config.max_message_bytes)
        self._stub = apps_pb2_grpc.AppDistributionServiceStub(self._channel)
        # Chunks decoded by hand, as model downloads are: the same wire layout (model_chunks).
        self._download = self._channel.unary_stream(
            f"/{pb.DESCRIPTOR.services_by_name['AppDistributionService'].full_name}/DownloadApp",
            request_serializer=pb.DownloadAppRequest.SerializeToString,
            response_deserializer=model_chunks.decode,
        )

    def __enter__(self) -> AppsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def offers(self) -> tuple[list[Offer], bytes]:
        """The app versions offered to this site, and the certificate of the key that signed them."""
        try:
            reply = self._stub.ListOfferedApps(pb.ListOfferedAppsRequest(), timeout=LIST_TIMEOUT_S)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=self._peer) from None
        offers = [
            Offer(
                name=a.name,
                version=a.version,
                sha256=a.sha256,
                size_bytes=a.size_bytes,
                publisher=a.publisher,
                files=tuple({"path": f.path, "sha256": f.sha256, "size": f.size_bytes} for f in a.files),
                dependencies=tuple(a.dependencies),
                manifest=a.manifest,
                manifest_signature=a.manifest_signature,
            )
            for a in reply.apps
        ]
        return offers, reply.signer_certificate_pem

    def download(self, name: str, version: str, size_bytes: int) -> bytes:
        """The bundle's bytes; refuses a stream that goes past ``size_bytes`` or skips bytes."""
        data = bytearray()
        call = self._download(pb.DownloadAppRequest(name=name, version=version), timeout=DOWNLOAD_TIMEOUT_S)
        try:
            for offset, chunk in call:
                if offset != len(data):
                    raise errors.Unavailable(f"{self._peer} sent bytes from {offset}, expected {len(data)}")
                if len(data) + len(chunk) > size_bytes:
                    raise errors.PermissionDenied(
                        f"{self._peer} sent more than the {size_bytes:,} bytes the signed manifest of "
                        f"{name}:{version} names; refusing it"
                    )
                data += chunk
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=self._peer) from None
        finally:
            call.cancel()
        return bytes(data)
