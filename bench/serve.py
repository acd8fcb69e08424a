"""Serving figures: latency and throughput of `tastyrec serve`, against `mlflow models serve` on the
same scoring work, and the engine's scoring throughput over every customer x every candidate.

Usage: .venv/bin/python bench/serve.py [--customers N] [--home DIR] [--big [--big-home DIR]] [--quick]

--quick: a few requests of each kind, on 300 customers (or --home), in seconds: that the bench
runs and prints its figures (a test runs it), not figures to quote.

Everything runs on loopback, bounded in requests and seconds, and stops its servers itself.
1. A workspace: `tastyrec pipeline --customers N` in a temporary folder (not timed), or --home.
2. `tastyrec serve` (1 worker), once its scores are precomputed (/health's "scores"; the time it
   took is printed): POST /recommendations for one customer, top 3, at concurrency 1
   (p50 / p99 over LATENCY_REQUESTS different customers), then requests/s at concurrency 16.
3. The same scoring work (one customer's candidate rows -> probabilities) at concurrency 16
   through `mlflow models serve -m models:/tastyrec-dlrm/1 --env-manager local` (1 worker) and
   through the service's POST /score; the ratios come from this one run. Then /recommendations
   at concurrency 16 again with `tastyrec serve --workers 2`.
4. Every customer at once, at N: one chunk's pieces (bulk snapshot read, rows, model), the
   engine's recommend() for everyone, and `tastyrec recommend --all --save` (seconds, peak RSS;
   it saves a campaign named "bench serve.py --all" in the home); with --big also at
   N = 222,000 (setup, features and a 1-epoch model first, unless --big-home names such a workspace).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, run_measured  # noqa: E402

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
LATENCY_REQUESTS = 300
CONCURRENCY = 16
THROUGHPUT_REQUESTS = 800  # per measured system
QUICK = {"customers": 300, "latency": 20, "throughput": 40}  # --quick
TIME_CAP_S = 120  # no load phase runs longer than this
BIG_CUSTOMERS = 222_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(cmd: list[str], ready_url: str, log: Path, env: dict | None = None) -> Iterator[None]:
    """A server process, ready once `ready_url` answers 200; stopped with SIGINT (then killed)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} did not answer in 300 s:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def precomputed(url: str, answers: int = 1) -> float:
    """Wait until /health says the scores are precomputed `answers` times in a row (each worker
    computes its own, and a request may reach any of them); the seconds waited."""
    started = time.monotonic()
    in_a_row = 0
    while in_a_row < answers:
        if time.monotonic() - started > 600:
            raise RuntimeError(f"{url}: the scores were not precomputed in 600 s")
        in_a_row = in_a_row + 1 if httpx.get(f"{url}/health", timeout=10).json()["scores"] == "precomputed" else 0
        time.sleep(0.05 if in_a_row else 0.5)
    return time.monotonic() - started


def load(url: str, payloads: list[dict], concurrency: int) -> tuple[np.ndarray, float]:
    """POST every payload (each thread its own keep-alive client); (latencies in ms, seconds).
    Stops early after TIME_CAP_S; a non-200 answer is an error."""
    times: list[float] = []
    lock = threading.Lock()
    todo = iter(payloads)
    stop_at = time.monotonic() + TIME_CAP_S

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop_at:
                with lock:
                    payload = next(todo, None)
                if payload is None:
                    return
                started = time.perf_counter()
                response = client.post(url, json=payload)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:500]}")
                with lock:
                    times.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(times), time.perf_counter() - started


def feature_rows(frame, columns: list[str]) -> list[dict]:
    """One customer's candidate rows as JSON records (lists for bags, None for missing)."""
    records = json.loads(frame[columns].to_json(orient="records"))  # numpy / NaN -> JSON types
    return records


