"""The project's .sql files: how they are read, bound and included in one another.

One convention for every file: a value the SQL needs is a DuckDB named parameter (`$window_days`,
`$cutoffs`) bound from a dict when the file runs, so no value is ever pasted into SQL text. A file
that needs another file's result reads it as a relation named after that file: `run_sql(...,
views=["candidates.sql"])` first creates the TEMP VIEW `candidates` from candidates.sql (the one
include mechanism; a temp view works on read-only connections too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import PurePath
from typing import Any

import duckdb


def read_sql(package: str, name: str) -> str:
    """The text of `<package>/sql/<name>`, e.g. read_sql("tastyrec.features", "candidates.sql")."""
    return resources.files(package).joinpath("sql", name).read_text()


def run_sql(con: duckdb.DuckDBPyConnection, package: str, name: str,
            params: Mapping[str, Any] | None = None, views: Sequence[str] = ()) -> duckdb.DuckDBPyConnection:
    """Run `<package>/sql/<name>` with its named parameters bound from `params`.

    Each file in `views` (same package) is created first as a TEMP VIEW named after the file's stem.
    Returns the connection, to fetch from (`.df()`, `.to_arrow_table()`, `.fetchall()`).
    """
    for view in views:
        body = read_sql(package, view).rstrip().rstrip(";")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {PurePath(view).stem} AS {body}")
    return con.execute(read_sql(package, name), dict(params) if params else None)


def quote_path(path: str | os.PathLike) -> str:
    """A path as a SQL string literal, for the statements that take no bound parameters (ATTACH)."""
    return "'" + str(path).replace("'", "''") + "'"
