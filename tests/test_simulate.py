"""`tastyrec simulate`: the synthetic world's next days from the planted model, for the same
customers, as stage CSV that the warehouse's CSV reader takes back; the planted campaign effect and
its truth; and the refactor of the generator it needed leaving `setup`'s output unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.warehouse import synthetic
from tastyrec.warehouse.dimensions import build_dimensions
from tastyrec.warehouse.load import CAMPAIGN_TABLES, connect, export_csv, setup_from_csv, setup_synthetic
from tastyrec.warehouse.simulate import REPORT_DAYS, SimulateError, simulate
from test_warehouse import held_open, squeeze

CUSTOMERS, SEED = 400, 11
RUN = "20230101-000000-test"
LIST_ITEMS, LIST_SKIP = 5, 5  # each list: the customer's items 6th to 10th by true propensity

# What `setup` generated for customers=50, seed=3 in chunks of 20, computed before draw_customers,
# poisson_orders, draw_loyalty_lines, walk_in_orders and number_orders were split out of
# generate_chunk (floats rounded to 9 decimals: the last bits of a BLAS product may differ by machine).
BEFORE_REFACTOR = {
    "0:raw_customer.customer_loyalty": "2ad45ec48430f4b9", "0:raw_pos.order_header": "c55039be31cfbace",
    "0:raw_pos.order_detail": "c20d1d73d09552ed", "0:synth.true_propensity": "58103a01a71998ea",
    "1:raw_customer.customer_loyalty": "48115d55e9e8a764", "1:raw_pos.order_header": "1de8f5e27ee88bdf",
    "1:raw_pos.order_detail": "2f49452c29f715aa", "1:synth.true_propensity": "5e5c4d9e82d87210",
    "2:raw_customer.customer_loyalty": "309cb9413b66fab3", "2:raw_pos.order_header": "e08ee80c2c3e693b",
    "2:raw_pos.order_detail": "57a870336e510f94", "2:synth.true_propensity": "5f44912bee695c76",
}


def _digest(table) -> str:
    d = hashlib.sha256()
    for name in table.column_names:
        values = [round(v, 9) if isinstance(v, float) else v for v in table.column(name).to_pylist()]
        d.update(json.dumps([name, values], default=str).encode())
    return d.hexdigest()[:16]


def test_setup_generates_what_it_did_before_the_refactor(monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK_CUSTOMERS", 20)  # three chunks: ids continue across them too
    _, chunks = synthetic.generate(50, 3)
    found = {f"{k}:{table}": _digest(t) for k, frames in enumerate(chunks) for table, t in frames.items()}
    assert found == BEFORE_REFACTOR


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> dict[str, Workspace]:
    """'plain': a synthetic warehouse of 400 customers; 'campaign': the same with a saved campaign in
    the contract's tables (data_end the day after the last order, every fourth customer control, each
    list the customer's top items by true propensity). Tests copy a home before changing its raw tables."""
    plain = Workspace.from_env(tmp_path_factory.mktemp("plain"))
    setup_synthetic(plain, customers=CUSTOMERS, seed=SEED)
    campaign = Workspace.from_env(tmp_path_factory.mktemp("campaign"))
    shutil.copytree(plain.home, campaign.home, dirs_exist_ok=True)
    con = connect(campaign.warehouse)
    for table in ("campaigns", "campaign_groups"):  # as tastyrec.campaigns creates them
        con.execute(CAMPAIGN_TABLES[table])
    con.execute("INSERT INTO ml.campaigns (run_id, description, data_end, holdout, holdout_seed) "
                "SELECT $run, 'test', max(order_ts)::DATE + 1, 0.25, 1 "
                "FROM raw_pos.order_header", {"run": RUN})
    con.execute("INSERT INTO ml.recommendations SELECT $run, TIMESTAMP '2023-01-01', '1', NULL, customer_id, "
                "rank, menu_item_name, propensity, 'test' FROM (SELECT *, row_number() OVER (PARTITION BY customer_id "
                "ORDER BY propensity DESC, menu_item_name) - $skip AS rank FROM synth.true_propensity) "
                "WHERE rank BETWEEN 1 AND $k",
                {"run": RUN, "k": LIST_ITEMS, "skip": LIST_SKIP})
    con.execute("INSERT INTO ml.campaign_groups SELECT $run, customer_id, customer_id % 4 = 0 "
                "FROM raw_customer.customer_loyalty", {"run": RUN})
    con.close()
    return {"plain": plain, "campaign": campaign}


