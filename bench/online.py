"""Online feature lookup latency: the SQLite online store and the Redis online store side by side.

Usage: .venv/bin/python bench/online.py [--customers N] [--home DIR] [--lookups K] [--seed S] [--quick]
--quick: that it runs and prints its figures, in seconds (a test runs it); not figures to quote. (N = 300, K = 30)

1. A workspace with the SQLite store: `tastyrec setup --customers N` and `tastyrec features` in a
   temporary folder (not timed), or --home (a workspace that already has features).
2. A copy of it, switched to Redis: its own redis-server on a free loopback port, no persistence,
   then `tastyrec features --online-store redis://...` on the copy (same warehouse, same rows).
3. Each store in its own worker process (as a service holds one), driven in lockstep for K seeded
   random customers (which goes first alternates, so machine noise hits both alike), after a
   warm-up; each worker times its own lookups:
   - customers([c]): Feast's get_online_features of one customer's row, the online-store read;
   - for_customers([c]): that customer x all their candidate items, the engine's per-request work.
Prints the machine, N, K, then p50 / p99 / mean in ms per store and redis p99 / sqlite p99, with
the target (Redis p99 no worse than 2x SQLite's), and whether both stores gave equal rows.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from common import machine, run_measured  # noqa: E402
from servers import RedisServer  # noqa: E402  (the tests' redis-server: free loopback port, no persistence)

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))
WARM_UP = 20  # lookups per store before measuring
EQUAL_CHECKS = 5  # customers whose rows are compared between the stores
TARGET = 2.0  # redis p99 / sqlite p99 at most
LOOKUPS = ("customers", "for_customers")


def store_worker(home: str, conn: Connection) -> None:
    """One store in its own process, as a service holds it: answers ("time", c) with the ms of
    customers([c]) and for_customers([c]), ("rows", c) with the frame; None ends it."""
    from tastyrec.config import Workspace
    from tastyrec.features.online import OnlineFeatures

    online = OnlineFeatures(Workspace.from_env(home))
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        what, c = msg
        if what == "rows":
            conn.send(online.for_customers([c]))
            continue
        ms = []
        for lookup in (online.customers, online.for_customers):
            started = time.perf_counter()
            lookup([c])
            ms.append((time.perf_counter() - started) * 1000)
        conn.send(ms)


@contextmanager
def stores(homes: dict[str, Path]) -> Iterator[dict[str, Connection]]:
    """A worker process per store (Feast resolves features through a process-wide cache that two
    stores in one process clear on every switch, ~3 ms a lookup: not what a service sees)."""
    spawn = multiprocessing.get_context("spawn")
    conns, procs = {}, []
    try:
        for name, home in homes.items():
            conns[name], child = spawn.Pipe()
            procs.append(spawn.Process(target=store_worker, args=(str(home), child)))
            procs[-1].start()
        for conn in conns.values():
            if conn.recv() != "ready":
                raise RuntimeError("a store worker did not start")
        yield conns
    finally:
        for conn in conns.values():
            with suppress(OSError):  # a worker that died has closed its end
                conn.send(None)
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()


def measure(conns: dict[str, Connection], customers: list[int]) -> dict[tuple[str, str], np.ndarray]:
    """Milliseconds per (store, lookup), the stores in lockstep; the one that goes first alternates."""
    times = {(s, what): [] for s in conns for what in LOOKUPS}
    names = list(conns)
    for k, c in enumerate(customers):
        for name in names if k % 2 == 0 else names[::-1]:
            conns[name].send(("time", c))
            for what, ms in zip(LOOKUPS, conns[name].recv()):
                times[name, what].append(ms)
    return {key: np.array(ms) for key, ms in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--home", help="a workspace that already has a warehouse and features (SQLite store)")
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="300 customers, 30 lookups: that it runs")
    args = parser.parse_args()
    if args.quick:
        args.customers, args.lookups = 300, 30
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        home = Path(args.home) if args.home else tmp / "sqlite"
        if not args.home:
            seconds, _, _ = run_measured([TASTYREC, "--home", str(home), "setup", "--customers",
                                          str(args.customers), "--json"])
            seconds += run_measured([TASTYREC, "--home", str(home), "features", "--online-store", "sqlite",
                                     "--json"])[0]
            print(f"(workspace: setup + features --customers {args.customers:,} in {seconds:.0f} s)")
        copy = tmp / "redis"
        shutil.copytree(home, copy)
        redis = RedisServer(tmp)
        try:
            url = redis.url
            seconds = run_measured([TASTYREC, "--home", str(copy), "features", "--online-store", url, "--json"])[0]
            print(f"(copy switched to Redis at {url}: features in {seconds:.0f} s)")
            from tastyrec.config import Workspace
            from tastyrec.recommend import Directory

            everyone = Directory.load(Workspace.from_env(home)).frame["customer_id"].to_numpy()
            rng = np.random.default_rng(args.seed)
            customers = [int(c) for c in rng.choice(everyone, min(args.lookups, len(everyone)), replace=False)]
            with stores({"sqlite": home, "redis": copy}) as conns:
                rows = []
                for c in customers[:EQUAL_CHECKS]:
                    frames = []
                    for conn in conns.values():
                        conn.send(("rows", c))
                        frames.append(conn.recv())
                    pd.testing.assert_frame_equal(*frames)
                    rows.append(len(frames[0]))
                measure(conns, [int(c) for c in rng.choice(everyone, WARM_UP)])
                times = measure(conns, customers)
        finally:
            redis.stop()
    print(f"N={len(everyone):,} customers, {len(customers):,} lookups per store, interleaved, a process per "
          f"store (seed {args.seed}); rows equal in both stores for {EQUAL_CHECKS} customers (assert_frame_equal)")
    print(f"{'lookup':<40} {'store':<7} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8}")
    labels = {"customers": "customers([c]): 1 customer's online row",
              "for_customers": f"for_customers([c]): 1 x ~{np.mean(rows):.0f} items"}
    for what, label in labels.items():
        for store in ("sqlite", "redis"):
            ms = times[store, what]
            print(f"{label if store == 'sqlite' else '':<40} {store:<7} {np.percentile(ms, 50):7.2f} "
                  f"{np.percentile(ms, 99):7.2f} {ms.mean():8.2f}")
        ratio = np.percentile(times["redis", what], 99) / np.percentile(times["sqlite", what], 99)
        print(f"{'':<40} redis p99 / sqlite p99 = {ratio:.2f}x "
              f"(target <= {TARGET:.0f}x: {'met' if ratio <= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