def serving(home: Path, customers: np.ndarray, tmp: Path, latency: int = LATENCY_REQUESTS,
            throughput: int = THROUGHPUT_REQUESTS) -> None:
    """Sections 2 and 3: `latency` requests one after the other, `throughput` at concurrency."""
    from tastyrec.config import Workspace
    from tastyrec.features.online import OnlineFeatures
    from tastyrec.registry import load_predictor

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ids = [int(c) for c in customers]
    with running([TASTYREC, "--home", str(home), "serve", "--port", str(port)], f"{url}/health", tmp / "serve.log"):
        print(f"every customer's scores precomputed {precomputed(url):.1f} s after the service answered")
        load(f"{url}/recommendations", [{"customer_ids": [c]} for c in ids[:30]], 1)  # warm-up
        payloads = [{"customer_ids": [c], "top_k": 3} for c in ids[:latency]]
        times, _ = load(f"{url}/recommendations", payloads, 1)
        engine_ms = [httpx.post(f"{url}/recommendations", json=p).json()["seconds"] * 1000 for p in payloads[:50]]
        print(f"POST /recommendations, 1 customer, top 3, concurrency 1 ({len(times)} customers): "
              f"p50 {np.percentile(times, 50):.1f} ms, p99 {np.percentile(times, 99):.1f} ms "
              f"(engine's own time p50 {np.percentile(engine_ms, 50):.1f} ms)")
        payloads = [{"customer_ids": [int(c)], "top_k": 3} for c in np.resize(customers, throughput)]
        times, seconds = load(f"{url}/recommendations", payloads, CONCURRENCY)
        ours = len(times) / seconds
        print(f"POST /recommendations at concurrency {CONCURRENCY}: {ours:.0f} requests/s "
              f"(p50 {np.percentile(times, 50):.0f} ms, p99 {np.percentile(times, 99):.0f} ms)")

        # the same scoring work for both servers: one customer's candidate rows -> probabilities
        predictor, version = load_predictor(Workspace.from_env(home))
        pre = predictor.preprocessor
        columns = pre.input_columns  # what a frame must hold (not what the preprocessor computes)
        online = OnlineFeatures(Workspace.from_env(home))
        batches = [feature_rows(online.for_customers([c]), columns) for c in ids[:50]]
        rows = sum(len(b) for b in batches) / len(batches)
        score_payloads = [{"rows": batches[i % len(batches)]} for i in range(throughput)]
        load(f"{url}/score", score_payloads[:20], 1)
        times, seconds = load(f"{url}/score", score_payloads, CONCURRENCY)
        score_rps = len(times) / seconds
        print(f"POST /score, one customer's {rows:.0f} candidate rows, concurrency {CONCURRENCY}: "
              f"{score_rps:.0f} requests/s")

    port = free_port()
    mlflow_url = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",  # it starts `uvicorn` from PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with running([MLFLOW, "models", "serve", "-m", f"models:/tastyrec-dlrm/{version}", "--env-manager", "local",
                  "-h", "127.0.0.1", "-p", str(port)], f"{mlflow_url}/ping", tmp / "mlflow.log", env):
        invocations = [{"dataframe_records": p["rows"]} for p in score_payloads]
        got = httpx.post(f"{mlflow_url}/invocations", json=invocations[0], timeout=60).json()["predictions"]
        assert np.allclose(got, predictor.predict(online.for_customers([ids[0]])), atol=1e-5), "mlflow scores differ"
        load(f"{mlflow_url}/invocations", invocations[:20], 1)
        times, seconds = load(f"{mlflow_url}/invocations", invocations, CONCURRENCY)
        theirs = len(times) / seconds
    print(f"mlflow models serve /invocations, the same rows, concurrency {CONCURRENCY}: {theirs:.0f} requests/s")
    print(f"ratios at concurrency {CONCURRENCY}, 1 worker each: /recommendations (lookup + score + rank + "
          f"history) {ours / theirs:.1f}x mlflow's scoring alone; /score {score_rps / theirs:.1f}x mlflow (same work)")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running([TASTYREC, "--home", str(home), "serve", "--port", str(port), "--workers", "2"], f"{url}/health",
                 tmp / "serve2.log"):
        precomputed(url, answers=10)
        load(f"{url}/recommendations", payloads[:40], CONCURRENCY)  # warm-up, both workers
        times, seconds = load(f"{url}/recommendations", payloads, CONCURRENCY)
    print(f"POST /recommendations at concurrency {CONCURRENCY}, tastyrec serve --workers 2: "
          f"{len(times) / seconds:.0f} requests/s ({len(times) / seconds / theirs:.1f}x mlflow's 1 worker)")


