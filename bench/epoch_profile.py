"""Where one training epoch's time goes: preparation, forward, backward + optimizer, per operator.

Usage: .venv/bin/python bench/epoch_profile.py --home H [--kind dlrm] [--steps 150] [--threads 2] [--quick]
--quick: that it runs and prints its figures, in seconds (a test runs it); not figures to quote. (3 steps)

Reads the time split's training rows of a home where `tastyrec train` (or `pipeline`) has run,
prepares them as training does (buyers only, preprocessing fitted on them), then times `--steps`
mini-batches of the kind's batch size: forward only, and forward + backward + Adam (`train.adam`)
with the training wrapper (`train.DLRMTrain`), and prints torch.profiler's operators by self CPU time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from tastyrec.parquet_rows import ParquetRows  # noqa: E402
from tastyrec.model import MODEL_KINDS, build_model, model_config  # noqa: E402
from tastyrec.preprocess import Preprocessor  # noqa: E402
from tastyrec.train import DLRMTrain, adam  # noqa: E402


def timed(label: str, fn):
    started = time.perf_counter()
    value = fn()
    print(f"{label}: {time.perf_counter() - started:.2f} s")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="a home with datasets/time/train.parquet")
    parser.add_argument("--kind", default="dlrm", choices=[k for k in MODEL_KINDS if k != "seed-dlrm"])
    parser.add_argument("--steps", type=int, default=150, help="mini-batches timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 steps: that it runs")
    args = parser.parse_args()
    if args.quick:
        args.steps = 3
    torch.set_num_threads(args.threads)
    kind = MODEL_KINDS[args.kind]
    print(f"machine: {machine()}; {args.threads} torch threads")

    path = Path(args.home) / "datasets" / "time" / "train.parquet"
    rows = timed("choose rows (buyers only)", lambda: ParquetRows.open(path, buyers_only=kind.buyers_only))
    prep = Preprocessor(kind.feature_set)
    with tempfile.TemporaryDirectory(prefix="tastyrec-profile-") as tmp:  # the tensors, gone after
        data = timed("fit preprocessing and transform (two passes; bags once per customer and snapshot)",
                     lambda: prep.fit_transform_rows(rows, Path(tmp) / "tensors"))
        order = torch.randperm(len(data))

        torch.manual_seed(0)
        model = build_model(args.kind, model_config(args.kind, prep.cardinalities, prep.bag_sizes, len(prep.dense)))
        wrapped, optimizer = DLRMTrain(model), adam(model, kind.lr)
        size = min(kind.batch_size, len(data))  # a small home has less than one batch
        # each step gathers its rows, as train.py does
        batches = [data.take(order[i * size:(i + 1) * size]) for i in range(min(args.steps, len(data) // size))]

        def step(batch) -> None:
            loss, _ = wrapped(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        with torch.no_grad():
            started = time.perf_counter()
            for b in batches:
                model(*b.inputs())
            forward = (time.perf_counter() - started) / len(batches)
        started = time.perf_counter()
        for b in batches:
            step(b)
        full = (time.perf_counter() - started) / len(batches)
        steps = -(-len(data) // size)
        print(f"{len(data):,} rows, batch {size}: {steps} steps per epoch; forward {forward * 1e3:.1f} ms/step, "
              f"forward + backward + Adam {full * 1e3:.1f} ms/step -> {full * steps:.1f} s of training per epoch")
        with profile() as prof:
            for b in batches[:min(30, args.steps)]:
                step(b)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
