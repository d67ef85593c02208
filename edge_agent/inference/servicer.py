"""InferenceService on the agent's local API: unpack tensors, call the engine, pack."""

from __future__ import annotations

import grpc

from silolink.gen.inference.v1 import inference_pb2 as pb
from silolink.gen.inference.v1 import inference_pb2_grpc
from silolink.identity import Role
from silolink.onnx_models import TensorSpec
from silolink.protos import timestamp
from silolink.rpc.server import ServiceMount

from ..models.store import ModelRecord, ModelStore
from . import codec
from .engine import InferenceEngine


def spec_to_proto(spec: TensorSpec) -> pb.TensorSpec:
    return pb.TensorSpec(name=spec.name, dtype=codec.DTYPE_CODES[spec.dtype], shape=spec.shape)


def model_to_proto(record: ModelRecord) -> pb.ModelVersion:
    return pb.ModelVersion(
        name=record.name,
        version=record.version,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        active=record.active,
        inputs=[spec_to_proto(s) for s in record.signature.inputs],
        outputs=[spec_to_proto(s) for s in record.signature.outputs],
        installed_at=timestamp(record.installed_at),
    )


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, engine: InferenceEngine, store: ModelStore) -> None:
        self._engine = engine
        self._store = store

    def Infer(self, request: pb.InferRequest, context: grpc.ServicerContext) -> pb.InferResponse:
        record, outputs = self._engine.infer(request.model, request.version or None, codec.inputs_of(request))
        return pb.InferResponse(
            model=record.name,
            version=record.version,
            outputs=[
                codec.from_array(spec.name, out) for spec, out in zip(record.signature.outputs, outputs, strict=True)
            ],
        )

    def InferStream(self, request_iterator, context: grpc.ServicerContext):
        for item in request_iterator:
            yield pb.InferStreamResponse(response=self.Infer(item.request, context))

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_to_proto(r) for r in self._store.list()])


def mount(servicer: InferenceServicer) -> ServiceMount:
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["InferenceService"].full_name,
        register=lambda server: inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server),
        rules={"Infer": {Role.LOCAL}, "InferStream": {Role.LOCAL}, "ListModels": {Role.LOCAL}},
    )
