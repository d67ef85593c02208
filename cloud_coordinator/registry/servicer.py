"""RegistryService (operators) and DistributionService (agents): unpack, call, pack."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator

import grpc

from silolink import errors, model_chunks
from silolink.gen.common.v1 import site_pb2
from silolink.gen.registry.v1 import registry_pb2 as pb
from silolink.gen.registry.v1 import registry_pb2_grpc
from silolink.identity import Role
from silolink.paging import next_page_token, page_limit, page_start
from silolink.protos import timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .models import CHUNK_BYTES, ModelRegistry
from .rollouts import PROTO_TO_STATE, STATE_TO_PROTO, Rollouts
from .store import ModelVersion, OrderRecord, RolloutRecord


def version_to_proto(record: ModelVersion) -> pb.ModelVersion:
    return pb.ModelVersion(
        name=record.name,
        version=record.version,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        inputs=[pb.TensorSpec(name=s.name, dtype=s.dtype, shape=s.shape) for s in record.signature.inputs],
        outputs=[pb.TensorSpec(name=s.name, dtype=s.dtype, shape=s.shape) for s in record.signature.outputs],
        description=record.description,
        creator=record.creator,
        source_job=record.source_job,
        created_at=timestamp(record.created_at),
        deprecated=record.deprecated_at is not None,
        manifest=record.manifest,
        manifest_signature=record.manifest_signature,
    )


def state_counts_to_proto(counts: dict[str, int]) -> list[pb.RolloutStateCount]:
    return [pb.RolloutStateCount(state=STATE_TO_PROTO[s], count=n) for s, n in sorted(counts.items())]


def order_to_proto(order: OrderRecord, size_bytes: int) -> pb.SiteRollout:
    return pb.SiteRollout(
        site=order.site,
        state=STATE_TO_PROTO[order.state],
        reason=order.reason,
        rollout_id=order.rollout_id,
        updated_at=timestamp(order.updated_at),
        bytes_received=order.bytes_received,
        size_bytes=size_bytes,
    )


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, models: ModelRegistry, rollouts: Rollouts) -> None:
        self._models = models
        self._rollouts = rollouts

    def PushModel(self, request_iterator: Iterator[pb.PushModelRequest], context: grpc.ServicerContext):
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise errors.InvalidArgument("a push must start with a header naming the model")
        header = first.header
        with self._models.begin_upload(header.name, header.version or None) as upload:
            for message in request_iterator:
                if not message.HasField("chunk"):
                    raise errors.InvalidArgument("a push carries one header, then chunks of the file")
                upload.write(message.chunk)
            record = upload.finish(header.description, creator=str(current_identity()))
        return pb.PushModelResponse(model=version_to_proto(record))

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext):
        return pb.ListModelsResponse(models=[version_to_proto(r) for r in self._models.list()])

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext):
        found = self._models.show(request.name, request.version or None)
        return pb.GetModelResponse(versions=[version_to_proto(r) for r in found])

    def DeprecateModel(self, request: pb.DeprecateModelRequest, context: grpc.ServicerContext):
        record = self._models.deprecate(request.name, request.version, str(current_identity()))
        return pb.DeprecateModelResponse(model=version_to_proto(record))

    def StartRollout(self, request: pb.StartRolloutRequest, context: grpc.ServicerContext):
        rollout, orders = self._rollouts.start(
            request.name,
            request.version,
            [*request.sites, *(target_to_selector(t) for t in request.targets)],  # targets: clients before sites
            request.canary,
            current_identity(),
            request.study,
        )
        return pb.StartRolloutResponse(rollout=self._rollout(rollout, orders))

    def ContinueRollout(self, request: pb.ContinueRolloutRequest, context: grpc.ServicerContext):
        rollout, orders = self._rollouts.resume(request.name, request.version, str(current_identity()))
        return pb.ContinueRolloutResponse(rollout=self._rollout(rollout, orders))

    def GetRolloutStatus(self, request: pb.GetRolloutStatusRequest, context: grpc.ServicerContext):
        start = page_start(request.page_token)
        state = PROTO_TO_STATE.get(request.state, "") if request.state else ""
        if request.state and not state:
            raise errors.InvalidArgument(f"rollout state {request.state} is not a known state")
        orders, total, counts = self._rollouts.status_page(
            request.name, request.version, state, page_limit(request.page_size), start
        )
        size = self._models.get(request.name, request.version).size_bytes
        return pb.GetRolloutStatusResponse(
            name=request.name,
            version=request.version,
            sites=[order_to_proto(o, size) for o in orders],
            next_page_token=next_page_token(start, len(orders), total, request.page_size),
            total_size=total,
            state_counts=state_counts_to_proto(counts),
        )

    def ListActiveRollouts(self, request: pb.ListActiveRolloutsRequest, context: grpc.ServicerContext):
        found = self._rollouts.active(min(request.page_size or 20, 1000))
        return pb.ListActiveRolloutsResponse(
            rollouts=[
                pb.RolloutProgress(name=name, version=version, sites=sites, state_counts=state_counts_to_proto(counts))
                for name, version, sites, counts in found
            ]
        )

    def RollbackModel(self, request: pb.RollbackModelRequest, context: grpc.ServicerContext):
        rollout, orders = self._rollouts.rollback(request.name, request.to_version, str(current_identity()))
        return pb.RollbackModelResponse(rollout=self._rollout(rollout, orders))

    def _rollout(self, rollout: RolloutRecord, orders: list[OrderRecord]) -> pb.Rollout:
        size = self._models.get(rollout.name, rollout.version).size_bytes
        return pb.Rollout(
            rollout_id=rollout.rollout_id,
            name=rollout.name,
            version=rollout.version,
            kind=rollout.kind,
            canary=rollout.canary,
            created_by=rollout.created_by,
            created_at=timestamp(rollout.created_at),
            sites=[order_to_proto(o, size) for o in orders],
            study=rollout.study,
        )


class DistributionServicer(registry_pb2_grpc.DistributionServiceServicer):
    """DownloadModel yields its responses already serialized (``silolink.model_chunks``);
    ``add_distribution_servicer`` registers it with a serializer that passes them through."""

    def __init__(self, rollouts: Rollouts, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._rollouts = rollouts
        self.chunk_bytes = chunk_bytes
        # For tests of broken downloads: end the next download with UNAVAILABLE after this
        # many chunks (then reset). Never set in production.
        self.break_after_chunks: int | None = None
        # For tests of transient failures: the next downloads fail with these errors, one
        # each, before sending anything. Never set in production.
        self.refuse_next: deque[errors.SiloError] = deque()
        # Recent download requests (site, name, version, offset): names and offsets only.
        self.requests: deque[tuple[str, str, str, int]] = deque(maxlen=256)
        self._lock = threading.Lock()

    def DownloadModel(self, request: pb.DownloadModelRequest, context: grpc.ServicerContext):
        site = current_identity().name
        path, size = self._rollouts.check_download(site, request.name, request.version)
        if not 0 <= request.offset <= size:
            raise errors.InvalidArgument(f"offset {request.offset} is outside the model's {size} bytes")
        self.requests.append((site, request.name, request.version, request.offset))
        with self._lock:
            cut, self.break_after_chunks = self.break_after_chunks, None
            refusal = self.refuse_next.popleft() if self.refuse_next else None
        if refusal is not None:
            raise refusal
        # Closed at once when the call ends early (cancelled, cut): the blob is unmapped then.
        with contextlib.closing(model_chunks.file_chunks(path, request.offset, self.chunk_bytes)) as chunks:
            for sent, chunk in enumerate(chunks):
                if cut is not None and sent >= cut:
                    raise errors.Unavailable("the download was cut (test fault)")
                yield chunk  # a serialized DownloadModelResponse

    def ReportRolloutStatus(self, request: pb.ReportRolloutStatusRequest, context: grpc.ServicerContext):
        state = PROTO_TO_STATE.get(request.state)
        if state is None:
            raise errors.InvalidArgument("the report names no state")
        self._rollouts.report(
            current_identity().name, request.rollout_id, state, request.reason, request.bytes_received
        )
        return pb.ReportRolloutStatusResponse()


def add_distribution_servicer(servicer: DistributionServicer, server: grpc.Server) -> None:
    """The generated registration, except that DownloadModel's chunks arrive serialized."""
    handlers = {
        "DownloadModel": grpc.unary_stream_rpc_method_handler(
            servicer.DownloadModel,
            request_deserializer=pb.DownloadModelRequest.FromString,
            response_serializer=bytes,
        ),
        "ReportRolloutStatus": grpc.unary_unary_rpc_method_handler(
            servicer.ReportRolloutStatus,
            request_deserializer=pb.ReportRolloutStatusRequest.FromString,
            response_serializer=pb.ReportRolloutStatusResponse.SerializeToString,
        ),
    }
    name = pb.DESCRIPTOR.services_by_name["DistributionService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


def mounts(registry: RegistryServicer, distribution: DistributionServicer) -> list[ServiceMount]:
    return [
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["RegistryService"].full_name,
            register=lambda server: registry_pb2_grpc.add_RegistryServiceServicer_to_server(registry, server),
            rules={
                **{m: {Role.VIEWER} for m in ("ListModels", "GetModel", "GetRolloutStatus", "ListActiveRollouts")},
                **{
                    m: {Role.OPERATOR}
                    for m in ("PushModel", "DeprecateModel", "StartRollout", "ContinueRollout", "RollbackModel")
                },
            },
        ),
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["DistributionService"].full_name,
            register=lambda server: add_distribution_servicer(distribution, server),
            rules={"DownloadModel": {Role.AGENT}, "ReportRolloutStatus": {Role.AGENT}},
        ),
    ]


def target_to_selector(target: pb.Target) -> site_pb2.SiteSelector:
    """The selector for a deprecated ``Target`` (StartRolloutRequest.targets, from clients
    built before ``sites`` replaced it)."""
    which = target.WhichOneof("selector")
    if which == "kind":
        return site_pb2.SiteSelector(kind=target.kind)
    if which == "tag":
        return site_pb2.SiteSelector(tags=[target.tag])
    if which == "site":
        return site_pb2.SiteSelector(site=target.site)
    raise errors.InvalidArgument("a rollout target names no kind, tag or site")
