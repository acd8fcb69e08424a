"""Saved recommendation runs ("campaigns") and the mailing file a campaign is sent from.

A campaign is its rows in `ml.recommendations` (one per customer and rank: the campaign's record)
plus two stage files, `<home>/stage/recommendations/<slug>-<run_id>.parquet` and `.csv`, in the
mailing format (`mailing`): one row per customer with the contact fields a mailing tool needs,
then each recommended item with its brand, price, chance and reason, and what the campaign can
expect from the customer. The slug is the campaign's name made safe for a file name
(`mailing_file_name`); files saved by older versions are named `<run_id>.*` and are still found.

Saving is all or nothing. The rows (and the items' reasons, in `ml.recommendation_reasons`) are
inserted in one transaction as they come; when the block ends, the mailing files are written from
those rows under temporary names and renamed into place inside that transaction, just before it
commits. Any failure rolls the transaction back and removes the run's files, so a failed save
leaves neither a half table nor a half file. (A process killed between the renames and the commit
can leave files without rows: `list_campaigns` reads the table, so such files are never shown as a
campaign.) Renaming and deleting a campaign move its files inside the transaction that changes its
rows in the same way, and move them back when anything fails (`rename_campaign`,
`delete_campaign`). A description lives in `ml.campaigns` (`describe_campaign`).

A control group: a save keeps a share of the campaign's customers (`holdout`, default HOLDOUT) as
control, drawn at random (`draw_control`: exactly round(share × n) of them, rounded half up, a
uniform draw without replacement from the customers sorted by id, so the draw depends on the set of
customers and the seed only, not on the order they were scored in). Their lists are computed and
stored like the others (`ml.recommendations`), their group is in `ml.campaign_groups`, and the
mailing files leave them out: they are who the campaign's effect is measured against
(`tastyrec.campaign_report`). `ml.campaigns` records the share, the seed (given, else derived from
the run id: `holdout_seed`) and the day the campaign starts (`data_end`: the day after the last
order, of the features the lists were computed from or of the warehouse where it has newer ones),
from which the report counts the orders that followed.

The side tables (`ml.campaigns`, `ml.recommendation_reasons`) are created by the first write that
needs them, so warehouses of older versions keep working; readers take them as empty until then.

A name is checked before anything is written (`campaign_name`). A CSV is for people, who open it
in a spreadsheet: text that a spreadsheet would run as a formula is written as text
(`spreadsheet_safe`). The Parquet files and the tables keep the exact values.

Personal fields (first name, e-mail, language) are read here only, for the mailing files and the
downloads; they are never logged, and the engine and the service never see them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tastyrec.config import Workspace
from tastyrec.recommend import CustomerRecommendations, Recommendations, RecommendError
from tastyrec.warehouse.load import CAMPAIGN_TABLES

log = logging.getLogger(__name__)

NAME_MAX = 100  # characters of a campaign name
DESCRIPTION_MAX = 2000  # characters of a campaign's description
SLUG_MAX = 60  # characters of a name's slug in a file name
FORMATS = ("parquet", "csv")  # the stage files, in this order in Campaign.files
MAILING_CHUNK = 20_000  # customers per chunk when a mailing file is written from the table
# A text cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV Injection")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = ("run_id", "created_at", "model_version", "filters", "customer_id", "rank", "menu_item_name",
           "score", "name")
# The mailing file: who (read from raw_customer.customer_loyalty), then item 1..k, then the expectations
CONTACT_COLUMNS = ("first_name", "e_mail", "preferred_language", "city", "country")
# suffix of an item's column -> the field of a recommendation entry it holds
ITEM_COLUMNS = {"": "menu_item_name", "_brand": "truck_brand_name", "_price_usd": "sale_price_usd",
                "_chance": "score", "_reason": "reason"}
EXPECTATION_COLUMNS = ("chance_of_any", "expected_revenue_usd")
HOLDOUT = 0.1  # the share of a new campaign's customers kept as control (not sent): 10%
SEED_MAX = 2**63 - 1  # a seed is stored as a BIGINT

# The side tables, created by the first write that needs them (CREATE ... IF NOT EXISTS); a
# rebuilt warehouse (`setup --force`) carries them over with the campaigns
CAMPAIGNS_DDL, REASONS_DDL = CAMPAIGN_TABLES["campaigns"], CAMPAIGN_TABLES["recommendation_reasons"]
GROUPS_DDL = CAMPAIGN_TABLES["campaign_groups"]
SIDE_TABLES = ("campaigns", "recommendation_reasons", "campaign_groups")
# ml.campaigns' columns after description: an older warehouse's table lacks them (added by a writer;
# a reader takes them as NULL)
CAMPAIGN_COLUMNS = {"data_end": "DATE", "holdout": "DOUBLE", "holdout_seed": "BIGINT"}

CONTACTS_SQL = ("SELECT DISTINCT ON (customer_id) customer_id, first_name, e_mail, preferred_language, city, country "
                "FROM raw_customer.customer_loyalty WHERE customer_id IN (SELECT unnest($ids::BIGINT[])) "
                "ORDER BY customer_id")
# A campaign's rows with what the warehouse knows of each item (brand, category, price: the menu of
# now) and customer (city, country); $lo / $hi bound the customer ids (NULL: no bound). {reason} is
# one of the two constants below: the reasons table may not exist yet.
ITEMS_SQL = """
SELECT r.run_id, r.created_at, r.model_version, r.filters, r.customer_id, r.rank, r.menu_item_name,
       m.truck_brand_name, m.item_category, m.sale_price_usd, r.score, {reason} AS reason, c.city, c.country, r.name,
       {control} AS control
