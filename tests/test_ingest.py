"""`tastyrec ingest`: new orders and loyalty customers appended to a warehouse, all or nothing; then
`features` moves the serving snapshot forward and a running service picks it up on /admin/reload."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from servers import free_port, stop, wait_until
from test_warehouse import read_lines, write_lines
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.warehouse.fingerprint import warehouse_fingerprint
from tastyrec.warehouse.ingest import KEYS, IngestResult, ingest_csv
from tastyrec.warehouse.load import CsvError, WarehouseError, connect, table_columns

HEADER = "raw_pos/order_header/order_header.csv.gz"
DETAIL = "raw_pos/order_detail/order_detail.csv.gz"
LOYALTY = "raw_customer/customer_loyalty/customer_loyalty.csv.gz"


# ---- a delivery: orders of a few customers copied forward in time, with new ids -----------------
def write_delivery(ws: Workspace, folder: Path, customers: list[int], days: int = 28,
                   new_customer: bool = False, changed_customer: int | None = None) -> dict:
    """Stage CSV (the layout and quoting of export_csv) in `folder`: the orders of `customers` in
    the last `days` days of the warehouse's data, moved `days` days later with order and detail ids
    after the warehouse's largest. new_customer: a loyalty customer with the next id (a copy of the
    first customer's row, renamed) who owns a copy of that customer's last order; changed_customer:
    that customer's row with a new e-mail. Returns the ids written and the new data end."""
    con = connect(ws.warehouse, read_only=True)
    try:
        last, top_order, top_detail, top_customer = con.execute(
            "SELECT (SELECT max(order_ts) FROM raw_pos.order_header), (SELECT max(order_id) FROM raw_pos.order_header), "
            "(SELECT max(order_detail_id) FROM raw_pos.order_detail), "
            "(SELECT max(customer_id) FROM raw_customer.customer_loyalty)").fetchone()
        new_id = top_customer + 1
        con.execute("CREATE TEMP TABLE picked AS SELECT * FROM raw_pos.order_header "
                    "WHERE list_contains($customers, customer_id) AND order_ts > $since",
                    {"customers": customers, "since": last - timedelta(days=days)})
        if new_customer:  # the first customer's last order, once more, for the newcomer
            con.execute("INSERT INTO picked SELECT * REPLACE ($new_id AS customer_id) FROM raw_pos.order_header "
                        "WHERE customer_id = $first ORDER BY order_ts DESC LIMIT 1",
                        {"first": customers[0], "new_id": new_id})
        con.execute("CREATE TEMP TABLE ids AS SELECT order_id AS old, customer_id, "
                    "$top_order + row_number() OVER (ORDER BY order_ts, order_id, customer_id) AS new FROM picked",
                    {"top_order": top_order})
        con.execute("CREATE TEMP TABLE header AS SELECT p.* REPLACE (i.new AS order_id, "
                    "p.order_ts + to_days($days) AS order_ts) FROM picked p "
                    "JOIN ids i ON i.old = p.order_id AND i.customer_id = p.customer_id ORDER BY i.new", {"days": days})
        con.execute("CREATE TEMP TABLE detail AS SELECT d.* REPLACE ($top_detail + row_number() OVER "
                    "(ORDER BY i.new, d.line_number) AS order_detail_id, i.new AS order_id) FROM raw_pos.order_detail d "
                    "JOIN ids i ON i.old = d.order_id ORDER BY i.new, d.line_number", {"top_detail": top_detail})
        tables = {"raw_pos.order_header": "header", "raw_pos.order_detail": "detail"}
        if new_customer or changed_customer is not None:
            con.execute("CREATE TEMP TABLE loyalty AS "
                        "SELECT * REPLACE ($new_id AS customer_id, 'Newcomer' AS first_name) "
                        "FROM raw_customer.customer_loyalty WHERE $new AND customer_id = $first UNION ALL "
                        "SELECT * REPLACE ('moved-' || customer_id || '@example.com' AS e_mail) "
                        "FROM raw_customer.customer_loyalty WHERE customer_id = $changed",
                        {"new_id": new_id, "new": new_customer, "first": customers[0],
                         "changed": changed_customer})
            tables["raw_customer.customer_loyalty"] = "loyalty"
        for table, temp in tables.items():
            path = folder.joinpath(*table.split("."), f"{table.split('.')[1]}.csv.gz")
            path.parent.mkdir(parents=True, exist_ok=True)
            text = [f'"{c}"' for c, t in table_columns(con, table) if t in ("VARCHAR", "JSON")]
            con.execute(f"COPY (SELECT * FROM {temp}) TO $path (FORMAT csv, HEADER true, COMPRESSION gzip, "
                        f"FORCE_QUOTE ({', '.join(text)}))", {"path": str(path)})
        orders = [o for (o,) in con.execute("SELECT order_id FROM header ORDER BY 1").fetchall()]
        lines = con.execute("SELECT count(*) FROM detail").fetchone()[0]
        end = con.execute("SELECT max(order_ts)::DATE + 1 FROM header").fetchone()[0]
    finally:
        con.close()
    return {"orders": orders, "lines": lines, "data_end": end, "new_customer": top_customer + 1 if new_customer else None}


