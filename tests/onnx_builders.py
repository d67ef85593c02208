"""Small real ONNX models built with onnx's helper API, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear_model(path: Path, weights: np.ndarray, bias: np.ndarray | None = None, batch: int | str = "N") -> Path:
    """``scores = x @ weights + bias`` and ``label = argmax(scores)``; x is float32[batch, in]."""
    n_in, n_out = weights.shape
    bias = np.zeros(n_out, np.float32) if bias is None else bias
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, n_out]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [batch]),
        ],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)


def mlp_model(path: Path, sizes: list[int], seed: int = 0) -> Path:
    """A ReLU MLP float32[N, sizes[0]] -> float32[N, sizes[-1]] with random weights."""
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [current, f"W{i}"], [f"m{i}"])]
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        nodes += [helper.make_node("Add", [f"m{i}", f"b{i}"], [out if out == "y" else f"a{i}"])]
        if out != "y":
            nodes += [helper.make_node("Relu", [f"a{i}"], [out])]
        current = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)
