"""The REST service against a real uvicorn server (`tastyrec serve` in a child process, loopback)."""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from servers import free_port
from typer.testing import CliRunner

from tastyrec.cli import app as cli
from tastyrec.columns import DENSE, MULTI_HOT, SPARSE
from tastyrec.config import Workspace
from tastyrec.model import AUTO_KINDS
from tastyrec.service import ECHO_ERRORS, LIMITS, TOKEN_ENV, Limits, create_app

TOKEN = "test-token-7f3a-b2c9"  # 16 characters at least (validate_token)
INJECTIONS = ["O'Brien", "x' OR '1'='1", "'; DROP TABLE raw_customer.customer_loyalty; --", '") OR 1=1 --']


class Server:
    """`tastyrec --home HOME serve --port P ...` in a child process; stopped with Ctrl-C (SIGINT).
    Its output goes to `log` (default: a file in HOME)."""

    def __init__(self, home: Path, *args: str, token: str | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or home / f"serve-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | ({TOKEN_ENV: token} if token else {})
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tastyrec.cli", "--home", str(home), "serve",
                                          "--port", str(self.port), *args], stdout=log, stderr=subprocess.STDOUT,
                                         env=env)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the server did not answer /health in time:\n{self.log.read_text()}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def ws(trained_ws, tmp_path_factory) -> Workspace:
    """A copy of the trained workspace: the reload test registers a second version in it."""
    return Workspace.from_env(shutil.copytree(trained_ws.home, tmp_path_factory.mktemp("service") / "home"))


@pytest.fixture(scope="module")
def server(ws):
    running = Server(ws.home, token=TOKEN)
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def api(server):
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def second_version(ws) -> int:
    """Version 2, registered in the module's workspace (the champion stays version 1)."""
    from tastyrec.jobs import train_job
    from tastyrec.options import TrainOptions
    from tastyrec.registry import promote

    version = train_job(ws, TrainOptions(epochs=1, progress=False, seed=5), seed_samples=0).registry.version
    promote(ws, 1)  # in case the gate moved the alias
    return version


@contextmanager
def champion(ws: Workspace, version: int) -> Iterator[None]:
    """`version` is the champion inside the block; version 1 again after it, whatever happened."""
    from tastyrec.registry import promote

    promote(ws, version)
    try:
        yield
    finally:
        promote(ws, 1)


@pytest.fixture(scope="module")
def engine(ws):
    from tastyrec.recommend import Engine

    return Engine(ws)


@pytest.fixture(scope="module")
def warehouse(ws):
    from tastyrec.warehouse.load import connect

    con = connect(ws.warehouse, read_only=True)
    yield con
    con.close()


def raw_request(url: str, request: bytes, timeout: float = 30) -> tuple[http.client.HTTPResponse, bytes, bool]:
    """Send `request` (a head, and maybe only part of the body it announces) on a raw socket and
    read the answer: the response, its body, and whether the server then closed the connection.
    An answer to a request whose body was not all sent shows that the server did not wait for it;
    `timeout` guards against a hang (a server that waits for the body), it is not a timing check."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        sock.settimeout(5)  # the answer is all there: a server that closes has done so by now
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        return response, body, closed


def post_head(path: str, content_length: int, **headers: str) -> bytes:
    """The head of a JSON POST to `path` announcing `content_length` bytes of body."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {content_length}", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def same(a: dict, b: dict) -> None:
    """Two Recommendations dicts agree on everything but the time taken, scores up to float32
    rounding (the service looks up scores precomputed in batches of other sizes: Precomputed);
    the first customer that differs is named, so a failure shows what differs."""
    def scoreless(result: dict) -> tuple[dict, list[float]]:
        customers = [{**c, "recommendations": [{k: v for k, v in r.items() if k != "score"} for r in c["recommendations"]]}
                     for c in result.get("customers", [])]
        scores = [r["score"] for c in result.get("customers", []) for r in c["recommendations"]]
        return {**{k: v for k, v in result.items() if k != "seconds"}, "customers": customers}, scores

    (a, a_scores), (b, b_scores) = scoreless(a), scoreless(b)
    for x, y in zip(a["customers"], b["customers"]):
        assert x == y, f"customer {x.get('customer_id')} differs:\n{x}\n{y}"
    assert a == b and len(a_scores) == len(b_scores) and np.allclose(a_scores, b_scores, rtol=0, atol=1e-6)