def state(ws: Workspace) -> tuple[dict, str]:
    """What a test can tell of a warehouse: the raw tables' rows and the fingerprint's hash."""
    fingerprint = warehouse_fingerprint(ws)
    return {t: v["rows"] for t, v in fingerprint["tables"].items()}, fingerprint["hash"]


def copy_warehouse(src: Workspace, dst: Path) -> Workspace:
    ws = Workspace.from_env(dst)
    ws.ensure()
    shutil.copy(src.warehouse, ws.warehouse)
    return ws


def latest_customers(ws: Workspace, n: int) -> list[int]:
    """The n loyalty customers with the most recent orders: copied forward, they move the data's end."""
    con = connect(ws.warehouse, read_only=True)
    try:
        return [c for (c,) in con.execute("SELECT customer_id FROM raw_pos.order_header WHERE customer_id IS NOT NULL "
                                          "GROUP BY 1 ORDER BY max(order_ts) DESC, 1 LIMIT ?", [n]).fetchall()]
    finally:
        con.close()


def set_field(path: Path, line: int, column: int, value: str) -> None:
    """Line `line` (1: the header) of a .csv.gz with field `column` (0-based) set to `value`."""
    lines = read_lines(path)
    fields = lines[line - 1].rstrip("\n").split(",")
    fields[column] = value
    lines[line - 1] = ",".join(fields) + "\n"
    write_lines(path, lines)


def field(path: Path, line: int, column: int) -> str:
    return read_lines(path)[line - 1].rstrip("\n").split(",")[column]


def squeeze(text: str) -> str:
    return "".join(text.split())  # Rich wraps long lines wherever it likes


# ---- appending, re-delivering ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(small_ws, tmp_path_factory) -> Workspace:
    """A copy of the 1,500-customer warehouse, never ingested into: each test copies it again."""
    return copy_warehouse(small_ws, tmp_path_factory.mktemp("ingest-base"))


@pytest.fixture(scope="module")
def delivered(base, tmp_path_factory) -> tuple[Path, dict]:
    """Four weeks of five customers' orders, a new loyalty customer with an order, one changed."""
    folder = tmp_path_factory.mktemp("delivery")
    customers = latest_customers(base, 5)
    return folder, write_delivery(base, folder, customers, new_customer=True, changed_customer=customers[1])


def test_ingest_appends_orders_and_customers_and_moves_the_data_end(base, delivered, tmp_path) -> None:
    folder, wrote = delivered
    ws = copy_warehouse(base, tmp_path / "home")
    rows_before, hash_before = state(ws)
    result = ingest_csv(ws, folder)
    n = len(wrote["orders"])
    assert result.tables == {
        "raw_customer.customer_loyalty": {"rows": 2, "added": 1, "already_there": 0, "changed": 1},
        "raw_pos.order_header": {"rows": n, "added": n, "already_there": 0, "changed": 0},
        "raw_pos.order_detail": {"rows": wrote["lines"], "added": wrote["lines"], "already_there": 0, "changed": 0}}
    assert result.data_end == wrote["data_end"].isoformat() > result.data_end_before
    rows, hash_after = state(ws)
    assert rows["raw_pos.order_header"] == rows_before["raw_pos.order_header"] + n
    assert rows["raw_pos.order_detail"] == rows_before["raw_pos.order_detail"] + wrote["lines"]
    assert rows["raw_customer.customer_loyalty"] == rows_before["raw_customer.customer_loyalty"] + 1
    assert result.row_counts == {t: rows[t] for t in KEYS}
    assert hash_after != hash_before  # features of before are refused for training (current_features)
    con = connect(ws.warehouse, read_only=True)
    try:
        new = wrote["new_customer"]
        assert con.execute("SELECT first_name FROM raw_customer.customer_loyalty WHERE customer_id = ?",
                           [new]).fetchone() == ("Newcomer",)
        assert con.execute("SELECT count(*) FROM raw_pos.order_header WHERE customer_id = ?", [new]).fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM ml.customer_features WHERE customer_id = ?", [new]).fetchone() == (1,)
        changed = latest_customers(base, 5)[1]
        assert con.execute("SELECT e_mail FROM raw_customer.customer_loyalty WHERE customer_id = ?",
                           [changed]).fetchone() == (f"moved-{changed}@example.com",)
        # the orders_v view sees every new order line (trucks, locations and items are known ones)
        assert con.execute("SELECT count(*) FROM harmonized.orders_v WHERE list_contains(?, order_id)",
                           [wrote["orders"]]).fetchone() == (wrote["lines"],)
    finally:
        con.close()


