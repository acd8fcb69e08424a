"""Saved recommendation runs ("campaigns"): rows in `ml.recommendations` plus
`<home>/stage/recommendations/<run_id>.parquet` and `.csv`, written all or nothing.

The rows are inserted in one transaction; the files are written under temporary names first and
renamed into place inside that transaction, just before it commits. Any failure rolls the
transaction back and removes the run's files, so a failed save leaves neither a half table nor a
half file. (A process killed between the renames and the commit can leave files without rows:
`list_campaigns` reads the table, so such files are never shown as a campaign.)
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tastyrec.config import Workspace
from tastyrec.recommend import Recommendations, RecommendError

COLUMNS = ("run_id", "created_at", "model_version", "filters", "customer_id", "rank", "menu_item_name",
           "score", "name")


class WarehouseBusy(RecommendError):
    """Another process has the warehouse open, so nothing can be saved until it lets go."""


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


def _frame(result: Recommendations, run_id: str, name: str, created: datetime) -> pd.DataFrame:
    rows = [(run_id, created, str(result.model["version"]), json.dumps(result.filters), c.customer_id,
             r["rank"], r["menu_item_name"], r["score"], name)
            for c in result.customers for r in c.recommendations]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def save(ws: Workspace, result: Recommendations, name: str) -> Campaign:
    """Store a result as a named campaign with a new run id; all or nothing."""
    import duckdb

    from tastyrec.warehouse.load import connect, in_use

    name = name.strip()
    if not name:
        raise RecommendError("a campaign needs a name")
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
        raise
    folder = stage_dir(ws)
    final = {ext: folder / f"{run_id}.{ext}" for ext in ("parquet", "csv")}
    tmp = {ext: path.with_name(f".{path.name}.tmp") for ext, path in final.items()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(tmp["parquet"], index=False)
        frame.to_csv(tmp["csv"], index=False)
        con.begin()
        con.register("campaign_rows", frame)
        con.execute("INSERT INTO ml.recommendations BY NAME SELECT * REPLACE (filters::JSON AS filters) "
                    "FROM campaign_rows")
        for ext in final:
            os.replace(tmp[ext], final[ext])
        con.commit()
    except BaseException:
        try:
            con.rollback()
        except Exception:  # noqa: BLE001 - no transaction open yet: nothing to roll back
            pass
        for path in [*tmp.values(), *final.values()]:
            path.unlink(missing_ok=True)
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
