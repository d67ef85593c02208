"""Server reflection under both names clients use: ``grpc.reflection.v1`` and the older
``grpc.reflection.v1alpha``.

grpcio-reflection (1.81) ships only v1alpha. The v1 service is the same protocol under a
new package: every message and field number is identical, so one servicer answers both,
with v1alpha's message classes doing the wire encoding. The v1 descriptor is derived from
v1alpha's at import (renamed, nothing else changed) so v1 clients can also reflect on the
reflection service itself.

A server may answer from a pool limited to the files of what it serves: the anonymous
enrollment port then neither lists nor describes the rest of the API.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's file descriptor under v1's package and file name."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    return proto


def _add_v1(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        pool.Add(_v1_file())


_add_v1(descriptor_pool.Default())


def restricted_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A pool holding only the files that define ``service_names`` and what they import."""
    source = descriptor_pool.Default()
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for name in service_names:
        if name != V1:
            add(source.FindServiceByName(name).file)
    add(reflection_pb2.DESCRIPTOR)  # the reflection services are listed, so they are described too
    _add_v1(pool)
    return pool


def add_reflection(
    server: grpc.Server | grpc.aio.Server,
    service_names: Iterable[str],
    pool: descriptor_pool.DescriptorPool | None = None,
) -> None:
    """Serve reflection (v1 and v1alpha) listing ``service_names`` and both reflection services."""
    names = [*service_names, *SERVICE_NAMES]
    if isinstance(server, grpc.aio.Server):
        servicer = reflection_aio.ReflectionServicer(names, pool=pool)
    else:
        servicer = reflection.ReflectionServicer(names, pool=pool)
    handler = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for name in SERVICE_NAMES:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handler),))