def test_delivering_the_same_files_again_changes_nothing(base, delivered, tmp_path) -> None:
    folder, wrote = delivered
    ws = copy_warehouse(base, tmp_path / "home")
    first = ingest_csv(ws, folder)
    after_first = state(ws)
    before_bytes = ws.warehouse.read_bytes()
    done = CliRunner().invoke(app, ["--home", str(ws.home), "ingest", "--from-csv", str(folder), "--json"])
    assert done.exit_code == 0, done.output
    again = IngestResult(**json.loads(done.stdout))  # one JSON object
    assert {t: v["already_there"] for t, v in again.tables.items()} == {t: v["rows"] for t, v in first.tables.items()}
    assert all(v["added"] == v["changed"] == 0 for v in again.tables.values())
    assert again.data_end == again.data_end_before == first.data_end
    assert state(ws) == after_first and ws.warehouse.read_bytes() == before_bytes
    plain = CliRunner().invoke(app, ["--home", str(ws.home), "ingest", "--from-csv", str(folder)])
    assert plain.exit_code == 0 and "nothingnew:thewarehouseisunchanged" in squeeze(plain.output), plain.output


# ---- refusals: the warehouse unchanged -------------------------------------------------------------
def give_an_existing_id(column: int, table: str):
    """An edit that gives line 2's row the smallest id of `table` in the warehouse (other content)."""
    def edit(path: Path, ws: Workspace) -> tuple[int, str]:
        key = KEYS[table]
        con = connect(ws.warehouse, read_only=True)
        existing = con.execute(f"SELECT min({key}) FROM {table}").fetchone()[0]
        con.close()
        set_field(path, 2, column, str(existing))
        return 2, f"{key} {existing} is already in the warehouse with other content"
    return edit


def change_a_delivered_order(path: Path, ws: Workspace) -> tuple[int, str]:
    """Deliver the orders once, then again with line 3's total changed: a conflict with itself."""
    ingest_csv(ws, path.parents[2])
    order = field(path, 3, 0)
    set_field(path, 3, 14, "999.0000")
    return 3, f"order_id {order} is already in the warehouse with other content (column order_total:"


def orphan_line(path: Path, ws: Workspace) -> tuple[int, str]:
    set_field(path, 4, 1, "987654321")
    return 4, f"order_id 987654321 is in neither the warehouse nor this delivery (raw_pos.order_header), " \
              f"for order_detail_id {field(path, 4, 0)}"


def line_added_to_an_old_order(path: Path, ws: Workspace) -> tuple[int, str]:
    """Line 4 (a new order_detail_id) moved onto the warehouse's first order: it would rewrite it."""
    con = connect(ws.warehouse, read_only=True)
    first = con.execute("SELECT min(order_id) FROM raw_pos.order_header").fetchone()[0]
    con.close()
    set_field(path, 4, 1, str(first))
    return 4, f"order_detail_id {field(path, 4, 0)} is a new line of order {first}, which is already in the warehouse"


def unknown_customer(path: Path, ws: Workspace) -> tuple[int, str]:
    set_field(path, 5, 3, "424242")
    return 5, f"customer_id 424242 is in neither the warehouse nor this delivery (raw_customer.customer_loyalty), " \
              f"for order_id {field(path, 5, 0)}"


def repeated_order(path: Path, ws: Workspace) -> tuple[int, str]:
    lines = read_lines(path)
    write_lines(path, lines[:6] + [lines[2]] + lines[6:])
    return 7, f"order_id {field(path, 3, 0)} appears twice in this delivery (first at {path}, line 3)"


def bad_value(path: Path, ws: Workspace) -> tuple[int, str]:
    set_field(path, 6, 15, "2023-02-30 10:00:00")
    return 6, "CAST in column order_ts"


