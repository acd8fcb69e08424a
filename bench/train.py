"""Training throughput: the tastyrec loop + DLRM against the seed's loop + model, on the same data.

Usage: .venv/bin/python bench/train.py [--customers N] [--home DIR] [--quick]
--quick: that it runs and prints its figures, in seconds (a test runs it); not figures to quote. (N = 300)

1. `tastyrec pipeline --customers N` in a fresh home, timed, with its peak memory.
2. On that pipeline's training set: samples/s of
   - tastyrec: `tastyrec.train.train` (tensors built once, sliced per batch) with the DLRM, batch 4096;
   - the seed: its loop re-created from the quickstart notebook (a dict of per-column tensors per
     batch of 256, stacked into x_sparse / x_dense every batch, loss.item() every batch) with its
     model (tastyrec.model.SeedDLRM, a faithful port), on the first SEED_ROWS rows;
   and their ratio, measured in the same run.
The epoch time at N = 222,000 is bench/fullscale.py's (the whole pipeline at that size).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, run_measured  # noqa: E402

from tastyrec.columns import LABEL, SEED_DENSE, SEED_SPARSE  # noqa: E402
from tastyrec.model import MODEL_KINDS, build_model, model_config  # noqa: E402
from tastyrec.parquet_rows import ParquetRows  # noqa: E402
from tastyrec.preprocess import Preprocessor  # noqa: E402
from tastyrec.train import TrainConfig, train  # noqa: E402

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))
SEED_ROWS = 20_000
SEED_BATCH = 256


def tastyrec_loop(path: Path, workdir: Path) -> tuple[float, float, int]:
    """(samples/s, epoch seconds, rows) of the second epoch (the first warms caches) of the
    tastyrec loop with the DLRM, on every row of the training set, prepared as training does."""
    rows = ParquetRows.open(path)
    prep = Preprocessor("full")
    data = prep.fit_transform_rows(rows, workdir / "train_tensors")
    data.slice(0, 50_000).save(workdir / "val_tensors")
    config = TrainConfig(train_path=str(workdir / "train_tensors"), val_path=str(workdir / "val_tensors"),
                         checkpoint_dir=str(workdir / "ckpt"), model_kind="dlrm", epochs=2,
                         batch_size=MODEL_KINDS["dlrm"].batch_size, lr=MODEL_KINDS["dlrm"].lr, progress=False,
                         model_config=model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense)))
    result = train(config)
    epoch = result.history[-1]
    return epoch["samples_per_s"], epoch["seconds"], len(data)


def seed_loop(train_frame: pd.DataFrame) -> float:
    """samples/s of the seed notebook's training loop and model on the first SEED_ROWS rows."""
    frame = train_frame.head(SEED_ROWS)
    prep = Preprocessor("seed").fit(frame)
    batch = prep.transform(frame)
    # the seed's datapipe yields, per batch, a dict of one tensor per column
    columns = {f: batch.sparse[:, j] for j, f in enumerate(SEED_SPARSE)}
    columns |= {f: batch.dense[:, j].double() for j, f in enumerate(SEED_DENSE)}
    columns[LABEL] = batch.label.long()
    model = build_model("seed-dlrm", model_config("seed-dlrm", prep.cardinalities, {}, len(prep.dense)))
    criterion = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    order = torch.randperm(len(frame))
    started, running_loss, warm_up = time.perf_counter(), 0.0, 5 * SEED_BATCH
    for start in range(0, len(frame), SEED_BATCH):
        if start == warm_up:  # time the steady state, as for the tastyrec loop
            started = time.perf_counter()
        index = order[start:start + SEED_BATCH]
        batch_data = {key: tensor[index] for key, tensor in columns.items()}
        y = batch_data.pop(LABEL).type(torch.float32)
        x_sparse = torch.stack([t.to(torch.int) for k, t in batch_data.items() if k in SEED_SPARSE], dim=1)
        x_dense = torch.stack([t.to(torch.float32) for k, t in batch_data.items() if k in SEED_DENSE], dim=1)
        optimizer.zero_grad()
        output = model(x_sparse.long(), x_dense)
        loss = criterion(output.unsqueeze(1), y.unsqueeze(1))
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    return (len(frame) - warm_up) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--home", type=Path, help="a home where the pipeline has run (its time is not measured)")
    parser.add_argument("--quick", action="store_true", help="300 customers: that it runs")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    small(300 if args.quick else args.customers, args.home)


def small(customers: int, existing: Path | None = None) -> None:
    """Pipeline wall time (unless `existing` names a home where it has run), and both loops on
    its training set."""
    with tempfile.TemporaryDirectory() as tmp:
        home = existing or Path(tmp) / "home"
        if existing is None:
            seconds, peak, out = run_measured([TASTYREC, "--home", str(home), "pipeline",
                                               "--customers", str(customers), "--json"])
            job = json.loads(out.strip().splitlines()[-1])
            ndcg = job["evaluation"]["model"]["ndcg@10"]
            print(f"pipeline N={customers:,}: {seconds:.1f} s wall, peak RSS {peak:.2f} GiB, "
                  f"test NDCG@10 {ndcg:.3f}")
        path = home / "datasets" / "time" / "train.parquet"
        torch.set_num_threads(2)
        ours, epoch_s, n = tastyrec_loop(path, Path(tmp))
        seed = seed_loop(pd.read_parquet(path, dtype_backend="pyarrow").head(SEED_ROWS))
        print(f"training throughput: tastyrec loop + DLRM {ours:,.0f} samples/s "
              f"(epoch of {n:,} rows in {epoch_s:.1f} s); seed loop + seed model "
              f"{seed:,.0f} samples/s; ratio {ours / seed:.0f}x")


if __name__ == "__main__":
    np.random.seed(0)
    torch.manual_seed(0)
    main()