FROM ml.recommendations r
LEFT JOIN (SELECT menu_item_name, any_value(truck_brand_name) AS truck_brand_name,
                  any_value(item_category) AS item_category, any_value(sale_price_usd)::DOUBLE AS sale_price_usd
           FROM raw_pos.menu GROUP BY menu_item_name) m USING (menu_item_name)
LEFT JOIN (SELECT DISTINCT ON (customer_id) customer_id, city, country FROM raw_customer.customer_loyalty
           ORDER BY customer_id) c USING (customer_id)
{join}
{groups}
WHERE r.run_id = $run AND ($lo IS NULL OR r.customer_id >= $lo) AND ($hi IS NULL OR r.customer_id <= $hi)
  AND NOT ($treated_only AND {control})
ORDER BY r.customer_id, r.rank"""
WITH_REASONS = {"reason": "x.reason", "join": "LEFT JOIN ml.recommendation_reasons x USING (run_id, customer_id, rank)"}
WITHOUT_REASONS = {"reason": "NULL::VARCHAR", "join": ""}
# a customer without a group (a campaign saved before control groups) is treated: it was sent
WITH_GROUPS = {"control": "coalesce(g.control, false)",
               "groups": "LEFT JOIN ml.campaign_groups g USING (run_id, customer_id)"}
WITHOUT_GROUPS = {"control": "false", "groups": ""}
# One row per run; the fields of ml.campaigns and the control count as `_listed` fills them in: the
# side tables, or some of ml.campaigns' columns, may not exist yet
LIST_SQL = """
SELECT r.run_id, any_value(r.name), min(r.created_at), any_value(r.model_version), any_value(r.filters)::VARCHAR,
       count(DISTINCT r.customer_id), count(*), any_value({description}), any_value({data_end})::VARCHAR,
       any_value({holdout}), any_value({holdout_seed}), coalesce(any_value({control}), 0)
