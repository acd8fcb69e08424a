"""Seconds of `tastyrec features`, of building training sets, and online lookup latency.

Usage: .venv/bin/python bench/features.py [N ...] [--quick]   (default: 20000 222000)
--quick: that it runs and prints its figures, in seconds (a test runs it); not figures to quote. (N = 300)
For each N: a fresh warehouse (not timed), then `tastyrec features` in a fresh process (timed,
with its peak memory). At the first N also: training sets in both split modes, and the online
lookup of one customer x all their candidate items (p50 / p99 over 300 customers).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, run_measured  # noqa: E402

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))


LOOKUPS = 300  # customers whose online lookup is timed (at most N)


def main(sizes: list[int]) -> None:
    from tastyrec.config import Workspace
    from tastyrec.features.online import OnlineFeatures
    from tastyrec.features.training import build_training_set

    print(f"machine: {machine()}")
    for k, n in enumerate(sizes):
        with tempfile.TemporaryDirectory() as home:
            run_measured([TASTYREC, "--home", home, "setup", "--customers", str(n), "--json"])
            seconds, peak, out = run_measured([TASTYREC, "--home", home, "features", "--json"])
            rows = json.loads(out.strip().splitlines()[-1])["rows"]
            print(f"N={n:>7,}: features {seconds:5.1f} s wall (incl. start-up), peak RSS {peak:.2f} GiB, "
                  f"rows {rows}")
            if k:
                continue
            ws = Workspace.from_env(home)
            for mode in ("random", "time"):
                result = build_training_set(ws, mode=mode)
                total = sum(result.rows.values())
                print(f"  training set ({mode}): {total:,} rows in {result.seconds:.1f} s "
                      f"({total / result.seconds / 1e6:.2f} M rows/s)")
            online = OnlineFeatures(ws)
            customers = np.random.default_rng(0).choice(np.arange(1, n + 1), min(LOOKUPS, n), replace=False)
            online.for_customers([int(customers[0])])  # warm-up
            times = []
            for c in customers:
                started = time.perf_counter()
                frame = online.for_customers([int(c)])
                times.append((time.perf_counter() - started) * 1000)
            print(f"  online lookup, 1 customer x {len(frame)} items: p50 {np.percentile(times, 50):.1f} ms, "
                  f"p99 {np.percentile(times, 99):.1f} ms")


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:] if a != "--quick"]
    main([300] if "--quick" in sys.argv else sizes or [20_000, 222_000])
