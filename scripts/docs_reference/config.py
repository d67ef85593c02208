"""The configuration reference: every setting of ``coordinator.toml`` and ``agent.toml``, from
the frozen dataclasses in ``silolink/config.py``: its TOML table and key, type, default, the
environment variable that overrides it, and the comment written directly above the field."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import tomli_w

from . import md_cell

FILES = {
    # file name: (config class name in silolink.config, environment prefix, who reads it)
    "coordinator.toml": ("CoordinatorConfig", "SILOLINK_COORDINATOR", "cloud-coordinator serve"),
    "agent.toml": ("AgentConfig", "SILOLINK_AGENT", "edge-agent run"),
}


def _config_module():
    import silolink.config

    return silolink.config


@dataclass
class Setting:
    """One key of one config file."""

    file: str
    table: str  # "" for top-level keys, else "inference", "exchange", ...
    key: str
    type: str
    default: str
    env: str
    comment: str
    allowed: str  # the declared range or choices, empty if none is declared


def _field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the ``#`` comment lines directly above that field."""
    module = _config_module()
    source = inspect.getsource(module)
    lines = source.splitlines()
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                comment: list[str] = []
                i = stmt.lineno - 2
                while i >= 0 and lines[i].strip().startswith("#"):
                    comment.insert(0, lines[i].strip().lstrip("#").strip())
                    i -= 1
                found[(node.name, stmt.target.id)] = " ".join(comment)
    return found


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return f"list of {_type_name(item)}"
    if origin is not None and type(None) in typing.get_args(hint):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return f"{_type_name(inner[0])} (optional)"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _allowed(f: dataclasses.Field) -> str:
    """What a field may hold, as ``silolink.settings.setting(...)`` declares it (its own words,
    the same the error for a bad value gives), or "" if it declares nothing."""
    allowed = (f.metadata or {}).get("allowed")
    if allowed is None:
        return ""
    text = allowed.describe()
    return text[len("use ") :] if text.startswith("use ") else text


def settings() -> Iterator[Setting]:
    module = _config_module()
    comments = _field_comments()

    def walk(cls: type, file: str, table: str, env_prefix: str) -> Iterator[Setting]:
        hints = typing.get_type_hints(cls)
        instance = cls()
        nested = []
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            env = f"{env_prefix}_{f.name}".upper()
            if dataclasses.is_dataclass(hint):
                nested.append((hint, f.name, env + "_"))
                continue
            yield Setting(
                file=file,
                table=table,
                key=f.name,
                type=_type_name(hint),
                default=_toml_value(getattr(instance, f.name)),
                env=env,
                comment=comments.get((cls.__name__, f.name), ""),
                allowed=_allowed(f),
            )
        for hint, name, env in nested:
            yield from walk(hint, file, f"{table}.{name}" if table else name, env)

    for file, (class_name, prefix, _) in FILES.items():
        yield from walk(getattr(module, class_name), file, "", prefix)


def undocumented() -> list[str]:
    """Every setting without a comment directly above its field in silolink/config.py."""
    return [
        f"{s.file} {'[' + s.table + '] ' if s.table else ''}{s.key}: no comment above the field in silolink/config.py"
        for s in settings()
        if not s.comment
    ]


def _table_docs() -> dict[str, str]:
    """``file:table`` -> the first paragraph of the docstring of the dataclass that holds it."""
    module = _config_module()
    docs: dict[str, str] = {}

    def walk(cls: type, file: str, table: str) -> None:
        docs[f"{file}:{table}"] = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], file, f"{table}.{f.name}" if table else f.name)

    for file, (class_name, _, _) in FILES.items():
        walk(getattr(module, class_name), file, "")
    return docs


def page() -> str:
    """The Markdown page for both config files."""
    all_settings = list(settings())
    table_docs = _table_docs()
    show_allowed = any(s.allowed for s in all_settings)
    lines = [
        "# Configuration",
        "",
        "Each daemon reads one TOML file in its data directory, written with every setting and its "
        "default by `cloud-coordinator init` and `edge-agent enroll`. Any setting can be overridden "
        "from the environment by the variable in its row (a nested table's variables join with a "
        "double underscore; lists are comma-separated). A bad value stops the daemon at start-up "
        "with an error naming the file, the key and the value.",
        "",
        "Generated at build time from the config classes in `silolink/config.py`.",
    ]
    for file, (_, prefix, reader) in FILES.items():
        lines += ["", f"## `{file}`", "", f"Read by `{reader}`. Environment prefix: `{prefix}_`."]
        tables = dict.fromkeys(s.table for s in all_settings if s.file == file)
        for table in tables:
            heading = f"### `[{table}]`" if table else "### Top-level keys"
            anchor = f"{file.split('.')[0]}-{table or 'top'}".replace(".", "-")
            lines += ["", f"{heading} {{ #{anchor} }}", "", table_docs.get(f"{file}:{table}", "")]
            columns = ["key", "type", "default"] + (["allowed"] if show_allowed else []) + ["meaning", "environment"]
            lines += ["", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
            for s in all_settings:
                if s.file != file or s.table != table:
                    continue
                cells = [f"`{s.key}`", s.type, f"`{md_cell(s.default)}`"]
                cells += [md_cell(s.allowed) or "any"] if show_allowed else []
                cells += [md_cell(s.comment), f"`{s.env}`"]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
