"""The operator's calls to AppRegistryService, on an OperatorClient's channel (CLI and demo)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from silolink import errors
from silolink.apps import fab
from silolink.cli_util import iso
from silolink.gen.apps.v1 import apps_pb2 as pb
from silolink.gen.apps.v1 import apps_pb2_grpc
from silolink.protos import config_from_proto, epoch
from silolink.rpc.status import from_rpc_error

from ..operator_client import OperatorClient

CHUNK_BYTES = 1 << 20
PUSH_TIMEOUT_S = 600.0


def version_to_dict(app: pb.AppVersion, manifest: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": app.name,
        "version": app.version,
        "sha256": app.sha256,
        "size_bytes": app.size_bytes,
        "publisher": app.publisher,
        "serverapp": app.serverapp,
        "clientapp": app.clientapp,
        "config": config_from_proto(app.config),
        "dependencies": list(app.dependencies),
        "files": [{"path": f.path, "sha256": f.sha256, "size_bytes": f.size_bytes} for f in app.files],
        "description": app.description,
        "creator": app.creator,
        "created_at": iso(epoch(app, "created_at")),
        "builtin": app.builtin,
    }
    if manifest:
        out["manifest"] = app.manifest.decode()
        out["manifest_signature"] = app.manifest_signature.hex()
    return out


def bundle_bytes(path: Path) -> bytes:
    """A .fab's bytes, or a Flower app directory built into one by Flower's own builder."""
    path = Path(path)
    if path.is_dir():
        return fab.build_fab(path)
    if not path.is_file():
        raise errors.NotFound(f"{path} does not exist; give a Flower app directory or a .fab file")
    return path.read_bytes()


class AppsClient:
    """Typed app-registry calls; failures raise silolink.errors."""

    def __init__(self, operator: OperatorClient) -> None:
        self._operator = operator
        self._stub = apps_pb2_grpc.AppRegistryServiceStub(operator.channel)

    def push(self, path: Path) -> dict[str, Any]:
        data = bundle_bytes(path)

        def requests() -> Iterator[pb.PushAppRequest]:
            yield pb.PushAppRequest(header=pb.PushAppHeader(size_bytes=len(data)))
            for at in range(0, len(data), CHUNK_BYTES):
                yield pb.PushAppRequest(chunk=data[at : at + CHUNK_BYTES])

        try:
            reply = self._stub.PushApp(requests(), timeout=PUSH_TIMEOUT_S)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=f"the coordinator at {self._operator.address}") from None
        return {**version_to_dict(reply.app), "created": reply.created}

    def list(self) -> list[dict[str, Any]]:
        return [version_to_dict(a) for a in self._operator.call(self._stub.ListApps, pb.ListAppsRequest()).apps]

    def show(self, name: str, version: str | None = None) -> list[dict[str, Any]]:
        reply = self._operator.call(self._stub.GetApp, pb.GetAppRequest(name=name, version=version or ""))
        return [version_to_dict(a, manifest=True) for a in reply.versions]
