"""The built-in tabular app's model in numpy: softmax regression, optionally behind hidden
ReLU layers (a small MLP); its training step and its export to ONNX. Sites train it; the
coordinator initializes and exports the global one.

Features are standardized with federated statistics (mean, std) that travel with the
model, so every site and the exported ONNX file scale inputs the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def standardize(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    Z = (X - mean) / std
    return np.nan_to_num(Z, nan=0.0)  # a missing value counts as the mean


Params = dict[str, np.ndarray]
MAX_HIDDEN_LAYERS = 4
MAX_HIDDEN_UNITS = 4096


def layer_names(layers: int) -> list[tuple[str, str]]:
    """Array names per layer: ``W``/``b`` for plain softmax regression (one layer), else
    ``W1``/``b1`` ... ``Wn``/``bn`` with ReLU between them."""
    return [("W", "b")] if layers == 1 else [(f"W{i}", f"b{i}") for i in range(1, layers + 1)]


def init(width: int, classes: int, hidden: tuple[int, ...] = (), seed: int = 0) -> Params:
    """The starting global model (the coordinator sends it, so every site starts alike)."""
    sizes = [width, *hidden, classes]
    rng = np.random.default_rng(seed)
    params: Params = {}
    for (w, b), fan_in, fan_out in zip(layer_names(len(sizes) - 1), sizes[:-1], sizes[1:], strict=True):
        # Plain regression is convex and starts at zero; hidden layers need random (He)
        # weights, or every unit of a layer would learn the same thing.
        scale = np.sqrt(2.0 / fan_in) if hidden else 0.0
        params[w] = rng.standard_normal((fan_in, fan_out)) * scale
        params[b] = np.zeros(fan_out)
    return params


def layers(params: Params) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weights, bias) per layer, in order; ValueError if the arrays do not chain."""
    count = sum(1 for name in params if name.startswith("W"))
    names = layer_names(count)
    if count == 0 or sorted(params) != sorted(n for pair in names for n in pair):
        raise ValueError(f"arrays {sorted(params)} are not a tabular model's layers")
    out = [(params[w], params[b]) for w, b in names]
    for i, (W, b) in enumerate(out):
        if W.ndim != 2 or b.shape != (W.shape[1],) or (i and W.shape[0] != out[i - 1][0].shape[1]):
            raise ValueError(f"layer {i + 1} has weights {list(W.shape)} and bias {list(b.shape)}: they do not chain")
    return out


def from_list(arrays: list[np.ndarray]) -> Params:
    """Arrays in layer order (as Flower's legacy API passes them) to named parameters."""
    names = [n for pair in layer_names(len(arrays) // 2) for n in pair]
    if len(arrays) != len(names):
        raise ValueError(f"{len(arrays)} arrays are not weight/bias pairs")
    return dict(zip(names, arrays, strict=True))


def to_list(params: Params) -> list[np.ndarray]:
    """Named parameters in layer order, for Flower's legacy API."""
    return [params[n] for pair in layer_names(len(layers(params))) for n in pair]


def _forward(chain: list[tuple[np.ndarray, np.ndarray]], Z: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The inputs of every layer of ``chain`` (checked by ``layers``) and the output probabilities."""
    inputs, h = [], Z
    for i, (W, b) in enumerate(chain):
        inputs.append(h)
        h = h @ W + b
        if i < len(chain) - 1:
            h = np.maximum(h, 0.0)
    h -= h.max(axis=1, keepdims=True)
    e = np.exp(h)
    return inputs, e / e.sum(axis=1, keepdims=True)


def probabilities(params: Params, Z: np.ndarray) -> np.ndarray:
    return _forward(layers(params), Z)[1]


def loss_accuracy(params: Params, Z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(y) == 0:
        return 0.0, 0.0
    p = probabilities(params, Z)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(p.argmax(axis=1) == y))


def train(
    params: Params,
    Z: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    rng: np.random.Generator,
    batch_size: int = 32,
    proximal_mu: float = 0.0,
    l2: float = 1e-4,
) -> Params:
    """Mini-batch SGD on the cross-entropy; FedProx's proximal term pulls towards the start."""
    start = {k: v.copy() for k, v in params.items()}
    params = {k: v.copy() for k, v in params.items()}
    names = layer_names(len(layers(params)))  # checked once; each step reuses the names
    onehot = np.eye(params[names[-1][1]].shape[0])[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for first in range(0, len(y), batch_size):
            idx = order[first : first + batch_size]
            inputs, p = _forward([(params[w], params[b]) for w, b in names], Z[idx])
            delta = (p - onehot[idx]) / len(idx)
            for i in range(len(names) - 1, -1, -1):
                w, b = names[i]
                W = params[w]
                grad_W = inputs[i].T @ delta + l2 * W + proximal_mu * (W - start[w])
                grad_b = delta.sum(axis=0) + proximal_mu * (params[b] - start[b])
                if i:  # back through this layer and the ReLU that produced its input
                    delta = (delta @ W.T) * (inputs[i] > 0)
                params[w] = W - lr * grad_W
                params[b] = params[b] - lr * grad_b
    return params


def export_onnx(path: Path, params: Params, mean: np.ndarray, std: np.ndarray) -> Path:
    """``X`` float32[N, F] -> ``label`` int64[N], ``probabilities`` float32[N, C], in a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_bytes(params, mean, std))
    return path


def onnx_bytes(params: Params, mean: np.ndarray, std: np.ndarray) -> bytes:
    """The model as ONNX: ``X`` float32[N, F] -> ``label`` int64[N], ``probabilities``
    float32[N, C], inputs standardized with ``mean``/``std`` inside the graph."""
    from onnx import TensorProto, checker, helper, numpy_helper

    f32 = np.float32
    chain = layers(params)
    nodes = [
        helper.make_node("Sub", ["X", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["h0"]),
    ]
    initializers = [numpy_helper.from_array(mean.astype(f32), "mean"), numpy_helper.from_array(std.astype(f32), "std")]
    for i, ((w, b), (W, bias)) in enumerate(zip(layer_names(len(chain)), chain, strict=True)):
        last = i == len(chain) - 1
        out = "logits" if last else f"h{i + 1}"
        nodes += [
            helper.make_node("MatMul", [f"h{i}", w], [f"{out}_w"]),
            helper.make_node("Add", [f"{out}_w", b], [out if last else f"{out}_pre"]),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"{out}_pre"], [out]))
        initializers += [numpy_helper.from_array(W.astype(f32), w), numpy_helper.from_array(bias.astype(f32), b)]
    nodes += [
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "silolink_softmax_regression" if len(chain) == 1 else "silolink_mlp_classifier",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", chain[0][0].shape[0]])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", chain[-1][0].shape[1]]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="silolink")
    model.ir_version = 8
    checker.check_model(model)
    return model.SerializeToString()
