"""``edge-agent data add`` as a site admin runs it: data registered in place, listed,
described, scored and dropped; bad sources refused with one clear line."""

import json

import numpy as np
import pytest

from tests.e2e.test_cli import cli
from tests.onnx_builders import linear_model

pa = pytest.importorskip("pyarrow", reason="pyarrow is in the [sources] extra (pip install -e '.[dev]')")


def test_parquet_add_list_describe_score_drop(tmp_path):
    import pyarrow.parquet as pq

    site = str(tmp_path / "site")
    rng = np.random.default_rng(0)
    values = rng.standard_normal((40, 3)).round(4)
    source = tmp_path / "readings.parquet"
    table = {"id": [f"r{i}" for i in range(40)], "a": values[:, 0], "b": values[:, 1], "c": values[:, 2]}
    pq.write_table(pa.table({**table, "ok": [i % 2 for i in range(40)]}), source)

    added = json.loads(
        cli("edge-agent", "data", "add", "readings", "--source", str(source), "--label", "ok", "--id", "id",
            "--sensitive", "c", "--data-dir", site, "--json").stdout
    )  # fmt: skip
    assert added["kind"] == "parquet" and added["row_count"] == 40
    assert [c["name"] for c in added["columns"] if c["sensitive"]] == ["c"]
    listing = cli("edge-agent", "data", "list", "--data-dir", site).stdout
    assert "parquet" in listing and str(source) in listing
    described = cli("edge-agent", "data", "describe", "readings", "--data-dir", site).stdout
    assert "40 rows, parquet" in described and "sensitive" in described

    cli("edge-agent", "data", "sensitive", "readings", "c", "--clear", "--data-dir", site)
    model = linear_model(tmp_path / "m.onnx", np.array([[1, 0], [0, 1], [1, 1]], np.float32))
    cli("edge-agent", "models", "install", str(model), "--name", "sum", "--version", "1", "--data-dir", site)
    scored = json.loads(
        cli("edge-agent", "infer", "table", "readings", "--model", "sum:1", "--output", "scores", "--data-dir",
            site, "--json").stdout
    )  # fmt: skip
    assert scored["rows"] == 40

    missing = cli("edge-agent", "data", "add", "gone", "--source", str(tmp_path / "gone.parquet"), "--data-dir",
                  site, check=False)  # fmt: skip
    assert missing.returncode != 0 and "dataset 'gone'" in missing.stderr and "no such file" in missing.stderr
    dropped = cli("edge-agent", "data", "drop", "readings", "--data-dir", site).stdout
    assert "left as it is" in dropped and source.exists()
    names = [d["name"] for d in json.loads(cli("edge-agent", "data", "list", "--data-dir", site, "--json").stdout)]
    assert names == ["scores"]