FROM ml.recommendations r {join} {groups}
GROUP BY r.run_id ORDER BY min(r.created_at) DESC, r.run_id DESC"""
CONTROL_COUNTS = ("LEFT JOIN (SELECT run_id, count(*) FILTER (WHERE control) AS control FROM ml.campaign_groups "
                  "GROUP BY run_id) g ON g.run_id = r.run_id")


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
    description: str | None = None
    # customers, expected_buyers, expected_revenue_usd (`totals`) of the mailing (the treated
    # customers): set by a save; None in a listing
    totals: dict[str, float] | None = None
    data_end: str | None = None  # the day after the last order at the save (None: saved before)
    holdout: float | None = None  # the share kept as control (None: saved before control groups)
    holdout_seed: int | None = None
    control: int = 0  # customers kept as control (not in the mailing)

    @property
    def treated(self) -> int:
        """Customers in the mailing: every customer of a campaign saved before control groups."""
        return self.customers - self.control

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"treated": self.treated}


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


def holdout_share(share: float) -> float:
    """The share of a campaign's customers to keep as control, checked: 0 (send to everyone) up to,
    not including, 1 (someone must be sent the campaign); a RecommendError otherwise."""
    share = float(share)
    if not 0.0 <= share < 1.0:  # NaN fails this too
        raise RecommendError(f"the holdout is a share of the customers from 0 up to, not including, 1 (0.1 keeps "
                             f"10% as control; 0 sends to everyone); got {share:g}")
    return share


def holdout_seed(seed: int | None, run_id: str) -> int:
    """The seed of a campaign's control draw: `seed` when given (0 .. SEED_MAX), else one derived
    from the run id (the first 63 bits of its SHA-256), so every save draws anew and is recorded."""
    if seed is None:
        return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big") & SEED_MAX
    if not 0 <= int(seed) <= SEED_MAX:
        raise RecommendError(f"a holdout seed is a whole number from 0 to {SEED_MAX}; got {seed}")
    return int(seed)


def control_size(share: float, customers: int) -> int:
    """How many of `customers` a holdout of `share` keeps as control: round(share × n), halves up."""
    return math.floor(share * customers + 0.5)


def draw_control(customer_ids: Sequence[int], share: float, seed: int) -> np.ndarray:
    """The control group: exactly `control_size(share, n)` of the n distinct customers, a uniform
    draw without replacement (numpy's PCG64 seeded with `seed`) from the customers sorted by id, so
    the same set of customers and seed give the same group whatever order they came in. Sorted ids."""
    ids = np.unique(np.asarray(customer_ids, dtype=np.int64))
    chosen = np.random.default_rng(seed).choice(len(ids), size=control_size(share, len(ids)), replace=False)
    return np.sort(ids[chosen])


def features_end(repo: Path) -> str:
    """The serving day of a features run (its folder, e.g. `Engine.online.repo`): the day after the
    last order its features saw (FeaturesResult.data_span[1]), as YYYY-MM-DD. What a campaign
    computed from that run records as its `data_end`."""
    from tastyrec.features.build import FeaturesResult

    return FeaturesResult(**json.loads((Path(repo) / "summary.json").read_text())).data_span[1]


def slug(name: str) -> str:
    """The name as a file name's part: ASCII letters and digits in lower case, runs of anything
    else as one "-" ("Hamburg Spring!" -> "hamburg-spring", "Crème brûlée" -> "creme-brulee");
    "campaign" where nothing is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return text[:SLUG_MAX].rstrip("-") or "campaign"


def mailing_file_name(name: str, run_id: str, fmt: str) -> str:
    """The mailing file's name: the campaign name's slug, the run id (unique) and the format,
    e.g. `hamburg-spring-20261203-101500-ab12cd34.csv`."""
    return f"{slug(name)}-{run_id}.{fmt}"


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy to write as a CSV that people open: a text cell that a spreadsheet would run as a
    formula (`=HYPERLINK(...)`) gets a leading apostrophe, so it shows as the text it is (OWASP's
    advice). Only text cells: a number (a negative score) stays a number."""
    def safe(value: Any) -> Any:
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value

    text = [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c]) or
            pd.api.types.is_string_dtype(frame[c])]
    return frame.assign(**{c: frame[c].map(safe) for c in text})


# ---- the mailing format --------------------------------------------------------------------------
def contacts(con, ids: Sequence[int]) -> pd.DataFrame:
    """customer_id and CONTACT_COLUMNS of these customers, from raw_customer.customer_loyalty
    (parameterised; `con` is an open DuckDB connection). Customers it does not know are absent."""
    return con.execute(CONTACTS_SQL, {"ids": [int(i) for i in ids]}).df()


def mailing_columns(top_k: int, reasons: bool = True) -> list[str]:
    """The columns of a mailing frame with items 1..top_k (item_N_reason only with reasons)."""
    items = [f"item_{n}{suffix}" for n in range(1, top_k + 1) for suffix in ITEM_COLUMNS
             if reasons or suffix != "_reason"]
    return ["customer_id", *CONTACT_COLUMNS, *items, *EXPECTATION_COLUMNS]


def mailing(items: pd.DataFrame, people: pd.DataFrame, top_k: int | None = None,
            reasons: bool | None = None) -> pd.DataFrame:
    """One row per customer of `items`, in their order: customer_id, the other columns of `people`
    (one row per customer_id; a customer it lacks gets missing values), then for each rank N in
    1..top_k (default: the highest rank) item_N, item_N_brand, item_N_price_usd, item_N_chance
    and item_N_reason (only with `reasons`; default: when an item has one), then:

    - chance_of_any = 1 − Π(1 − chance) over the customer's items: the chance that they buy at
      least one of them within the label window, *taking the items' purchases as independent*
      (they are not quite: items of one brand go together), if each chance holds;
    - expected_revenue_usd = Σ chance × price over their items (an item without a price adds 0).

    A chance outside [0, 1] is clipped for these two (item_N_chance keeps the saved score).
    `items` is long: customer_id, rank, menu_item_name, truck_brand_name, sale_price_usd, score and
    optionally reason (a campaign's rows, or `items_of` recommendations)."""
    ids = items["customer_id"].drop_duplicates().to_numpy()
    frame = pd.DataFrame({"customer_id": ids}).merge(people.drop_duplicates("customer_id"), on="customer_id",
                                                      how="left")
    k = top_k if top_k is not None else int(items["rank"].max()) if len(items) else 0
    if reasons is None:
        reasons = "reason" in items.columns and bool(items["reason"].notna().any())
    columns: dict[str, Any] = {}
    for n in range(1, k + 1):
        at = items[items["rank"] == n].set_index("customer_id")
        for suffix, field in ITEM_COLUMNS.items():
            if suffix == "_reason" and not reasons:
                continue
            values = frame["customer_id"].map(at[field]) if field in at.columns else pd.Series(None, index=frame.index)
            columns[f"item_{n}{suffix}"] = values.astype(float) if field in ("sale_price_usd", "score") else values
    chance = pd.to_numeric(items["score"], errors="coerce").clip(0.0, 1.0)
    price = pd.to_numeric(items["sale_price_usd"], errors="coerce")
    per_item = pd.DataFrame({"customer_id": items["customer_id"], "none": 1.0 - chance, "revenue": chance * price})
    by_customer = per_item.groupby("customer_id", sort=False)
    columns["chance_of_any"] = 1.0 - frame["customer_id"].map(by_customer["none"].prod())
    columns["expected_revenue_usd"] = frame["customer_id"].map(by_customer["revenue"].sum())  # NaN price: 0
    return pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)


def items_of(customers: Sequence[CustomerRecommendations | dict[str, Any]]) -> pd.DataFrame:
    """The recommendations of these customers (the engine's objects or their dicts), long: one row
    per customer and rank, with the entry's reason where it has one."""
    rows = []
    for c in customers:
        c = c if isinstance(c, dict) else vars(c)
        rows += [{"customer_id": c["customer_id"], "rank": r["rank"], "menu_item_name": r["menu_item_name"],
                  "truck_brand_name": r.get("truck_brand_name"), "sale_price_usd": r.get("sale_price_usd"),
                  "score": r["score"], "reason": r.get("reason")} for r in c["recommendations"]]
    return pd.DataFrame(rows, columns=["customer_id", "rank", "menu_item_name", "truck_brand_name",
                                       "sale_price_usd", "score", "reason"])


def mailing_frame(ws: Workspace, customers: Sequence[CustomerRecommendations | dict[str, Any]],
                  top_k: int | None = None) -> pd.DataFrame:
    """The mailing frame (`mailing`) of a result's customers (CustomerRecommendations or the dicts
    of Recommendations.to_dict / the service), with their contacts read from the warehouse
    (read-only, opened and closed here): for the app's download. Brand, price, chance and reason are
    the entries' own; city and country the warehouse's. `top_k`: the item columns (default: the
    longest list). Write it for people with `spreadsheet_safe(frame).to_csv(index=False)`; the
    campaign totals are `totals(frame)`.

    Raises RecommendError (in plain words) when the warehouse cannot be read (another process
    writing to it)."""
    items = items_of(customers)
    ids = items["customer_id"].drop_duplicates().tolist()
    with _reading(ws) as con:
        people = contacts(con, ids)
    return mailing(items, people, top_k)


def totals(frame: pd.DataFrame) -> dict[str, float]:
    """A mailing frame's campaign totals, its column sums: customers, expected_buyers (Σ
    chance_of_any) and expected_revenue_usd (Σ expected revenue); if each chance holds, within the
    label window."""
    return {"customers": int(len(frame)), "expected_buyers": float(frame["chance_of_any"].sum()),
            "expected_revenue_usd": float(frame["expected_revenue_usd"].sum())}


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0) + b[k] for k in b}