def engine_throughput(home: Path, label: str) -> None:
    """Section 4: every customer x every candidate item of their city: the pieces on one chunk,
    recommend() for everyone in this process, and `recommend --all --save` as a user runs it."""
    from tastyrec.config import Workspace
    from tastyrec.columns import BAG_SCORES
    from tastyrec.features.training import PAIR_FEATURES
    from tastyrec.recommend import CHUNK_CUSTOMERS, Engine

    engine = Engine(Workspace.from_env(home))
    ids = engine.directory.frame["customer_id"].tolist()
    began = time.perf_counter()
    customers = next(engine.online.snapshot(ids[:CHUNK_CUSTOMERS], CHUNK_CUSTOMERS))
    read = time.perf_counter()
    pairs = engine.online.pairs(customers)
    for feature in (*PAIR_FEATURES, *BAG_SCORES):  # the per-pair tables, built on first use
        pairs.column(feature)
    built = time.perf_counter()
    engine.predictor.predict_pairs(pairs)
    scored = time.perf_counter()
    print(f"engine, {label}, one chunk of {len(customers):,} customers ({len(pairs):,} rows): snapshot read "
          f"{read - began:.2f} s, rows {built - read:.2f} s, model (tensors + forward) {scored - built:.2f} s")
    began = time.perf_counter()
    result = engine.recommend(top_k=3)
    whole_s = time.perf_counter() - began
    print(f"engine, {label}: recommend() for every customer {whole_s:.1f} s "
          f"({len(result.customers):,} customers served, {len(ids) / whole_s:,.0f} customers/s)")
    # saves a campaign named "bench serve.py --all" in the home
    seconds, peak, _ = run_measured([TASTYREC, "--home", str(home), "recommend", "--all", "--top-k", "3",
                                     "--save", "bench serve.py --all", "--json"])
    print(f"`tastyrec recommend --all --save` ({label}, streamed into a campaign): {seconds:.1f} s, "
          f"peak RSS {peak:.2f} GiB")


def big(existing: str | None, tmp: Path) -> None:
    home = Path(existing) if existing else tmp / "big"
    if not existing:
        for step in (["setup", "--customers", str(BIG_CUSTOMERS)], ["features"],
                     ["train", "--epochs", "1", "--max-samples", "500000", "--seed-samples", "0"]):
            seconds, peak, _ = run_measured([TASTYREC, "--home", str(home), *step, "--json"])
            print(f"  (N={BIG_CUSTOMERS:,} {step[0]}: {seconds:.0f} s, peak RSS {peak:.1f} GiB)")
    engine_throughput(home, f"N={BIG_CUSTOMERS:,}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--home", help="a workspace that already has a registered model (skips the pipeline)")
    parser.add_argument("--big", action="store_true", help=f"also engine scoring at N = {BIG_CUSTOMERS:,}")
    parser.add_argument("--big-home", help="with --big: a workspace of that size with a registered model")
    parser.add_argument("--quick", action="store_true", help="a few requests on 300 customers: that it runs")
    args = parser.parse_args()
    if args.quick:
        args.customers, args.big = QUICK["customers"], False
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(args.home) if args.home else Path(tmp) / "home"
        if not args.home:
            seconds, _, _ = run_measured([TASTYREC, "--home", str(home), "pipeline", "--customers",
                                          str(args.customers), "--json"])
            print(f"(workspace: tastyrec pipeline --customers {args.customers:,} in {seconds:.0f} s)")
        n = json.loads(run_measured([TASTYREC, "--home", str(home), "registry", "list", "--json"])[2])
        print(f"model: tastyrec-dlrm, {len(n)} version(s), home {home}")
        from tastyrec.config import Workspace
        from tastyrec.recommend import Directory

        everyone = Directory.load(Workspace.from_env(home)).frame["customer_id"].to_numpy()
        customers = np.random.default_rng(0).permutation(everyone)
        serving(home, customers, Path(tmp), *((QUICK["latency"], QUICK["throughput"]) if args.quick else ()))
        engine_throughput(home, f"N={len(everyone):,}")
        if args.big:
            big(args.big_home, Path(tmp))


if __name__ == "__main__":
    main()
