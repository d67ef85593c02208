"""ONNX model files: check that one loads, and describe its inputs and outputs.

Both sides use it: the agent before installing a model, the coordinator before registering
one. onnxruntime is imported inside the functions (it costs start-up time and memory that
a daemon which never loads a model should not pay).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from silolink.errors import InvalidArgument

# onnxruntime's type strings to numpy dtype names (the ones a tensor can carry on the wire).
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
    "tensor(float16)": "float16",
}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: dims are ints, or -1 where the model leaves one free."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(data["name"], data["dtype"], tuple(data["shape"]))

    def describe(self) -> str:
        dims = ", ".join("?" if d < 0 else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [asdict(s) for s in self.inputs], "outputs": [asdict(s) for s in self.outputs]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
            tuple(TensorSpec.from_dict(s) for s in data["outputs"]),
        )


def check_name(kind: str, value: str) -> str:
    """Model names and versions: letters, digits, ``.``, ``_``, ``-``; up to 64 characters."""
    if not NAME_PATTERN.match(value or ""):
        raise InvalidArgument(
            f"{kind} {value!r} is not valid: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def error_summary(error: Exception) -> str:
    """onnxruntime's message, first line only (the rest is its C++ context)."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def session_options(intra_op_threads: int = 0, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings are not the site admin's concern
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    if not spinning:
        # Idle onnxruntime threads spin by default: fastest for one big request at a time,
        # but the spinning takes CPU that gRPC threads and other models need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_session(path: Path, intra_op_threads: int = 0, spinning: bool = True):
    """An onnxruntime session on the CPU for the file at ``path``."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(path), sess_options=session_options(intra_op_threads, spinning), providers=["CPUExecutionProvider"]
    )


def inspect(path: Path, label: str | None = None) -> Signature:
    """Load the model at ``path`` in onnxruntime and describe it; InvalidArgument if it can't be served."""
    label = label or Path(path).name
    try:
        session = load_session(path, intra_op_threads=1)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for every kind of bad file
        raise InvalidArgument(
            f"{label} is not a valid ONNX model that onnxruntime can load: {error_summary(e)}"
        ) from None
    return signature_of(session, label)


def signature_of(session, label: str) -> Signature:
    def spec(arg) -> TensorSpec:
        dtype = ORT_TYPES.get(arg.type)
        if dtype is None:
            raise InvalidArgument(
                f"{label}: {arg.name} has type {arg.type}; silolink serves tensors of "
                f"{', '.join(sorted(set(ORT_TYPES.values())))} only (export classifiers without ZipMap)"
            )
        return TensorSpec(arg.name, dtype, tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape))

    return Signature(
        tuple(spec(a) for a in session.get_inputs()),
        tuple(spec(a) for a in session.get_outputs()),
    )