def _arrow_schema(columns: list[str]):
    import pyarrow as pa

    def kind(column: str) -> pa.DataType:
        if column == "customer_id":
            return pa.int64()
        if column.endswith(("_price_usd", "_chance")) or column in EXPECTATION_COLUMNS:
            return pa.float64()
        return pa.string()

    return pa.schema([(c, kind(c)) for c in columns])


def write_mailing(con, run_id: str, paths: dict[str, Path]) -> dict[str, float]:
    """Write a saved campaign's mailing file(s) (`paths`: format -> path; parquet and/or csv) from
    its rows as `con` sees them (in a save, its own uncommitted rows), a chunk of MAILING_CHUNK
    customers at a time; the campaign's `totals`. Prices, brands, cities and countries are the
    warehouse's of now. The control group (`ml.campaign_groups`) is left out: it is not sent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (k,) = con.execute("SELECT max(rank) FROM ml.recommendations WHERE run_id = $run", {"run": run_id}).fetchone()
    reasons = "recommendation_reasons" in _side_tables(con) and con.execute(
        "SELECT count(*) FROM ml.recommendation_reasons WHERE run_id = $run AND reason IS NOT NULL",
        {"run": run_id}).fetchone()[0] > 0
    columns = mailing_columns(k or 0, reasons)
    schema = _arrow_schema(columns)
    treated = ("SELECT DISTINCT customer_id FROM ml.recommendations WHERE run_id = $run "
               + ("AND customer_id NOT IN (SELECT customer_id FROM ml.campaign_groups WHERE run_id = $run AND control) "
                  if "campaign_groups" in _side_tables(con) else "") + "ORDER BY 1")
    ids = [i for (i,) in con.execute(treated, {"run": run_id}).fetchall()]
    writer, total = None, totals(pd.DataFrame(columns=list(EXPECTATION_COLUMNS)))
    try:
        for start in range(0, max(len(ids), 1), MAILING_CHUNK):
            chunk = ids[start:start + MAILING_CHUNK]
            items = (_items(con, run_id, chunk[0], chunk[-1], treated_only=True) if chunk
                     else _items(con, run_id, 0, -1))
            frame = mailing(items, contacts(con, chunk), k or 0, reasons)[columns]
            if "parquet" in paths:
                if writer is None:
                    writer = pq.ParquetWriter(paths["parquet"], schema)
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            if "csv" in paths:
                spreadsheet_safe(frame).to_csv(paths["csv"], index=False, mode="a" if start else "w",
                                               header=not start)
            total = _add(total, totals(frame))
    finally:
        if writer is not None:
            writer.close()
    return total


def _items(con, run_id: str, lo: int | None = None, hi: int | None = None, treated_only: bool = False
           ) -> pd.DataFrame:
    """A campaign's rows (ITEMS_SQL) with each customer's group (`control`), of customers lo..hi
    (None: unbounded); only the treated customers' (those sent the campaign) with `treated_only`."""
    tables = _side_tables(con)
    parts = ((WITH_REASONS if "recommendation_reasons" in tables else WITHOUT_REASONS)
             | (WITH_GROUPS if "campaign_groups" in tables else WITHOUT_GROUPS))
    return con.execute(ITEMS_SQL.format(**parts), {"run": run_id, "lo": lo, "hi": hi,
                                                   "treated_only": treated_only}).df()


