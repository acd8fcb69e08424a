"""Saved recommendation runs ("campaigns"): rows in `ml.recommendations` plus
`<home>/stage/recommendations/<run_id>.parquet` and `.csv`, written all or nothing.

The rows are inserted in one transaction; the files are written under temporary names first and
renamed into place inside that transaction, just before it commits. Any failure rolls the
transaction back and removes the run's files, so a failed save leaves neither a half table nor a
half file. (A process killed between the renames and the commit can leave files without rows:
`list_campaigns` reads the table, so such files are never shown as a campaign.)

A name is checked before anything is written (`campaign_name`). The CSV is for people, who open it
in a spreadsheet: text that a spreadsheet would run as a formula is written as text
(`spreadsheet_safe`). The Parquet and the table keep the exact name.
"""

from __future__ import annotations

import json
import os
import unicodedata
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tastyrec.config import Workspace
from tastyrec.recommend import CustomerRecommendations, Recommendations, RecommendError

NAME_MAX = 100  # characters of a campaign name
# A text cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV Injection")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = ("run_id", "created_at", "model_version", "filters", "customer_id", "rank", "menu_item_name",
           "score", "name")


class WarehouseBusy(RecommendError):
    """Another process has the warehouse open, so nothing can be saved until it lets go."""


class NotSaved(RecommendError):
    """The file system refused the save (disk full, a read-only home); nothing was written."""


@dataclass
class Campaign:
    run_id: str
    name: str
    created_at: str
    model_version: str | None
    filters: dict[str, Any]
    customers: int
    rows: int
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_dir(ws: Workspace) -> Path:
    return ws.stage / "recommendations"


def campaign_name(name: str) -> str:
    """`name` without surrounding blanks; a RecommendError if it cannot name a campaign (blank,
    too long, control characters: a NUL or a line break breaks the CSV and every listing)."""
    name = name.strip()
    if not name:
        raise RecommendError("a campaign needs a name")
    if len(name) > NAME_MAX:
        raise RecommendError(f"a campaign name has at most {NAME_MAX} characters; this one has {len(name):,}")
    # Cc: C0 (NUL, tab, CR, LF, ESC), DEL and C1 (NEL); Zl, Zp: the Unicode line and paragraph separators
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in name):
        raise RecommendError("a campaign name cannot hold control characters (line breaks, tabs, NUL, ...)")
    return name


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy to write as a CSV that people open: a text cell that a spreadsheet would run as a
    formula (`=HYPERLINK(...)`) gets a leading apostrophe, so it shows as the text it is (OWASP's
    advice). Only text cells: a number (a negative score) stays a number."""
    def safe(value: Any) -> Any:
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value

    text = [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c]) or
            pd.api.types.is_string_dtype(frame[c])]
    return frame.assign(**{c: frame[c].map(safe) for c in text})


class Saving:
    """A campaign written while it is computed, all or nothing (see the module's docstring): rows
    come in chunks (`add`, e.g. as Engine.recommend's sink), go to the table inside one
    transaction and to the files as they come, and are renamed into place and committed when the
    block ends without an error and with rows; otherwise nothing is left behind."""

    def __init__(self, ws: Workspace, name: str, model_version: Any, filters: dict[str, Any]):
        self.ws, self.name = ws, campaign_name(name)
        self.created = datetime.now().replace(microsecond=0)
        self.run_id = f"{self.created:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.model_version, self.filters = str(model_version), filters
        self.customers = self.rows = 0
        self.campaign: Campaign | None = None  # set when the block ends with rows saved
        folder = stage_dir(ws)
        self.final = {ext: folder / f"{self.run_id}.{ext}" for ext in ("parquet", "csv")}
        self.tmp = {ext: path.with_name(f".{path.name}.tmp") for ext, path in self.final.items()}

    def __enter__(self) -> Saving:
        import duckdb

        from tastyrec.warehouse.load import connect, in_use

        try:  # before any file is written
            self.con = connect(self.ws.warehouse)
        except duckdb.IOException as e:  # a writer needs the file to itself: no other process may have it open
            if busy := in_use(e, self.ws.warehouse):
                raise WarehouseBusy(f"nothing was saved: {busy}; close that program (a running `tastyrec app`, "
                                    "a notebook, ...) and save again") from None
            if plain := self.ws.write_failure(e):  # a read-only home: DuckDB cannot open the file for writing
                raise NotSaved(f"{plain}; nothing was changed") from None
            raise
        self.parquet, self.undone = None, False
        try:
            self.con.begin()
        except BaseException as e:
            self._undo(e)
        return self

    def add(self, customers: list[CustomerRecommendations]) -> None:
        """Save these customers' recommendations (one row per customer and rank)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [(self.run_id, self.created, self.model_version, json.dumps(self.filters), c.customer_id,
                 r["rank"], r["menu_item_name"], r["score"], self.name)
                for c in customers for r in c.recommendations]
        if not rows:
            return
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.parquet is None:  # the folder only once there is something to write
                stage_dir(self.ws).mkdir(parents=True, exist_ok=True)
                self.parquet = pq.ParquetWriter(self.tmp["parquet"], table.schema)
            self.parquet.write_table(table)
            spreadsheet_safe(frame).to_csv(self.tmp["csv"], index=False, mode="a", header=not self.rows)
            self.con.register("campaign_rows", frame)
            self.con.execute("INSERT INTO ml.recommendations BY NAME SELECT * REPLACE (filters::JSON AS filters) "
                             "FROM campaign_rows")
            self.con.unregister("campaign_rows")
        except BaseException as e:
            self._undo(e)
        self.customers += len(customers)
        self.rows += len(frame)

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            self._undo(error)  # raises it again (as NotSaved where the file system refused a write)
        if not self.rows:  # nothing to save: no table rows, no files
            self._undo(None)
            return
        try:
            self.parquet.close()
            for ext in self.final:
                os.replace(self.tmp[ext], self.final[ext])
            self.con.commit()
        except BaseException as e:
            self._undo(e)
        self.con.close()
        self.campaign = Campaign(self.run_id, self.name, self.created.isoformat(), self.model_version, self.filters,
                                 self.customers, self.rows, [str(p) for p in self.final.values()])

    def _undo(self, error: BaseException | None) -> None:
        """Roll the transaction back and remove the files (once), then raise `error` again: as
        NotSaved, in plain words, where the file system refused a write."""
        if not self.undone:
            self.undone = True
            try:
                self.con.rollback()
            except Exception:  # noqa: BLE001 - no transaction open yet: nothing to roll back
                pass
            if self.parquet is not None:
                try:
                    self.parquet.close()
                except Exception:  # noqa: BLE001 - the file is removed below anyway
                    pass
            self.con.close()
            for path in [*self.tmp.values(), *self.final.values()]:
                path.unlink(missing_ok=True)
        if error is None:
            return
        if plain := self.ws.write_failure(error):  # disk full, read-only stage folder: undone above
            raise NotSaved(f"{plain}; nothing was changed") from None
        raise error


