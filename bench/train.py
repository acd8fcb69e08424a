"""Training throughput: the tastyrec loop + DLRM against the seed's loop + model, on the same data.

Usage: .venv/bin/python bench/train.py [--customers N] [--big [--big-home DIR] [--skip-small]]

1. `tastyrec pipeline --customers N` in a fresh home, timed, with its peak memory.
2. On that pipeline's training set: samples/s of
   - tastyrec: `tastyrec.train.train` (tensors built once, sliced per batch) with the DLRM, batch 4096;
   - the seed: its loop re-created from the quickstart notebook (a dict of per-column tensors per
     batch of 256, stacked into x_sparse / x_dense every batch, loss.item() every batch) with its
     model (tastyrec.model.SeedDLRM, a faithful port), on the first SEED_ROWS rows;
   and their ratio, measured in the same run.
3. With --big: the epoch time of the tastyrec loop at N = 222,000 (setup + features first).
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
from tastyrec.preprocess import Preprocessor  # noqa: E402
from tastyrec.train import TrainConfig, train  # noqa: E402

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))
SEED_ROWS = 20_000
SEED_BATCH = 256


def tastyrec_loop(train_frame: pd.DataFrame, workdir: Path) -> tuple[float, float]:
    """(samples/s, epoch seconds) of the second epoch (the first warms caches) of the tastyrec
    loop with the DLRM."""
    prep = Preprocessor("full").fit(train_frame)
    prep.transform(train_frame).save(workdir / "train.pt")
    prep.transform(train_frame.head(50_000)).save(workdir / "val.pt")
    config = TrainConfig(train_path=str(workdir / "train.pt"), val_path=str(workdir / "val.pt"),
                         checkpoint_dir=str(workdir / "ckpt"), model_kind="dlrm", epochs=2,
                         batch_size=MODEL_KINDS["dlrm"].batch_size, lr=MODEL_KINDS["dlrm"].lr, progress=False,
                         model_config=model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense)))
    result = train(config)
    epoch = result.history[-1]
    return epoch["samples_per_s"], epoch["seconds"]


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
    parser.add_argument("--big", action="store_true", help="also the epoch time at N = 222,000")
    parser.add_argument("--big-home", help="with --big: a home that already has N = 222,000 setup + features")
    parser.add_argument("--skip-small", action="store_true", help="only the --big part")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.skip_small:
        small(args.customers)
    if args.big:
        big(args.big_home)


def small(customers: int) -> None:
    """Pipeline wall time, and both loops on its training set."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        seconds, peak, out = run_measured([TASTYREC, "--home", str(home), "pipeline",
                                           "--customers", str(customers), "--json"])
        job = json.loads(out.strip().splitlines()[-1])
        ndcg = job["evaluation"]["model"]["ndcg@10"]
        print(f"pipeline N={customers:,}: {seconds:.1f} s wall, peak RSS {peak:.2f} GiB, "
              f"test NDCG@10 {ndcg:.3f}")
        train_frame = pd.read_parquet(home / "datasets" / "time" / "train.parquet", dtype_backend="pyarrow")
        torch.set_num_threads(2)
        ours, epoch_s = tastyrec_loop(train_frame, Path(tmp))
        seed = seed_loop(train_frame)
        print(f"training throughput: tastyrec loop + DLRM {ours:,.0f} samples/s "
              f"(epoch of {len(train_frame):,} rows in {epoch_s:.1f} s); seed loop + seed model "
              f"{seed:,.0f} samples/s; ratio {ours / seed:.0f}x")


def big(existing_home: str | None) -> None:
    """Epoch time of the tastyrec loop on the N = 222,000 training set."""
    from tastyrec.config import Workspace
    from tastyrec.features.training import build_training_set

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(existing_home) if existing_home else Path(tmp) / "home"
        if not existing_home:
            run_measured([TASTYREC, "--home", str(home), "setup", "--customers", "222000", "--json"])
            run_measured([TASTYREC, "--home", str(home), "features", "--json"])
        paths = build_training_set(Workspace.from_env(home), "time").paths
        frame = pd.read_parquet(paths["train"], dtype_backend="pyarrow")
        ours, epoch_s = tastyrec_loop(frame, Path(tmp))
        print(f"N=222,000: one epoch of {len(frame):,} training rows in {epoch_s:.1f} s "
              f"({ours:,.0f} samples/s)")


if __name__ == "__main__":
    np.random.seed(0)
    torch.manual_seed(0)
    main()
