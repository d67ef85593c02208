"""MkDocs hook: writes the reference pages at build time and fails a strict build when
anything is undocumented (mkdocs.yml: ``hooks: [scripts/docs_reference/hook.py]``)."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.docs_reference import cli, proto  # noqa: E402
from scripts.docs_reference import config as settings  # noqa: E402

log = logging.getLogger("mkdocs.plugins.silolink_reference")
PROTO_INDEX = "reference/proto/index.md"


@functools.cache
def _proto_items() -> list[proto.Element]:
    return proto.elements()  # protoc once per build: on_config clears it, on_files reuses it


def on_files(files: Files, config: dict) -> Files:
    pages: dict[str, str] = {f"reference/cli/{name}.md": cli.page(name) for name in cli.roots()}
    pages["reference/config.md"] = settings.page()
    items = _proto_items()
    by_package = proto.packages(items)
    pages[PROTO_INDEX] = proto.index(by_package)
    for package, nodes in by_package.items():
        pages[f"reference/proto/{package}.md"] = proto.page(package, nodes)
    for problem in cli.undocumented() + settings.undocumented() + proto.undocumented(items):
        log.warning("undocumented: %s", problem)
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_config(config: dict) -> dict:
    """List every proto package under the Protobuf API entry of the nav (packages come and go
    with proto/, so the nav cannot name them by hand)."""
    _proto_items.cache_clear()  # a new build (mkdocs serve rebuilds in the same process)
    packages = list(proto.packages(_proto_items()))
    entries = [PROTO_INDEX] + [{package: f"reference/proto/{package}.md"} for package in packages]

    def expand(items: list) -> list:
        out = []
        for item in items:
            if isinstance(item, dict):
                (title, value), *_ = item.items()
                if value == PROTO_INDEX:
                    item = {title: entries}
                elif isinstance(value, list):
                    item = {title: expand(value)}
            out.append(item)
        return out

    config["nav"] = expand(config["nav"])
    return config
