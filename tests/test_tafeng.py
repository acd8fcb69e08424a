"""bench/tafeng.py's mapping of Ta-Feng rows onto the stage layout, loaded by the real loader.

The rows are written here in Ta-Feng's own format (UTF-8 with BOM, every field quoted, m/d/yyyy
dates); nothing is downloaded.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tastyrec.config import Workspace
from tastyrec.sqlfiles import run_sql
from tastyrec.warehouse.load import connect, setup_from_csv

BENCH = Path(__file__).parents[1] / "bench" / "tafeng.py"

# product -> subclass: brands (4 digits) 1101, 1102, 5002; categories (2 digits) 11, 50
MAPPED = {"4710000000001": "110101", "4710000000002": "110205", "4710000000003": "500201",
          "4710000000004": "110107"}
RARE = "4719999999999"  # bought on one customer-day only: outside the top 4
CUSTOMERS = {"00000101": ("45-49", "115"), "00000102": ("<25", "221"), "00000103": ("", "Unknown"),
             "00000104": (">65", "115"), "00000105": ("30-34", "Others"), "00000106": ("35-39", "221")}


@pytest.fixture(scope="module")
def tafeng():
    spec = importlib.util.spec_from_file_location("bench_tafeng", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def ta_feng_rows() -> list[tuple[str, ...]]:
    """A few hundred rows: customer 101's first day (Nov 3) by hand, customer 102's day with only
    the rare product (Nov 5), then seeded random days from Nov 10 on (mapped products only)."""
    def row(day: str, customer: str, product: str, amount: int, asset: int, sales: int) -> tuple[str, ...]:
        age, pin = CUSTOMERS[customer]
        subclass = MAPPED.get(product, "130301")
        return day, customer, age, pin, subclass, product, str(amount), str(asset), str(sales)

    rows = [row("11/3/2000", "00000101", "4710000000001", 2, 40, 60),
            row("11/3/2000", "00000101", "4710000000001", 1, 20, 30),  # the same product again that day
            row("11/3/2000", "00000101", "4710000000003", 1, 80, 99),
            row("11/5/2000", "00000102", RARE, 3, 10, 45)]
    rng = np.random.default_rng(0)
    products = list(MAPPED)
    for customer in CUSTOMERS:
        for day in rng.choice(np.arange(10, 120), size=12, replace=False):
            when = date.fromordinal(date(2000, 11, 1).toordinal() + int(day) - 1)
            for product in rng.choice(products, size=rng.integers(2, 5), replace=True):
                amount = int(rng.integers(1, 4))
                unit = 10 * (products.index(product) + 1)
                rows.append(row(f"{when.month}/{when.day}/{when.year}", customer, str(product), amount,
                                amount * (unit - 2), amount * unit))
    return rows


@pytest.fixture(scope="module")
def warehouse(tafeng, tmp_path_factory):
    """(the rows, the mapping's summary, a read-only connection to the loaded warehouse)."""
    tmp = tmp_path_factory.mktemp("tafeng")
    rows = ta_feng_rows()
    source = tmp / "ta_feng_all_months_merged.csv"
    with open(source, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(tafeng.RAW_COLUMNS)
        writer.writerows(rows)
    summary = tafeng.map_tafeng(tafeng.read_csv(source), tmp / "stage", items=4, customers=0)
    ws = Workspace.from_env(tmp / "home")
    setup_from_csv(ws, tmp / "stage")
    con = connect(ws.warehouse, read_only=True)
    yield rows, summary, con
    con.close()


def scalar(con, sql: str):
    return con.execute(sql).fetchone()[0]


def test_counts_follow_customer_days_and_mapped_products(warehouse) -> None:
    rows, summary, con = warehouse
    customer_days = {(r[0], r[1]) for r in rows}
    mapped_lines = {(r[0], r[1], r[5]) for r in rows if r[5] in MAPPED}
    assert len(rows) > 200
    assert scalar(con, "SELECT count(*) FROM raw_pos.order_header") == len(customer_days) == summary.orders
    assert scalar(con, "SELECT count(*) FROM raw_pos.order_detail") == len(mapped_lines) == summary.lines
    assert summary.orders_without_lines == 1  # customer 102's day with only the rare product
    assert scalar(con, "SELECT count(*) FROM raw_pos.menu") == 4
    assert scalar(con, "SELECT count(*) FROM raw_customer.customer_loyalty") == len(CUSTOMERS)
    assert (summary.brands, summary.categories, summary.cities) == (3, 2, 4)
    assert scalar(con, "SELECT count(*) FROM raw_pos.truck") == 3 * 4
    assert scalar(con, "SELECT count(DISTINCT (menu_type_id, primary_city)) FROM raw_pos.truck") == 3 * 4
    assert (summary.first_day, summary.last_day) == ("2000-11-03", max(
        date(int(y), int(m), int(d)) for m, d, y in (r[0].split("/") for r in rows)).isoformat())


def test_a_known_customer_and_order(warehouse) -> None:
    _, _, con = warehouse
    customer = con.execute("SELECT city, country, postal_code, birthday_date, sign_up_date, gender "
                           "FROM raw_customer.customer_loyalty WHERE customer_id = 101").fetchone()
    # 45-49: 47.5 years before 2001-01-01
    assert customer == ("Area 115", "Taiwan", "115", date(1953, 7, 1), date(2000, 11, 3), None)
    assert con.execute("SELECT city, postal_code, birthday_date FROM raw_customer.customer_loyalty "
                       "WHERE customer_id = 103").fetchone() == ("Unknown area", None, None)
    assert scalar(con, "SELECT birthday_date FROM raw_customer.customer_loyalty WHERE customer_id = 102") \
        == date(1978, 7, 1)  # "<25" read as 20-24
    order = con.execute("SELECT order_id, order_total, order_amount, order_ts FROM raw_pos.order_header "
                        "WHERE customer_id = 101 AND order_ts::DATE = DATE '2000-11-03'").fetchone()
    assert order[1:3] == (Decimal(189), Decimal(189)) and str(order[3]) == "2000-11-03 12:00:00"
    lines = con.execute("SELECT m.menu_item_name, d.quantity, d.price, d.unit_price, d.line_number "
                        "FROM raw_pos.order_detail d JOIN raw_pos.menu m USING (menu_item_id) "
                        "WHERE d.order_id = ? ORDER BY m.menu_item_name", [order[0]]).fetchall()
    assert [line[:4] for line in lines] == [("Product 4710000000001", 3, 90, 30), ("Product 4710000000003", 1, 99, 99)]
    assert sorted(line[4] for line in lines) == [1, 2]
    # the order without lines still carries its spend
    assert scalar(con, "SELECT order_total FROM raw_pos.order_header WHERE customer_id = 102 "
                       "AND order_ts::DATE = DATE '2000-11-05'") == 45


def test_menu_groups_and_prices(warehouse) -> None:
    _, _, con = warehouse
    menu = {r[0]: r[1:] for r in con.execute(
        "SELECT menu_item_name, truck_brand_name, menu_type, item_category, item_subcategory, "
        "sale_price_usd FROM raw_pos.menu").fetchall()}
    assert f"Product {RARE}" not in menu
    assert menu["Product 4710000000002"] == ("Class 1102", "Class 1102", "Department 11", "Subclass 110205", 20)
    assert menu["Product 4710000000004"][0] == menu["Product 4710000000001"][0] == "Class 1101"
    assert scalar(con, "SELECT count(*) FROM raw_pos.menu WHERE item_category = 'Beverage'") == 0
    assert scalar(con, "SELECT count(DISTINCT menu_type_id) FROM raw_pos.menu") == 3


def test_every_customer_gets_every_item_as_a_candidate(warehouse) -> None:
    _, _, con = warehouse
    candidates = run_sql(con, "tastyrec.features", "candidates.sql").df()
    per_customer = candidates.merge(con.execute("SELECT customer_id, city FROM raw_customer.customer_loyalty").df(),
                                    on="city").groupby("customer_id")["menu_item_name"].nunique()
    assert len(per_customer) == len(CUSTOMERS) and (per_customer == 4).all()
    # and every order line joins through truck, franchise and location in the seed's view
    assert scalar(con, "SELECT count(*) FROM harmonized.orders_v") == scalar(
        con, "SELECT count(*) FROM raw_pos.order_detail")
