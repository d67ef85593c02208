"""pytorch-app: the network, each node's data, training, and the ONNX export.

At a silolink site the node's data is the job's dataset from the site's catalog, read with
silolink's data helper (``node_config`` names the dataset; the site's agent sends the rows). Anywhere else,
such as Flower's simulation engine, it is a synthetic partition chosen by
``partition-id``/``num-partitions``, so the app runs unchanged on either.

The network scales its own inputs (a BatchNorm layer without weights, whose running mean and
variance FedAvg averages like any other array), so the exported model takes a site's raw
feature columns: ``edge-agent infer table`` can score a catalog table with it as it is.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HOLD_OUT_EVERY = 5  # every fifth row (by id) is held out for evaluation


class Net(nn.Module):
    def __init__(self, num_features: int, hidden_units: int, num_classes: int) -> None:
        super().__init__()
        self.scale = nn.BatchNorm1d(num_features, affine=False)
        self.body = nn.Sequential(
            nn.Linear(num_features, hidden_units), nn.ReLU(), nn.Linear(hidden_units, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.scale(x))


class Scorer(nn.Module):
    """What is exported: raw features ``X`` in, ``label`` and ``probabilities`` out."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        self.net = net

    def forward(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.net(X), dim=1)
        return probabilities.argmax(dim=1), probabilities


def load_data(node_config, batch_size: int) -> tuple[DataLoader, torch.Tensor, torch.Tensor]:
    """(training batches, X_test, y_test) of this node."""
    if node_config.get("dataset"):  # at a silolink site
        X, y, test = _site_data(tuple(sorted(node_config.items())))
    else:
        X, y, test = _synthetic_data(int(node_config.get("partition-id", 0)), int(node_config.get("num-partitions", 1)))
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(X[~test], y[~test]), batch_size=batch_size, shuffle=True, generator=generator)
    return train, X[test], y[test]


@lru_cache(maxsize=64)  # one entry at a site; one per node where many share a process
def _site_data(node_config: tuple):
    from edge_agent.apps.data import load_dataset  # silolink's data helper, present at every site

    class _Context:  # the helper reads node_config only
        pass

    _Context.node_config = dict(node_config)

    data = load_dataset(_Context())
    test = data.row_ids % HOLD_OUT_EVERY == 0
    X = data.X
    if np.isnan(X).any():  # empty cells: the training rows' column mean
        X = np.where(np.isnan(X), np.nan_to_num(np.nanmean(X[~test], axis=0)), X)
    return X, data.y.astype(np.int64), torch.tensor(test)


@lru_cache(maxsize=64)
def _synthetic_data(partition: int, partitions: int):
    rng = np.random.default_rng(42)
    centers = rng.normal(size=(2, 30)) * 0.6
    y = rng.integers(0, 2, size=600 * partitions)
    X = (centers[y] + rng.normal(size=(len(y), 30))) * 10 + 5  # raw, unscaled features
    part = slice(partition * 600, (partition + 1) * 600)
    return X[part], y[part], torch.tensor(np.arange(600) % HOLD_OUT_EVERY == 0)


def train(net: Net, batches: DataLoader, epochs: int, lr: float) -> float:
    """Local epochs of Adam from the global weights; the mean training loss."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        for X, y in batches:
            if len(y) < 2:  # BatchNorm needs two rows to estimate a batch's statistics
                continue
            optimizer.zero_grad()
            loss = loss_fn(net(X), y)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(y), count + len(y)
    return total / max(count, 1)


def test(net: Net, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) of the network on held-out rows."""
    if not len(y):
        return 0.0, 0.0
    net.eval()
    with torch.no_grad():
        logits = net(X)
        return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(dim=1) == y).float().mean())


def export_onnx(net: Net, path: Path) -> Path:
    """The network as ONNX, through torch's own exporter (``torch.onnx.export``, dynamo)."""
    scorer = Scorer(net).eval()
    example = (torch.zeros(2, net.scale.num_features),)
    rows = torch.export.Dim("rows")
    program = torch.onnx.export(
        scorer, example, input_names=["X"], output_names=["label", "probabilities"], verbose=False,
        dynamic_shapes={"X": {0: rows}},
    )  # fmt: skip
    program.save(str(path))
    return path
