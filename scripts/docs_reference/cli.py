"""The CLI reference: every command and option, from click's own help."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import click

from . import md_cell


def roots() -> dict[str, click.Command]:
    """The installed commands, by the name a user types."""
    from cloud_coordinator.cli import main as coordinator
    from edge_agent.cli import main as agent
    from silolink_demo.cli import main as demo

    return {"cloud-coordinator": coordinator, "edge-agent": agent, "silolink": demo}


@dataclass
class Entry:
    """One command in the tree, with the click context that names it as a user types it."""

    path: str
    command: click.Command
    ctx: click.Context


def walk(command: click.Command, name: str, parent: click.Context | None = None) -> Iterator[Entry]:
    ctx = click.Context(command, info_name=name, parent=parent)
    yield Entry(ctx.command_path, command, ctx)
    if isinstance(command, click.Group):
        for sub_name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, sub_name, ctx)


def _documented_options(entry: Entry) -> Iterator[click.Option]:
    for param in entry.command.params:
        if isinstance(param, click.Option) and not param.hidden and param.name not in ("help", "version"):
            yield param


def undocumented() -> list[str]:
    """Every command without help text and every option without help, as ``path --option``."""
    missing = []
    for root_name, root in roots().items():
        for entry in walk(root, root_name):
            if not (entry.command.help or "").strip():
                missing.append(f"{entry.path}: the command has no help text")
            for option in _documented_options(entry):
                if not (option.help or "").strip():
                    missing.append(f"{entry.path} {option.opts[0]}: the option has no help text")
    return missing


def _help_text(command: click.Command) -> str:
    """click's help as Markdown: paragraphs kept, ``\\b`` blocks as preformatted text."""
    text = click.unstyle(command.help or "").strip()
    out = []
    for para in text.split("\n\n"):
        if para.startswith("\b\n"):
            out.append("```text\n" + para[2:] + "\n```")
        else:
            out.append(" ".join(para.split()))
    return "\n\n".join(out)


def anchor(path: str) -> str:
    return path.replace(" ", "-")


def page(root_name: str) -> str:
    """The Markdown page for one CLI."""
    root = roots()[root_name]
    entries = list(walk(root, root_name))
    lines = [
        f"# `{root_name}`",
        "",
        f"Generated from the CLI's own help at build time: what you read here is what `{root_name} ... --help` prints.",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    for entry in entries[1:]:
        short = entry.command.get_short_help_str(limit=200)
        lines.append(f"| [`{entry.path}`](#{anchor(entry.path)}) | {md_cell(short)} |")
    for entry in entries:
        level = "#" * min(2 + entry.path.count(" ") - 1, 4) if entry is not entries[0] else "##"
        lines += ["", f"{level} `{entry.path}` {{ #{anchor(entry.path)} }}", ""]
        lines += [
            "```text",
            " ".join(entry.command.collect_usage_pieces(entry.ctx)).join([f"{entry.path} ", ""]),
            "```",
        ]
        lines += ["", _help_text(entry.command)]
        arguments = [p for p in entry.command.params if isinstance(p, click.Argument)]
        options = [(o, o.get_help_record(entry.ctx)) for o in _documented_options(entry)]
        if arguments:
            lines += ["", "Arguments: " + ", ".join(f"`{a.make_metavar(entry.ctx)}`" for a in arguments)]
        if options:
            lines += ["", "| option | meaning |", "| --- | --- |"]
            for option, record in options:
                if record is None:
                    continue
                opts, help_text = record
                env = f" (environment: `{option.envvar}`)" if isinstance(option.envvar, str) else ""
                lines.append(f"| `{md_cell(opts)}` | {md_cell(help_text)}{env} |")
        if isinstance(entry.command, click.Group):
            subs = [e for e in entries if e.ctx.parent is entry.ctx]
            lines += ["", "Commands: " + ", ".join(f"[`{s.ctx.info_name}`](#{anchor(s.path)})" for s in subs)]
    return "\n".join(lines) + "\n"