def _read(out: str, table: str) -> pd.DataFrame:
    folder = Path(out).joinpath(*table.split("."))
    return duckdb.sql(f"SELECT * FROM read_csv('{folder}/*.csv.gz', header = true)").df()


def _sha(folder: str) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*.csv.gz"))}


def test_customers_are_regenerated_exactly_as_setup_made_them(homes):
    ws = homes["plain"]
    dims = build_dimensions(SEED)
    customers = synthetic.draw_customers(synthetic.chunk_rng(SEED, 0), dims, 1, CUSTOMERS)
    con = connect(ws.warehouse, read_only=True)
    stored = con.execute("SELECT * FROM raw_customer.customer_loyalty ORDER BY customer_id").df()
    con.close()
    regenerated = customers.table.astype({"sign_up_date": "datetime64[us]", "birthday_date": "datetime64[us]"})
    pd.testing.assert_frame_equal(regenerated, stored.astype({"sign_up_date": "datetime64[us]",
                                                              "birthday_date": "datetime64[us]"}), check_dtype=False)


def test_files_are_read_back_by_the_csv_reader_and_ids_continue(homes, tmp_path):
    ws = homes["plain"]
    con = connect(ws.warehouse, read_only=True)
    max_order, max_detail, last = con.execute(
        "SELECT max(order_id), (SELECT max(order_detail_id) FROM raw_pos.order_detail), max(order_ts)::DATE "
        "FROM raw_pos.order_header").fetchone()
    con.close()
    result = simulate(ws, days=10, out=tmp_path / "sim")
    assert (result.first_day, result.last_day) == (str(last + timedelta(days=1)), str(last + timedelta(days=10)))
    assert result.order_ids == [max_order + 1, max_order + result.orders]
    # the whole stage layout: the warehouse's own export plus the simulated files beside its order files
    stage = tmp_path / "stage"
    export_csv(ws, stage)
    for table, path in result.files.items():
        shutil.copy(path, stage.joinpath(*table.split("."), "simulated.csv.gz"))
    back = Workspace.from_env(tmp_path / "back")
    setup_from_csv(back, stage)
    con = connect(back.warehouse, read_only=True)
    new = con.execute("SELECT count(*), min(order_id), max(order_id), count(*) - count(customer_id), "
                      "min(order_ts)::DATE, max(order_ts)::DATE FROM raw_pos.order_header WHERE order_id > $m",
                      {"m": max_order}).fetchone()
    assert new == (result.orders, max_order + 1, max_order + result.orders, result.walk_in_orders,
                   last + timedelta(days=1), last + timedelta(days=10))
    lines = con.execute("SELECT count(*), min(order_detail_id), max(order_detail_id), count(DISTINCT order_id), "
                        "bool_and(order_id > $m) FROM raw_pos.order_detail WHERE order_detail_id > $d",
                        {"m": max_order, "d": max_detail}).fetchone()
    assert lines == (result.detail_rows, max_detail + 1, max_detail + result.detail_rows, result.orders, True)
    # every simulated order's amount is the sum of its lines, and its truck serves its customer's city
    assert con.execute("SELECT count(*) FROM raw_pos.order_header h JOIN (SELECT order_id, sum(price) AS total "
                       "FROM raw_pos.order_detail GROUP BY order_id) USING (order_id) "
                       "WHERE order_id > $m AND h.order_amount <> total", {"m": max_order}).fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM raw_pos.order_header h JOIN raw_pos.truck t USING (truck_id) "
                       "JOIN raw_customer.customer_loyalty c USING (customer_id) "
                       "WHERE order_id > $m AND t.primary_city <> c.city", {"m": max_order}).fetchone()[0] == 0
    # the text read back is what the generator wrote: NULLs of the stage layout stay NULL
    assert con.execute("SELECT count(*) FROM raw_pos.order_header WHERE order_id > $m AND (discount_id IS NOT NULL "
                       "OR order_channel IS NULL)", {"m": max_order}).fetchone()[0] == 0
    con.close()


