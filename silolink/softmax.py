"""Softmax regression in numpy: the built-in tabular app's model, its training step and
its export to ONNX. Sites train it; the coordinator exports the global one.

Features are standardized with federated statistics (mean, std) that travel with the
model, so every site and the exported ONNX file scale inputs the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def standardize(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    Z = (X - mean) / std
    return np.nan_to_num(Z, nan=0.0)  # a missing value counts as the mean


def probabilities(W: np.ndarray, b: np.ndarray, Z: np.ndarray) -> np.ndarray:
    logits = Z @ W + b
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def loss_accuracy(W: np.ndarray, b: np.ndarray, Z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(y) == 0:
        return 0.0, 0.0
    p = probabilities(W, b, Z)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(p.argmax(axis=1) == y))


def train(
    W: np.ndarray,
    b: np.ndarray,
    Z: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    rng: np.random.Generator,
    batch_size: int = 32,
    proximal_mu: float = 0.0,
    l2: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Mini-batch SGD on the cross-entropy; FedProx's proximal term pulls towards the start."""
    W0, b0 = W.copy(), b.copy()
    W, b = W.copy(), b.copy()
    classes = W.shape[1]
    onehot = np.eye(classes)[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            err = probabilities(W, b, Z[idx]) - onehot[idx]
            grad_W = Z[idx].T @ err / len(idx) + l2 * W + proximal_mu * (W - W0)
            grad_b = err.mean(axis=0) + proximal_mu * (b - b0)
            W -= lr * grad_W
            b -= lr * grad_b
    return W, b


def export_onnx(path: Path, W: np.ndarray, b: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Path:
    """``X`` float32[N, F] -> ``label`` int64[N], ``probabilities`` float32[N, C]."""
    from onnx import TensorProto, checker, helper, numpy_helper

    f32 = np.float32
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["X", "mean"], ["centered"]),
            helper.make_node("Div", ["centered", "std"], ["scaled"]),
            helper.make_node("MatMul", ["scaled", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "silolink_softmax_regression",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", W.shape[0]])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", W.shape[1]]),
        ],
        initializer=[
            numpy_helper.from_array(mean.astype(f32), "mean"),
            numpy_helper.from_array(std.astype(f32), "std"),
            numpy_helper.from_array(W.astype(f32), "W"),
            numpy_helper.from_array(b.astype(f32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="silolink")
    model.ir_version = 8
    checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path
