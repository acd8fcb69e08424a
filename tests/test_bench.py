"""Every script in bench/ runs in its quick mode and prints its figures: a bench that no longer
runs fails `make test`. Nothing here checks a timing (the machines are shared and noisy); each
test checks that the lines carrying the figures came out, with numbers in them."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).parents[1] / "bench"
NUMBER = r"[\d,]+(\.\d+)?"


def bench(script: str, *args: str, timeout: int = 600) -> str:
    """Run bench/<script> with args; its stdout (the test fails with its stderr if it fails)."""
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, f"bench/{script} exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert proc.stdout.startswith("machine: "), proc.stdout[:500]
    return proc.stdout


def printed(out: str, *patterns: str) -> None:
    """Each pattern (a regular expression; NUMBER where a figure goes) matches a line of out."""
    for pattern in patterns:
        assert re.search(pattern.replace("NUMBER", NUMBER), out, re.MULTILINE), f"no line matches {pattern!r}:\n{out}"


def test_setup_bench() -> None:
    printed(bench("setup.py", "--quick"), r"^N=\s*300: +NUMBER s wall, peak RSS NUMBER GiB, warehouse NUMBER GiB")


def test_features_bench() -> None:
    printed(bench("features.py", "--quick"), r"^N=\s*300: features +NUMBER s wall",
            r"training set \(time\): NUMBER rows in NUMBER s", r"online lookup, 1 customer x NUMBER items: p50 NUMBER ms")


def test_online_bench() -> None:
    printed(bench("online.py", "--quick"), r"sqlite", r"redis", r"p99")


def test_serve_bench(trained_ws, tmp_path) -> None:
    home = tmp_path / "home"  # the bench saves a campaign (recommend --all --save) in the home
    shutil.copytree(trained_ws.home, home)
    printed(bench("serve.py", "--quick", "--home", str(home)),
            r"^every customer's scores precomputed NUMBER s after the service answered",
            r"^POST /recommendations, 1 customer, top 3, concurrency 1 \(20 customers\): p50 NUMBER ms, p99 NUMBER ms",
            r"^POST /score, one customer's NUMBER candidate rows, concurrency 16: NUMBER requests/s",
            r"^mlflow models serve /invocations, the same rows, concurrency 16: NUMBER requests/s",
            r"tastyrec serve --workers 2: NUMBER requests/s",
            r"^engine, N=400, one chunk of 400 customers \(NUMBER rows\): snapshot read NUMBER s, rows NUMBER s",
            r"^engine, N=400: recommend\(\) for every customer NUMBER s \(400 customers served",
            r"^`tastyrec recommend --all --save` \(N=400, streamed into a campaign\): NUMBER s, peak RSS NUMBER GiB")


def test_app_bench(trained_ws) -> None:
    out = bench("app.py", "--quick", "--home", str(trained_ws.home))
    printed(out, r"^city .+: NUMBER customers; Get Recommendations -> table NUMBER s",
            r"^every customer: 400 customers; Get Recommendations -> table NUMBER s")


def test_training_benches(trained_ws, tmp_path) -> None:
    """train.py's loops and epoch_profile.py on the trained home's training rows; train_memory.py
    trains again, so on a copy."""
    printed(bench("train.py", "--quick", "--home", str(trained_ws.home)),
            r"training throughput: tastyrec loop \+ DLRM NUMBER samples/s .* ratio NUMBERx")
    printed(bench("epoch_profile.py", "--quick", "--home", str(trained_ws.home)),
            r"forward NUMBER ms/step, forward \+ backward \+ Adam NUMBER ms/step", r"Self CPU")
    home = tmp_path / "home"
    shutil.copytree(trained_ws.home, home)
    printed(bench("train_memory.py", "--quick", "--home", str(home)),
            r"^training set +NUMBER s +peak RSS NUMBER GiB", r"^training +NUMBER s +peak RSS NUMBER GiB")


def test_pipeline_bench() -> None:
    """fullscale.py runs the whole pipeline, at 300 customers."""
    printed(bench("fullscale.py", "--quick"), r"^setup +NUMBER +NUMBER", r"^pipeline \(end to end\) +NUMBER +NUMBER")


def ta_feng_like(path: Path, customers: int = 150) -> Path:
    """A made-up CSV in Ta-Feng's layout: each customer shops on 10 to 20 days from November to
    February, a few of 30 products a day, some of them their own favourites."""
    sys.path.insert(0, str(BENCH))
    from tafeng import RAW_COLUMNS

    rng = np.random.default_rng(0)
    products = [f"47100000{k:05d}" for k in range(30)]
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(RAW_COLUMNS)
        for c in range(customers):
            favourites = rng.choice(30, 4, replace=False)
            for day in rng.choice(np.arange(120), size=rng.integers(10, 21), replace=False):
                when = date.fromordinal(date(2000, 11, 1).toordinal() + int(day))
                for k in set(rng.choice(favourites, 2).tolist() + rng.choice(30, 2).tolist()):
                    amount = int(rng.integers(1, 4))
                    writer.writerow([f"{when.month}/{when.day}/{when.year}", f"{c:08d}", "35-39", "115",
                                     f"{110100 + k % 7}", products[k], amount, amount * 8, amount * 10])
    return path


def test_tafeng_bench(tmp_path) -> None:
    out = bench("tafeng.py", "--quick", "--source", str(ta_feng_like(tmp_path / "ta_feng.csv")),
                "--items", "20", "--home", str(tmp_path / "home"))
    printed(out, r"^150 customers in 1 cities", r"^features: NUMBER s", r"tifu_knn", r"NDCG@10 = NUMBER x the best baseline",
            r"^cross-sell ranked by: ")
