"""Build the warehouse: DDL, the synthetic data set or the seed's CSV stage layout, views.

A warehouse is always built into a new file next to the old one and swapped in at the end
(os.replace), so a failure at any point leaves the existing warehouse exactly as it was.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb

from tastyrec.config import DATA_END, WINDOW_DAYS, Progress, Workspace, duckdb_memory
from tastyrec.sqlfiles import quote_path, run_sql
from tastyrec.warehouse.synthetic import generate

# schema.table, in load order
RAW_TABLES: tuple[str, ...] = (
    "raw_pos.country", "raw_pos.franchise", "raw_pos.location", "raw_pos.menu", "raw_pos.truck",
    "raw_customer.customer_loyalty", "raw_pos.order_header", "raw_pos.order_detail",
)
# primary keys of the dimension tables (the seed declares none; these are what the data implies)
DIMENSION_KEYS: dict[str, str] = {
    "raw_pos.country": "city_id", "raw_pos.franchise": "franchise_id", "raw_pos.location": "location_id",
    "raw_pos.menu": "menu_item_id", "raw_pos.truck": "truck_id", "raw_customer.customer_loyalty": "customer_id",
}
# NULL when unquoted only (allow_quoted_nulls = false): see setup_from_csv and export_csv
NULL_STRINGS = ["NULL", "null", ""]
CHUNK = 1 << 20  # bytes read at a time when a file is checked to its end (memory stays bounded)
LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*) \(PID (\d+)\)")  # DuckDB's lock error
SQL = "tastyrec.warehouse"  # the package of the DDL and view files (sql/*.sql)
# A saved campaign's side tables (tastyrec.campaigns creates them on first use; a warehouse of an
# older version lacks them, or has ml.campaigns without the columns after description): its
# description, the features' serving day its lists were computed for (data_end) and the share kept
# as control with the seed that drew them; the reason of each recommended item; each customer's group
CAMPAIGN_TABLES = {
    "campaigns": "CREATE TABLE IF NOT EXISTS ml.campaigns (run_id VARCHAR PRIMARY KEY, description VARCHAR, "
                 "data_end DATE, holdout DOUBLE, holdout_seed BIGINT)",
    "campaign_groups": "CREATE TABLE IF NOT EXISTS ml.campaign_groups (run_id VARCHAR NOT NULL, "
                       "customer_id BIGINT NOT NULL, control BOOLEAN NOT NULL, PRIMARY KEY (run_id, customer_id))",
    "recommendation_reasons": "CREATE TABLE IF NOT EXISTS ml.recommendation_reasons (run_id VARCHAR NOT NULL, "
                              "customer_id BIGINT NOT NULL, rank INTEGER NOT NULL, reason VARCHAR, "
                              "PRIMARY KEY (run_id, customer_id, rank))",
}



class WarehouseError(Exception):
    """A warehouse could not be built; the existing one (if any) is unchanged."""


def in_use(error: duckdb.Error, path: Path) -> str | None:
    """'<path> is in use by another process (PID n, program)' if `error` is DuckDB's lock conflict."""
    found = LOCK_HOLDER.search(str(error))
    if not found:
        return None
    return f"{path} is in use by another process (PID {found[2]}, {found[1]})"


class CsvError(WarehouseError):
    """A CSV file was refused as a whole."""

    def __init__(self, path: Path, line: int | None, reason: str):
        self.path, self.line, self.reason = path, line, reason
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass
class SetupResult:
    home: str
    warehouse: str
    source: str
    seconds: float
    row_counts: dict[str, int]


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with this project's resource settings."""
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET memory_limit = $limit", {"limit": duckdb_memory()})
    con.execute("SET preserve_insertion_order = true")
    con.execute("SET enable_progress_bar = false")  # progress is shown by the callers' Rich bars
    return con


