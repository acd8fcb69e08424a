"""The warehouse: seed schema, views, determinism, the planted purchase model, CSV exchange."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.warehouse.load import (CAMPAIGN_TABLES, RAW_TABLES, CsvError, WarehouseError, connect, export_csv,
                                     setup_from_csv, setup_synthetic)
from tastyrec.warehouse.synthetic import distinct_lines, generate

from conftest import SEED, SMALL_CUSTOMERS

# The seed's scripts/setup.sql, column for column and in its order (Snowflake types mapped to DuckDB's).
SEED_COLUMNS = {
    "raw_pos.country": "country_id BIGINT, country VARCHAR, iso_currency VARCHAR, iso_country VARCHAR, "
                       "city_id BIGINT, city VARCHAR, city_population BIGINT",
    "raw_pos.franchise": "franchise_id BIGINT, first_name VARCHAR, last_name VARCHAR, city VARCHAR, "
                         "country VARCHAR, e_mail VARCHAR, phone_number VARCHAR",
    "raw_pos.location": "location_id BIGINT, placekey VARCHAR, location VARCHAR, city VARCHAR, region VARCHAR, "
                        "iso_country_code VARCHAR, country VARCHAR",
    "raw_pos.menu": "menu_id BIGINT, menu_type_id BIGINT, menu_type VARCHAR, menu_item_id BIGINT, "
                    "menu_item_name VARCHAR, item_category VARCHAR, item_subcategory VARCHAR, "
                    "cost_of_goods_usd DECIMAL(38,4), sale_price_usd DECIMAL(38,4), menu_item_health_metrics_obj JSON, "
                    "truck_brand_name VARCHAR",
    "raw_pos.truck": "truck_id BIGINT, menu_type_id BIGINT, primary_city VARCHAR, region VARCHAR, iso_region VARCHAR, "
                     "country VARCHAR, iso_country_code VARCHAR, franchise_flag BIGINT, year BIGINT, make VARCHAR, "
                     "model VARCHAR, ev_flag BIGINT, franchise_id BIGINT, truck_opening_date DATE",
    "raw_pos.order_header": "order_id BIGINT, truck_id BIGINT, location_id DOUBLE, customer_id BIGINT, "
                            "discount_id VARCHAR, shift_id BIGINT, shift_start_time TIME, shift_end_time TIME, "
                            "order_channel VARCHAR, served_ts VARCHAR, order_currency VARCHAR, "
                            "order_amount DECIMAL(38,4), order_tax_amount VARCHAR, order_discount_amount VARCHAR, "
                            "order_total DECIMAL(38,4), order_ts TIMESTAMP",
    "raw_pos.order_detail": "order_detail_id BIGINT, order_id BIGINT, menu_item_id BIGINT, discount_id VARCHAR, "
                            "line_number BIGINT, quantity DECIMAL(5,0), unit_price DECIMAL(38,4), "
                            "price DECIMAL(38,4), order_item_discount_amount VARCHAR",
    "raw_customer.customer_loyalty": "customer_id BIGINT, first_name VARCHAR, last_name VARCHAR, city VARCHAR, "
                                     "country VARCHAR, postal_code VARCHAR, preferred_language VARCHAR, "
                                     "gender VARCHAR, favourite_brand VARCHAR, marital_status VARCHAR, "
                                     "children_count VARCHAR, sign_up_date DATE, birthday_date DATE, "
                                     "e_mail VARCHAR, phone_number VARCHAR",
}
ORDERS_V = ("order_id truck_id order_ts order_detail_id line_number truck_brand_name menu_type primary_city "
            "region country franchise_flag franchise_id franchisee_first_name franchisee_last_name location_id "
            "customer_id first_name last_name e_mail phone_number children_count gender marital_status "
            "menu_item_id menu_item_name quantity unit_price price order_amount order_tax_amount "
            "order_discount_amount order_total").split()


def columns(con, relation: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {relation}").fetchall()]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tables(ws: Workspace, names=RAW_TABLES) -> dict:
    con = connect(ws.warehouse, read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t}").to_arrow_table() for t in names}
    finally:
        con.close()


def test_raw_tables_match_the_seed_schema(small_ws):
    con = connect(small_ws.warehouse, read_only=True)
    for table, spec in SEED_COLUMNS.items():
        expected = [tuple(c.strip().split(" ", 1)) for c in spec.split(", ")]
        assert columns(con, table) == expected, table


def test_views_and_ml_tables_have_the_seed_shape(small_ws):
    con = connect(small_ws.warehouse, read_only=True)
    assert [c for c, _ in columns(con, "harmonized.orders_v")] == ORDERS_V
    assert [c for c, _ in columns(con, "analytics.orders_v")] == ["date"] + ORDERS_V
    assert columns(con, "analytics.loyalty_purchased_items") == [
        ("customer_id", "BIGINT"), ("menu_item_name", "VARCHAR"), ("purchased", "INTEGER")]
    assert [c for c, _ in columns(con, "ml.customer_features")] == [
        "customer_id", "city", "country", "gender", "marital_status", "birthday_date", "age"]
    assert [c for c, _ in columns(con, "ml.menu_item_features")] == [
        "menu_type", "truck_brand_name", "menu_item_name", "item_category", "item_subcategory", "sale_price_usd"]
    # every order line reaches the views (no line lost in the joins)
    assert con.execute("SELECT count(*) FROM analytics.orders_v").fetchone() == \
        con.execute("SELECT count(*) FROM raw_pos.order_detail").fetchone()


def test_dimensions_look_like_tasty_bytes(small_ws):
    con = connect(small_ws.warehouse, read_only=True)
    brands, cities, countries = con.execute(
        "SELECT count(DISTINCT truck_brand_name), (SELECT count(DISTINCT city) FROM raw_pos.country), "
        "(SELECT count(DISTINCT country) FROM raw_pos.country) FROM raw_pos.menu").fetchone()
    assert (brands, cities, countries) == (15, 30, 15)
    items, non_beverage = con.execute("SELECT count(*), count(*) FILTER (item_category <> 'Beverage') "
                                  "FROM raw_pos.menu").fetchone()
    assert 90 <= items <= 110 and 50 <= non_beverage <= 60
    loyalty, walk_in = con.execute("SELECT count(customer_id), count(*) - count(customer_id) "
                               "FROM raw_pos.order_header").fetchone()
    assert loyalty > 0 and walk_in > 0
    span = con.execute("SELECT date_diff('day', min(order_ts), max(order_ts)) FROM raw_pos.order_header").fetchone()[0]
    assert span > 2 * 365


def test_loyalty_purchased_items_is_customers_times_items(small_ws):
    con = connect(small_ws.warehouse, read_only=True)
    n, customers, items, bought = con.execute(
        "SELECT count(*), count(DISTINCT customer_id), count(DISTINCT menu_item_name), sum(purchased) "
        "FROM analytics.loyalty_purchased_items").fetchone()
    non_beverage = con.execute("SELECT count(DISTINCT menu_item_name) FROM raw_pos.menu "
                           "WHERE item_category <> 'Beverage'").fetchone()[0]
    assert (customers, items) == (SMALL_CUSTOMERS, non_beverage)
    assert n == SMALL_CUSTOMERS * non_beverage
    direct = con.execute("SELECT count(DISTINCT (customer_id, menu_item_name)) FROM analytics.orders_v "
                     "WHERE customer_id IS NOT NULL AND menu_item_name IN "
                     "(SELECT menu_item_name FROM raw_pos.menu WHERE item_category <> 'Beverage')").fetchone()[0]
    assert bought == direct


def test_same_seed_gives_identical_tables(small_ws, tmp_path):
    again = Workspace.from_env(tmp_path / "again")
    setup_synthetic(again, customers=SMALL_CUSTOMERS, seed=SEED)
    names = RAW_TABLES + ("synth.true_propensity",)
    first, second = tables(small_ws, names), tables(again, names)
    for name in names:
        assert first[name].equals(second[name]), name
    other = Workspace.from_env(tmp_path / "other")
    setup_synthetic(other, customers=SMALL_CUSTOMERS, seed=SEED + 1)
    assert not tables(other, ["raw_pos.order_header"])["raw_pos.order_header"].equals(
        first["raw_pos.order_header"])


def test_duckdb_memory_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TASTYREC_DUCKDB_MEMORY", "1GB")
    setting = "SELECT current_setting('memory_limit')"
    expected = duckdb.connect(config={"memory_limit": "1GB"}).execute(setting).fetchone()
    con = connect(tmp_path / "limited.duckdb")
    assert con.execute(setting).fetchone() == expected
    con.close()


def test_generating_leaves_numpy_error_handling_alone():
    with np.errstate(divide="warn"):  # a known state, whatever earlier code did to the global one
        before = np.geterr()
        _, chunks = generate(30, seed=5)
        next(chunks)
        assert np.geterr() == before


def test_order_lines_stay_distinct_with_more_than_1000_items():
    order = np.array([0, 0, 1, 0, 1])
    item = np.array([1500, 1500, 3, 2, 3])
    d_order, d_item, qty = distinct_lines(order, item, n_items=2000)
    assert list(zip(d_order.tolist(), d_item.tolist(), qty.tolist())) == [(0, 2, 1), (0, 1500, 2), (1, 3, 2)]


def test_customers_buy_their_favourite_brand_more_often(small_ws):
    con = connect(small_ws.warehouse, read_only=True)
    favourite, uniform = con.execute("""
        WITH o AS (SELECT DISTINCT oh.order_id, oh.customer_id, m.truck_brand_name
                   FROM raw_pos.order_header oh JOIN raw_pos.order_detail od USING (order_id)
                   JOIN raw_pos.menu m USING (menu_item_id) WHERE oh.customer_id IS NOT NULL),
             city_brands AS (SELECT primary_city AS city, count(DISTINCT menu_type_id) AS n
                             FROM raw_pos.truck GROUP BY 1)
        SELECT avg((o.truck_brand_name = c.favourite_brand)::INT), avg(1.0 / cb.n)
        FROM o JOIN raw_customer.customer_loyalty c USING (customer_id)
        JOIN city_brands cb ON cb.city = c.city""").fetchone()
    assert favourite > 3 * uniform


def test_customers_buy_from_trucks_in_their_own_city(small_ws):
    con = connect(small_ws.warehouse, read_only=True)
    elsewhere, brand_mismatch = con.execute("""
        SELECT count(*) FILTER (t.primary_city <> c.city), count(*) FILTER (m.menu_type_id <> t.menu_type_id)
        FROM raw_pos.order_header oh JOIN raw_pos.order_detail od USING (order_id)
        JOIN raw_pos.truck t USING (truck_id) JOIN raw_pos.menu m USING (menu_item_id)
        JOIN raw_customer.customer_loyalty c ON c.customer_id = oh.customer_id""").fetchone()
    assert elsewhere == 0 and brand_mismatch == 0


def test_repeat_habit_and_truth_are_visible(small_ws):
    con = connect(small_ws.warehouse, read_only=True)
    start = con.execute("SELECT value::DATE FROM synth.info WHERE key = 'window_start'").fetchone()[0]
    # items bought before the final window are bought again in it far more often than new ones
    again, new, auc = con.execute("""
        WITH lines AS (SELECT DISTINCT customer_id, menu_item_name, date >= ? AS in_window
                       FROM analytics.orders_v WHERE customer_id IS NOT NULL),
             pairs AS (SELECT t.customer_id, t.menu_item_name, t.propensity,
                              bool_or(l.in_window IS NOT NULL AND NOT l.in_window) AS before,
                              bool_or(coalesce(l.in_window, false)) AS after
                       FROM synth.true_propensity t LEFT JOIN lines l USING (customer_id, menu_item_name)
                       GROUP BY ALL)
        SELECT avg(after::INT) FILTER (before), avg(after::INT) FILTER (NOT before),
               -- AUC of the true propensity for the window's purchases (Mann-Whitney)
               (sum(r) FILTER (after) - count(*) FILTER (after) * (count(*) FILTER (after) + 1) / 2)
               / (count(*) FILTER (after) * count(*) FILTER (NOT after))
        FROM (SELECT *, rank() OVER (ORDER BY propensity) AS r FROM pairs)""", [start]).fetchone()
    assert again > 3 * new
    assert auc > 0.8
    unavailable = con.execute("""
        SELECT max(t.propensity) FROM synth.true_propensity t
        JOIN raw_customer.customer_loyalty c USING (customer_id)
        JOIN raw_pos.menu m ON m.menu_item_name = t.menu_item_name
        WHERE m.menu_type_id NOT IN (SELECT menu_type_id FROM raw_pos.truck WHERE primary_city = c.city)""").fetchone()[0]
    assert unavailable == 0


def test_setup_refuses_an_existing_warehouse_unless_forced(tmp_path):
    ws = Workspace.from_env(tmp_path / "home")
    setup_synthetic(ws, customers=50, seed=1)
    with pytest.raises(WarehouseError, match="--force"):
        setup_synthetic(ws, customers=50, seed=1)
    con = connect(ws.warehouse)
    con.execute("INSERT INTO ml.recommendations VALUES ('r1', now()::TIMESTAMP, '1', NULL, 1, 1, 'Italian', 0.5, 'spring')")
    # a campaign's description, serving day, holdout and seed, reasons and groups go along with it
    for ddl in CAMPAIGN_TABLES.values():
        con.execute(ddl)
    con.execute("INSERT INTO ml.campaigns VALUES ('r1', 'for the spring menu', DATE '2023-01-01', 0.1, 42)")
    con.execute("INSERT INTO ml.recommendation_reasons VALUES ('r1', 1, 1, 'bought it once, last 3 weeks ago')")
    con.execute("INSERT INTO ml.campaign_groups VALUES ('r1', 1, false)")
    con.close()
    setup_synthetic(ws, customers=60, seed=2, force=True)
    con = connect(ws.warehouse, read_only=True)
    assert con.execute("SELECT count(*) FROM raw_customer.customer_loyalty").fetchone()[0] == 60
    assert con.execute("SELECT run_id FROM ml.recommendations").fetchall() == [("r1",)]
    assert con.execute("SELECT * EXCLUDE (data_end), data_end::VARCHAR FROM ml.campaigns").fetchall() == [
        ("r1", "for the spring menu", 0.1, 42, "2023-01-01")]
    assert con.execute("SELECT reason FROM ml.recommendation_reasons").fetchall() == [("bought it once, last 3 weeks ago",)]
    assert con.execute("SELECT * FROM ml.campaign_groups").fetchall() == [("r1", 1, False)]
    con.close()
    # an older version's ml.campaigns (a description only): carried over, the newer columns empty
    con = connect(ws.warehouse)
    con.execute("DROP TABLE ml.campaigns")
    con.execute("CREATE TABLE ml.campaigns (run_id VARCHAR PRIMARY KEY, description VARCHAR)")
    con.execute("INSERT INTO ml.campaigns VALUES ('r1', 'older')")
    con.close()
    setup_synthetic(ws, customers=60, seed=2, force=True)
    con = connect(ws.warehouse, read_only=True)
    assert con.execute("SELECT * FROM ml.campaigns").fetchall() == [("r1", "older", None, None, None)]


@contextmanager
def held_open(path: Path, read_only: bool) -> Iterator[int]:
    """Another process with the DuckDB file open until the block ends; yields its PID."""
    code = (f"import duckdb, sys; con = duckdb.connect({str(path)!r}, read_only={read_only}); "
            "print('open', flush=True); sys.stdin.read()")
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as holder:
        assert holder.stdout.readline() == "open\n"
        try:
            yield holder.pid
        finally:
            holder.stdin.close()  # the holder's read returns: it exits


def test_setup_force_carries_rows_of_the_old_wal_over_once_and_leaves_no_wal(tmp_path):
    ws = Workspace.from_env(tmp_path / "home")
    setup_synthetic(ws, customers=50, seed=1)
    con = duckdb.connect(str(ws.warehouse))  # a save whose rows DuckDB left in the WAL alone
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("SET checkpoint_threshold = '1TB'")
    con.execute("INSERT INTO ml.recommendations VALUES ('r1', now()::TIMESTAMP, '1', NULL, 1, 1, 'Italian', 0.5, "
                "'spring'), ('r1', now()::TIMESTAMP, '1', NULL, 1, 2, 'Tacos', 0.4, 'spring')")
    con.close()
    wal = ws.warehouse.with_name(ws.warehouse.name + ".wal")
    assert wal.stat().st_size > 0
    setup_synthetic(ws, customers=60, seed=2, force=True)
    assert not wal.exists()
    con = connect(ws.warehouse, read_only=True)
    assert con.execute("SELECT run_id, rank, name FROM ml.recommendations ORDER BY rank").fetchall() == [
        ("r1", 1, "spring"), ("r1", 2, "spring")]
    assert con.execute("SELECT count(*) FROM raw_customer.customer_loyalty").fetchone()[0] == 60


def test_setup_force_while_another_process_has_the_warehouse_open_changes_nothing(tmp_path):
    ws = Workspace.from_env(tmp_path / "home")
    setup_synthetic(ws, customers=50, seed=1)
    before = sha(ws.warehouse)
    with held_open(ws.warehouse, read_only=True) as pid:
        result = CliRunner().invoke(app, ["--home", str(ws.home), "setup", "--customers", "60", "--force"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert squeeze(f"{ws.warehouse} is in use by another process (PID {pid}") in squeeze(result.output)
    assert sha(ws.warehouse) == before
    assert not list(ws.home.glob("*.building*"))


def test_csv_round_trip_gives_identical_tables(small_ws, tmp_path):
    export_csv(small_ws, tmp_path / "stage")
    loaded = Workspace.from_env(tmp_path / "loaded")
    result = setup_from_csv(loaded, tmp_path / "stage")
    first, second = tables(small_ws), tables(loaded)
    for name in RAW_TABLES:
        assert first[name].equals(second[name]), name
    assert result.row_counts["ml.customer_features"] == SMALL_CUSTOMERS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Workspace:
    """A 40-customer warehouse: refusal tests load whole files (twice), so their stage is small."""
    ws = Workspace.from_env(tmp_path_factory.mktemp("tiny"))
    setup_synthetic(ws, customers=40, seed=3)
    return ws


@pytest.fixture(scope="module")
def stage(tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stage")
    export_csv(tiny, path)
    return path


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", newline="") as f:
        return f.read().splitlines(keepends=True)


def write_lines(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", newline="") as f:
        f.writelines(lines)


def rewrite(path: Path, edit) -> None:
    """Apply `edit` to the list of lines of a .csv.gz file."""
    write_lines(path, edit(read_lines(path)))


def edit_lines(edit):
    """A stage edit (see MALFORMED) that applies `edit` to the lines of the named file."""
    return lambda path: rewrite(path, edit)


def replace_field(lines, line_no: int, column: int, value: str):
    fields = lines[line_no - 1].rstrip("\n").split(",")
    fields[column] = value
    lines[line_no - 1] = ",".join(fields) + "\n"
    return lines


def split_repeating_line_7(second: Path) -> None:
    """Split customer_loyalty.csv.gz after line 11 into `second`, which starts again at line 7."""
    first = second.with_name("customer_loyalty.csv.gz")
    rows = read_lines(first)
    write_lines(first, rows[:11])
    write_lines(second, rows[:1] + rows[6:])  # its line 2 is the first file's line 7


def squeeze(text: str) -> str:
    return "".join(text.split())  # Rich wraps long lines wherever it likes


ORDER_HEADER = "raw_pos/order_header/order_header.csv.gz"
# case -> (the file or folder the refusal names, an edit of that path in a copy of the stage,
#          the line it names (None: no line), what the reason says)
MALFORMED = {
    "wrong column count": (ORDER_HEADER, edit_lines(lambda ls: ls[:5] + [ls[5].rstrip("\n") + ",extra\n"] + ls[6:]),
                           6, "TOO MANY COLUMNS"),
    "too few columns": (ORDER_HEADER, edit_lines(lambda ls: ls[:5] + [ls[5].rsplit(",", 2)[0] + "\n"] + ls[6:]),
                        6, "MISSING COLUMNS"),
    "bad number": ("raw_pos/order_detail/order_detail.csv.gz",
                   edit_lines(lambda ls: replace_field(ls, 10, 6, "twelve")), 10, "unit_price"),
    "bad date": ("raw_customer/customer_loyalty/customer_loyalty.csv.gz",
                 edit_lines(lambda ls: replace_field(ls, 4, 11, "2021-02-30")), 4, "sign_up_date"),
    "duplicate key": ("raw_pos/menu/menu.csv.gz", edit_lines(lambda ls: ls[:5] + [ls[3]] + ls[5:]),
                      6, "duplicate primary key menu_item_id = "),
    "duplicate key in another file": ("raw_customer/customer_loyalty/customer_loyalty_2.csv.gz", split_repeating_line_7,
                                      2, "duplicate primary key customer_id = "),
    "wrong header": (ORDER_HEADER, edit_lines(lambda ls: [ls[0].replace(",truck_id,", ",trk_id,")] + ls[1:]),
                     1, "column 2 is 'trk_id', expected 'truck_id'"),
    "header too short": (ORDER_HEADER, edit_lines(lambda ls: [ls[0].replace(",order_ts", "")] + ls[1:]),
                         1, "the header has 15 columns, expected 16: column 16 'order_ts' is missing"),
    "header too long": (ORDER_HEADER, edit_lines(lambda ls: [ls[0].rstrip("\n") + ",note\n"] + ls[1:]),
                        1, "the header has 17 columns, expected 16: column 17 'note' is not a column of the table"),
    "empty file": ("raw_pos/order_header/order_header_2.csv", lambda path: path.write_bytes(b""),
                   1, "empty file: a header row is required"),
    "table folder without files": ("raw_pos/truck", lambda path: [f.unlink() for f in path.iterdir()],
                                   None, "no .csv or .csv.gz files for raw_pos.truck"),
    "corrupt gzip": ("raw_pos/order_header/order_header_3.csv.gz", lambda path: path.write_bytes(b"not gzip"),
                     None, "cannot be read as gzip CSV text"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_is_refused_whole_and_nothing_changes(case, stage, tiny, tmp_path):
    relative, edit, line, reason = MALFORMED[case]
    bad = tmp_path / "bad"
    shutil.copytree(stage, bad)
    edit(bad / relative)
    ws = Workspace.from_env(tmp_path / "home")
    ws.ensure()
    shutil.copy(tiny.warehouse, ws.warehouse)  # an existing warehouse, which --force would replace
    before = sha(ws.warehouse)
    with pytest.raises(CsvError) as caught:
        setup_from_csv(ws, bad, force=True)
    error = caught.value
    assert (error.path, error.line) == (bad / relative, line)
    assert reason in error.reason
    # the CLI prints the same refusal (file, line, reason) and exits 1
    result = CliRunner().invoke(app, ["--home", str(ws.home), "setup", "--from-csv", str(bad), "--force"])
    assert result.exit_code == 1
    assert squeeze(f"error: {error}") in squeeze(result.output)
    assert sha(ws.warehouse) == before
    assert not list(ws.home.glob("*.building*"))


def cut_gzip_in_half(path: Path) -> int:
    """Keep the first half of a .csv.gz's bytes; the line its readable text breaks in."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return zlib.decompressobj(wbits=31).decompress(data).count(b"\n") + 1  # wbits 31: a gzip stream