def save(ws: Workspace, result: Recommendations, name: str) -> Campaign:
    """Store a result as a named campaign with a new run id; all or nothing."""
    name = campaign_name(name)
    if not result.customers:
        raise RecommendError("nothing to save: the result has no recommendations")
    with Saving(ws, name, result.model["version"], result.filters) as saving:
        saving.add(result.customers)
    return saving.campaign


def list_campaigns(ws: Workspace) -> list[Campaign]:
    """Every saved campaign, newest first."""
    from tastyrec.warehouse.load import connect

    if not ws.warehouse.exists():
        return []
    con = connect(ws.warehouse, read_only=True)
    try:
        rows = con.execute(
            "SELECT run_id, any_value(name), min(created_at), any_value(model_version), any_value(filters)::VARCHAR, "
            "count(DISTINCT customer_id), count(*) FROM ml.recommendations GROUP BY run_id "
            "ORDER BY min(created_at) DESC, run_id DESC").fetchall()
    finally:
        con.close()
    folder = stage_dir(ws)
    return [Campaign(run_id, name or "", created.isoformat(), version, json.loads(filters) if filters else {},
                     customers, n, [str(p) for p in (folder / f"{run_id}.parquet", folder / f"{run_id}.csv")
                                    if p.exists()])
            for run_id, name, created, version, filters, customers, n in rows]


def load_campaign(ws: Workspace, run_id: str) -> pd.DataFrame:
    """The rows of one saved campaign, by customer and rank."""
    from tastyrec.warehouse.load import connect

    con = connect(ws.warehouse, read_only=True)
    try:
        frame = con.execute("SELECT * FROM ml.recommendations WHERE run_id = ? ORDER BY customer_id, rank",
                            [run_id]).df()
    finally:
        con.close()
    if frame.empty:
        raise RecommendError(f"no saved campaign with run id {run_id!r}")
    return frame