@contextmanager
def _building(ws: Workspace, force: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a fresh warehouse file that replaces the current one only on success."""
    final = ws.warehouse
    if final.exists() and not force:
        raise WarehouseError(f"a warehouse already exists at {final}; pass --force to rebuild it "
                             "(saved recommendations are carried over)")
    ws.ensure()
    tmp = final.with_name(final.name + ".building")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = connect(tmp)
    try:
        for name in ("01_schemas.sql", "02_raw_tables.sql"):
            run_sql(con, SQL, name)
        yield con
        run_sql(con, SQL, "03_views.sql")
        run_sql(con, SQL, "04_ml_tables.sql")
        if final.exists():  # keep saved campaigns across a rebuild
            # Read-write, to CHECKPOINT it: that folds its WAL (rows a save may have left there) into
            # the file and deletes the WAL, which DuckDB would otherwise replay onto the new file
            # swapped in under the same name. Crash-safe: the old file is complete at every moment
            # (DuckDB's own checkpoint), and by the swap no WAL is left to pair with the wrong file;
            # deleting the WAL at the swap instead loses its rows, or replays them onto the new
            # file, if the process dies between the delete and the rename.
            try:
                con.execute(f"ATTACH {quote_path(final)} AS previous")  # ATTACH binds no parameters
            except duckdb.IOException as e:
                if busy := in_use(e, final):
                    raise WarehouseError(f"{busy}: close that program and run setup again "
                                         "(nothing was changed)") from None
                raise
            con.execute("CHECKPOINT previous")
            has = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'previous' "
                                             "AND schema_name = 'ml'").fetchall()}
            for table in ("recommendations", *CAMPAIGN_TABLES):  # the campaigns, their descriptions, reasons
                if table in has:
                    con.execute(CAMPAIGN_TABLES.get(table, "SELECT 1"))
                    # by name: a warehouse of an older version may lack a newer column (it stays NULL)
                    con.execute(f"INSERT INTO ml.{table} BY NAME SELECT * FROM previous.ml.{table}")
            con.execute("DETACH previous")
        else:
            # the WAL of a deleted warehouse would be replayed onto the new file
            final.with_name(final.name + ".wal").unlink(missing_ok=True)
        con.execute("CHECKPOINT")
        con.close()
        os.replace(tmp, final)
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
        raise


def row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows in every base table of the warehouse, by schema.table."""
    tables = con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables() "
                         "WHERE database_name = current_database() ORDER BY 1").fetchall()
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for (t,) in tables}


def _finish(ws: Workspace, source: str, started: float) -> SetupResult:
    con = connect(ws.warehouse, read_only=True)
    try:
        counts = row_counts(con)
    finally:
        con.close()
    return SetupResult(home=str(ws.home), warehouse=str(ws.warehouse), source=source,
                       seconds=round(time.perf_counter() - started, 2), row_counts=counts)


def setup_synthetic(ws: Workspace, customers: int = 20_000, seed: int = 42, force: bool = False,
                    progress: Progress | None = None) -> SetupResult:
    """Generate the synthetic Tasty Bytes data set into a new warehouse."""
    if customers < 1:
        raise WarehouseError("--customers must be at least 1")
    started = time.perf_counter()
    with _building(ws, force) as con:
        run_sql(con, SQL, "05_synth.sql")
        dims, chunks = generate(customers, seed)
        for table, frame in dims.tables.items():
            con.execute(f"INSERT INTO {table} SELECT * FROM frame")
        done = 0
        for frames in chunks:
            for table, frame in frames.items():
                con.execute(f"INSERT INTO {table} SELECT * FROM frame")
            done += frames["raw_customer.customer_loyalty"].num_rows
            if progress:
                progress("customers", done, customers)
        window_start = DATA_END - timedelta(days=WINDOW_DAYS - 1)
        con.executemany("INSERT INTO synth.info VALUES (?, ?)", [
            ["seed", str(seed)], ["customers", str(customers)],
            ["window_start", window_start.isoformat()], ["window_end", DATA_END.isoformat()]])
    return _finish(ws, f"synthetic(customers={customers}, seed={seed})", started)


