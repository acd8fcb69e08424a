"""Each recommended item's reason, checked against the warehouse: purchases before the serving
snapshot, counted with SQL of their own (not the features the engine reads)."""

from __future__ import annotations

import re

import pytest

from tastyrec import reasons
from tastyrec.recommend import Engine, Filters
from tastyrec.warehouse.load import connect

BOUGHT = re.compile(r"bought it (once|(\d+) times), last (.+)")
WITH = re.compile(r"often bought with your (.+)")
CITY = re.compile(r"bought by (under 1%|over 99%|\d+%) of customers in (.+)")
# every loyalty customer's food items before the snapshot: one row per customer, item and order
LINES = """
    SELECT DISTINCT oh.customer_id, oh.order_id, m.menu_item_name, date_diff('day', oh.order_ts, $as_of) AS age
    FROM raw_pos.order_header oh JOIN raw_pos.order_detail od USING (order_id)
    JOIN raw_pos.menu m USING (menu_item_id)
    WHERE oh.customer_id IS NOT NULL AND oh.order_ts < $as_of AND m.item_category <> 'Beverage'"""


@pytest.fixture(scope="module")
def engine(trained_ws) -> Engine:
    return Engine(trained_ws)


@pytest.fixture(scope="module")
def warehouse(trained_ws, engine):
    """(lines: customer, order, item, age; customers: customer_id, city), as of the snapshot."""
    con = connect(trained_ws.warehouse, read_only=True)
    try:
        as_of = engine.online.as_of.to_pydatetime().replace(tzinfo=None)
        lines = con.execute(LINES, {"as_of": as_of}).df()
        customers = con.execute("SELECT customer_id, city FROM raw_customer.customer_loyalty").df()
    finally:
        con.close()
    return lines, customers


def test_every_reason_is_true_to_the_warehouse(engine, warehouse, monkeypatch) -> None:
    """Both rankings (upsell and cross-sell), every customer, top 10: each reason is one of the
    three kinds, each kind occurs, and each says what SQL on the warehouse finds."""
    monkeypatch.setattr(reasons, "MIN_TOGETHER", 5)  # 400 customers: fewer pairs reach the default
    engine.reload()  # item statistics computed afresh with that threshold
    lines, customers = warehouse
    items = set(engine.online.items)
    bags = lines[lines["menu_item_name"].isin(items)].groupby("customer_id")["menu_item_name"].agg(set).to_dict()
    city = dict(zip(customers["customer_id"], customers["city"]))
    everyone = len(customers)
    buyers = {item: {c for c, bag in bags.items() if item in bag} for item in items}
    kinds = set()
    for flag in (False, True):
        result = engine.recommend(filters=Filters(items_not_ordered=flag), top_k=10)
        for c in result.customers:
            mine = lines[lines["customer_id"] == c.customer_id]
            for r in c.recommendations:
                item, reason = r["menu_item_name"], r["reason"]
                if m := BOUGHT.fullmatch(reason):
                    orders = mine[mine["menu_item_name"] == item]
                    assert len(orders) == (1 if m[1] == "once" else int(m[2])), (c.customer_id, reason)
                    assert m[3] == reasons.ago(orders["age"].min()), (c.customer_id, reason)
                    kinds.add("bought")
                    continue
                assert item not in bags.get(c.customer_id, set()), (c.customer_id, reason)
                if m := WITH.fullmatch(reason):
                    other = m[1]
                    assert other in bags[c.customer_id]  # the customer's own item
                    both = len(buyers[other] & buyers[item])
                    assert both >= reasons.MIN_TOGETHER
                    assert both / len(buyers[other]) >= reasons.MIN_LIFT * len(buyers[item]) / everyone
                    kinds.add("with")
                elif m := CITY.fullmatch(reason):
                    assert m[2] == city[c.customer_id]
                    there = {cid for cid, place in city.items() if place == m[2]}
                    assert m[1] == reasons.percent(len(buyers[item] & there) / len(there)), (c.customer_id, reason)
                    kinds.add("city")
                else:
                    pytest.fail(f"an unknown kind of reason: {reason!r}")
    assert kinds == {"bought", "with", "city"}


@pytest.mark.parametrize(("days", "said"), [(0, "on the last day"), (1, "yesterday"), (9, "9 days ago"),
                                            (21, "3 weeks ago"), (95, "3 months ago")])
def test_days_are_said_as_people_say_them(days, said) -> None:
    assert reasons.ago(days) == said