def _campaigns_table(con) -> None:
    """ml.campaigns with every column of now (an older warehouse's lacks those after description)."""
    con.execute(CAMPAIGNS_DDL)
    for column, kind in CAMPAIGN_COLUMNS.items():  # names and types of this module
        con.execute(f"ALTER TABLE ml.campaigns ADD COLUMN IF NOT EXISTS {column} {kind}")


def _listed(con) -> dict[str, str]:
    """LIST_SQL's fields for this warehouse: NULL for what its side tables lack."""
    tables = _side_tables(con)
    columns = {c for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'ml' "
        "AND table_name = 'campaigns'").fetchall()}
    nulls = {"description": "NULL::VARCHAR", "data_end": "NULL::DATE", "holdout": "NULL::DOUBLE",
             "holdout_seed": "NULL::BIGINT"}
    parts = {field: f"d.{field}" if field in columns else null for field, null in nulls.items()}
    parts["join"] = "LEFT JOIN ml.campaigns d ON d.run_id = r.run_id" if "campaigns" in tables else ""
    parts["control"], parts["groups"] = ("g.control", CONTROL_COUNTS) if "campaign_groups" in tables else ("0", "")
    return parts


def _side_tables(con) -> set[str]:
    """Which of SIDE_TABLES this warehouse has (a warehouse of an older version has none)."""
    return {t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'ml' "
        "AND list_contains($names, table_name)", {"names": list(SIDE_TABLES)}).fetchall()}


# ---- opening the warehouse -----------------------------------------------------------------------
@contextmanager
def _reading(ws: Workspace) -> Iterator[Any]:
    """The warehouse, read-only, closed when the block ends; a RecommendError if it is missing or
    another process is writing to it."""
    import duckdb

    from tastyrec.warehouse.load import connect, in_use

    if not ws.warehouse.exists():
        raise RecommendError(f"no warehouse in {ws.home}: run `tastyrec pipeline` first")
    try:
        con = connect(ws.warehouse, read_only=True)
    except duckdb.IOException as e:
        if busy := in_use(e, ws.warehouse):
            raise RecommendError(f"cannot read the warehouse: {busy}; try again when it is done") from None
        raise
    try:
        yield con
    finally:
        con.close()


def _writer(ws: Workspace, nothing: str, again: str):
    """The warehouse opened for writing, or WarehouseBusy / NotSaved in plain words: "`nothing`:
    <who holds it>; close that program ... and `again`"."""
    import duckdb

    from tastyrec.warehouse.load import connect, in_use

    try:
        return connect(ws.warehouse)
    except duckdb.IOException as e:  # a writer needs the file to itself: no other process may have it open
        if busy := in_use(e, ws.warehouse):
            raise WarehouseBusy(f"{nothing}: {busy}; close that program (a running `tastyrec app`, "
                                f"a notebook, ...) and {again}") from None
        if plain := ws.write_failure(e):  # a read-only home: DuckDB cannot open the file for writing
            raise NotSaved(f"{plain}; nothing was changed") from None
        raise