def test_same_inputs_give_the_same_files_and_another_seed_other_days(homes, tmp_path):
    ws = homes["plain"]
    one = simulate(ws, days=5, out=tmp_path / "a")
    two = simulate(ws, days=5, out=tmp_path / "b")
    other = simulate(ws, days=5, seed=one.seed + 1, out=tmp_path / "c")
    assert _sha(one.out) == _sha(two.out) and one.orders == two.orders
    assert _read(one.out, "raw_pos.order_header")["order_ts"].tolist() != \
        _read(other.out, "raw_pos.order_header")["order_ts"].tolist()
    default = simulate(ws, days=5)  # under the home's stage folder, named for its days
    assert Path(default.out) == ws.stage / "simulated" / f"{one.first_day}_{one.last_day}"
    assert _sha(default.out) == _sha(one.out)


def test_orders_follow_each_customers_planted_rate(homes, tmp_path):
    """91 simulated days against the warehouse's last 91 and last 365: the same volume of loyalty
    and walk-in orders, and per customer the same pace (customers regenerated with their own rate)."""
    ws = homes["plain"]
    result = simulate(ws, days=91, out=tmp_path / "sim")
    con = connect(ws.warehouse, read_only=True)
    last = con.execute("SELECT max(order_ts)::DATE FROM raw_pos.order_header").fetchone()[0]
    loyalty, walk_in = con.execute(
        "SELECT count(customer_id), count(*) - count(customer_id) FROM raw_pos.order_header "
        "WHERE order_ts >= $since", {"since": last - timedelta(days=90)}).fetchone()
    history = con.execute("SELECT customer_id, count(*) AS before FROM raw_pos.order_header WHERE order_ts >= $since "
                          "AND customer_id IS NOT NULL GROUP BY 1", {"since": last - timedelta(days=364)}).df()
    con.close()
    assert 0.85 < result.loyalty_orders / loyalty < 1.15, (result.loyalty_orders, loyalty)
    assert 0.8 < result.walk_in_orders / walk_in < 1.2, (result.walk_in_orders, walk_in)
    new = _read(result.out, "raw_pos.order_header").dropna(subset=["customer_id"])
    per = new.groupby("customer_id").size().rename("after").reset_index()
    both = history.merge(per, on="customer_id", how="outer").fillna(0)
    assert both["before"].corr(both["after"], method="spearman") > 0.3


def _list_buyers(ws: Workspace, out: str, days: int) -> pd.DataFrame:
    """Per campaign customer: their group and how many items of their own list they bought in the
    simulated orders of the first `days` days after data_end."""
    header, detail = _read(out, "raw_pos.order_header"), _read(out, "raw_pos.order_detail")
    con = connect(ws.warehouse, read_only=True)
    data_end = con.execute("SELECT data_end FROM ml.campaigns WHERE run_id = $run", {"run": RUN}).fetchone()[0]
    lists = con.execute("SELECT r.customer_id, m.menu_item_id FROM ml.recommendations r JOIN raw_pos.menu m "
                        "USING (menu_item_name) WHERE run_id = $run", {"run": RUN}).df()
    groups = con.execute("SELECT customer_id, control FROM ml.campaign_groups WHERE run_id = $run", {"run": RUN}).df()
    con.close()
    window = header[header["order_ts"] < pd.Timestamp(data_end + timedelta(days=days))]
    bought = window.merge(detail, on="order_id")[["customer_id", "menu_item_id"]].drop_duplicates()
    hits = bought.merge(lists, on=["customer_id", "menu_item_id"]).groupby("customer_id").size().rename("items")
    return groups.merge(hits, on="customer_id", how="left").fillna({"items": 0})


def _truth(ws: Workspace, days: int) -> tuple[float, float]:
    con = connect(ws.warehouse, read_only=True)
    row = con.execute("SELECT planted_share_uplift, lift FROM synth.campaign_effect WHERE run_id = $run AND days = $d",
                      {"run": RUN, "d": days}).fetchone()
    con.close()
    return row


