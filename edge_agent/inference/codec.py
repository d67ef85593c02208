"""Tensors on the wire (``silolink.inference.v1.Tensor``) to numpy arrays and back.

Shared by the agent's servicer and the Python client, so both check the same things.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from silolink import errors
from silolink.gen.inference.v1 import inference_pb2 as pb

DTYPES: dict[int, np.dtype] = {
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    pb.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    pb.DATA_TYPE_INT32: np.dtype("<i4"),
    pb.DATA_TYPE_INT64: np.dtype("<i8"),
    pb.DATA_TYPE_UINT8: np.dtype("u1"),
    pb.DATA_TYPE_INT8: np.dtype("i1"),
    pb.DATA_TYPE_BOOL: np.dtype("?"),
    pb.DATA_TYPE_FLOAT16: np.dtype("<f2"),
}
DTYPE_CODES: dict[str, int] = {dtype.name: code for code, dtype in DTYPES.items()}
_CODES_BY_DTYPE: dict[np.dtype, int] = {dtype: code for code, dtype in DTYPES.items()}


def to_array(tensor: pb.Tensor, what: str = "input") -> np.ndarray:
    """The tensor as a read-only array; InvalidArgument if its fields disagree."""
    dtype = DTYPES.get(tensor.dtype)
    shape = tuple(tensor.shape)
    data = tensor.data  # each read of a bytes field copies it
    if dtype is None or not shape or min(shape) <= 0 or len(data) != math.prod(shape) * dtype.itemsize:
        raise _malformed(tensor, what, dtype, shape, len(data))
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _malformed(tensor: pb.Tensor, what: str, dtype: np.dtype | None, shape: tuple, size: int) -> errors.InvalidArgument:
    """What is wrong with a tensor ``to_array`` refused, for the caller to fix."""
    label = f"{what} {tensor.name!r}"
    if dtype is None:
        return errors.InvalidArgument(f"{label} has no or an unknown dtype; use one of {', '.join(DTYPE_CODES)}")
    if not shape:
        return errors.InvalidArgument(f"{label} has no shape; give at least the number of rows")
    if any(d < 0 for d in shape):
        return errors.InvalidArgument(f"{label} has a negative dimension in shape {list(shape)}")
    if math.prod(shape) == 0:
        return errors.InvalidArgument(f"{label} is empty (shape {list(shape)}); send at least one row")
    expected = math.prod(shape) * dtype.itemsize
    return errors.InvalidArgument(
        f"{label}: shape {list(shape)} of {dtype.name} needs {expected} bytes of data, got {size}"
    )


def from_array(name: str, array: np.ndarray) -> pb.Tensor:
    array = np.asarray(array)
    code = _CODES_BY_DTYPE.get(array.dtype)
    if code is None:
        code = DTYPE_CODES.get(array.dtype.name)  # a big-endian array: sent little-endian
        if code is None:
            raise errors.InvalidArgument(
                f"{name!r} has dtype {array.dtype.name}; tensors carry {', '.join(DTYPE_CODES)} only"
            )
        array = array.astype(DTYPES[code])
    return pb.Tensor(name=name, dtype=code, shape=array.shape, data=array.tobytes())


def inputs_of(request: pb.InferRequest) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        if tensor.name in arrays:
            raise errors.InvalidArgument(f"input {tensor.name!r} is given twice")
        arrays[tensor.name] = to_array(tensor)
    if not arrays:
        raise errors.InvalidArgument("the request has no input tensors")
    return arrays


def outputs_of(response: pb.InferResponse) -> dict[str, np.ndarray]:
    return {t.name: to_array(t, "output") for t in response.outputs}


def request(model: str, inputs: Mapping[str, np.ndarray], version: str | None = None) -> pb.InferRequest:
    return pb.InferRequest(
        model=model, version=version or "", inputs=[from_array(name, array) for name, array in inputs.items()]
    )
