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
    if node_config.get("dataset"):  # at a silolink site
        return _site_data(tuple(sorted(node_config.items())))
    return _bundled_data(int(node_config.get("partition-id", 0)), int(node_config.get("num-partitions", 1)))


@lru_cache(maxsize=64)  # one entry at a site; one per node where many share a process
def _site_data(node_config: tuple):
    from edge_agent.apps.data import load_dataset  # silolink's data helper, present at every site

    class _Context:  # the helper reads node_config only
        pass

    _Context.node_config = dict(node_config)

    data = load_dataset(_Context())
    return _split(data.X, data.y.astype(np.int64), data.row_ids % HOLD_OUT_EVERY == 0)


@lru_cache(maxsize=64)
def _bundled_data(partition: int, partitions: int):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    part = np.array_split(order, partitions)[partition]
    return _split(X[part], y[part], np.arange(len(part)) % HOLD_OUT_EVERY == 0)


def _split(X: np.ndarray, y: np.ndarray, test: np.ndarray):
    if np.isnan(X).any():  # empty cells: the training rows' column mean
        X = np.where(np.isnan(X), np.nan_to_num(np.nanmean(X[~test], axis=0)), X)
    scaler = StandardScaler().fit(X[~test])
    return scaler.transform(X[~test]), y[~test], scaler.transform(X[test]), y[test]
