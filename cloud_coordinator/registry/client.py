"""The operator's calls to RegistryService, on an OperatorClient's channel (CLI and demo)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from silolink import errors
from silolink.cli_util import iso
from silolink.gen.registry.v1 import registry_pb2 as pb
from silolink.gen.registry.v1 import registry_pb2_grpc
from silolink.protos import epoch
from silolink.rpc.status import from_rpc_error

from ..operator_client import OperatorClient
from ..sites import selector as site_selector
from .models import CHUNK_BYTES
from .rollouts import PROTO_TO_STATE

# Uploads of large models take longer than the admin API's default timeout.
PUSH_TIMEOUT_S = 3600.0


def version_to_dict(model: pb.ModelVersion, manifest: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": model.name,
        "version": model.version,
        "sha256": model.sha256,
        "size_bytes": model.size_bytes,
        "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in model.inputs],
        "outputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in model.outputs],
        "description": model.description,
        "creator": model.creator,
        "source_job": model.source_job or None,
        "created_at": iso(epoch(model, "created_at")),
        "deprecated": model.deprecated,
    }
    if manifest:
        out["manifest"] = model.manifest.decode()
        out["manifest_signature"] = model.manifest_signature.hex()
    return out


def site_to_dict(site: pb.SiteRollout) -> dict[str, Any]:
    return {
        "site": site.site,
        "state": PROTO_TO_STATE.get(site.state, "unknown"),
        "reason": site.reason,
        "rollout_id": site.rollout_id,
        "updated_at": iso(epoch(site, "updated_at")),
        "bytes_received": site.bytes_received,
        "size_bytes": site.size_bytes,
    }


def state_counts_to_dict(counts) -> dict[str, int]:
    return {pb.RolloutState.Name(c.state).removeprefix("ROLLOUT_STATE_").lower(): c.count for c in counts}


def rollout_to_dict(rollout: pb.Rollout) -> dict[str, Any]:
    return {
        "rollout_id": rollout.rollout_id,
        "name": rollout.name,
        "version": rollout.version,
        "kind": rollout.kind,
        "canary": rollout.canary,
        "created_by": rollout.created_by,
        "created_at": iso(epoch(rollout, "created_at")),
        "study": rollout.study or "default",
        "sites": [site_to_dict(s) for s in rollout.sites],
    }


class RegistryClient:
    """Typed registry calls; failures raise silolink.errors."""

    def __init__(self, operator: OperatorClient) -> None:
        self._operator = operator
        self._stub = registry_pb2_grpc.RegistryServiceStub(operator.channel)

    def push(self, path: Path, name: str, version: str | None = None, description: str = "") -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise errors.NotFound(f"{path} does not exist or is not a file")

        def requests() -> Iterator[pb.PushModelRequest]:
            yield pb.PushModelRequest(
                header=pb.PushModelHeader(name=name, version=version or "", description=description)
            )
            with path.open("rb") as source:
                while chunk := source.read(CHUNK_BYTES):
                    yield pb.PushModelRequest(chunk=chunk)

        try:
            reply = self._stub.PushModel(requests(), timeout=PUSH_TIMEOUT_S)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=f"the coordinator at {self._operator.address}") from None
        return version_to_dict(reply.model)

    def list(self) -> list[dict[str, Any]]:
        return [version_to_dict(m) for m in self._call(self._stub.ListModels, pb.ListModelsRequest()).models]

    def show(self, name: str, version: str | None = None) -> list[dict[str, Any]]:
        reply = self._call(self._stub.GetModel, pb.GetModelRequest(name=name, version=version or ""))
        return [version_to_dict(m, manifest=True) for m in reply.versions]

    def deprecate(self, name: str, version: str) -> dict[str, Any]:
        reply = self._call(self._stub.DeprecateModel, pb.DeprecateModelRequest(name=name, version=version))
        return version_to_dict(reply.model)

    def rollout(self, name: str, version: str, targets: list[str], canary: int = 0, study: str = "") -> dict[str, Any]:
        request = pb.StartRolloutRequest(
            name=name, version=version, sites=[site_selector.parse(t, "--to") for t in targets], canary=canary,
            study=study,
        )  # fmt: skip
        return rollout_to_dict(self._call(self._stub.StartRollout, request).rollout)

    def continue_rollout(self, name: str, version: str) -> dict[str, Any]:
        reply = self._call(self._stub.ContinueRollout, pb.ContinueRolloutRequest(name=name, version=version))
        return rollout_to_dict(reply.rollout)

    def status(self, name: str, version: str) -> list[dict[str, Any]]:
        reply = self._call(self._stub.GetRolloutStatus, pb.GetRolloutStatusRequest(name=name, version=version))
        return [site_to_dict(s) for s in reply.sites]

    def status_page(self, name: str, version: str, page_size: int, offset: int = 0, state: str = "") -> dict[str, Any]:
        """One page of the sites' states for ``name:version`` (by site name), how many sites
        match, and how many are in each state."""
        request = pb.GetRolloutStatusRequest(
            name=name,
            version=version,
            page_size=page_size,
            page_token=str(offset) if offset else "",
            state=pb.RolloutState.Value(f"ROLLOUT_STATE_{state.upper()}") if state else 0,
        )
        reply = self._call(self._stub.GetRolloutStatus, request)
        return {
            "sites": [site_to_dict(s) for s in reply.sites],
            "total": reply.total_size,
            "state_counts": state_counts_to_dict(reply.state_counts),
        }

    def active_rollouts(self, limit: int = 20) -> list[dict[str, Any]]:
        """The versions some sites are still on their way to, the newest rollout first."""
        reply = self._call(self._stub.ListActiveRollouts, pb.ListActiveRolloutsRequest(page_size=limit))
        return [
            {"model": f"{r.name}:{r.version}", "name": r.name, "version": r.version, "sites": r.sites,
             "state_counts": state_counts_to_dict(r.state_counts)}
            for r in reply.rollouts
        ]  # fmt: skip

    def rollback(self, name: str, to_version: str) -> dict[str, Any]:
        reply = self._call(self._stub.RollbackModel, pb.RollbackModelRequest(name=name, to_version=to_version))
        return rollout_to_dict(reply.rollout)

    def _call(self, method, request):
        return self._operator.call(method, request)