def truncated_gzip(path: Path, ws: Workspace) -> tuple[int, str]:
    """The first half of the file's bytes; its readable text breaks in the line named."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return zlib.decompressobj(wbits=31).decompress(data).count(b"\n") + 1, \
        "cannot be read as gzip CSV text to its end"


# case -> (the file the refusal names, the edit (returns the line named and what the reason says))
REFUSED = {
    "order id there with other content": (HEADER, give_an_existing_id(0, "raw_pos.order_header")),
    "order line id there with other content": (DETAIL, give_an_existing_id(0, "raw_pos.order_detail")),
    "the same order delivered changed": (HEADER, change_a_delivered_order),
    "order line of no order": (DETAIL, orphan_line),
    "a new line on an order already there": (DETAIL, line_added_to_an_old_order),
    "order of an unknown customer": (HEADER, unknown_customer),
    "an order twice in one delivery": (HEADER, repeated_order),
    "a bad value": (HEADER, bad_value),
    "a truncated .csv.gz": (DETAIL, truncated_gzip),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_delivery_is_refused_whole_naming_file_line_and_reason(case, base, delivered, tmp_path) -> None:
    relative, edit = REFUSED[case]
    folder = tmp_path / "delivery"
    shutil.copytree(delivered[0], folder)
    ws = copy_warehouse(base, tmp_path / "home")
    line, reason = edit(folder / relative, ws)
    before = state(ws)
    with pytest.raises(CsvError) as caught:
        ingest_csv(ws, folder)
    error = caught.value
    assert (error.path, error.line) == (folder / relative, line), str(error)
    assert reason in error.reason, str(error)
    assert state(ws) == before
    assert not (ws.home / "duckdb_tmp").exists() or not any((ws.home / "duckdb_tmp").iterdir())


def test_other_tables_are_refused_by_name_and_the_cli_says_where(base, delivered, tmp_path) -> None:
    folder = tmp_path / "delivery"
    shutil.copytree(delivered[0], folder)
    for table in ("menu", "truck"):
        (folder / "raw_pos" / table).mkdir()
        (folder / "raw_pos" / table / f"{table}.csv").write_text("x\n")
    ws = copy_warehouse(base, tmp_path / "home")
    before = state(ws)
    with pytest.raises(CsvError, match=r"this folder also holds raw_pos\.menu, raw_pos\.truck"):
        ingest_csv(ws, folder)
    shutil.rmtree(folder / "raw_pos" / "menu")
    shutil.rmtree(folder / "raw_pos" / "truck")
    set_field(folder / DETAIL, 3, 1, "987654321")
    done = CliRunner().invoke(app, ["--home", str(ws.home), "ingest", "--from-csv", str(folder)])
    assert done.exit_code == 1
    assert squeeze(f"error: {folder / DETAIL}, line 3: order_id 987654321 is in neither") in squeeze(done.output)
    assert state(ws) == before
    with pytest.raises(WarehouseError, match="no warehouse"):
        ingest_csv(Workspace.from_env(tmp_path / "empty"), folder)


# ---- features, the online store and a running service move forward --------------------------------
def history(body: dict, customer: int) -> list[dict]:
    return next(c["history"] for c in body["customers"] if c["customer_id"] == customer)


@pytest.fixture(scope="module")
def moved(trained_ws, tmp_path_factory):
    """A copy of the trained home served by `tastyrec serve` (a real uvicorn on a loopback port):
    answers before an ingest, after it (a reload without new features), and after `features`;
    the last reload is the tests' own."""
    from tastyrec.features.build import FeaturesError, build_features, built_features, current_features

    root = tmp_path_factory.mktemp("moved")
    ws = Workspace.from_env(shutil.copytree(trained_ws.home, root / "home"))
    customer = latest_customers(ws, 1)[0]
    wrote = write_delivery(ws, root / "delivery", [customer], new_customer=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tastyrec.cli", "--home", str(ws.home), "serve", "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, proc, log, "tastyrec serve", 180)
        with httpx.Client(base_url=url, timeout=60) as api:
            ask = {"customer_ids": [customer, wrote["new_customer"]]}
            first = {"health": api.get("/health").json(), "answer": api.post("/recommendations", json=ask).json(),
                     "features": built_features(ws)}
            ingested = ingest_csv(ws, root / "delivery")
            try:
                refused = current_features(ws)
            except FeaturesError as e:
                refused = e
            # the warehouse changed, the features did not: the service goes on with the snapshot it has
            stale = {"current_features": refused, "answer": api.post("/recommendations", json=ask).json(),
                     "reload": api.post("/admin/reload"), "after_reload": api.post("/recommendations", json=ask).json()}
            built = build_features(ws)
            yield {"ws": ws, "api": api, "customer": customer, "wrote": wrote, "first": first, "ingested": ingested,
                   "stale": stale, "built": built, "log": log}
    finally:
        stop(proc)


