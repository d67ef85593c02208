"""The protobuf API reference: every service, method, message, field and enum under ``proto/``,
with the comments written above each (protoc keeps them in its descriptors' source info)."""

from __future__ import annotations

import importlib.resources
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

from . import REPO, md_cell

PROTO_DIR = REPO / "proto"
FDP = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in FDP.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}
# Paths into FileDescriptorProto, as descriptor.proto numbers its fields.
MESSAGE, ENUM, SERVICE = 4, 5, 6
MSG_FIELD, MSG_NESTED, MSG_ENUM, MSG_ONEOF = 2, 3, 4, 8
ENUM_VALUE, METHOD = 2, 2


def descriptor_set(proto_dir: Path = PROTO_DIR) -> descriptor_pb2.FileDescriptorSet:
    """Every .proto under ``proto_dir``, compiled by protoc with its comments kept."""
    from grpc_tools import protoc

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", "--include_source_info", f"--descriptor_set_out={out}"]
        if protoc.main([*args, *files]) != 0:
            raise RuntimeError(f"protoc could not compile {proto_dir}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@dataclass
class Element:
    """One documented element: kind, full name, comment, and for tables its rows."""

    kind: str  # service | method | message | field | enum | value
    name: str  # full name, e.g. silolink.admin.v1.AddSiteRequest.name
    comment: str
    file: str
    rows: list[list[str]] = field(default_factory=list)
    children: list[Element] = field(default_factory=list)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): " ".join(line.strip() for line in loc.leading_comments.strip().splitlines())
        for loc in file.source_code_info.location
    }


def _type_name(f: descriptor_pb2.FieldDescriptorProto, maps: dict[str, tuple[str, str]]) -> str:
    if f.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
        name = f.type_name.lstrip(".")
        if name in maps:
            key, value = maps[name]
            return f"map<{key}, {value}>"
        shown = f"[{name.rsplit('.', 1)[-1]}](#{name})" if name.startswith("silolink.") else f"`{name}`"
        return f"repeated {shown}" if f.label == FDP.LABEL_REPEATED else shown
    scalar = f"`{SCALARS[f.type]}`"
    return f"repeated {scalar}" if f.label == FDP.LABEL_REPEATED else scalar


def elements(fds: descriptor_pb2.FileDescriptorSet | None = None) -> list[Element]:
    """Services, messages and enums of every silolink proto file, in file order."""
    fds = fds or descriptor_set()
    out: list[Element] = []
    maps: dict[str, tuple[str, str]] = {}
    ours = [f for f in fds.file if f.package.startswith("silolink.")]

    def collect_maps(prefix: str, msg: descriptor_pb2.DescriptorProto) -> None:
        for nested in msg.nested_type:
            full = f"{prefix}.{msg.name}.{nested.name}"
            if nested.options.map_entry:
                k, v = nested.field
                maps[full] = (_type_name(k, {}), _type_name(v, {}))
            collect_maps(f"{prefix}.{msg.name}", nested)

    for file in ours:
        for msg in file.message_type:
            collect_maps(file.package, msg)

    for file in ours:
        reader = _FileReader(file, maps)
        for i, svc in enumerate(file.service):
            out.append(reader.service(svc, (SERVICE, i)))
        for i, msg in enumerate(file.message_type):
            out += reader.message(msg, file.package, (MESSAGE, i))
        for i, e in enumerate(file.enum_type):
            out.append(reader.enum(e, file.package, (ENUM, i)))
    return out


