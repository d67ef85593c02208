"""A Python client for the agent's local API, for the site's own systems and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from silolink import errors
from silolink.cli_util import iso
from silolink.gen.agent.v1 import agent_pb2, agent_pb2_grpc
from silolink.gen.inference.v1 import inference_pb2, inference_pb2_grpc
from silolink.protos import epoch
from silolink.rpc.status import from_rpc_error

from .layout import AgentLayout
from .local_api import STATES

if TYPE_CHECKING:
    import numpy as np

STATE_NAMES = {v: k for k, v in STATES.items()}


def local_address(data_dir: Path) -> str:
    """The local API address a running agent wrote to its data directory."""
    layout = AgentLayout(Path(data_dir))
    try:
        return json.loads(layout.endpoints.read_text())["local_address"]
    except FileNotFoundError:
        raise errors.Unavailable(
            f"no agent is running for {layout.root} (looked for {layout.endpoints}); start it with "
            f"`edge-agent run --data-dir {layout.root}`, or give the --data-dir it runs with"
        ) from None
    except (OSError, ValueError, KeyError) as e:
        raise errors.Unavailable(f"cannot read {layout.endpoints} ({e}); is an agent running there?") from None


class LocalClient:
    """Calls to a running agent's local API; failures raise silolink.errors."""

    def __init__(self, address: str, timeout_s: float = 30.0, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._agent = agent_pb2_grpc.AgentServiceStub(self.channel)
        self._inference = inference_pb2_grpc.InferenceServiceStub(self.channel)

    @classmethod
    def for_data_dir(cls, data_dir: Path, **kwargs: Any) -> LocalClient:
        return cls(local_address(data_dir), **kwargs)

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def call(self, method, request, timeout_s: float | None = None):
        try:
            return method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=f"the agent's local API at {self.address}") from None

    def status(self) -> dict[str, Any]:
        reply = self.call(self._agent.GetStatus, agent_pb2.GetStatusRequest())
        return {
            "site": reply.site,
            "version": reply.version,
            "coordinator": reply.coordinator_address,
            "state": STATE_NAMES.get(reply.connection_state, "unknown"),
            "last_error": reply.last_error or None,
            "last_contact": iso(epoch(reply, "last_contact")),
            "certificate_expires_at": iso(epoch(reply, "certificate_expires_at")),
            "uptime_s": round(reply.uptime_s, 1),
        }

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], version: str | None = None) -> Prediction:
        """Run ``model`` (its active version unless ``version``) on named numpy arrays."""
        from .inference import codec

        reply = self.call(self._inference.Infer, codec.request(model, inputs, version))
        return Prediction(codec.outputs_of(reply), model=reply.model, version=reply.version)

    def infer_stream(
        self, model: str, batches: Iterable[Mapping[str, np.ndarray]], version: str | None = None
    ) -> Iterator[Prediction]:
        """Score many batches over one stream, in order; for bulk scoring."""
        from .inference import codec

        requests = (
            inference_pb2.InferStreamRequest(request=codec.request(model, inputs, version)) for inputs in batches
        )
        try:
            for item in self._inference.InferStream(requests, timeout=None):
                reply = item.response
                yield Prediction(codec.outputs_of(reply), model=reply.model, version=reply.version)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=f"the agent's local API at {self.address}") from None

    def list_models(self) -> list[dict[str, Any]]:
        from .inference import codec

        reply = self.call(self._inference.ListModels, inference_pb2.ListModelsRequest())
        dtype_names = {code: dtype.name for code, dtype in codec.DTYPES.items()}

        def specs(items) -> list[dict[str, Any]]:
            return [{"name": t.name, "dtype": dtype_names.get(t.dtype), "shape": list(t.shape)} for t in items]

        return [
            {
                "name": m.name,
                "version": m.version,
                "sha256": m.sha256,
                "size_bytes": m.size_bytes,
                "active": m.active,
                "inputs": specs(m.inputs),
                "outputs": specs(m.outputs),
                "installed_at": iso(epoch(m, "installed_at")),
            }
            for m in reply.models
        ]


class Prediction(dict):
    """A model's outputs by name (numpy arrays), with the model and version that answered."""

    def __init__(self, outputs: Mapping[str, Any], model: str, version: str) -> None:
        super().__init__(outputs)
        self.model = model
        self.version = version