def test_a_planted_lift_makes_treated_customers_buy_their_list_more_as_the_truth_says(homes, tmp_path):
    ws = homes["campaign"]
    rises, flat = [], None
    for seed in (1, 2):  # two draws of the same days, for a narrower check
        lifted = simulate(ws, days=REPORT_DAYS, lift=3.0, seed=seed, out=tmp_path / f"lift{seed}")
        planted, lift = _truth(ws, REPORT_DAYS)
        assert lift == 3.0 and planted > 0.05
        assert [c["days"] for c in lifted.campaigns] == [REPORT_DAYS]
        flat = simulate(ws, days=REPORT_DAYS, lift=0.0, seed=seed, out=tmp_path / f"flat{seed}")
        assert _truth(ws, REPORT_DAYS) == (0.0, 0.0)
        a, b = _list_buyers(ws, lifted.out, REPORT_DAYS), _list_buyers(ws, flat.out, REPORT_DAYS)
        # the same random numbers drive both runs: control customers' days are the very same ...
        assert a.loc[a.control, "items"].tolist() == b.loc[b.control, "items"].tolist()
        # ... and treated customers buy more of their list
        treated_a, treated_b = a.loc[~a.control], b.loc[~b.control]
        assert treated_a["items"].sum() > treated_b["items"].sum()
        rises += ((treated_a["items"] > 0).astype(int).values - (treated_b["items"] > 0).astype(int).values).tolist()
    # the share that bought any of their list rose by the planted uplift (paired over the same
    # customers and random numbers: the noise is that of the share who switched)
    rise, noise = np.mean(rises), np.std(rises) / np.sqrt(len(rises))
    assert abs(rise - planted) < 3.5 * noise, (rise, planted, noise)
    # without a lift, treated and control differ by chance only
    gap = (treated_b["items"] > 0).mean() - (b.loc[b.control, "items"] > 0).mean()
    share = (b["items"] > 0).mean()
    assert abs(gap) < 4 * np.sqrt(share * (1 - share) * (1 / b.control.sum() + 1 / (~b.control).sum())), gap


def test_lift_zero_plants_nothing(homes, tmp_path):
    with_campaign = simulate(homes["campaign"], days=REPORT_DAYS, lift=0.0, out=tmp_path / "a")
    without = simulate(homes["plain"], days=REPORT_DAYS, lift=0.0, out=tmp_path / "b")
    assert _sha(with_campaign.out) == _sha(without.out)
    assert without.campaigns == []


def test_in_order_probability_is_the_generators_nested_logit():
    """The truth's formula against orders drawn by the generator itself, for a few customers."""
    dims = build_dimensions(SEED)
    customers = synthetic.draw_customers(synthetic.chunk_rng(SEED, 0), dims, 1, 4)
    rng = np.random.default_rng(0)
    expu = np.exp(customers.base - customers.base.max(axis=1, keepdims=True))
    listed = np.zeros_like(expu, dtype=bool)
    for row in range(4):  # three items each among those the customer can buy
        listed[row, rng.choice(np.flatnonzero(expu[row] > 0), 3, replace=False)] = True
    formula = synthetic.in_order_probability(expu, listed, dims)
    draws = 40_000
    _, lines = synthetic._draw_orders(rng, dims, np.repeat(expu, draws, axis=0), synthetic.brand_matrix(dims))
    hit = np.take_along_axis(np.repeat(listed, draws, axis=0), np.maximum(lines, 0), axis=1) & (lines >= 0)
    observed = hit.any(axis=1).reshape(4, draws).mean(axis=1)
    assert np.abs(observed - formula).max() < 0.01, (observed, formula)
    # a single listed item is synth.true_propensity's per-order probability p_b (1 - (1 - q) exp(-EXTRA_LINES q))
    item = expu.argmax(axis=1)
    one = np.zeros_like(listed)
    one[np.arange(4), item] = True
    brand_w = expu @ synthetic.brand_matrix(dims)
    p_brand = brand_w[np.arange(4), dims.item_brand[item]] / expu.sum(axis=1)
    q = expu[np.arange(4), item] / brand_w[np.arange(4), dims.item_brand[item]]
    np.testing.assert_allclose(synthetic.in_order_probability(expu, one, dims),
                               p_brand * (1 - (1 - q) * np.exp(-synthetic.EXTRA_LINES * q)), rtol=1e-9)


