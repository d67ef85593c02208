"""Flower apps written for tests: the standard layout (pyproject.toml with [tool.flwr.app],
a package holding the ClientApp), and bundles altered in the ways an attacker would."""

from __future__ import annotations

import hashlib
import io
import stat
import textwrap
import zipfile
from pathlib import Path

import tomli_w

from silolink.apps.fab import build_fab

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# A ClientApp that reports what it was given: run_config and node_config as a ConfigRecord,
# how many messages its Context has seen (context.state persists for the job), and a marker
# of its own code, so tests can tell versions apart. Message types select misbehaviour.
PROBE_CLIENT = """
import os
import time

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from {package} import marker

app = ClientApp()


@app.train()
def train(msg: Message, context: Context):
    seen = context.state.config_records.get("probe", ConfigRecord({{"messages": 0}}))
    seen["messages"] = int(seen["messages"]) + 1
    context.state.config_records["probe"] = seen
    action = msg.content.config_records.get("config", {{}}).get("action", "")
    if action == "raise":
        raise ValueError("patient 4711 has a secret diagnosis")
    if action == "exit":
        os._exit(3)
    if action == "hang":
        time.sleep(3600)
    if action == "dataset":
        from edge_agent.apps.data import load_arrays

        X, y = load_arrays(context)
        metrics = MetricRecord({{"rows": len(y), "features": X.shape[1]}})
        return Message(RecordDict({{"metrics": metrics}}), reply_to=msg)
    config = ConfigRecord({{
        **{{f"run.{{k}}": v for k, v in context.run_config.items()}},
        **{{f"node.{{k}}": v for k, v in context.node_config.items()}},
        "messages": seen["messages"],
        "marker": marker.VALUE,
        "pid": os.getpid(),
    }})
    return Message(RecordDict({{"probe": config}}), reply_to=msg)
"""


def write_app(
    root: Path,
    name: str = "probe-app",
    version: str = "1.0.0",
    *,
    marker: str = "one",
    config: dict | None = None,
    dependencies: list[str] | None = None,
    client: str | None = None,
    server: str | None = None,
) -> Path:
    """A Flower app directory in the standard layout; returns the directory.

    ``client`` and ``server`` are the sources of ``client_app.py`` and ``server_app.py``
    (each defining ``app``); by default the probe ClientApp and an empty ServerApp.
    """
    package = name.replace("-", "_")
    directory = root / f"{name}-{version}"
    (directory / package).mkdir(parents=True)
    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": name, "version": version, "description": "a test app", "license": "Apache-2.0",
                    "dependencies": dependencies if dependencies is not None else ["numpy>=1.26"]},
        "tool": {"flwr": {"app": {
            "publisher": "tests",
            "components": {"serverapp": f"{package}.server_app:app", "clientapp": f"{package}.client_app:app"},
            "config": config if config is not None else {"learning-rate": 0.1, "local-epochs": 2, "mode": "fast"},
        }}},
    }  # fmt: skip
    (directory / "pyproject.toml").write_text(tomli_w.dumps(pyproject))
    (directory / package / "__init__.py").write_text("")
    (directory / package / "marker.py").write_text(f"VALUE = {marker!r}\n")
    (directory / package / "client_app.py").write_text(textwrap.dedent(client or PROBE_CLIENT.format(package=package)))
    (directory / package / "server_app.py").write_text(
        textwrap.dedent(server or "from flwr.serverapp import ServerApp\n\napp = ServerApp()\n")
    )
    return directory


def fab_of(directory: Path) -> bytes:
    return build_fab(directory)


def rezip(data: bytes, change=None, add: dict[str, bytes] | None = None, entries: list | None = None) -> bytes:
    """A copy of a bundle, with ``change(name, content) -> content`` applied and members added.

    ``entries`` adds raw ``(ZipInfo, bytes)`` members (symlinks, odd names) as they are.
    """
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            if change is not None:
                content = change(info.filename, content)
            target.writestr(info.filename, content)
        for name, content in (add or {}).items():
            target.writestr(name, content)
        for info, content in entries or []:
            target.writestr(info, content)
    return out.getvalue()


def with_listed(data: bytes, name: str, content: bytes) -> bytes:
    """A bundle with a file added AND listed in .info/CONTENT (so only the name is wrong)."""
    line = f"{name},{hashlib.sha256(content).hexdigest()},{len(content) * 8}".encode()
    return rezip(data, change=lambda n, c: c + b"\n" + line if n == ".info/CONTENT" else c, add={name: content})


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()
