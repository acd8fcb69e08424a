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
from tastyrec.recommend import Recommendations, RecommendError

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


def _frame(result: Recommendations, run_id: str, name: str, created: datetime) -> pd.DataFrame:
    rows = [(run_id, created, str(result.model["version"]), json.dumps(result.filters), c.customer_id,
             r["rank"], r["menu_item_name"], r["score"], name)
            for c in result.customers for r in c.recommendations]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def save(ws: Workspace, result: Recommendations, name: str) -> Campaign:
    """Store a result as a named campaign with a new run id; all or nothing."""
    import duckdb

    from tastyrec.warehouse.load import connect, in_use

    name = campaign_name(name)
    if not result.customers:
        raise RecommendError("nothing to save: the result has no recommendations")
    created = datetime.now().replace(microsecond=0)
    run_id = f"{created:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    frame = _frame(result, run_id, name, created)
    try:  # before any file is written
        con = connect(ws.warehouse)
    except duckdb.IOException as e:  # a writer needs the file to itself: no other process may have it open
        if busy := in_use(e, ws.warehouse):
            raise WarehouseBusy(f"nothing was saved: {busy}; close that program (a running `tastyrec app`, "
                                "a notebook, ...) and save again") from None
        if plain := ws.write_failure(e):  # a read-only home: DuckDB cannot open the file for writing
            raise NotSaved(f"{plain}; nothing was changed") from None
        raise
    folder = stage_dir(ws)
    final = {ext: folder / f"{run_id}.{ext}" for ext in ("parquet", "csv")}
    tmp = {ext: path.with_name(f".{path.name}.tmp") for ext, path in final.items()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(tmp["parquet"], index=False)
        spreadsheet_safe(frame).to_csv(tmp["csv"], index=False)
        con.begin()
        con.register("campaign_rows", frame)
        con.execute("INSERT INTO ml.recommendations BY NAME SELECT * REPLACE (filters::JSON AS filters) "
                    "FROM campaign_rows")
        for ext in final:
            os.replace(tmp[ext], final[ext])
        con.commit()
    except BaseException as e:
        try:
            con.rollback()
        except Exception:  # noqa: BLE001 - no transaction open yet: nothing to roll back
            pass
        for path in [*tmp.values(), *final.values()]:
            path.unlink(missing_ok=True)
        if plain := ws.write_failure(e):  # disk full, read-only stage folder: undone above
            raise NotSaved(f"{plain}; nothing was changed") from None
        raise
    finally:
        con.close()
    return Campaign(run_id, name, created.isoformat(), str(result.model["version"]), result.filters,
                    len(result.customers), len(frame), [str(p) for p in final.values()])


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
