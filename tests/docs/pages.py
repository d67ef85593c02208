"""Reading the documentation's Markdown: its pages in nav order and their shell blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKER = re.compile(r"<!--\s*run(?::\s*(?P<directives>.*?))?\s*-->\s*\n```sh\n(?P<body>.*?)```", re.S)
BLOCK = re.compile(r"```(?:sh|bash|console)\n(.*?)```", re.S)


def nav_pages() -> list[Path]:
    """Every hand-written page listed in mkdocs.yml's nav, in order (generated ones skipped)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)  # noqa: S506 - our own file, safe loader

    def walk(items) -> list[str]:
        out = []
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out += walk(value) if isinstance(value, list) else [value]
        return out

    return [DOCS / p for p in walk(config["nav"]) if (DOCS / p).exists()]


def all_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


@dataclass
class RunBlock:
    """A shell block marked to run, with its directives."""

    page: Path
    line: int
    body: str
    background: bool = False
    retry: bool = False
    fails: bool = False
    until: str = ""
    at: str = ""
    setup: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    capture: dict[str, str] = field(default_factory=dict)

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def run_blocks(page: Path) -> list[RunBlock]:
    text = page.read_text()
    blocks = []
    for m in MARKER.finditer(text):
        block = RunBlock(page, text[: m.start()].count("\n") + 1, m.group("body"))
        for directive in filter(None, (d.strip() for d in (m.group("directives") or "").split(";"))):
            word, _, rest = directive.partition(" ")
            rest = rest.strip()
            if word == "background":
                block.background = True
            elif word == "retry":
                block.retry = True
            elif word == "fails":
                block.fails = True
            elif word == "until":
                block.until = rest
            elif word == "at":
                block.at = rest
            elif word == "setup":
                block.setup.append(rest)
            elif word == "stop":
                block.stop.append(rest)
            elif word == "capture":
                for pair in rest.split():
                    placeholder, _, pattern = pair.partition("=")
                    block.capture[placeholder] = pattern
            else:
                raise ValueError(f"{page}: unknown run directive {directive!r}")
        blocks.append(block)
    return blocks


def shell_lines(page: Path) -> list[str]:
    """Command lines of every shell block and inline code span of a page, continuations joined."""
    text = page.read_text().replace("\\\n", " ")
    lines = []
    for block in BLOCK.findall(text):
        lines += block.splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    return lines