def test_features_and_the_online_store_move_to_the_new_end_of_the_data(moved) -> None:
    from tastyrec.features.build import FeaturesError, current_features
    from tastyrec.features.online import OnlineFeatures

    ws, wrote, first, built = moved["ws"], moved["wrote"], moved["first"]["features"], moved["built"]
    assert moved["ingested"].data_end == wrote["data_end"].isoformat() == built.data_span[1]
    assert first.data_span[1] < built.data_span[1] and first.data_span[0] == built.data_span[0]
    assert built.snapshots[-1][:10] == built.data_span[1]  # the serving snapshot: the new data end
    assert date.fromisoformat(built.snapshots[-1][:10]) - date.fromisoformat(first.snapshots[-1][:10]) \
        == wrote["data_end"] - date.fromisoformat(first.data_span[1])
    # the windows follow the data: the test window ends at the new data end
    assert built.cutoffs["test"][0] == (wrote["data_end"] - timedelta(days=built.windows["window_days"])).isoformat()
    assert current_features(ws) == built  # current again (between the ingest and `features` it was refused)
    online = OnlineFeatures(ws)
    last_new_order = wrote["data_end"] - timedelta(days=1)
    row = online.customers([moved["customer"]]).to_pylist()[0]
    assert row["days_since_last_order"] == (date.fromisoformat(built.data_span[1]) - last_new_order).days
    assert online.customers([wrote["new_customer"]]).to_pylist()[0]["city"] is not None  # the newcomer is served
    # between the ingest and `features`, training and evaluation refused the stale features
    assert isinstance(moved["stale"]["current_features"], FeaturesError)
    assert "computed from another warehouse" in str(moved["stale"]["current_features"])


def test_a_running_service_keeps_its_snapshot_until_reload_then_serves_the_new_one(moved) -> None:
    api, customer, wrote, first, stale = moved["api"], moved["customer"], moved["wrote"], moved["first"], moved["stale"]
    newcomer = wrote["new_customer"]
    old_run = first["health"]["features"]
    # before the ingest: the newcomer is unknown, the customer's history ends at the old data end
    assert first["answer"]["unknown_customers"] == [newcomer]
    old_last = max(h["last_purchase"] for h in history(first["answer"], customer))
    assert old_last < first["features"].data_span[1]
    # after the ingest, before `features`: no error, the same snapshot, before and after a reload
    assert stale["answer"]["customers"] == first["answer"]["customers"]
    assert stale["reload"].status_code == 200 and stale["reload"].json()["features"] == old_run
    assert [c["customer_id"] for c in stale["after_reload"]["customers"]] == [customer]
    assert history(stale["after_reload"], customer) == history(first["answer"], customer)
    assert [w["code"] for w in stale["after_reload"]["without_recommendations"]] == ["not_in_online_store"]
    # after `features`: the service still serves the old run until /admin/reload, then the new one
    api = moved["api"]
    assert api.get("/health").json()["features"] == old_run
    reloaded = api.post("/admin/reload")
    assert reloaded.status_code == 200 and reloaded.json()["features"] == Path(moved["built"].repo).name != old_run
    body = api.post("/recommendations", json={"customer_ids": [customer, newcomer]}).json()
    assert sorted(c["customer_id"] for c in body["customers"]) == sorted([customer, newcomer])
    new_last = max(h["last_purchase"] for h in history(body, customer))
    assert new_last == (wrote["data_end"] - timedelta(days=1)).isoformat()
    assert history(body, newcomer)  # the newcomer's one order


# ---- simulate's days, ingested -------------------------------------------------------------------
def test_simulated_days_are_ingested_whole_and_once(base, tmp_path) -> None:
    from tastyrec.warehouse.simulate import simulate

    ws = copy_warehouse(base, tmp_path / "home")
    days = simulate(ws, days=7, lift=0.0, out=tmp_path / "sim")
    result = ingest_csv(ws, tmp_path / "sim")
    assert {t: (v["added"], v["already_there"]) for t, v in result.tables.items()} == {
        "raw_pos.order_header": (days.orders, 0), "raw_pos.order_detail": (days.detail_rows, 0)}
    assert result.data_end == (date.fromisoformat(days.last_day) + timedelta(days=1)).isoformat()
    again = ingest_csv(ws, tmp_path / "sim")
    assert {t: (v["added"], v["already_there"]) for t, v in again.tables.items()} == {
        "raw_pos.order_header": (0, days.orders), "raw_pos.order_detail": (0, days.detail_rows)}
