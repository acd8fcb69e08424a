"""`tastyrec ingest --from-csv DIR`: new orders and new or changed loyalty customers appended to the
warehouse, from the seed's stage layout (raw_pos/order_header/*.csv[.gz], raw_pos/order_detail/...,
raw_customer/customer_loyalty/...; any subset of these three tables).

All or nothing. Every file is read to its end and parsed into temporary tables first, with the
same refusals as `setup --from-csv` (file, line, reason: load.copy_csv); then the delivery is
checked as a whole against the warehouse; only then are the rows written, in one transaction.
A refusal at any point leaves the warehouse as it was.

What a delivery may hold:
- A row whose key (order_id, order_detail_id, customer_id) is already in the warehouse with the
  same content is skipped and counted as "already there": delivering the same files twice
  changes nothing.
- An order or order line whose id is already there with other content is refused: orders are
  facts, never rewritten. A loyalty customer whose id is already there with other content is
  updated in place (an address or an e-mail changes).
- A key may appear once per delivery; a row without its key is refused.
- Every order line belongs to an order of the warehouse or of the delivery, and a new line never
  to an order already in the warehouse (that would rewrite the order); every order's
  customer (when it has one: walk-in orders have none) is a loyalty customer of either; trucks,
  locations and menu items are those of the warehouse (dimensions change only with `setup`).

The warehouse fingerprint (warehouse.fingerprint) follows the new rows, so features computed
before an ingest are refused for training and evaluation until `tastyrec features` runs again;
serving keeps the snapshot it has until then (a features run is its own folder, read whole).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb

from tastyrec.config import Progress, Workspace
from tastyrec.sqlfiles import run_sql
from tastyrec.warehouse.fingerprint import forget
from tastyrec.warehouse.load import (SQL, CsvError, WarehouseError, check_complete, connect, copy_csv, csv_rows,
                                     in_use, table_columns)

# the tables a delivery may hold, in the order they are read, checked and written; each one's key
KEYS: dict[str, str] = {
    "raw_customer.customer_loyalty": "customer_id",
    "raw_pos.order_header": "order_id",
    "raw_pos.order_detail": "order_detail_id",
}
UPDATED = {"raw_customer.customer_loyalty"}  # a row there with other content is updated, not refused
# table -> (column, the table it refers to, that table's key, whether a NULL is allowed)
REFERENCES: dict[str, list[tuple[str, str, str, bool]]] = {
    "raw_pos.order_header": [("customer_id", "raw_customer.customer_loyalty", "customer_id", True),
                             ("truck_id", "raw_pos.truck", "truck_id", True),
                             ("location_id", "raw_pos.location", "location_id", True)],
    "raw_pos.order_detail": [("order_id", "raw_pos.order_header", "order_id", False),
                             ("menu_item_id", "raw_pos.menu", "menu_item_id", True)],
}
TAG = "_file"  # the staging tables' last column: the position of the row's file in its table's files
SUFFIXES = (".csv", ".csv.gz")
log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    home: str
    warehouse: str
    source: str
    seconds: float
    # table -> {"rows": in the delivery, "added", "already_there", "changed" (loyalty customers updated)}
    tables: dict[str, dict[str, int]]
    data_end_before: str | None  # the day after the last order, before and after (features' data_span[1])
    data_end: str | None
    row_counts: dict[str, int]  # rows of the three tables after the ingest

    @property
    def changed_anything(self) -> bool:
        return any(t["added"] or t["changed"] for t in self.tables.values())


def delivery(source: Path) -> dict[str, list[Path]]:
    """table -> its files (sorted), for the tables the folder holds, in KEYS order. Refuses any
    .csv[.gz] file that is not in <schema>/<table>/ of one of those tables, naming them all, and a
    table folder without files."""
    source = Path(source)
    if not source.is_dir():
        raise CsvError(source, None, "not a folder")
    found: dict[str, list[Path]] = {}
    others: set[str] = set()
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)):
        parts = path.relative_to(source).parts
        table = ".".join(parts[:2]) if len(parts) == 3 else None
        if table in KEYS:
            found.setdefault(table, []).append(path)
        else:
            others.add(table or str(path.relative_to(source)))
    if others:
        raise CsvError(source, None, f"ingest takes new orders and loyalty customers only ({', '.join(KEYS)}); "
                                     f"this folder also holds {', '.join(sorted(others))}: the other tables change "
                                     "only with `tastyrec setup --from-csv --force`; move them out and ingest again")
    for table in KEYS:
        folder = source.joinpath(*table.split("."))
        if folder.is_dir() and table not in found:
            raise CsvError(folder, None, f"no .csv or .csv.gz files for {table}")
    if not found:
        raise CsvError(source, None, "nothing to ingest: no <schema>/<table>/*.csv[.gz] files of "
                                     f"{', '.join(KEYS)} (the layout of `tastyrec export-csv`)")
    return {table: found[table] for table in KEYS if table in found}


def ingest_csv(ws: Workspace, source: Path, progress: Progress | None = None) -> IngestResult:
    """Append the delivery in `source` to the warehouse, all or nothing (see the module's doc)."""
    started = time.perf_counter()
    if not ws.warehouse.exists():
        raise WarehouseError(f"no warehouse at {ws.warehouse}; run `tastyrec setup` first")
    plan = delivery(source)  # refuse before touching anything
    files = [p for paths in plan.values() for p in paths]
    for checked, path in enumerate(files, start=1):
        check_complete(path)
        if progress:
            progress("files checked", checked, len(files))
    try:
        con = connect(ws.warehouse)
    except duckdb.IOException as e:
        if busy := in_use(e, ws.warehouse):
            raise WarehouseError(f"{busy}: close that program and ingest again (nothing was changed)") from None
        raise
    try:
        con.execute("SET temp_directory = $path", {"path": str(ws.home / "duckdb_tmp")})
        before = _data_end(con)
        staged = {table: _stage(con, table, paths, progress) for table, paths in plan.items()}
        tables = {table: _check(con, table, plan, staged) for table in plan}
        changed = any(t["added"] or t["changed"] for t in tables.values())
        if changed:
            _write(con, plan, staged, progress)
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in KEYS}
        after = _data_end(con)
    finally:
        con.close()
    if changed:
        forget(ws)  # the raw tables changed in place: their fingerprint is computed again
    return IngestResult(home=str(ws.home), warehouse=str(ws.warehouse), source=str(source),
                        seconds=round(time.perf_counter() - started, 2), tables=tables,
                        data_end_before=before, data_end=after, row_counts=counts)


