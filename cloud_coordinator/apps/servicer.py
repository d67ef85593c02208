"""AppRegistryService (operators) and AppDistributionService (agents): unpack, call, pack."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from silolink import errors, model_chunks
from silolink.gen.apps.v1 import apps_pb2 as pb
from silolink.gen.apps.v1 import apps_pb2_grpc
from silolink.identity import Role
from silolink.protos import config_to_proto, timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .registry import AppRegistry
from .store import AppVersion

CHUNK_BYTES = 1 << 20


def version_to_proto(record: AppVersion) -> pb.AppVersion:
    return pb.AppVersion(
        name=record.name,
        version=record.version,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        publisher=record.publisher,
        files=[pb.AppFile(path=f["path"], sha256=f["sha256"], size_bytes=f["size"]) for f in record.files],
        dependencies=record.dependencies,
        config=config_to_proto(record.config),
        serverapp=record.serverapp,
        clientapp=record.clientapp,
        description=record.description,
        creator=record.creator,
        created_at=timestamp(record.created_at),
        builtin=record.builtin,
        manifest=record.manifest,
        manifest_signature=record.manifest_signature,
    )


class AppRegistryServicer(apps_pb2_grpc.AppRegistryServiceServicer):
    def __init__(self, apps: AppRegistry) -> None:
        self._apps = apps

    def PushApp(self, request_iterator: Iterator[pb.PushAppRequest], context: grpc.ServicerContext):
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise errors.InvalidArgument("a push must start with a header")
        limit = self._apps.limits.max_bundle_bytes
        if first.header.size_bytes > limit:
            raise errors.InvalidArgument(
                f"the app bundle is {first.header.size_bytes:,} bytes, over the limit of {limit:,} bytes"
            )
        data = bytearray()
        for message in request_iterator:
            if not message.HasField("chunk"):
                raise errors.InvalidArgument("a push carries one header, then chunks of the bundle")
            data += message.chunk
            if len(data) > limit:  # stop reading at once: never hold more than the limit
                raise errors.InvalidArgument(f"the app bundle is over the limit of {limit:,} bytes")
        if not data:
            raise errors.InvalidArgument("the upload is empty, not a Flower App Bundle")
        record, created = self._apps.push(bytes(data), creator=str(current_identity()))
        return pb.PushAppResponse(app=version_to_proto(record), created=created)

    def ListApps(self, request: pb.ListAppsRequest, context: grpc.ServicerContext):
        return pb.ListAppsResponse(apps=[version_to_proto(r) for r in self._apps.list()])

    def GetApp(self, request: pb.GetAppRequest, context: grpc.ServicerContext):
        found = self._apps.show(request.name, request.version or None)
        return pb.GetAppResponse(versions=[version_to_proto(r) for r in found])


class AppDistributionServicer(apps_pb2_grpc.AppDistributionServiceServicer):
    """DownloadApp yields its chunks already serialized (``silolink.model_chunks``: an app
    chunk has the wire layout of a model chunk); ``_register_distribution`` passes them through."""

    def __init__(self, apps: AppRegistry, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._apps = apps
        self.chunk_bytes = chunk_bytes

    def ListOfferedApps(self, request: pb.ListOfferedAppsRequest, context: grpc.ServicerContext):
        # Every published app is offered to every enrolled site: the site decides what runs.
        # Built-in apps are left out: sites have their own copy and never download one.
        offered = [version_to_proto(r) for r in self._apps.list() if not r.builtin]
        return pb.ListOfferedAppsResponse(apps=offered, signer_certificate_pem=self._apps.signer.certificate_pem)

    def DownloadApp(self, request: pb.DownloadAppRequest, context: grpc.ServicerContext):
        record = self._apps.get(request.name, request.version)
        if record.builtin:
            raise errors.NotFound(f"app {record.ref} is built into silolink; sites never download it")
        if not 0 <= request.offset <= record.size_bytes:
            raise errors.InvalidArgument(f"offset {request.offset} is outside the bundle's {record.size_bytes} bytes")
        path = self._apps.blob_path(record.sha256)
        with contextlib.closing(model_chunks.file_chunks(path, request.offset, self.chunk_bytes)) as chunks:
            yield from chunks  # serialized DownloadAppResponse messages


def _register_distribution(servicer: AppDistributionServicer, server: grpc.Server) -> None:
    """The generated registration, except that DownloadApp's chunks arrive serialized."""
    handlers = {
        "ListOfferedApps": grpc.unary_unary_rpc_method_handler(
            servicer.ListOfferedApps,
            request_deserializer=pb.ListOfferedAppsRequest.FromString,
            response_serializer=pb.ListOfferedAppsResponse.SerializeToString,
        ),
        "DownloadApp": grpc.unary_stream_rpc_method_handler(
            servicer.DownloadApp,
            request_deserializer=pb.DownloadAppRequest.FromString,
            response_serializer=bytes,
        ),
    }
    name = pb.DESCRIPTOR.services_by_name["AppDistributionService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


def mounts(registry: AppRegistryServicer, distribution: AppDistributionServicer) -> list[ServiceMount]:
    return [
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["AppRegistryService"].full_name,
            register=lambda server: apps_pb2_grpc.add_AppRegistryServiceServicer_to_server(registry, server),
            rules={"PushApp": {Role.OPERATOR}, "ListApps": {Role.VIEWER}, "GetApp": {Role.VIEWER}},
        ),
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["AppDistributionService"].full_name,
            register=lambda server: _register_distribution(distribution, server),
            rules={"ListOfferedApps": {Role.AGENT}, "DownloadApp": {Role.AGENT}},
        ),
    ]
