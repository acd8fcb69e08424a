"""Online feature lookup latency: the SQLite online store and the Redis online store side by side.

Usage: .venv/bin/python bench/online.py [--customers N] [--home DIR] [--lookups K] [--seed S]

1. A workspace with the SQLite store: `tastyrec setup --customers N` and `tastyrec features` in a
   temporary folder (not timed), or --home (a workspace that already has features).
2. A copy of it, switched to Redis: its own redis-server on a free loopback port, no persistence,
   then `tastyrec features --online-store redis://...` on the copy (same warehouse, same rows).
3. For K seeded random customers, both stores in the same loop (which goes first alternates, so
   machine noise hits both alike), after a warm-up:
   - customers([c]): Feast's get_online_features of one customer's row, the online-store read;
   - for_customers([c]): that customer x all their candidate items, the engine's per-request work.
Prints the machine, N, K, then p50 / p99 / mean in ms per store and redis p99 / sqlite p99, with
the target (Redis p99 no worse than 2x SQLite's), and whether both stores gave equal rows.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
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


def measure(stores: dict, customers: list[int]) -> dict[tuple[str, str], np.ndarray]:
    """Milliseconds per (store, lookup) for each customer; the store that goes first alternates."""
    times = {(s, what): [] for s in stores for what in ("customers", "for_customers")}
    names = list(stores)
    for k, c in enumerate(customers):
        for name in names if k % 2 == 0 else names[::-1]:
            for what in ("customers", "for_customers"):
                lookup = getattr(stores[name], what)
                started = time.perf_counter()
                lookup([c])
                times[name, what].append((time.perf_counter() - started) * 1000)
    return {key: np.array(ms) for key, ms in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--home", help="a workspace that already has a warehouse and features (SQLite store)")
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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
            from tastyrec.features.online import OnlineFeatures
            from tastyrec.recommend import Directory

            stores = {"sqlite": OnlineFeatures(Workspace.from_env(home)),
                      "redis": OnlineFeatures(Workspace.from_env(copy))}
            everyone = Directory.load(Workspace.from_env(home)).frame["customer_id"].to_numpy()
            rng = np.random.default_rng(args.seed)
            customers = [int(c) for c in rng.choice(everyone, min(args.lookups, len(everyone)), replace=False)]
            rows = []
            for c in customers[:EQUAL_CHECKS]:
                frame = stores["sqlite"].for_customers([c])
                pd.testing.assert_frame_equal(frame, stores["redis"].for_customers([c]))
                rows.append(len(frame))
            measure(stores, [int(c) for c in rng.choice(everyone, WARM_UP)])
            times = measure(stores, customers)
        finally:
            redis.stop()
    print(f"N={len(everyone):,} customers, {len(customers):,} lookups per store, interleaved "
          f"(seed {args.seed}); rows equal in both stores for {EQUAL_CHECKS} customers (assert_frame_equal)")
    print(f"{'lookup':<40} {'store':<7} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8}")
    labels = {"customers": "customers([c]): 1 customer's online row",
              "for_customers": f"for_customers([c]): 1 x ~{np.mean(rows):.0f} items"}
    for what, label in labels.items():
        for store in stores:
            ms = times[store, what]
            print(f"{label if store == 'sqlite' else '':<40} {store:<7} {np.percentile(ms, 50):7.2f} "
                  f"{np.percentile(ms, 99):7.2f} {ms.mean():8.2f}")
        ratio = np.percentile(times["redis", what], 99) / np.percentile(times["sqlite", what], 99)
        print(f"{'':<40} redis p99 / sqlite p99 = {ratio:.2f}x "
              f"(target <= {TARGET:.0f}x: {'met' if ratio <= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