def _stage_files(root: Path, table: str) -> list[Path]:
    folder = root.joinpath(*table.split("."))
    if not folder.is_dir():
        raise CsvError(folder, None, f"missing table folder for {table}")
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise CsvError(folder, None, f"no .csv or .csv.gz files for {table}")
    return files


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.name.endswith(".gz") else open(path, newline="")


def _check_header(path: Path, expected: list[str]) -> None:
    try:
        with _open_text(path) as f:
            header = next(csv.reader(f), None)
    except (OSError, EOFError, UnicodeDecodeError) as e:  # gzip.BadGzipFile is an OSError
        raise CsvError(path, None, f"cannot be read as {'gzip ' if path.name.endswith('.gz') else ''}"
                                   f"CSV text: {e}") from None
    if header is None:
        raise CsvError(path, 1, "empty file: a header row is required")
    problem = _header_problem(header, expected)
    if problem:
        raise CsvError(path, 1, problem)


def check_complete(path: Path) -> None:
    """Refuse a file that cannot be read to its end: a truncated or corrupt gzip stream, or a last
    line without its line break (a copy cut off mid-row). DuckDB's reader loads the readable part
    of such a file without a word, so every file is read through here first, in chunks, counting
    lines to name the one where it breaks."""
    gz = path.name.endswith(".gz")
    lines, last = 0, b""
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            while chunk := f.read1(CHUNK):  # read1: what was read before an error is counted too
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile (bad header, CRC) is an OSError
        raise CsvError(path, lines + 1 if last else None,
                       f"cannot be read as {'gzip ' if gz else ''}CSV text to its end: {e}") from None
    if last and last != b"\n":
        raise CsvError(path, lines + 1, "the last line is cut off: the file does not end with a line break")


def _header_problem(header: list[str], expected: list[str]) -> str | None:
    """What is wrong with a header row, naming the first column that differs; None if nothing.

    Names compare case-insensitively and without surrounding blanks (Snowflake writes unquoted
    column names in upper case).
    """
    found = [h.strip().lower() for h in header]
    for position, (got, want) in enumerate(zip(found, expected), start=1):
        if got != want:
            return f"column {position} is {header[position - 1]!r}, expected {want!r}"
    count = f"the header has {len(found)} columns, expected {len(expected)}"
    if len(found) < len(expected):
        return f"{count}: column {len(found) + 1} {expected[len(found)]!r} is missing"
    if len(found) > len(expected):
        return f"{count}: column {len(expected) + 1} {header[len(expected)]!r} is not a column of the table"
    return None


def csv_rows(files: list[Path]) -> Iterator[tuple[Path, int, list[str]]]:
    """Every data row of these files, with its file and line number (the header is line 1).
    Used to name the line of a refusal found in SQL, where lines are no longer known."""
    for path in files:
        with _open_text(path) as f:
            reader = csv.reader(f)
            next(reader, None)
            for row in reader:
                yield path, reader.line_num, row


def _duplicate_line(files: list[Path], key_index: int) -> tuple[Path, int, str] | None:
    """The first row whose key was already seen in an earlier row (dimension tables are small)."""
    seen: set[str] = set()
    for path, line, row in csv_rows(files):
        key = row[key_index]
        if key in seen:
            return path, line, key
        seen.add(key)
    return None


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a table's columns, in order."""
    return con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
                       "AND schema_name || '.' || table_name = ? ORDER BY column_index", [table]).fetchall()