# ---- the basics ----------------------------------------------------------------------------------
def test_health_names_the_served_version_and_the_cli_printed_the_urls(server, api) -> None:
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tastyrec-dlrm"
    assert health["version"] == 1 and health["alias"] == "champion" and health["kind"] in AUTO_KINDS
    assert health["loaded_at"] and health["device"] == "cpu"
    printed = server.log.read_text()
    assert f"{server.url} (docs {server.url}/docs)" in printed and "version 1 (champion)" in printed


def test_docs_and_the_openapi_schema_are_served(api) -> None:
    assert "swagger" in api.get("/docs").text.lower()
    schema = api.get("/openapi.json").json()
    assert {"/health", "/recommendations", "/score", "/metadata", "/admin/reload"} <= set(schema["paths"])
    assert "RecommendRequest" in schema["components"]["schemas"]


def test_recommendations_for_ids(api, engine) -> None:
    body = api.post("/recommendations", json={"customer_ids": [7, 5, 7], "top_k": 4}).json()
    assert [c["customer_id"] for c in body["customers"]] == [5, 7]  # sorted, no repeats
    assert body["model"] == {"name": "tastyrec-dlrm", "version": 1, "alias": "champion",
                             "label_days": engine.model_info["label_days"]}
    for c in body["customers"]:
        recs = c["recommendations"]
        assert [r["rank"] for r in recs] == [1, 2, 3, 4]
        assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
        assert all(0 < r["score"] < 1 for r in recs) and c["city"] and c["country"]
    assert body["unknown_customers"] == [] and body["selected"] == 2 and not body["truncated"]


def test_recommendations_for_filters(api, warehouse) -> None:
    country, n = warehouse.execute("SELECT country, count(*) FROM raw_customer.customer_loyalty "
                                   "GROUP BY ALL ORDER BY 2 DESC, 1 LIMIT 1").fetchone()
    body = api.post("/recommendations", json={"filters": {"country": [country]}}).json()
    assert body["selected"] == n and not body["truncated"] and body["top_k"] == 3
    assert body["customers"] and all(c["country"] == country for c in body["customers"])
    assert all(len(c["recommendations"]) == 3 for c in body["customers"])