def cut_last_line(path: Path) -> int:
    """Rewrite a .csv.gz (or, for a .csv path, its .csv.gz as plain text) with its last line cut in
    the middle and without its line break; that line's number."""
    lines = read_lines(path.with_name(path.name + ".gz") if path.suffix == ".csv" else path)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    if path.suffix == ".csv":
        path.with_name(path.name + ".gz").unlink()
        path.write_text("".join(lines), newline="")
    else:
        write_lines(path, lines)
    return len(lines)


# case -> (the file cut short, how it is cut (returns the line named), what the reason says)
CUT_SHORT = {
    "gzip cut in the middle": (ORDER_HEADER, cut_gzip_in_half, "cannot be read as gzip CSV text to its end: "
                               "Compressed file ended before the end-of-stream marker was reached"),
    "gzip without its last line break": (ORDER_HEADER, cut_last_line, "the last line is cut off"),
    "plain CSV without its last line break": ("raw_pos/order_detail/order_detail.csv", cut_last_line,
                                              "the last line is cut off"),
}


@pytest.mark.parametrize("case", sorted(CUT_SHORT))
def test_a_file_cut_short_is_refused_whole_and_nothing_changes(case, stage, tiny, tmp_path):
    relative, cut, reason = CUT_SHORT[case]
    bad = tmp_path / "bad"
    shutil.copytree(stage, bad)
    line = cut(bad / relative)
    ws = Workspace.from_env(tmp_path / "home")
    ws.ensure()
    shutil.copy(tiny.warehouse, ws.warehouse)
    before = sha(ws.warehouse)
    result = CliRunner().invoke(app, ["--home", str(ws.home), "setup", "--from-csv", str(bad), "--force"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert squeeze(f"error: {bad / relative}, line {line}: {reason}") in squeeze(result.output)
    assert sha(ws.warehouse) == before
    assert not list(ws.home.glob("*.building*"))


def test_csv_round_trip_keeps_null_apart_from_the_strings_null_and_empty(tiny, tmp_path):
    ws = Workspace.from_env(tmp_path / "home")
    ws.ensure()
    shutil.copy(tiny.warehouse, ws.warehouse)
    names = {1: "NULL", 2: "null", 3: "", 4: None}
    con = connect(ws.warehouse)
    con.executemany("UPDATE raw_customer.customer_loyalty SET first_name = ? WHERE customer_id = ?",
                    [[name, cid] for cid, name in names.items()])
    con.close()
    export_csv(ws, tmp_path / "stage")
    loaded = Workspace.from_env(tmp_path / "loaded")
    setup_from_csv(loaded, tmp_path / "stage")
    con = connect(loaded.warehouse, read_only=True)
    assert dict(con.execute("SELECT customer_id, first_name FROM raw_customer.customer_loyalty "
                            "WHERE customer_id <= 4").fetchall()) == names
    con.close()
    first, second = tables(ws), tables(loaded)
    for name in RAW_TABLES:
        assert first[name].equals(second[name]), name


def test_missing_table_folder_is_refused(stage, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(stage, bad)
    shutil.rmtree(bad / "raw_pos" / "truck")
    ws = Workspace.from_env(tmp_path / "home")
    with pytest.raises(CsvError, match="missing table folder for raw_pos.truck"):
        setup_from_csv(ws, bad)
    assert not ws.warehouse.exists()


def test_setup_json_and_commands_not_built_yet(tmp_path):
    import json
    runner = CliRunner()
    result = runner.invoke(app, ["--home", str(tmp_path), "setup", "--customers", "30", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["row_counts"]["raw_customer.customer_loyalty"] == 30
    assert payload["home"] == str(tmp_path.resolve()) and payload["seconds"] >= 0