def copy_csv(con: duckdb.DuckDBPyConnection, path: Path, into: str, columns: list[tuple[str, str]],
             tag: int | None = None) -> None:
    """Append one stage file to table `into`, read as the columns of its raw table: its header
    checked, every field parsed as its column's type, the first line DuckDB rejects refused
    (CsvError: file, line, reason). `tag`: a last column of `into` given this value in every row
    (ingest numbers the files of a delivery so). Fields are read as export_csv writes them: an
    unquoted NULL, null or empty field is NULL, a quoted one is the string itself."""
    _check_header(path, [c for c, _ in columns])
    # JSON is read as text and cast on insert; every other column is parsed as its type
    spec = {c: ("VARCHAR" if t == "JSON" else t) for c, t in columns}
    con.execute("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
    con.execute(
        f"INSERT INTO {into} SELECT *{', $tag' if tag is not None else ''} FROM read_csv($path, header = true, "
        "columns = $spec, auto_detect = false, nullstr = $nulls, allow_quoted_nulls = false, quote = '\"', "
        "escape = '\"', store_rejects = true)",
        {"path": str(path), "spec": spec, "nulls": NULL_STRINGS} | ({"tag": tag} if tag is not None else {}))
    bad = con.execute("SELECT line, column_name, error_type, error_message FROM reject_errors "
                      "ORDER BY line LIMIT 1").fetchone()
    con.execute("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
    if bad:
        line, column, kind, message = bad
        raise CsvError(path, int(line), f"{kind} in column {column}: {message}"
                       if kind == "CAST" else f"{kind}: {message}")


def setup_from_csv(ws: Workspace, source: Path, force: bool = False,
                   progress: Progress | None = None) -> SetupResult:
    """Load the seed's stage layout (raw_pos/<table>/*.csv[.gz], raw_customer/...) into a new warehouse.

    Fields are read as export_csv writes them: an unquoted NULL, null or empty field is NULL, a
    quoted one is the string itself ("NULL", "null", "").
    """
    started = time.perf_counter()
    source = Path(source)
    if not source.is_dir():
        raise CsvError(source, None, "not a folder")
    plan = {table: _stage_files(source, table) for table in RAW_TABLES}  # refuse before touching anything
    total = sum(len(files) for files in plan.values())
    for checked, path in enumerate((p for files in plan.values() for p in files), start=1):
        check_complete(path)
        if progress:
            progress("files checked", checked, total)
    with _building(ws, force) as con:
        done = 0
        for table, files in plan.items():
            columns = table_columns(con, table)
            for path in files:
                copy_csv(con, path, table, columns)
                done += 1
                if progress:
                    progress("files", done, total)
            key = DIMENSION_KEYS.get(table)
            if key:
                dup = con.execute(f"SELECT {key} FROM {table} GROUP BY {key} HAVING count(*) > 1 LIMIT 1").fetchone()
                if dup:
                    found = _duplicate_line(files, [c for c, _ in columns].index(key))
                    path, line, value = found if found else (files[0], None, str(dup[0]))
                    raise CsvError(path, line, f"duplicate primary key {key} = {value} in {table}")
    return _finish(ws, f"csv({source})", started)


def write_csv(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    """One table as gzip CSV with a header row, as setup_from_csv reads it back exactly: every
    non-null text value quoted, a NULL an unquoted empty field (`simulate` writes its files so too)."""
    text = [f'"{c}"' for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND "
        "schema_name || '.' || table_name = ? AND data_type IN ('VARCHAR', 'JSON') ORDER BY column_index",
        [table]).fetchall()]
    quote = f", FORCE_QUOTE ({', '.join(text)})" if text else ""
    con.execute(f"COPY (SELECT * FROM {table}) TO $path (FORMAT csv, HEADER true, COMPRESSION gzip{quote})",
                {"path": str(path)})


def export_csv(ws: Workspace, target: Path, progress: Progress | None = None) -> dict[str, str]:
    """Write every raw table in the seed's stage layout (gzip CSV with a header row).

    Every non-null text value is quoted and a NULL is an unquoted empty field, so setup_from_csv
    reads back exactly what was written: a first name "NULL" or "" stays a string.
    """
    if not ws.warehouse.exists():
        raise WarehouseError(f"no warehouse at {ws.warehouse}; run `tastyrec setup` first")
    target = Path(target)
    written = {}
    con = connect(ws.warehouse, read_only=True)
    try:
        for done, table in enumerate(RAW_TABLES, start=1):
            folder = target.joinpath(*table.split("."))
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{table.split('.')[1]}.csv.gz"
            write_csv(con, table, path)
            written[table] = str(path)
            if progress:
                progress("tables", done, len(RAW_TABLES))
    finally:
        con.close()
    return written
