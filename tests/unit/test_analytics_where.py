"""The query language: filters parsed by a grammar, statistics and bins, without any data."""

from __future__ import annotations

import sqlite3

import pytest

from silolink import errors
from silolink.analytics import where
from silolink.analytics.query import (
    MODULUS,
    build_query,
    decode_totals,
    describe,
    from_ring,
    to_ring,
    vector_length,
)

TYPES = {"age": "INTEGER", "radius": "REAL", "sex": "TEXT"}


def column_type(name):
    if name not in TYPES:
        raise errors.InvalidArgument(f"no column {name!r}")
    return TYPES[name]


@pytest.fixture
def table():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (age INTEGER, radius REAL, sex TEXT)")
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?)",
        [(30, 10.5, "F"), (45, 12.0, "M"), (60, None, "F"), (None, 20.0, "x'y"), (75, 8.25, None)],
    )
    yield conn
    conn.close()


def matching(table, text):
    sql, params = where.compile_sql(where.parse(text), column_type)
    return sorted(r[0] for r in table.execute(f"SELECT rowid FROM t WHERE {sql}", params))


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("", [1, 2, 3, 4, 5]),
        ("age >= 45", [2, 3, 5]),
        ("age > 40 and sex = 'F'", [3]),
        ("sex = 'F' or radius < 9", [1, 3, 5]),
        ("(age < 40 or age > 70) AND radius != 10.5", [5]),
        ("sex != 'F'", [2, 4]),  # NULL is neither equal nor unequal
        ("sex = 'x''y'", [4]),
        ('sex = "x\'y"', [4]),
        ("radius <= 1.2e1", [1, 2, 5]),
        ("age == 30", [1]),
        ("age <> 30", [2, 3, 5]),
        ("radius > -1", [1, 2, 4, 5]),
    ],
)
def test_filters_select_the_rows_they_say(table, text, rows):
    assert matching(table, text) == rows


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age > 1; DROP TABLE t", "cannot read '; DROP"),
        ("age > 1 or 1=1", "expected a column name, found '1'"),
        ("age > (SELECT 1)", "needs a number or a quoted string"),
        ("sex = 'F' UNION SELECT 1", "unexpected 'UNION'"),
        ("age > 1 --", "cannot read '--"),
        ("age", "ends too early"),
        ("age between 1", "expected one of"),
        ("(age > 1", "not closed"),
        ("age > 1 and", "ends too early"),
        ("not age > 1", "expected a column name, found 'not'"),
        ("age = 'x'", "age is numeric"),
        ("sex = 3", "sex holds text"),
        ("sex < 'M'", "only = and != apply"),
        ("weight > 3", "no column 'weight'"),
        ("sex = 'unterminated", "cannot read"),
        ("(" * 20 + "age > 1" + ")" * 20, "nests parentheses"),
        (" or ".join(["age > 1"] * 65), "more than 64 comparisons"),
    ],
)
def test_anything_outside_the_grammar_is_refused_clearly(text, message):
    with pytest.raises(errors.InvalidArgument, match=message):
        where.compile_sql(where.parse(text), column_type)


def test_literals_are_parameters_and_columns_are_quoted():
    sql, params = where.compile_sql(where.parse("sex = 'a\"; DROP' and age < 3"), column_type)
    assert params == ['a"; DROP', 3]
    assert "DROP" not in sql and '"sex" = ?' in sql
    assert where.render(where.parse("a=1 and (b='x''y' or c>2.5)")) == "a = 1 and (b = 'x''y' or c > 2.5)"
    assert where.columns(where.parse("a=1 or (b=2 and a=3)")) == ["a", "b"]


def test_statistics_bins_and_bounds():
    q = build_query("patients", "histogram radius --bins 0:30:3")
    assert list(q.bin_edges) == [0, 10, 20, 30] and vector_length(q) == 5
    assert list(build_query("p", "histogram r", bins="1, 2,4").bin_edges) == [1, 2, 4]
    q = build_query("p", "MEAN radius", where="age > 3", clip="0:50")
    assert (q.column, q.bounds.min, q.bounds.max, vector_length(q)) == ("radius", 0, 50, 2)
    assert describe(q) == "mean radius where age > 3"
    for bad, message in [
        ("median radius", "use count, sum"),
        ("count radius", "count takes no column"),
        ("sum", "exactly one column"),
        ("histogram r", "needs --bins"),
        ("histogram r --bins 3,2", "strictly ascending"),
        ("histogram r --bins 0:1:5000", "at most 1000"),
        ("histogram r --bins a,b", "give ascending edges"),
    ]:
        with pytest.raises(errors.InvalidArgument, match=message):
            build_query("p", bad)
    with pytest.raises(errors.InvalidArgument, match="--clip applies only"):
        build_query("p", "count", clip="0:1")
    with pytest.raises(errors.InvalidArgument, match="LO <= HI"):
        build_query("p", "sum r", clip="5:1")
    with pytest.raises(errors.InvalidArgument, match="--bins applies only"):
        build_query("p", "count", bins="1,2")


def test_ring_encoding_round_trips_signed_totals():
    assert [from_ring(v) for v in to_ring([5, -5, -(2**62)])] == [5, -5, -(2**62)]
    q = build_query("p", "mean r")
    assert decode_totals(q, [4, (-(3 << 16)) % MODULUS]) == {"count": 4, "sum": -3.0, "mean": -0.75}
    assert decode_totals(build_query("p", "mean r"), [0, 0]) == {"count": 0, "sum": 0.0}
    h = build_query("p", "histogram r --bins 0,1,2")
    assert decode_totals(h, [1, 2, 3, 4]) == {"below": 1, "bin_counts": [2, 3], "above": 4}