def _data_end(con: duckdb.DuckDBPyConnection) -> str | None:
    """The day after the last order (what features.windows calls the data's end), ISO."""
    last: date | None = con.execute("SELECT max(order_ts)::DATE FROM raw_pos.order_header").fetchone()[0]
    return (last + timedelta(days=1)).isoformat() if last else None


def _staging(table: str) -> str:
    return "incoming_" + table.split(".")[1]


def _stage(con: duckdb.DuckDBPyConnection, table: str, paths: list[Path],
           progress: Progress | None) -> list[str]:
    """Parse a table's files into a temporary table (its columns, then TAG); its column names."""
    columns = table_columns(con, table)
    # identifiers cannot be SQL parameters: table names are this module's constants
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_staging(table)} AS SELECT *, 0::INTEGER AS {TAG} FROM {table} LIMIT 0")
    for done, path in enumerate(paths, start=1):
        copy_csv(con, path, _staging(table), columns, tag=done - 1)
        if progress:
            progress(f"{table} read", done, len(paths))
    return [c for c, _ in columns]


def _same(columns: list[str], a: str = "t", b: str = "i") -> str:
    """SQL: the rows a and b are equal in every column (NULL equal to NULL)."""
    return " AND ".join(f'{a}."{c}" IS NOT DISTINCT FROM {b}."{c}"' for c in columns)


def _check(con: duckdb.DuckDBPyConnection, table: str, plan: dict[str, list[Path]],
           staged: dict[str, list[str]]) -> dict[str, int]:
    """Refuse what the delivery may not hold (CsvError naming file, line and id); count its rows."""
    columns, key, incoming = staged[table], KEYS[table], _staging(table)
    paths = plan[table]

    def refuse(value: Any, tag: int, reason: str, nth: int = 1) -> None:
        path, line = _locate(paths, tag, columns.index(key), value, nth)
        raise CsvError(path, line, reason)

    if (row := con.execute(f"SELECT {TAG} FROM {incoming} WHERE {key} IS NULL ORDER BY rowid LIMIT 1").fetchone()):
        refuse(None, row[0], f"no {key}: every row of {table} needs one")
    dup = con.execute(f"SELECT {key}, min({TAG}) FROM {incoming} GROUP BY {key} HAVING count(*) > 1 "
                      f"ORDER BY min(rowid) LIMIT 1").fetchone()
    if dup:
        first = _locate(paths, dup[1], columns.index(key), dup[0], 1)
        refuse(dup[0], dup[1], f"{key} {dup[0]} appears twice in this delivery (first at {first[0]}, line {first[1]})",
               nth=2)
    differs = (f"SELECT i.{key}, i.{TAG} FROM {incoming} i JOIN {table} t ON t.{key} = i.{key} "
               f"WHERE NOT ({_same(columns)})")
    if table not in UPDATED:
        if (row := con.execute(differs + " ORDER BY i.rowid LIMIT 1").fetchone()):
            refuse(row[0], row[1], f"{key} {row[0]} is already in the warehouse with other content "
                                   f"({_difference(con, table, columns, key, row[0])}); a delivery may repeat a row "
                                   "only exactly as it is there")
    for column, parent, parent_key, nullable in REFERENCES.get(table, []):
        # (NULL keys left out: `x NOT IN (..., NULL)` is never true)
        sources = [f"SELECT {parent_key} FROM {parent} WHERE {parent_key} IS NOT NULL"]
        if parent in staged:
            sources.append(f"SELECT {parent_key} FROM {_staging(parent)} WHERE {parent_key} IS NOT NULL")
        known = " UNION ALL ".join(sources)
        row = con.execute(f"SELECT {key}, {column}, {TAG} FROM {incoming} i WHERE "
                          f"{'i.' + column + ' IS NOT NULL AND ' if nullable else ''}"
                          f"(i.{column} IS NULL OR i.{column} NOT IN ({known})) ORDER BY rowid LIMIT 1").fetchone()
        if row:
            where = ("in neither the warehouse nor this delivery" if parent in KEYS
                     else "not in the warehouse (ingest takes no dimension tables: they change only with `setup`)")
            what = f"no {column}" if row[1] is None else f"{column} {_plain(row[1])} is {where} ({parent})"
            refuse(row[0], row[2], f"{what}, for {key} {row[0]}")
    if table == "raw_pos.order_detail":  # a new line on an order already there would rewrite that order
        row = con.execute(f"SELECT i.{key}, i.order_id, i.{TAG} FROM {incoming} i WHERE i.{key} NOT IN "
                          f"(SELECT {key} FROM {table}) AND i.order_id IN (SELECT order_id FROM raw_pos.order_header) "
                          "ORDER BY i.rowid LIMIT 1").fetchone()
        if row:
            refuse(row[0], row[2], f"{key} {row[0]} is a new line of order {_plain(row[1])}, which is already in the "
                                   "warehouse: orders are facts, never rewritten (deliver new orders with their lines)")
    rows, there, changed = con.execute(
        f"SELECT count(*), count(t.{key}), count(t.{key}) FILTER (WHERE NOT ({_same(columns)})) "
        f"FROM {incoming} i LEFT JOIN {table} t ON t.{key} = i.{key}").fetchone()
    return {"rows": rows, "added": rows - there, "already_there": there - changed, "changed": changed}