def test_refusals_are_clear_and_write_nothing(homes, tmp_path):
    ws = homes["plain"]
    with pytest.raises(SimulateError, match="--days must be at least 1"):
        simulate(ws, days=0, out=tmp_path / "zero")
    assert not (tmp_path / "zero").exists()
    other = Workspace.from_env(tmp_path / "csv")
    shutil.copytree(ws.home, other.home)
    con = connect(other.warehouse)
    con.execute("DROP TABLE synth.info")
    con.close()
    with pytest.raises(SimulateError, match="simulate works on the synthetic data only"):
        simulate(other, days=3, out=tmp_path / "x")
    busy = tmp_path / "busy"
    (busy / "raw_pos" / "order_header").mkdir(parents=True)
    (busy / "raw_pos" / "order_header" / "old.csv.gz").write_bytes(b"")
    with pytest.raises(SimulateError, match="already holds other CSV files"):
        simulate(ws, days=3, out=busy)
    with held_open(ws.warehouse, read_only=True) as pid:
        result = CliRunner().invoke(app, ["--home", str(ws.home), "simulate", "--days", "3",
                                          "--out", str(tmp_path / "y")])
    assert result.exit_code == 1, result.output
    assert squeeze(f"{ws.warehouse} is in use by another process (PID {pid}") in squeeze(result.output)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_prints_one_json_object_and_a_summary(homes, tmp_path):
    ws = homes["campaign"]
    result = CliRunner().invoke(app, ["--home", str(ws.home), "simulate", "--days", "3", "--out",
                                      str(tmp_path / "j"), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["days"] == 3 and found["lift"] == 1.0 and set(found["files"]) == {"raw_pos.order_header",
                                                                                 "raw_pos.order_detail"}
    assert [c["days"] for c in found["campaigns"]] == [3, REPORT_DAYS]
    text = CliRunner().invoke(app, ["--home", str(ws.home), "simulate", "--days", "3", "--out", str(tmp_path / "t")])
    assert text.exit_code == 0, text.output
    assert f"{found['orders']:,} orders" in text.stdout and "next: tastyrec ingest --from-csv" in text.stdout


def test_ingest_takes_the_files_and_a_second_simulate_continues_from_the_new_state(homes, tmp_path):
    from tastyrec.warehouse.ingest import ingest_csv
    from tastyrec.warehouse.simulate import _counts

    ws = Workspace.from_env(tmp_path / "home")
    shutil.copytree(homes["plain"].home, ws.home)
    dims = build_dimensions(SEED)
    index = np.full(int(dims.item_ids.max()) + 1, -1)
    index[dims.item_ids] = np.arange(len(dims.item_ids))
    con = connect(ws.warehouse, read_only=True)
    before = _counts(con, index, 1, CUSTOMERS, len(dims.item_ids))
    con.close()
    first = simulate(ws, days=7, out=tmp_path / "week1")
    ingested = ingest_csv(ws, Path(first.out))
    assert ingested.tables["raw_pos.order_header"]["added"] == first.orders
    assert ingested.tables["raw_pos.order_detail"]["added"] == first.detail_rows
    # the state simulate reads now holds the first week: each customer's orders with each item grew by them
    header, detail = _read(first.out, "raw_pos.order_header"), _read(first.out, "raw_pos.order_detail")
    lines = header.dropna(subset=["customer_id"]).merge(detail, on="order_id")
    lines = lines[lines["menu_item_id"].isin(dims.item_ids)]
    grown = np.zeros_like(before)
    np.add.at(grown, (lines["customer_id"].astype(int) - 1, index[lines["menu_item_id"].astype(int)]), 1)
    con = connect(ws.warehouse, read_only=True)
    after = _counts(con, index, 1, CUSTOMERS, len(dims.item_ids))
    con.close()
    np.testing.assert_array_equal(after, before + grown)
    second = simulate(ws, days=7, out=tmp_path / "week2")
    assert second.first_day == str(pd.Timestamp(first.last_day).date() + timedelta(days=1))
    assert second.order_ids[0] == first.order_ids[1] + 1
    again = ingest_csv(ws, Path(second.out))
    assert again.tables["raw_pos.order_header"]["added"] == second.orders
