"""Seconds and peak memory of `tastyrec setup` at N = 20,000 and N = 222,000 customers.

Usage: .venv/bin/python bench/setup.py [N ...] [--quick]
--quick: that it runs and prints its figures, in seconds (a test runs it); not figures to quote. (N = 300)
Each size runs in a fresh process with a fresh home, so peak memory is that run's alone.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, run_measured  # noqa: E402

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))


def main(sizes: list[int]) -> None:
    print(f"machine: {machine()}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as home:
            seconds, peak_gib, out = run_measured(
                [TASTYREC, "--home", home, "setup", "--customers", str(n), "--json"])
            result = json.loads(out.strip().splitlines()[-1])
            size_gib = Path(result["warehouse"]).stat().st_size / 2**30
        counts = result["row_counts"]
        print(f"N={n:>7,}: {seconds:6.1f} s wall, peak RSS {peak_gib:.2f} GiB, warehouse {size_gib:.2f} GiB, "
              f"{counts['raw_pos.order_header']:,} orders, {counts['raw_pos.order_detail']:,} order lines, "
              f"{counts['raw_customer.customer_loyalty']:,} customers, "
              f"{counts['synth.true_propensity']:,} truth rows")


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:] if a != "--quick"]
    main([300] if "--quick" in sys.argv else sizes or [20_000, 222_000])