@contextmanager
def serving_in_thread(app) -> Iterator[str]:
    """uvicorn serving `app` on a free loopback port in a thread of this process; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_filter_selection_over_the_limit_is_served_capped(api, ws, engine) -> None:
    everyone = api.post("/recommendations", json={"filters": {}, "top_k": 1}).json()
    assert everyone["selected"] == 400 and not everyone["truncated"]  # under the limit of 1,000
    with serving_in_thread(create_app(ws, engine=engine, limits=Limits(filter_customers=50))) as url:
        capped = httpx.post(f"{url}/recommendations", json={"filters": {}, "top_k": 1}, timeout=60).json()
    assert capped["selected"] == 400 and capped["truncated"]
    first = set(engine.directory.frame["customer_id"].head(50).tolist())  # the first 50 by id
    assert [c["customer_id"] for c in capped["customers"]] == \
        [c["customer_id"] for c in everyone["customers"] if c["customer_id"] in first]


# ---- the flags mean what they say, checked against the warehouse --------------------------------
def test_items_not_ordered_were_never_ordered_and_trucks_not_visited_never_sold(api, warehouse) -> None:
    city = warehouse.execute("SELECT city FROM raw_customer.customer_loyalty GROUP BY ALL "
                             "ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()[0]
    ordered = "SELECT count(*) FROM analytics.orders_v WHERE customer_id = ? AND menu_item_name = ?"
    visited = "SELECT count(*) FROM analytics.orders_v WHERE customer_id = ? AND truck_brand_name = ?"

    def pairs(**flags) -> list[tuple[int, dict]]:
        body = api.post("/recommendations", json={"filters": {"city": [city], **flags}, "top_k": 10})
        assert body.status_code == 200, body.text
        return [(c["customer_id"], r) for c in body.json()["customers"] for r in c["recommendations"]]

    plain = pairs()
    # without the flags the model does recommend items already bought and brands already visited
    assert any(warehouse.execute(ordered, [c, r["menu_item_name"]]).fetchone()[0] for c, r in plain)
    assert any(warehouse.execute(visited, [c, r["truck_brand_name"]]).fetchone()[0] for c, r in plain)

    new_items = pairs(items_not_ordered=True)
    assert new_items
    assert all(warehouse.execute(ordered, [c, r["menu_item_name"]]).fetchone()[0] == 0 for c, r in new_items)
    new_brands = pairs(trucks_not_visited=True)
    assert new_brands
    assert all(warehouse.execute(visited, [c, r["truck_brand_name"]]).fetchone()[0] == 0 for c, r in new_brands)


@pytest.fixture(scope="module")
def place_and_brand(warehouse) -> dict[str, str]:
    """A country, one of its cities and a brand with a truck there: a filter that selects someone."""
    country, city, brand = warehouse.execute(
        "SELECT c.country, t.primary_city, m.truck_brand_name FROM raw_pos.truck t JOIN raw_pos.menu m "
        "USING (menu_type_id) JOIN raw_customer.customer_loyalty c ON c.city = t.primary_city "
        "ORDER BY 2, 3 LIMIT 1").fetchone()
    return {"country": country, "city": city, "brand": brand}


def test_filter_values_are_matched_ignoring_case(api, place_and_brand) -> None:
    """The answer to "hamburg" is the answer to "Hamburg", filters echoed as the data spells them."""
    canonical = api.post("/recommendations", json={"filters": {k: [v] for k, v in place_and_brand.items()}})
    assert canonical.status_code == 200 and canonical.json()["customers"], canonical.text
    for spelt in (str.lower, str.upper, lambda v: f"  {v.swapcase()} "):
        got = api.post("/recommendations", json={"filters": {k: [spelt(v)] for k, v in place_and_brand.items()}})
        assert got.status_code == 200, got.text
        same(got.json(), canonical.json())


@pytest.mark.parametrize("field", ["country", "city", "brand"])
def test_a_misspelt_filter_value_is_422_naming_the_closest(api, ws, place_and_brand, field) -> None:
    known = place_and_brand[field]
    typo = known + known[-1]  # "Hamburgg"
    got = api.post("/recommendations", json={"filters": {field: [typo]}})
    assert got.status_code == 422
    assert got.json()["detail"] == f"unknown {field} {typo!r}: did you mean {known!r}?"
    done = CliRunner().invoke(cli, ["--home", str(ws.home), "recommend", f"--{field}", typo])  # the same, plain
    assert done.exit_code == 1 and f"did you mean {known!r}?" in " ".join(done.output.split()), done.output
    assert "Traceback" not in done.output


def test_brand_filter_keeps_only_that_brand(api, warehouse) -> None:
    city, brand = warehouse.execute("SELECT primary_city, truck_brand_name FROM raw_pos.truck t "
                                    "JOIN raw_pos.menu m USING (menu_type_id) ORDER BY 1, 2 LIMIT 1").fetchone()
    body = api.post("/recommendations", json={"filters": {"city": [city], "brand": [brand]}, "top_k": 50}).json()
    recs = [r for c in body["customers"] for r in c["recommendations"]]
    assert recs and {r["truck_brand_name"] for r in recs} == {brand}


def test_customers_without_candidates_are_listed_with_the_reason(api, engine, warehouse) -> None:
    """A brand with no truck in some selected cities: those customers come back in
    without_recommendations with the reason, and the counts add up to the selection."""
    brand = "Freezing Point"
    served = {c for (c,) in warehouse.execute("SELECT DISTINCT t.primary_city FROM raw_pos.truck t JOIN raw_pos.menu m "
                                              "USING (menu_type_id) WHERE m.truck_brand_name = ?", [brand]).fetchall()}
    ids = [c for (c,) in warehouse.execute("SELECT customer_id FROM raw_customer.customer_loyalty ORDER BY 1 "
                                           "LIMIT 50").fetchall()]
    from tastyrec.recommend import Filters

    body = api.post("/recommendations", json={"customer_ids": ids, "filters": {"brand": [brand]}}).status_code
    assert body == 422  # ids and filters together: one selection at a time
    body = api.post("/recommendations", json={"filters": {"brand": [brand]}, "top_k": 2}).json()
    missing = body["without_recommendations"]
    assert missing and all(w["city"] not in served and w["code"] == "brand" for w in missing)
    assert all(c["city"] in served for c in body["customers"])
    assert len(body["customers"]) + len(missing) == body["selected"] and "get a list" in body["message"]
    assert {w["customer_id"] for w in missing} >= {i for i in ids if i not in {c["customer_id"] for c in
                                                                               body["customers"]}}
    direct = engine.recommend(filters=Filters(brand=(brand,)), top_k=2, limit=1_000)
    assert missing == direct.without_recommendations


# ---- one engine: the CLI, the service and the engine agree --------------------------------------
@pytest.mark.parametrize("request_body, cli_args", [
    ({"customer_ids": [3, 11, 42], "top_k": 5}, ["--customer", "3", "--customer", "11", "--customer", "42", "--top-k", "5"]),
    ({"filters": {"country": ["Germany", "France"], "items_not_ordered": True}},
     ["--country", "Germany", "--country", "France", "--items-not-ordered"]),
])
def test_cli_service_and_engine_give_identical_lists(api, engine, ws, request_body, cli_args) -> None:
    from tastyrec.recommend import Filters

    served = api.post("/recommendations", json=request_body).json()
    f = request_body.get("filters", {})
    direct = engine.recommend(customer_ids=request_body.get("customer_ids"), top_k=request_body.get("top_k", 3),
                              filters=Filters(tuple(f.get("country", ())), tuple(f.get("city", ())), (),
                                              False, f.get("items_not_ordered", False))).to_dict()
    done = CliRunner().invoke(cli, ["--home", str(ws.home), "recommend", *cli_args, "--json"])
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout)
    assert printed.pop("campaign") is None
    assert served["customers"]
    same(served, direct)
    same(served, printed)


# ---- scoring and metadata -----------------------------------------------------------------------
def rows_of(frame) -> list[dict]:
    """Feature rows as JSON-able dicts (lists for the multi-hot columns, None for missing)."""
    out = []
    for row in frame[[*SPARSE, *DENSE, *MULTI_HOT]].to_dict("records"):
        out.append({k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else
                        [str(x) for x in v] if k in MULTI_HOT else v.item() if isinstance(v, np.generic) else v)
                    for k, v in row.items()})
    return out


def test_score_is_the_models_forward(api, engine) -> None:
    frame = engine.online.for_customers([5, 7])
    got = api.post("/score", json={"rows": rows_of(frame)})
    assert got.status_code == 200, got.text
    assert np.allclose(got.json()["scores"], engine.score(frame), atol=1e-6)


def test_score_reads_a_number_or_false_as_a_name_and_a_row_of_nulls(api, engine) -> None:
    """Schemathesis's case: an item name that JSON gives as a number or false (pydantic's 0), the
    other columns null: an unknown item, scored, not a 500."""
    row = rows_of(engine.online.for_customers([5]).head(1))[0]
    nulls = {k: ([] if k in MULTI_HOT else None) for k in row}
    for name in (0, False, 7):
        got = api.post("/score", json={"rows": [row | {"menu_item_name": name}, nulls | {"menu_item_name": name}]})
        assert got.status_code == 200, got.text
        assert all(np.isfinite(got.json()["scores"]))


def test_score_names_missing_columns_and_refuses_wrong_types(api, engine) -> None:
    rows = rows_of(engine.online.for_customers([5]).head(2))
    lacking = [{k: v for k, v in row.items() if k not in ("age", "history_items")} for row in rows]
    got = api.post("/score", json={"rows": lacking})
    assert got.status_code == 422 and "age" in got.json()["detail"] and "history_items" in got.json()["detail"]
    assert api.post("/score", json={"rows": [rows[0] | {"age": "old"}]}).status_code == 422
    assert api.post("/score", json={"rows": [rows[0] | {"history_items": "Crepe"}]}).status_code == 422
    assert api.post("/score", json={"rows": []}).status_code == 422
    assert api.post("/score", json={"rows": [{}] * (LIMITS.score_rows + 1)}).status_code == 413


def test_metadata_describes_the_served_model(api, engine, ws) -> None:
    from tastyrec.registry import list_versions

    meta = api.get("/metadata").json()
    assert meta["model"]["version"] == 1 and meta["kind"] in AUTO_KINDS
    pre = engine.predictor.preprocessor
    assert meta["features"] == {"sparse": list(pre.sparse), "dense": list(pre.dense), "multi_hot": list(MULTI_HOT)}
    assert meta["features"]["dense"][-2:] == ["item_popularity", "item_knn_score"]  # computed from the history
    assert meta["config"] == engine.predictor.model.config.to_dict()
    assert meta["test_metrics"]["ndcg@10"] == pytest.approx(list_versions(ws)[-1]["metrics"]["ndcg@10"])


# ---- validation: 4xx with a message, never a 5xx --------------------------------------------------
def test_unknown_ids_are_listed_and_the_known_answered(api, engine) -> None:
    got = api.post("/recommendations", json={"customer_ids": [5, 98765, 4321]})
    assert got.status_code == 200, got.text
    body = got.json()
    assert [c["customer_id"] for c in body["customers"]] == [5] and body["unknown_customers"] == [98765, 4321]
    assert body["selected"] == 1
    same(body, engine.recommend(customer_ids=[5, 98765, 4321]).to_dict())  # what the CLI prints


def test_only_unknown_ids_are_404_naming_them(api) -> None:
    got = api.post("/recommendations", json={"customer_ids": [98765, 4321]})
    assert got.status_code == 404
    assert got.json()["detail"] == "unknown customer ids: 98765, 4321"


def test_too_many_ids_are_413(api) -> None:
    got = api.post("/recommendations", json={"customer_ids": list(range(1, LIMITS.customer_ids + 2))})
    assert got.status_code == 413 and f"{LIMITS.customer_ids:,}" in got.json()["detail"]


@pytest.mark.parametrize("body", [
    {"customer_ids": [5], "top_k": 0},
    {"customer_ids": [5], "top_k": 51},
    {},
    {"customer_ids": [5], "filters": {}},
    {"customer_ids": []},
    {"customer_ids": ["five"]},
    {"customer_ids": [2**63]},
    {"customer_ids": [5], "extra": 1},
    {"filters": {"country": "Germany"}},
    {"filters": {"planet": ["Mars"]}},
    [5],
])
def test_malformed_bodies_are_422(api, body) -> None:
    got = api.post("/recommendations", json=body)
    assert got.status_code == 422, got.text
    assert got.json()["detail"]


def test_nan_and_infinity_in_every_numeric_position_are_422_echoed_as_strings(api, engine) -> None:
    """Python's json reads NaN / Infinity / -Infinity (json.dumps writes them): FastAPI's 422 once
    echoed them back and failed to encode its own answer, a 500."""
    row = rows_of(engine.online.for_customers([5]).head(1))[0]
    for value in (math.nan, math.inf, -math.inf):
        cases = [("/recommendations", body) for body in (
            {"customer_ids": [value]}, {"customer_ids": [5, value]}, {"customer_ids": [5], "top_k": value},
            {"filters": {"country": [value]}}, {"filters": {"items_not_ordered": value}}, [value], value)]
        cases += [("/score", {"rows": [row | {column: value}]}) for column in [*SPARSE, *DENSE]]
        cases += [("/score", {"rows": [row | {MULTI_HOT[0]: [value]}]}), ("/score", {"rows": [value]})]
        for route, body in cases:
            got = api.post(route, content=json.dumps(body), headers={"Content-Type": "application/json"})
            assert got.status_code == 422, (route, body, got.text)
            assert got.json()["detail"][0]["msg"] and f'"{json.dumps(value)}"' in got.text  # "NaN", "-Infinity"


@pytest.mark.parametrize("content, content_type", [
    (b'{"customer_ids": [5,', "application/json"),  # invalid JSON
    (b"\xff\xfe{}", "application/json"),  # not UTF-8
    (b"[" * 100_000, "application/json"),  # nested deeper than Python's json reads
    (b"", "application/json"),
    (b'{"customer_ids": [5]}', "text/plain"),
    (b'{"customer_ids": [5]}', None),  # no content type
    (b"customer_ids=5", "application/x-www-form-urlencoded"),
    (b'--b\r\nContent-Disposition: form-data; name="customer_ids"\r\n\r\n5\r\n--b--\r\n',
     "multipart/form-data; boundary=b"),
], ids=["invalid-json", "not-utf8", "too-deep", "empty", "text-plain", "no-content-type", "form", "multipart"])
def test_bodies_that_are_no_json_object_are_4xx_with_a_message(api, content, content_type) -> None:
    for route in ("/recommendations", "/score"):
        got = api.post(route, content=content, headers={"Content-Type": content_type} if content_type else {})
        assert 400 <= got.status_code < 500, (route, got.text)
        assert got.json()["detail"]


def test_a_realistic_10000_row_score_body_is_accepted(api, engine) -> None:
    """/score's body limit is set just above 10,000 rows of real candidates (schemas.Limits)."""
    candidates = rows_of(engine.online.for_customers(engine.directory.frame["customer_id"].tolist()))
    rows = (candidates * (LIMITS.score_rows // len(candidates) + 1))[:LIMITS.score_rows]
    body = json.dumps({"rows": rows}).encode()
    assert 8 * 2**20 < len(body) < LIMITS.score_bytes  # ~1 KB a row
    got = api.post("/score", content=body, headers={"Content-Type": "application/json"})
    assert got.status_code == 200, got.text[:1000]
    assert len(got.json()["scores"]) == LIMITS.score_rows


@pytest.mark.parametrize("route, limit", [("/recommendations", LIMITS.recommendations_bytes),
                                          ("/score", LIMITS.score_bytes), ("/admin/reload", LIMITS.body_bytes)])
def test_a_body_over_the_route_limit_is_413_by_content_length_unread(server, route, limit) -> None:
    """413 from the headers: the server neither waits for the body nor reads it (only 1 KB is sent)."""
    head = post_head(route, limit + 1, Authorization=f"Bearer {TOKEN}")
    got, text, closed = raw_request(server.url, head + b"x" * 1024)  # not JSON: a 413, not a 422 of parsing it
    assert got.status == 413 and f"{limit:,} bytes" in json.loads(text)["detail"] and closed


def test_a_streamed_body_over_the_limit_is_413_and_the_server_goes_on(api) -> None:
    limit = LIMITS.recommendations_bytes
    chunks = (b"x" * 2**16 for _ in range(limit // 2**16 + 1))  # no Content-Length: counted as it streams
    streamed = api.post("/recommendations", content=chunks, headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and f"{limit:,} bytes" in streamed.json()["detail"]
    assert api.post("/recommendations", json={"customer_ids": [5]}).status_code == 200  # still serving


@pytest.mark.parametrize("route", ["/recommendations", "/score"])
@pytest.mark.parametrize("length", [20_000_000, 100_000], ids=["20MB", "within-the-limit"])
def test_without_the_token_a_body_is_refused_unread(server, route, length) -> None:
    """The token is checked before the body is read: 401 / 403 from the headers alone (only 3 KB
    of the body is sent), and the connection closed, so nothing of the rest is read either."""
    start = b'{"customer_ids": [' + b"5, " * 1000
    got, text, closed = raw_request(server.url, post_head(route, length) + start)
    assert got.status == 401 and got.getheader("WWW-Authenticate") == "Bearer" and closed
    assert json.loads(text)["detail"] == "missing bearer token"
    got, text, closed = raw_request(server.url, post_head(route, length, Authorization="Bearer wrong") + start)
    assert got.status == 403 and json.loads(text)["detail"] == "wrong bearer token" and closed


def test_a_large_invalid_body_is_not_echoed_back(api) -> None:
    """FastAPI's 422 echoes the invalid input: cut to ECHO_CHARS characters, at most ECHO_ERRORS errors."""
    got = api.post("/score", json={"rows": "x" * 5_000_000})
    assert got.status_code == 422 and len(got.content) < 2_000
    echoed = got.json()["detail"][0]["input"]
    assert echoed.startswith('"xxx') and echoed.endswith("... (5,000,002 characters)")
    many = api.post("/score", json={"rows": [{"age": "old"}] * 5_000})
    assert many.status_code == 422 and len(many.content) < 10_000
    detail = many.json()["detail"]
    assert len(detail) == ECHO_ERRORS + 1 and detail[0]["loc"] == ["body", "rows", 0, "age"]
    assert detail[-1]["type"] == "more_errors" and "more errors not listed" in detail[-1]["msg"]
    small = api.post("/recommendations", json={"customer_ids": ["five"]}).json()["detail"]
    assert small[0]["input"] == "five"  # a short value is echoed as it came


@pytest.mark.parametrize("value", INJECTIONS)
def test_quotes_and_sql_injection_in_filters_match_nothing(api, warehouse, value) -> None:
    for field in ("country", "city"):
        got = api.post("/recommendations", json={"filters": {field: [value]}})
        assert got.status_code == 200, got.text
        assert got.json()["customers"] == [] and got.json()["selected"] == 0 and got.json()["message"]
    got = api.post("/recommendations", json={"filters": {"country": ["Germany"], "brand": [value]}})
    assert got.status_code == 200 and got.json()["customers"] == [] and got.json()["selected"] > 0
    assert warehouse.execute("SELECT count(*) FROM raw_customer.customer_loyalty").fetchone()[0] == 400


def test_schemathesis_finds_no_server_error(server, tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
                           "--checks", "not_a_server_error", "--max-examples", "20", "--seed", "1",
                           "--workers", "1", "-H", f"Authorization: Bearer {TOKEN}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]


# ---- slow clients -------------------------------------------------------------------------------
def test_a_body_that_stops_arriving_is_408_and_the_connection_closed(ws, engine) -> None:
    with serving_in_thread(create_app(ws, engine=engine, limits=Limits(body_seconds=1))) as url:
        body = json.dumps({"customer_ids": [5]}).encode()
        got, text, closed = raw_request(url, post_head("/recommendations", len(body)) + body[:10], timeout=20)
        assert got.status == 408 and "within 1 s" in json.loads(text)["detail"] and closed
        assert httpx.post(f"{url}/recommendations", json={"customer_ids": [5]}).status_code == 200  # in time


def test_serve_refuses_a_megabyte_of_request_headers(server) -> None:
    """`tastyrec serve` runs uvicorn's h11 parser with a 16 KiB limit on an incomplete request head
    (SERVER_SETTINGS; a head that arrives in one socket read may be larger): httptools, uvicorn's
    default, took 10 MB of headers into memory."""
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {'a' * 2**20}\r\n\r\n".encode()
    try:
        status = raw_request(server.url, head)[0].status
    except ConnectionError:  # refused while the headers were still being sent
        status = None
    assert status in (400, None)
    assert httpx.get(f"{server.url}/health", headers=server.headers).status_code == 200


# ---- auth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("route, method", [("/health", "get"), ("/metadata", "get"), ("/recommendations", "post"),
                                           ("/score", "post"), ("/admin/reload", "post")])
def test_every_route_needs_the_token(server, route, method) -> None:
    missing = httpx.request(method, f"{server.url}{route}", json={"customer_ids": [5]})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.request(method, f"{server.url}{route}", json={"customer_ids": [5]},
                          headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403
    basic = httpx.request(method, f"{server.url}{route}", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


def test_with_a_token_the_docs_stay_public_and_the_data_routes_need_it(server) -> None:
    """The docs hold no customer data, and a browser opening /docs cannot send a bearer header."""
    for route in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{server.url}{route}").status_code == 200, route
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"  # /docs' Authorize
    assert httpx.get(f"{server.url}/health").status_code == 401
    assert httpx.post(f"{server.url}/recommendations", json={"customer_ids": [5]}).status_code == 401


def test_serve_on_every_interface_prints_docs_at_loopback(ws, monkeypatch) -> None:
    """0.0.0.0 is where it listens, not an address to open: the docs URL names 127.0.0.1."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # required off loopback
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)  # the printed line is what counts
    done = CliRunner().invoke(cli, ["--home", str(ws.home), "serve", "--host", "0.0.0.0", "--port", "8123"])
    assert done.exit_code == 0, done.output
    assert "at http://0.0.0.0:8123 (docs http://127.0.0.1:8123/docs)" in " ".join(done.output.split())


def test_serve_refuses_a_public_address_without_a_token(ws, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    done = CliRunner().invoke(cli, ["--home", str(ws.home), "serve", "--host", "0.0.0.0", "--port", "1"])
    assert done.exit_code == 1 and "without a token" in done.output and TOKEN_ENV in done.output


def test_serve_says_when_there_is_no_model(tmp_path) -> None:
    done = CliRunner().invoke(cli, ["--home", str(tmp_path), "serve", "--port", "1"])
    assert done.exit_code == 1 and "run `tastyrec features` first" in " ".join(done.output.split())


# a service without a token is for this machine, not for the web pages its browser opens
@pytest.fixture(scope="module")
def open_service(ws, engine) -> Iterator[str]:
    """The service without a token, on a loopback port; yields its URL."""
    with serving_in_thread(create_app(ws, engine=engine)) as url:
        yield url


@pytest.mark.parametrize("host", ["rebind.attacker.example", "rebind.attacker.example:8000", "192.168.1.20:8000",
                                  "127.0.0.1.attacker.example", "localhost.attacker.example:80", "[::2]:8000"])
def test_without_a_token_a_host_that_is_not_loopback_is_refused(open_service, server, host) -> None:
    """DNS rebinding: a page on rebind.attacker.example, its name pointed at 127.0.0.1, reads the
    service from a developer's browser; the Host header still names the attacker's site."""
    got = httpx.post(f"{open_service}/recommendations", json={"customer_ids": [5]}, headers={"Host": host})
    assert got.status_code == 403 and host in got.json()["detail"] and TOKEN_ENV in got.json()["detail"]
    assert "history" not in got.text
    # with a token, the token protects (a page cannot send it): any name is served, as a container's
    got = httpx.post(f"{server.url}/recommendations", json={"customer_ids": [5]},
                     headers={"Host": host, **server.headers})
    assert got.status_code == 200 and got.json()["customers"][0]["history"]


def test_without_a_token_loopback_hosts_are_served(open_service) -> None:
    for host in ("localhost", "LOCALHOST:8000", "127.0.0.1", "127.8.9.10:80", "[::1]", "[::1]:8000"):
        got = httpx.post(f"{open_service}/recommendations", json={"customer_ids": [5]}, headers={"Host": host})
        assert got.status_code == 200, (host, got.text)


def test_without_a_token_cross_site_writes_are_refused(open_service) -> None:
    """A page may POST text/plain to any address without asking first (a "simple" request): refused
    when it comes from another site; the service's own /docs and local tools go on working."""
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://rebind.attacker.example:8000", "Sec-Fetch-Site": "same-origin"}):
        got = httpx.post(f"{open_service}/admin/reload", content=b"{}",
                         headers={"Content-Type": "text/plain", **headers})
        assert got.status_code == 403 and "cross-site POST refused" in got.json()["detail"], headers
    for headers in ({"Origin": open_service, "Sec-Fetch-Site": "same-origin"}, {"Origin": "http://localhost:8501"}, {}):
        got = httpx.post(f"{open_service}/recommendations", json={"customer_ids": [5]}, headers=headers)
        assert got.status_code == 200, headers


@pytest.mark.parametrize("token, reason", [
    (f" {TOKEN}", "whitespace around it"),
    (f"{TOKEN}\n", "whitespace around it"),
    ("tökentökentökentöken", "other than printable ASCII"),
    ("a-long-token\twith-a-tab", "other than printable ASCII"),
    ("fifteen-chars-x", "15 characters: use at least 16"),
], ids=["leading-space", "trailing-newline", "non-ascii", "tab", "short"])
def test_serve_refuses_a_token_no_request_could_match(tmp_path, monkeypatch, token, reason) -> None:
    """Refused before the engine opens (this home has no model) and without printing the token."""
    monkeypatch.setenv(TOKEN_ENV, token)
    done = CliRunner().invoke(cli, ["--home", str(tmp_path), "serve", "--port", "1"])
    assert done.exit_code == 1 and reason in " ".join(done.output.split()), done.output
    assert token.strip() not in done.output
    with pytest.raises(ValueError, match=reason):
        create_app(Workspace.from_env(tmp_path), token=token)


def test_a_service_without_a_token_is_open_and_several_workers_reload_together(ws, second_version) -> None:
    running = Server(ws.home, "--workers", "2")
    try:
        with running.client() as client:
            assert client.get("/health").json()["version"] == 1
            got = client.post("/recommendations", json={"customer_ids": [5]})
            assert got.status_code == 200 and got.json()["customers"][0]["customer_id"] == 5
            with champion(ws, second_version):
                assert client.post("/admin/reload").json()["version"] == second_version
                # a new connection per request, so the kernel spreads them over both workers
                versions = {httpx.get(f"{running.url}/health", headers={"Connection": "close"}).json()["version"]
                            for _ in range(20)}
        assert versions == {second_version}
    finally:
        assert running.stop() == 0, running.log.read_text()[-3000:]
    assert "2 workers" in running.log.read_text()


# ---- reload -------------------------------------------------------------------------------------
def test_reload_picks_up_a_new_champion_without_failing_requests(api, ws, second_version) -> None:
    def ask(_) -> int:
        return api.post("/recommendations", json={"customer_ids": [5, 7]}).status_code

    try:
        with champion(ws, second_version):
            with ThreadPoolExecutor(4) as pool:
                in_flight = pool.map(ask, range(40))
                reloaded = api.post("/admin/reload")
                statuses = list(in_flight)
            assert reloaded.status_code == 200 and reloaded.json()["version"] == second_version == 2
            assert set(statuses) == {200}
            assert api.get("/health").json()["version"] == 2
            assert api.post("/recommendations", json={"customer_ids": [5]}).json()["model"]["version"] == 2
    finally:  # version 1 again for the other tests, whatever their order
        assert api.post("/admin/reload").json()["version"] == 1