def _difference(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], key: str, value: Any) -> str:
    """'column c: X there, Y here' for the first column where a delivered row differs from the warehouse's."""
    names = ", ".join(f'"{c}"' for c in columns)
    there = con.execute(f"SELECT {names} FROM {table} WHERE {key} = ? LIMIT 1", [value]).fetchone()
    here = con.execute(f"SELECT {names} FROM {_staging(table)} WHERE {key} = ? LIMIT 1", [value]).fetchone()
    for column, a, b in zip(columns, there, here):
        if a != b:
            return f"column {column}: {_plain(a)} there, {_plain(b)} here"
    return "a column differs"


def _plain(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _locate(paths: list[Path], tag: int, key_index: int, value: Any, nth: int = 1) -> tuple[Path, int | None]:
    """The file and line of the nth row whose key is `value` (None: a NULL key), searching from
    the file the staging table says; (that file, None) if the text cannot be matched."""
    seen = 0
    for path, line, row in csv_rows(paths[tag:] if nth == 1 else paths):
        if len(row) > key_index and _key_of(row[key_index]) == (None if value is None else int(value)):
            seen += 1
            if seen == nth:
                return path, line
    return paths[tag], None


def _key_of(field: str) -> int | None:
    text = field.strip()
    if text in ("", "NULL", "null"):
        return None
    try:
        return int(Decimal(text))
    except (InvalidOperation, ValueError):
        return -1  # never a key looked for (keys are the ones DuckDB parsed)


def _write(con: duckdb.DuckDBPyConnection, plan: dict[str, list[Path]], staged: dict[str, list[str]],
           progress: Progress | None) -> None:
    """One transaction: changed loyalty customers updated, new rows of every table inserted in
    their files' order, the seed's ML tables recomputed (customer_features: age as of the last
    order); then a checkpoint, so the warehouse file holds it all (readers key caches on it)."""
    con.execute("BEGIN TRANSACTION")
    try:
        for done, table in enumerate(plan, start=1):
            columns, key, incoming = staged[table], KEYS[table], _staging(table)
            if table in UPDATED:
                sets = ", ".join(f'"{c}" = i."{c}"' for c in columns if c != key)
                con.execute(f"UPDATE {table} AS t SET {sets} FROM {incoming} i "
                            f"WHERE t.{key} = i.{key} AND NOT ({_same(columns)})")
            con.execute(f"INSERT INTO {table} SELECT * EXCLUDE ({TAG}) FROM {incoming} i "
                        f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{key} = i.{key}) ORDER BY i.rowid")
            if progress:
                progress("tables written", done, len(plan))
        run_sql(con, SQL, "04_ml_tables.sql")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    try:
        con.execute("CHECKPOINT")
    except duckdb.Error as e:  # committed: the rows are in the WAL, which DuckDB replays on the next open
        log.warning("the ingest is committed, but writing it into the warehouse file failed (%s): DuckDB "
                    "applies it from the write-ahead log when the warehouse is next opened", e)