# ---- saving ----------------------------------------------------------------------------------------
class Saving:
    """A campaign written while it is computed, all or nothing (see the module's docstring): rows
    come in chunks (`add`, e.g. as Engine.recommend's sink) and go to the table inside one
    transaction; when the block ends without an error and with rows, the mailing files are written
    from them, renamed into place and the transaction committed; otherwise nothing is left behind.
    `campaign` (with its `totals`) is set once saved.

    Before the files are written, `holdout` (a share, see `holdout_share`) of the campaign's
    customers are drawn as control (`draw_control`, with `seed` or one derived from the run id) and
    every customer's group goes to `ml.campaign_groups`; the mailing files leave the control out.
    `data_end`: the features' serving day the lists were computed for (`features_end` of the
    engine's features run); default: the workspace's current features run's. The campaign records
    the later of it and the warehouse's own data end: orders already there preceded the campaign."""

    def __init__(self, ws: Workspace, name: str, model_version: Any, filters: dict[str, Any],
                 holdout: float = HOLDOUT, seed: int | None = None, data_end: str | None = None):
        self.ws, self.name = ws, campaign_name(name)
        self.created = datetime.now().replace(microsecond=0)
        self.run_id = f"{self.created:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.model_version, self.filters = str(model_version), filters
        self.holdout, self.seed = holdout_share(holdout), holdout_seed(seed, self.run_id)
        if data_end is None:
            try:
                data_end = features_end(ws.feature_repo)
            except (OSError, ValueError, TypeError):  # no features yet, or of a version without data_span
                data_end = None
        self.data_end = data_end
        self.control = 0
        self.customers = self.rows = 0
        self.campaign: Campaign | None = None  # set when the block ends with rows saved
        folder = stage_dir(ws)
        self.final = {fmt: folder / mailing_file_name(self.name, self.run_id, fmt) for fmt in FORMATS}
        self.tmp = {fmt: path.with_name(f".{path.name}.tmp") for fmt, path in self.final.items()}

    def __enter__(self) -> Saving:
        self.con = _writer(self.ws, "nothing was saved", "save again")  # before any file is written
        self.undone = False
        try:
            self.con.begin()
            for ddl in (REASONS_DDL, GROUPS_DDL):
                self.con.execute(ddl)
            _campaigns_table(self.con)
        except BaseException as e:
            self._undo(e)
        return self

    def add(self, customers: list[CustomerRecommendations]) -> None:
        """Save these customers' recommendations (one row per customer and rank, and each item's
        reason where it has one)."""
        rows = [(self.run_id, self.created, self.model_version, json.dumps(self.filters), c.customer_id,
                 r["rank"], r["menu_item_name"], r["score"], self.name)
                for c in customers for r in c.recommendations]
        if not rows:
            return
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        why = pd.DataFrame([(self.run_id, c.customer_id, r["rank"], r["reason"]) for c in customers
                            for r in c.recommendations if r.get("reason") is not None],
                           columns=["run_id", "customer_id", "rank", "reason"])
        try:
            self.con.register("campaign_rows", frame)
            self.con.execute("INSERT INTO ml.recommendations BY NAME SELECT * REPLACE (filters::JSON AS filters) "
                             "FROM campaign_rows")
            self.con.unregister("campaign_rows")
            if len(why):
                self.con.register("campaign_reasons", why)
                self.con.execute("INSERT INTO ml.recommendation_reasons BY NAME SELECT * FROM campaign_reasons")
                self.con.unregister("campaign_reasons")
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
            self._groups()
            stage_dir(self.ws).mkdir(parents=True, exist_ok=True)
            expected = write_mailing(self.con, self.run_id, self.tmp)
            for fmt in self.final:
                os.replace(self.tmp[fmt], self.final[fmt])
            self.con.commit()
        except BaseException as e:
            self._undo(e)
        self.con.close()
        self.campaign = Campaign(self.run_id, self.name, self.created.isoformat(), self.model_version, self.filters,
                                 self.customers, self.rows, [str(p) for p in self.final.values()], totals=expected,
                                 data_end=self.data_end, holdout=self.holdout, holdout_seed=self.seed,
                                 control=self.control)

    def _groups(self) -> None:
        """Draw the control group among the campaign's customers (as saved in this transaction),
        store every customer's group and the campaign's record (data_end, holdout, seed)."""
        ids = [i for (i,) in self.con.execute("SELECT DISTINCT customer_id FROM ml.recommendations WHERE run_id = $run",
                                              {"run": self.run_id}).fetchall()]
        control = draw_control(ids, self.holdout, self.seed)
        if len(ids) and len(control) == len(ids):
            raise RecommendError(f"a holdout of {self.holdout:.0%} keeps all {len(ids):,} customers as control, so "
                                 "nobody would be sent the campaign: lower the holdout (nothing was saved)")
        groups = pd.DataFrame({"customer_id": np.asarray(ids, dtype=np.int64)})
        groups["control"] = groups["customer_id"].isin(control)
        groups.insert(0, "run_id", self.run_id)
        self.con.register("campaign_groups_rows", groups)
        self.con.execute("INSERT INTO ml.campaign_groups BY NAME SELECT * FROM campaign_groups_rows")
        self.con.unregister("campaign_groups_rows")
        # Orders already in the warehouse came before the campaign was sent, even where the features
        # have not caught up with them yet: "after the save" starts after the last of them.
        (end,) = self.con.execute("SELECT greatest($end::DATE, (SELECT max(order_ts)::DATE + 1 FROM "
                                  "raw_pos.order_header))::VARCHAR", {"end": self.data_end}).fetchone()
        self.data_end = end
        self.con.execute("INSERT INTO ml.campaigns (run_id, data_end, holdout, holdout_seed) "
                         "VALUES ($run, $end::DATE, $holdout, $seed)",
                         {"run": self.run_id, "end": self.data_end, "holdout": self.holdout, "seed": self.seed})
        self.control = len(control)

    def _undo(self, error: BaseException | None) -> None:
        """Roll the transaction back and remove the files (once), then raise `error` again: as
        NotSaved, in plain words, where the file system refused a write."""
        if not self.undone:
            self.undone = True
            try:
                self.con.rollback()
            except Exception:  # noqa: BLE001 - no transaction open yet: nothing to roll back
                pass
            self.con.close()
            for path in [*self.tmp.values(), *self.final.values()]:
                path.unlink(missing_ok=True)
        if error is None:
            return
        if plain := self.ws.write_failure(error):  # disk full, read-only stage folder: undone above
            raise NotSaved(f"{plain}; nothing was changed") from None
        raise error


