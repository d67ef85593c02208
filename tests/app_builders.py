"""Flower app directories written by tests, in the layout `flwr new` writes, and bundles of them.

``write_app`` writes ``pyproject.toml`` (with ``[tool.flwr.app.components]`` and
``[tool.flwr.app.config]``) and a package holding ``server_app.py`` and ``client_app.py``
from the source text given, so each test states the ServerApp it runs.
"""

from __future__ import annotations

import io
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import tomli_w

# A ServerApp in the shape of Flower's templates: FedAvg from run_config, ArrayRecord in.
FEDAVG_SERVER = """
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rounds = context.run_config["num-server-rounds"]
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=2, min_train_nodes=2,
                      min_evaluate_nodes=2)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(3)]), num_rounds=rounds,
                            train_config=ConfigRecord({"lr": context.run_config["lr"]}))
    print("final arrays", result.arrays.to_numpy_ndarrays()[0].tolist())
"""

# A ClientApp that moves the arrays towards 1 and reports loss and examples.
STEP_CLIENT = """
import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    lr = float(msg.content["config"]["lr"])
    new = [a + lr * (1.0 - a) for a in arrays]
    metrics = MetricRecord({"train_loss": float(np.abs(1.0 - new[0]).mean()), "num-examples": 10})
    return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    metrics = MetricRecord({"eval_loss": float(np.abs(1.0 - arrays[0]).mean()), "num-examples": 5})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
"""


def write_app(
    root: Path,
    name: str = "testapp",
    version: str = "1.0.0",
    server: str = FEDAVG_SERVER,
    client: str = STEP_CLIENT,
    config: dict[str, Any] | None = None,
    dependencies: tuple[str, ...] = ("numpy",),
    extra_files: dict[str, str] | None = None,
) -> Path:
    """A Flower app directory ``root/name`` with package ``<name>_pkg``; returns it."""
    package = name.replace("-", "_") + "_pkg"
    app_dir = Path(root) / name
    (app_dir / package).mkdir(parents=True, exist_ok=True)
    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": name,
            "version": version,
            "description": f"{name}, a test app",
            "license": "Apache-2.0",
            "dependencies": list(dependencies),
        },
        "tool": {
            "hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
            "flwr": {
                "app": {
                    "publisher": "silolink-tests",
                    "components": {
                        "serverapp": f"{package}.server_app:app",
                        "clientapp": f"{package}.client_app:app",
                    },
                    "config": config if config is not None else {"num-server-rounds": 2, "lr": 0.5},
                }
            },
        },
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(pyproject))
    (app_dir / package / "__init__.py").write_text('"""A test app."""\n')
    (app_dir / package / "server_app.py").write_text(textwrap.dedent(server))
    (app_dir / package / "client_app.py").write_text(textwrap.dedent(client))
    for path, text in (extra_files or {}).items():
        (app_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (app_dir / path).write_text(text)
    return app_dir


def rezip(data: bytes, change: dict[str, bytes | None] | None = None, symlink: tuple[str, str] | None = None) -> bytes:
    """A copy of the bundle ``data`` with members replaced or dropped (None), and maybe a symlink."""
    change = change or {}
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename in change:
                continue
            target.writestr(info, source.read(info))
        for name, content in change.items():
            if content is not None:
                target.writestr(name, content)
        if symlink is not None:
            link = zipfile.ZipInfo(symlink[0])
            link.external_attr = (0o120777 << 16) | 0
            target.writestr(link, symlink[1])
    return out.getvalue()