class _FileReader:
    """Turns one file's descriptors into Elements, with the comments at each path."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto, maps: dict[str, tuple[str, str]]) -> None:
        self.file = file
        self.maps = maps
        self.comments = _comments(file)

    def _element(self, kind: str, name: str, path: tuple[int, ...]) -> Element:
        return Element(kind, name, self.comments.get(path, ""), self.file.name)

    def service(self, svc: descriptor_pb2.ServiceDescriptorProto, path: tuple[int, ...]) -> Element:
        node = self._element("service", f"{self.file.package}.{svc.name}", path)
        for j, rpc in enumerate(svc.method):
            child = self._element("method", f"{node.name}.{rpc.name}", (*path, METHOD, j))
            node.children.append(child)
            stream_in = "stream " if rpc.client_streaming else ""
            stream_out = "stream " if rpc.server_streaming else ""
            req, resp = rpc.input_type.lstrip("."), rpc.output_type.lstrip(".")
            node.rows.append(
                [
                    f"`{rpc.name}`",
                    f"{stream_in}[{req.rsplit('.', 1)[-1]}](#{req})",
                    f"{stream_out}[{resp.rsplit('.', 1)[-1]}](#{resp})",
                    child.comment,
                ]
            )
        return node

    def enum(self, e: descriptor_pb2.EnumDescriptorProto, prefix: str, path: tuple[int, ...]) -> Element:
        node = self._element("enum", f"{prefix}.{e.name}", path)
        for i, value in enumerate(e.value):
            child = self._element("value", f"{node.name}.{value.name}", (*path, ENUM_VALUE, i))
            node.children.append(child)
            node.rows.append([f"`{value.name}`", str(value.number), child.comment])
        return node

    def message(self, m: descriptor_pb2.DescriptorProto, prefix: str, path: tuple[int, ...]) -> list[Element]:
        if m.options.map_entry:
            return []
        node = self._element("message", f"{prefix}.{m.name}", path)
        result = [node]
        for i, f in enumerate(m.field):
            child = self._element("field", f"{node.name}.{f.name}", (*path, MSG_FIELD, i))
            node.children.append(child)
            shown_type = _type_name(f, self.maps)
            if f.proto3_optional:
                shown_type = f"optional {shown_type}"
            elif f.HasField("oneof_index"):
                shown_type += f" (one of `{m.oneof_decl[f.oneof_index].name}`)"
            node.rows.append([f"`{f.name}`", str(f.number), shown_type, child.comment])
        for i, nested in enumerate(m.nested_type):
            result += self.message(nested, node.name, (*path, MSG_NESTED, i))
        for i, e in enumerate(m.enum_type):
            result.append(self.enum(e, node.name, (*path, MSG_ENUM, i)))
        return result


def undocumented(items: list[Element] | None = None) -> list[str]:
    """Every service, method, message, field, enum and enum value without a comment above it."""
    missing = []
    for node in items if items is not None else elements():
        for element in [node, *node.children]:
            if not element.comment.strip():
                missing.append(f"{element.file}: {element.kind} {element.name} has no comment")
    return missing


def packages(items: list[Element]) -> dict[str, list[Element]]:
    by_package: dict[str, list[Element]] = defaultdict(list)
    for node in items:
        by_package[package_of(node.name)].append(node)
    return dict(sorted(by_package.items()))


def package_of(name: str) -> str:
    """``silolink.admin.v1`` for ``silolink.admin.v1.Site.State`` (types are capitalised)."""
    return ".".join(p for p in name.split(".") if not p[:1].isupper())


def _cross_links(text: str, package: str) -> str:
    """Point ``(#silolink.x.v1.Name)`` links at the page of the package that defines the type."""

    def fix(m: re.Match) -> str:
        target = package_of(m.group(1))
        return m.group(0) if target == package else f"({target}.md#{m.group(1)})"

    return re.sub(r"\(#(silolink\.[\w.]+)\)", fix, text)


def page(package: str, items: list[Element]) -> str:
    """The Markdown page for one proto package."""
    files = sorted({n.file for n in items})
    lines = [
        f"# `{package}`",
        "",
        "Generated at build time from " + ", ".join(f"`proto/{f}`" for f in files) + " and the comments in it.",
    ]
    for kind, title in (("service", "Services"), ("message", "Messages"), ("enum", "Enums")):
        nodes = [n for n in items if n.kind == kind]
        if not nodes:
            continue
        lines += ["", f"## {title}"]
        for node in nodes:
            short = node.name[len(package) + 1 :]
            lines += ["", f"### {short} {{ #{node.name} }}", "", node.comment]
            if kind == "service" and node.rows:
                lines += ["", "| method | request | response | what it does |", "| --- | --- | --- | --- |"]
            elif kind == "message" and node.rows:
                lines += ["", "| field | number | type | meaning |", "| --- | --- | --- | --- |"]
            elif kind == "enum":
                lines += ["", "| value | number | meaning |", "| --- | --- | --- |"]
            lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in node.rows]
            if kind == "message" and not node.rows:
                lines += ["", "No fields."]
    return _cross_links("\n".join(lines) + "\n", package)


def index(by_package: dict[str, list[Element]]) -> str:
    lines = [
        "# Protobuf API",
        "",
        "Every service, message and field of silolink's API, generated at build time from the "
        "`.proto` files under `proto/` (the source of truth) and the comments written above each "
        "element. Packages are versioned (`silolink.<area>.v1`); a `v1` message or service only "
        "ever gains fields, never loses or retypes one.",
        "",
        "| package | services |",
        "| --- | --- |",
    ]
    for package, items in by_package.items():
        services = ", ".join(n.name.rsplit(".", 1)[-1] for n in items if n.kind == "service") or "(types only)"
        lines.append(f"| [`{package}`]({package}.md) | {services} |")
    return "\n".join(lines) + "\n"
