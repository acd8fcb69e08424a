"""The warehouse fingerprint: what identifies the data a feature run, a test window or a model
version came from (per raw table its rows and a content checksum, the last order, a hash)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tastyrec.config import Workspace

FINGERPRINT_CACHE = "warehouse_fingerprint.json"  # in the home: the fingerprint of the warehouse file of now


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def warehouse_fingerprint(ws: Workspace) -> dict[str, Any]:
    """{"tables": {table: {"rows", "checksum"}}, "last_order", "hash"} of the raw tables.

    The checksum is the sum of DuckDB's row hashes (order-free; 1.6 s at 20,000 customers), so it
    is cached in the home per state of the warehouse file and its WAL (`setup` replaces the file
    whole, `ingest` and a campaign's save write into it: a new mtime), and forgotten by `ingest`."""
    from tastyrec.warehouse.load import RAW_TABLES, connect

    stat = ws.warehouse.stat()
    key = {"path": str(ws.warehouse), "mtime_ns": stat.st_mtime_ns, "size": stat.st_size}
    wal = ws.warehouse.with_name(ws.warehouse.name + ".wal")
    try:  # rows committed but not yet checkpointed into the file
        wal_stat = wal.stat()
        key["wal"] = [wal_stat.st_mtime_ns, wal_stat.st_size]
    except FileNotFoundError:
        pass
    cache = ws.home / FINGERPRINT_CACHE
    try:
        cached = json.loads(cache.read_text())
        if cached["key"] == key:
            return cached["fingerprint"]
    except (OSError, ValueError, KeyError):
        pass
    con = connect(ws.warehouse, read_only=True)
    try:
        # table names are this package's constants (identifiers cannot be SQL parameters)
        tables = {t: dict(zip(("rows", "checksum"), con.execute(
            f"SELECT count(*), coalesce(sum(hash(t)), 0)::VARCHAR FROM {t} AS t").fetchone())) for t in RAW_TABLES}
        last = con.execute("SELECT max(order_ts) FROM raw_pos.order_header").fetchone()[0]
    finally:
        con.close()
    fingerprint = {"tables": tables, "last_order": last.isoformat() if last else None}
    fingerprint["hash"] = digest(fingerprint)
    try:  # a read-only home (the container mounts it so) just recomputes next time
        cache.write_text(json.dumps({"key": key, "fingerprint": fingerprint}))
    except OSError:
        pass
    return fingerprint


def forget(ws: Workspace) -> None:
    """Drop the cached fingerprint: a writer that changed raw tables in place (`ingest`) calls it,
    so the next reader computes the fingerprint of the new rows whatever the file's mtime says."""
    (ws.home / FINGERPRINT_CACHE).unlink(missing_ok=True)
