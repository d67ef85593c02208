"""Real data for the demo: scikit-learn's breast cancer set, split between the hospitals.

A fifth of the patients stand in for public reference data (what a starting model is
trained on); the rest are split between the hospitals, each keeping its own rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

REFERENCE_FRACTION = 0.2


def breast_cancer_splits(hospitals: list[str], seed: int = 7) -> tuple[dict, dict[str, dict]]:
    """(reference {"X", "y"}, {hospital: {"ids", "X", "y"}}) with columns in ``feature_names()``."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    order = np.random.default_rng(seed).permutation(len(data.target))
    cut = int(len(order) * REFERENCE_FRACTION)
    reference = {"X": data.data[order[:cut]].astype(np.float32), "y": data.target[order[:cut]]}
    shares = np.array_split(order[cut:], len(hospitals))
    splits = {
        name: {
            "ids": [f"{name[-1]}{i:04d}" for i in idx],
            "X": data.data[idx].astype(np.float32),
            "y": data.target[idx],
        }
        for name, idx in zip(hospitals, shares, strict=True)
    }
    return reference, splits


def feature_names() -> list[str]:
    from sklearn.datasets import load_breast_cancer

    return [n.replace(" ", "_") for n in load_breast_cancer().feature_names]


def write_csv(path: Path, split: dict) -> Path:
    """The hospital's export: patient id, 30 measurements, diagnosis (1 = benign)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["patient_id", *feature_names(), "diagnosis"])
        for pid, row, label in zip(split["ids"], split["X"], split["y"], strict=True):
            writer.writerow([pid, *(f"{v:.6g}" for v in row), int(label)])
    return path


def write_parquet(path: Path, split: dict) -> Path:
    """The same rows as ``write_csv``, as one Parquet file (needs pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"patient_id": split["ids"]}
    columns |= {n: split["X"][:, j].astype(np.float64) for j, n in enumerate(feature_names())}
    columns["diagnosis"] = split["y"].astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def write_sqlite(path: Path, split: dict, table: str = "patients") -> Path:
    """The same rows as ``write_csv``, as table ``patients`` of a SQLite database (replaced)."""
    import sqlite3

    names = ["patient_id", *feature_names(), "diagnosis"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        types = ["TEXT PRIMARY KEY"] + ["REAL"] * (len(names) - 2) + ["INTEGER"]
        conn.execute(f"CREATE TABLE {table} ({', '.join(f'{n} {t}' for n, t in zip(names, types, strict=True))})")
        rows = (
            [pid, *(float(f"{v:.6g}") for v in row), int(label)]
            for pid, row, label in zip(split["ids"], split["X"], split["y"], strict=True)
        )
        conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(names))})", rows)
    conn.close()
    return path


def reference_model(path: Path, reference: dict) -> Path:
    """A logistic regression on the reference patients, exported to ONNX (no ZipMap)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(reference["X"], reference["y"])
    onx = to_onnx(model, reference["X"][:1], options={"zipmap": False}, target_opset=17)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path