def save(ws: Workspace, result: Recommendations, name: str, holdout: float = HOLDOUT, seed: int | None = None,
         data_end: str | None = None) -> Campaign:
    """Store a result as a named campaign with a new run id, `holdout` of its customers kept as
    control (see Saving); all or nothing."""
    name = campaign_name(name)
    if not result.customers:
        raise RecommendError("nothing to save: the result has no recommendations")
    with Saving(ws, name, result.model["version"], result.filters, holdout, seed, data_end) as saving:
        saving.add(result.customers)
    return saving.campaign


# ---- reading ---------------------------------------------------------------------------------------
def _stage_files(folder: Path, names: list[str], run_id: str) -> list[Path]:
    """A run's stage files among `names` (the folder's, hidden ones left out), parquet then csv:
    `<slug>-<run_id>.<fmt>`, or `<run_id>.<fmt>` as older versions named them."""
    return [folder / n for fmt in FORMATS for n in names if n == f"{run_id}.{fmt}" or n.endswith(f"-{run_id}.{fmt}")]


def _folder_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def list_campaigns(ws: Workspace) -> list[Campaign]:
    """Every saved campaign, newest first, with its description (a RecommendError, in plain words,
    while another process writes to the warehouse)."""
    if not ws.warehouse.exists():
        return []
    with _reading(ws) as con:
        rows = con.execute(LIST_SQL.format(**_listed(con))).fetchall()
    folder = stage_dir(ws)
    names = _folder_names(folder)
    return [Campaign(run_id, name or "", created.isoformat(), version, json.loads(filters) if filters else {},
                     customers, n, [str(p) for p in _stage_files(folder, names, run_id)], text, data_end=end,
                     holdout=holdout, holdout_seed=seed, control=int(control))
            for run_id, name, created, version, filters, customers, n, text, end, holdout, seed, control in rows]


def find_campaign(ws: Workspace, ref: str) -> Campaign:
    """The campaign with this run id, else the one with this name; a RecommendError naming the run
    ids when several campaigns share the name, or when none has it."""
    saved = list_campaigns(ws)
    if by_id := [c for c in saved if c.run_id == ref]:
        return by_id[0]
    named = [c for c in saved if c.name == ref.strip()]
    if not named:
        raise RecommendError(f"no saved campaign is named {ref!r} or has that run id "
                             "(`tastyrec campaigns` lists them)")
    if len(named) > 1:
        raise RecommendError(f"{len(named)} campaigns are named {ref!r} (run ids "
                             f"{', '.join(c.run_id for c in named)}): give the run id of the one you mean")
    return named[0]


def load_campaign(ws: Workspace, run_id: str) -> pd.DataFrame:
    """The rows of one saved campaign, by customer and rank, with each item's brand, category and
    price (the menu's of now) and reason, and each customer's city and country."""
    with _reading(ws) as con:
        frame = _items(con, run_id)
    if frame.empty:
        raise RecommendError(f"no saved campaign with run id {run_id!r}")
    return frame


def campaign_mailing(ws: Workspace, run_id: str) -> pd.DataFrame:
    """A saved campaign's mailing frame (`mailing`), whole, in memory: for the app's download. The
    treated customers only: the control group is not sent."""
    with _reading(ws) as con:
        items = _items(con, run_id, treated_only=True)
        if items.empty:
            raise RecommendError(f"no saved campaign with run id {run_id!r}")
        people = contacts(con, items["customer_id"].drop_duplicates().tolist())
    return mailing(items, people)


def export_campaign(ws: Workspace, ref: str, fmt: str = "csv", output: Path | None = None
                    ) -> tuple[Campaign, Path, dict[str, float]]:
    """Write a saved campaign's mailing file (`ref`: its name or run id, see `find_campaign`) as
    `fmt` (csv, for people: spreadsheet-safe; or parquet) to `output`: a file, or a folder for the
    default name (`mailing_file_name`); default the current folder. Written under a temporary name
    and renamed into place, so a failure leaves no half file. The campaign, the path and its totals."""
    if fmt not in FORMATS:
        raise RecommendError(f"the format is one of {', '.join(FORMATS)} (got {fmt!r})")
    campaign = find_campaign(ws, ref)
    output = Path.cwd() if output is None else Path(output)
    path = output / mailing_file_name(campaign.name, campaign.run_id, fmt) if output.is_dir() else output
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with _reading(ws) as con:
            expected = write_mailing(con, campaign.run_id, {fmt: tmp})
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if plain := ws.write_failure(e):
            raise NotSaved(f"{plain}; nothing was written") from None
        raise
    return campaign, path, expected


