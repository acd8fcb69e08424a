"""Memory of one training run by stage: training set, preprocessing, training.

Usage: .venv/bin/python bench/train_memory.py --home H [--model dlrm] [--epochs 1] [--quick]
--quick: that it runs and prints its figures, in seconds (a test runs it); not figures to quote
(at most 20,000 training rows).

Runs `experiment.train_model` in this process on a home where `tastyrec features` has run (e.g.
the one `bench/fullscale.py --home H` leaves), samples this process's resident memory (VmRSS,
and RssAnon: memory that is not the memory-mapped tensors) every 0.5 s, and prints the peak of
each stage. Training runs in-process (one process), as `tastyrec train --nproc 1` does.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from tastyrec.config import Workspace  # noqa: E402
from tastyrec.experiment import train_model  # noqa: E402
from tastyrec.options import TrainOptions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--model", default="dlrm")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="at most 20,000 training rows: that it runs")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    samples: list[tuple[float, float, float]] = []
    events: list[tuple[float, str]] = []
    stop = threading.Event()

    def take() -> None:
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        samples.append((time.time(), int(status["VmRSS"].split()[0]) / 2**20,
                        int(status["RssAnon"].split()[0]) / 2**20))

    def sample() -> None:
        while not stop.is_set():
            take()
            stop.wait(0.5)

    def progress(what: str, done: int, total: int) -> None:
        take()  # one sample at every step too, so a stage shorter than 0.5 s still has one
        events.append((time.time(), what))

    threading.Thread(target=sample, daemon=True).start()
    started = time.time()
    outcome = train_model(Workspace.from_env(args.home),
                          TrainOptions(model=args.model, epochs=args.epochs, progress=False,
                                       max_samples=20_000 if args.quick else None),
                          progress=progress)
    stop.set()
    take()
    ended = time.time()
    training_set = max(t for t, what in events if what.startswith("training set"))
    prepared = max(t for t, what in events if what.endswith("tensors"))
    for name, a, b in (("training set", started, training_set), ("preprocessing", training_set, prepared),
                       ("training", prepared, ended)):
        inside = [(rss, anon) for t, rss, anon in samples if a < t <= b]
        print(f"{name:<14} {b - a:7.0f} s  peak RSS {max(r for r, _ in inside):.2f} GiB "
              f"(not mapped: {max(x for _, x in inside):.2f} GiB)")
    for epoch in outcome.result["history"]:
        print(f"epoch {epoch['epoch']}: {epoch['seconds']:.1f} s, {epoch['samples_per_s']:,.0f} samples/s")


if __name__ == "__main__":
    main()
