"""numpy-app: the model (softmax regression in NumPy) and each node's data.

At a silolink site the node's data is the job's dataset from the site's catalog, read with
silolink's data helper (``node_config`` names the dataset; the site's agent sends the rows). Anywhere else,
such as Flower's simulation engine, it is a synthetic partition chosen by
``partition-id``/``num-partitions``, so the app runs unchanged on either.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

HOLD_OUT_EVERY = 5  # every fifth row (by id) is held out for evaluation


def init_model(num_features: int, num_classes: int) -> list[np.ndarray]:
    """Zero weights and biases: the global model before round 1."""
    return [np.zeros((num_features, num_classes)), np.zeros(num_classes)]


def load_data(node_config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test) of this node, features standardized locally."""
    return _scaled(_source(node_config))


def scaling_stats(node_config) -> dict[str, list[float]]:
    """The mean and mean square of each feature over this node's training rows: averaged over
    the nodes (Flower's FedAvg weights them by num-examples), they give the exported model the
    pooled scaling, so that it takes a site's raw columns."""
    X, _, test = _raw(_source(node_config))
    train = X[~test]
    return {
        "feature-mean": np.nan_to_num(np.nanmean(train, axis=0)).tolist(),
        "feature-sqmean": np.nan_to_num(np.nanmean(train**2, axis=0)).tolist(),
    }


def pooled_scaling(metrics) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of every feature from the nodes' averaged ``scaling_stats``."""
    mean = np.asarray(metrics["feature-mean"], dtype=float)
    std = np.sqrt(np.maximum(np.asarray(metrics["feature-sqmean"], dtype=float) - mean**2, 0.0))
    return mean, np.where(std > 0, std, 1.0)


def _source(node_config) -> tuple:
    if node_config.get("dataset"):  # at a silolink site
        return ("site", tuple(sorted(node_config.items())))
    return ("synthetic", int(node_config.get("partition-id", 0)), int(node_config.get("num-partitions", 1)))


@lru_cache(maxsize=64)  # one entry at a site; one per node where many share a process
def _raw(source: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, which rows are held out) of this node, unscaled."""
    if source[0] == "site":  # the job's dataset, read with silolink's data helper (present at every site)
        from edge_agent.apps.data import load_dataset

        class _Context:  # the helper reads node_config only
            node_config = dict(source[1])

        data = load_dataset(_Context())
        return data.X, data.y.astype(np.int64), data.row_ids % HOLD_OUT_EVERY == 0
    partition, partitions = source[1:]
    rng = np.random.default_rng(42)
    centers = rng.normal(size=(2, 30)) * 0.6
    y = rng.integers(0, 2, size=600 * partitions)
    X = centers[y] + rng.normal(size=(len(y), 30))
    part = slice(partition * 600, (partition + 1) * 600)
    return X[part], y[part], np.arange(600) % HOLD_OUT_EVERY == 0


@lru_cache(maxsize=64)
def _scaled(source: tuple):
    X, y, test = _raw(source)
    mean = np.nanmean(X[~test], axis=0)
    std = np.nanstd(X[~test], axis=0)
    Z = np.nan_to_num((X - mean) / np.where(std > 0, std, 1.0))
    return Z[~test], y[~test], Z[test], y[test]


def check_shapes(model: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> None:
    W = model[0]
    if W.shape[0] != X.shape[1]:
        raise ValueError(f"the model takes {W.shape[0]} features, this node's data has {X.shape[1]}: "
                         "set num-features in the run config")  # fmt: skip
    if len(y) and y.max() >= W.shape[1]:
        raise ValueError(f"this node's labels exceed the model's {W.shape[1]} classes: set num-classes")


def _probabilities(model: list[np.ndarray], X: np.ndarray) -> np.ndarray:
    logits = X @ model[0] + model[1]
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def train(model: list[np.ndarray], X: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> list[np.ndarray]:
    """Full-batch gradient descent on the cross-entropy, from the global model."""
    W, b = model[0].copy(), model[1].copy()
    onehot = np.eye(W.shape[1])[y]
    for _ in range(epochs):
        grad = (_probabilities([W, b], X) - onehot) / len(y)
        W -= lr * X.T @ grad
        b -= lr * grad.sum(axis=0)
    return [W, b]


def evaluate(model: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(cross-entropy loss, accuracy)."""
    if not len(y):
        return 0.0, 0.0
    p = _probabilities(model, X)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(p.argmax(axis=1) == y))
