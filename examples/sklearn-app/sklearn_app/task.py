"""sklearn-app: the model and each node's data.

At a silolink site the node's data is the job's dataset from the site's catalog, read with
silolink's data helper (``node_config`` names the dataset; the site's agent sends the rows). Anywhere else,
such as Flower's simulation engine, it is a partition of scikit-learn's bundled breast
cancer data chosen by ``partition-id``/``num-partitions`` (nothing is downloaded).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

HOLD_OUT_EVERY = 5  # every fifth row (by id) is held out for evaluation


def get_model(penalty: str, local_epochs: int) -> LogisticRegression:
    """A logistic regression that continues from the parameters set on it (warm start)."""
    return LogisticRegression(penalty=penalty, max_iter=local_epochs, warm_start=True)


def get_model_params(model: LogisticRegression) -> list[np.ndarray]:
    if model.fit_intercept:
        return [model.coef_, model.intercept_]
    return [model.coef_]


def set_model_params(model: LogisticRegression, params: list[np.ndarray]) -> LogisticRegression:
    model.coef_ = params[0]
    if model.fit_intercept:
        model.intercept_ = params[1]
    return model


def set_initial_params(model: LogisticRegression, num_features: int, num_classes: int) -> None:
    """Zero parameters of the right shapes, before the model has seen any data."""
    model.classes_ = np.arange(num_classes)
    rows = 1 if num_classes == 2 else num_classes
    model.coef_ = np.zeros((rows, num_features))
    if model.fit_intercept:
        model.intercept_ = np.zeros(rows)


def load_data(node_config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test) of this node, features scaled with its own training rows."""
    return _scaled(_source(node_config))


def scaling_stats(node_config) -> dict[str, list[float]]:
    """The mean and mean square of each feature over this node's training rows: averaged over
    the nodes (Flower's FedAvg weights them by num-examples), they give the exported model the
    pooled scaling, so that it takes a site's raw columns."""
    X, _, test = _raw(_source(node_config))
    train = _impute(X, test)[~test]
    return {"feature-mean": train.mean(axis=0).tolist(), "feature-sqmean": (train**2).mean(axis=0).tolist()}


def export_onnx(model: LogisticRegression, metrics) -> bytes:
    """The global model as ONNX (skl2onnx, scikit-learn's converter), behind the pooled
    imputation and scaling: ``X`` float32[N, F] -> ``label``, ``probabilities``."""
    from skl2onnx import to_onnx
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    mean = np.asarray(metrics["feature-mean"], dtype=float)
    std = np.sqrt(np.maximum(np.asarray(metrics["feature-sqmean"], dtype=float) - mean**2, 0.0))
    imputer = SimpleImputer().fit(mean[None, :])  # an empty cell becomes the mean, as at the sites
    scaler = StandardScaler().fit(mean[None, :])
    scaler.mean_, scaler.scale_, scaler.var_ = mean, np.where(std > 0, std, 1.0), std**2
    pipeline = make_pipeline(imputer, scaler, model)
    example = np.zeros((1, len(mean)), dtype=np.float32)
    return to_onnx(pipeline, example, options={id(model): {"zipmap": False}}).SerializeToString()


def _source(node_config) -> tuple:
    if node_config.get("dataset"):  # at a silolink site
        return ("site", tuple(sorted(node_config.items())))
    return ("bundled", int(node_config.get("partition-id", 0)), int(node_config.get("num-partitions", 1)))


@lru_cache(maxsize=64)  # one entry at a site; one per node where many share a process
def _raw(source: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, which rows are held out) of this node, unscaled."""
    if source[0] == "site":  # the job's dataset, read with silolink's data helper (present at every site)
        from edge_agent.apps.data import load_dataset

        class _Context:  # the helper reads node_config only
            node_config = dict(source[1])

        data = load_dataset(_Context())
        return data.X, data.y.astype(np.int64), data.row_ids % HOLD_OUT_EVERY == 0
    from sklearn.datasets import load_breast_cancer

    partition, partitions = source[1:]
    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    part = np.array_split(order, partitions)[partition]
    return X[part], y[part], np.arange(len(part)) % HOLD_OUT_EVERY == 0


def _impute(X: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Empty cells: the training rows' column mean."""
    if not np.isnan(X).any():
        return X
    return np.where(np.isnan(X), np.nan_to_num(np.nanmean(X[~test], axis=0)), X)


@lru_cache(maxsize=64)
def _scaled(source: tuple):
    X, y, test = _raw(source)
    X = _impute(X, test)
    scaler = StandardScaler().fit(X[~test])
    return scaler.transform(X[~test]), y[~test], scaler.transform(X[test]), y[test]