# ---- describing, renaming, deleting ------------------------------------------------------------------
def describe_campaign(ws: Workspace, ref: str, text: str) -> Campaign:
    """Set a campaign's description (blank clears it); `ref` as in `find_campaign`."""
    text = text.strip()
    if len(text) > DESCRIPTION_MAX:
        raise RecommendError(f"a description has at most {DESCRIPTION_MAX:,} characters; this one has {len(text):,}")
    # line breaks and tabs are fine in a description; other control characters break listings
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") and ch not in "\n\t" for ch in text):
        raise RecommendError("a description cannot hold control characters other than line breaks and tabs")
    campaign = find_campaign(ws, ref)
    with _changing(ws, campaign, "described") as con:
        _campaigns_table(con)
        con.execute("INSERT INTO ml.campaigns (run_id, description) VALUES ($run, $text) "
                    "ON CONFLICT (run_id) DO UPDATE SET description = excluded.description",
                    {"run": campaign.run_id, "text": text or None})
    return replace(campaign, description=text or None)


def rename_campaign(ws: Workspace, ref: str, new_name: str) -> Campaign:
    """Give a campaign a new name: its rows and its stage files (`<slug>-<run_id>.*`) together, all
    or nothing. `ref` as in `find_campaign`; the new name is checked as a saved one is."""
    new_name = campaign_name(new_name)
    campaign = find_campaign(ws, ref)
    folder = stage_dir(ws)
    moves = [(Path(f), folder / mailing_file_name(new_name, campaign.run_id, Path(f).suffix[1:]))
             for f in campaign.files]
    with _changing(ws, campaign, "renamed", moves) as con:
        con.execute("UPDATE ml.recommendations SET name = $name WHERE run_id = $run",
                    {"name": new_name, "run": campaign.run_id})
    return replace(campaign, name=new_name, files=[str(dst) for _, dst in moves])


def delete_campaign(ws: Workspace, ref: str) -> Campaign:
    """Delete a campaign: its rows (with its reasons and description) and its stage files together,
    all or nothing. `ref` as in `find_campaign`; the campaign as it was."""
    campaign = find_campaign(ws, ref)
    moves = [(Path(f), Path(f).with_name(f".{Path(f).name}.deleted")) for f in campaign.files]
    with _changing(ws, campaign, "deleted", moves) as con:
        tables = _side_tables(con)
        con.execute("DELETE FROM ml.recommendations WHERE run_id = $run", {"run": campaign.run_id})
        for table in SIDE_TABLES:  # names of this module
            if table in tables:
                con.execute(f"DELETE FROM ml.{table} WHERE run_id = $run", {"run": campaign.run_id})
    for _, hidden in moves:  # committed: the files are gone for good (hidden names list nowhere)
        try:
            hidden.unlink()
        except OSError as e:
            log.warning("campaign %s deleted, but its file %s could not be removed: %s", campaign.run_id, hidden, e)
    return campaign


@contextmanager
def _changing(ws: Workspace, campaign: Campaign, done: str,
              moves: Sequence[tuple[Path, Path]] = ()) -> Iterator[Any]:
    """A transaction on the warehouse for the block's changes to `campaign`; then the files are moved
    (`moves`: source, destination; the same path: no move) and the transaction is committed. Any
    failure rolls the transaction back and moves the files back: rows and files stay as they were.
    (A process killed between the moves and the commit leaves files named for the change and rows
    as they were: the files are found by run id, so the campaign keeps them.)"""
    con = _writer(ws, f"campaign {campaign.name!r} was not {done}", "try again")
    moved: list[tuple[Path, Path]] = []
    try:
        con.begin()
        if not con.execute("SELECT count(*) FROM ml.recommendations WHERE run_id = $run",
                           {"run": campaign.run_id}).fetchone()[0]:
            raise RecommendError(f"campaign {campaign.name!r} (run {campaign.run_id}) no longer exists")
        yield con
        for src, dst in moves:
            if src != dst:
                os.replace(src, dst)
                moved.append((src, dst))
        con.commit()
    except BaseException as e:
        try:
            con.rollback()
        except Exception:  # noqa: BLE001 - the transaction may have ended already
            pass
        for src, dst in reversed(moved):
            try:
                os.replace(dst, src)
            except OSError as undo:
                log.error("campaign %s: could not move %s back to %s: %s", campaign.run_id, dst, src, undo)
        if isinstance(e, RecommendError):
            raise
        if plain := ws.write_failure(e):
            raise NotSaved(f"{plain}; campaign {campaign.name!r} was not {done} (nothing was changed)") from None
        raise
    finally:
        con.close()
