"""The filter language of federated queries: a small grammar, parsed, never passed on as SQL.

    expr        := conjunction ("or" conjunction)*
    conjunction := term ("and" term)*
    term        := "(" expr ")" | column op literal
    op          := = | != | < | <= | > | >=
    literal     := number | 'text' | "text"     (a quote inside is written twice)

Keywords are case-insensitive; columns are identifiers (letters, digits, ``_``). A site
parses the text itself, checks every column against its catalog and every literal against
its column's type, and compiles the tree to SQL of its own making: column names it quoted
from its own schema, literals only as bound parameters. Nothing the coordinator sends is
ever spliced into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from silolink import errors

MAX_LENGTH = 4000
MAX_TERMS = 64
MAX_DEPTH = 16
OPS = ("=", "!=", "<", "<=", ">", ">=")
T = TypeVar("T")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![A-Za-z_0-9])
      | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
      | (?P<op><=|>=|!=|<>|==|=|<|>)
      | (?P<paren>[()])
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Comparison:
    column: str
    op: str
    value: int | float | str


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple[Node, ...]


Node = Comparison | BoolOp


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            snippet = text[pos : pos + 12].strip()
            raise errors.InvalidArgument(
                f"--where: cannot read {snippet!r} at character {pos + 1}; write comparisons like "
                "age >= 50 or sex = 'F', joined by and / or"
            )
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.terms = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise errors.InvalidArgument("--where ends too early: a comparison is incomplete")
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].lower() == word:
            self.pos += 1
            return True
        return False

    def expr(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise errors.InvalidArgument(f"--where nests parentheses more than {MAX_DEPTH} deep")
        items = [self.conjunction(depth)]
        while self.keyword("or"):
            items.append(self.conjunction(depth))
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def conjunction(self, depth: int) -> Node:
        items = [self.term(depth)]
        while self.keyword("and"):
            items.append(self.term(depth))
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def term(self, depth: int) -> Node:
        kind, value = self.take()
        if kind == "paren" and value == "(":
            node = self.expr(depth + 1)
            if self.peek() != ("paren", ")"):
                raise errors.InvalidArgument("--where: a '(' is not closed")
            self.pos += 1
            return node
        if kind != "word" or value.lower() in ("and", "or", "not"):
            raise errors.InvalidArgument(f"--where: expected a column name, found {value!r}")
        column = value
        kind, op = self.take()
        if kind != "op":
            raise errors.InvalidArgument(f"--where: expected one of {' '.join(OPS)} after {column!r}, found {op!r}")
        op = {"==": "=", "<>": "!="}.get(op, op)
        kind, raw = self.take()
        literal: int | float | str
        if kind == "number":
            literal = float(raw) if any(c in raw for c in ".eE") else int(raw)
        elif kind == "string":
            literal = raw[1:-1].replace(raw[0] * 2, raw[0])
        else:
            raise errors.InvalidArgument(f"--where: {column} {op} needs a number or a quoted string, found {raw!r}")
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise errors.InvalidArgument(f"--where has more than {MAX_TERMS} comparisons")
        return Comparison(column, op, literal)


def parse(text: str) -> Node | None:
    """The tree of a filter, or None for an empty one; InvalidArgument on anything else."""
    if not text or not text.strip():
        return None
    if len(text) > MAX_LENGTH:
        raise errors.InvalidArgument(f"--where is longer than {MAX_LENGTH} characters")
    parser = _Parser(_tokens(text))
    node = parser.expr(0)
    leftover = parser.peek()
    if leftover is not None:
        raise errors.InvalidArgument(
            f"--where: unexpected {leftover[1]!r} after a complete condition; join conditions with and / or"
        )
    return node


def columns(node: Node | None) -> list[str]:
    """Every column a filter names, in order of first use."""
    if node is None:
        return []
    if isinstance(node, Comparison):
        return [node.column]
    seen: dict[str, None] = {}
    for item in node.items:
        seen.update(dict.fromkeys(columns(item)))
    return list(seen)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_comparison(n: Comparison, kind: str) -> None:
    """Raise unless the literal of ``n`` fits its column's type (INTEGER, REAL or TEXT)."""
    numeric = kind in ("INTEGER", "REAL")
    if numeric and isinstance(n.value, str):
        raise errors.InvalidArgument(f"--where: {n.column} is numeric; compare it with a number, not {n.value!r}")
    if not numeric and not isinstance(n.value, str):
        raise errors.InvalidArgument(
            f"--where: {n.column} holds text; compare it with a quoted string such as '{n.value}'"
        )
    if not numeric and n.op not in ("=", "!="):
        raise errors.InvalidArgument(f"--where: {n.column} holds text; only = and != apply to it")


def fold(
    node: Node,
    column_type: Callable[[str], str],
    leaf: Callable[[Comparison], T],
    join: Callable[[str, list[T]], T],
) -> T:
    """Build a target's filter (SQL text, a SQLAlchemy clause, a pyarrow expression) from a
    tree, checking every column and literal on the way: ``leaf`` turns one checked
    comparison into the target's form, ``join`` combines items under "and" / "or". A
    comparison never matches a row without a value, whatever the operator.
    """
    if isinstance(node, BoolOp):
        return join(node.op, [fold(i, column_type, leaf, join) for i in node.items])
    check_comparison(node, column_type(node.column))
    return leaf(node)


def compile_sql(node: Node | None, column_type: Callable[[str], str]) -> tuple[str, list[int | float | str]]:
    """SQL for a checked tree and its parameters. ``column_type(name)`` gives INTEGER, REAL or
    TEXT for a column of the dataset, or raises (naming the dataset's columns) if it has none.
    """
    params: list[int | float | str] = []
    if node is None:
        return "1", params

    def leaf(n: Comparison) -> str:
        params.append(n.value)
        # IS NOT NULL keeps "!=" from matching rows that have no value, as "=" would not either.
        column = quote_identifier(n.column)
        return f"({column} {n.op} ? AND {column} IS NOT NULL)"

    def join(op: str, items: list[str]) -> str:
        return "(" + f" {op.upper()} ".join(items) + ")"

    return fold(node, column_type, leaf, join), params


def render(node: Node | None) -> str:
    """Canonical text of a tree (for display and audit)."""
    if node is None:
        return ""
    if isinstance(node, BoolOp):
        return f" {node.op} ".join(f"({render(i)})" if isinstance(i, BoolOp) else render(i) for i in node.items)
    value = "'" + node.value.replace("'", "''") + "'" if isinstance(node.value, str) else repr(node.value)
    return f"{node.column} {node.op} {value}"


def check_names(node: Node | None, known: Sequence[str]) -> None:
    """Raise naming the first column of ``node`` that is not in ``known``."""
    for name in columns(node):
        if name not in known:
            raise errors.InvalidArgument(f"--where names a column {name!r} the dataset does not have")
