"""The site admin's data and model commands, as processes, on a data directory."""

import json

import numpy as np

from tests.e2e.test_cli import cli
from tests.onnx_builders import linear_model


def test_import_install_score_and_clear_errors(tmp_path):
    site = str(tmp_path / "site")
    source = tmp_path / "readings.csv"
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((50, 3)).round(4)
    source.write_text("id,a,b,c,ok\n" + "".join(f"r{i},{a},{b},{c},{i % 2}\n" for i, (a, b, c) in enumerate(rows)))

    dataset = json.loads(
        cli("edge-agent", "data", "import", str(source), "--name", "readings", "--label", "ok", "--id", "id",
            "--data-dir", site, "--json").stdout
    )  # fmt: skip
    assert dataset["row_count"] == 50 and dataset["label"] == "ok"
    assert [d["name"] for d in json.loads(cli("edge-agent", "data", "list", "--data-dir", site, "--json").stdout)] == [
        "readings"
    ]
    described = cli("edge-agent", "data", "describe", "readings", "--data-dir", site).stdout
    assert "REAL" in described and "label" in described

    weights = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    model = linear_model(tmp_path / "m.onnx", weights)
    installed = json.loads(
        cli("edge-agent", "models", "install", str(model), "--name", "sum", "--version", "1", "--data-dir", site,
            "--json").stdout
    )  # fmt: skip
    assert installed["active"] and installed["inputs"][0]["shape"] == [-1, 3]
    scored = json.loads(
        cli("edge-agent", "infer", "table", "readings", "--model", "sum:1", "--output", "scores", "--data-dir", site,
            "--json").stdout
    )  # fmt: skip
    assert scored["rows"] == 50 and scored["columns"] == ["id", "scores_0", "scores_1", "label", "model_version"]

    import sqlite3

    got = sqlite3.connect(tmp_path / "site" / "catalog.db").execute("select * from scores order by id").fetchall()
    first = dict((r[0], r) for r in got)["r0"]
    np.testing.assert_allclose(first[1:3], rows[0] @ weights, rtol=1e-5)
    assert first[-1] == "sum:1"

    # Bad input: one clear line on stderr, a non-zero exit, nothing changed.
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    failed = cli("edge-agent", "data", "import", str(ragged), "--name", "ragged", "--data-dir", site, check=False)
    assert failed.returncode != 0
    assert failed.stderr.strip() == "error: ragged.csv: line 3: 1 fields, but the header names 2 columns"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    failed = cli("edge-agent", "models", "install", str(junk), "--name", "j", "--version", "1", "--data-dir", site,
                 check=False)  # fmt: skip
    assert failed.returncode != 0 and "not a valid ONNX model" in failed.stderr
    failed = cli("edge-agent", "infer", "table", "readings", "--model", "nope", "--output", "x", "--data-dir", site,
                 check=False)  # fmt: skip
    assert failed.returncode != 0 and "no model named 'nope'" in failed.stderr
    names = [d["name"] for d in json.loads(cli("edge-agent", "data", "list", "--data-dir", site, "--json").stdout)]
    assert names == ["readings", "scores"]
    cli("edge-agent", "data", "drop", "scores", "--data-dir", site)
    cli("edge-agent", "models", "remove", "sum:1", "--data-dir", site)
    assert json.loads(cli("edge-agent", "models", "list", "--data-dir", site, "--json").stdout) == []
