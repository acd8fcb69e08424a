"""Training across machines: two `tastyrec train` "nodes" on 127.0.0.1 (one process each, torchrun's
c10d rendezvous, the home shared) reach the weights of one process with the same global batch;
node 0 registers, node 1 only trains; a node that dies fails the run with its name."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from servers import free_port

from tastyrec.config import Workspace
from tastyrec.model import load_model
from tastyrec.train import NODES_FILE

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def home(trained_ws: Workspace, tmp_path: Path) -> Path:
    return shutil.copytree(trained_ws.home, tmp_path / "home")


def _train_args(home: Path, *extra: str) -> list[str]:
    # ~25 steps per epoch: float32 rounding that differs with the process count (and so the
    # order of the sums) grows step after step; this keeps it within the 2-process test's 1e-5
    return [TASTYREC, "--home", str(home), "train", "--epochs", "2", "--batch-size", "240",
            "--max-samples", "6000", "--seed-samples", "0", "--json", *extra]


def _nodes(home: Path, *extra: str) -> list[subprocess.Popen]:
    """Node 1 first (it waits at the rendezvous while node 0 prepares the data), then node 0."""
    endpoint = f"127.0.0.1:{free_port()}"
    return [subprocess.Popen(_train_args(home, "--nnodes", "2", "--node-rank", str(rank), "--rdzv-endpoint",
                                         endpoint, *extra),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
            for rank in (1, 0)]


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (torchrun starts its workers in sessions of their own)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += [child for child, parent in parents.items() if parent == tree[-1]]
    return tree


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_two_nodes_reach_the_weights_of_one_process(home: Path) -> None:
    # --model auto: node 0 runs the one-epoch probes alone, then both nodes continue the chosen kind
    one = subprocess.run(_train_args(home), capture_output=True, text=True, env=ENV, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    single = _last_json(one.stdout)

    follower, leader = _nodes(home, "--reprobe")  # probes again, as the one-process run did
    (out1, err1), (out0, err0) = follower.communicate(timeout=900), leader.communicate(timeout=900)
    assert leader.returncode == 0, err0[-3000:]
    assert follower.returncode == 0, err1[-3000:]
    assert _last_json(out1) == {"node_rank": 1, "nnodes": 2, "trained": True}
    two = _last_json(out0)

    assert two["train"]["options"]["model"] == single["train"]["options"]["model"]
    assert two["train"]["result"]["world_size"] == 2 and single["train"]["result"]["world_size"] == 1
    run_dir = Path(two["train"]["run_dir"])
    nodes = json.loads((run_dir / NODES_FILE).read_text())
    assert sorted(nodes) == ["0", "1"] and sorted(r for v in nodes.values() for r in v["ranks"]) == [0, 1]
    a = load_model(Path(single["train"]["run_dir"]) / "model.pt")[0].state_dict()
    b = load_model(run_dir / "model.pt")[0].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=0), key
    for x, y in zip(single["train"]["result"]["history"], two["train"]["result"]["history"]):
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-5)
    # only node 0 registered: one version per training command
    assert two["registry"]["version"] == single["registry"]["version"] + 1


def test_a_node_that_dies_fails_the_run_by_name_and_resume_continues(home: Path) -> None:
    before = set((home / "checkpoints").glob("*/checkpoint.pt"))  # the copied home's own run
    # every row, in batches of 128: epochs of seconds, so node 1 dies in the middle of epoch 2
    slow = ("--model", "dlrm", "--epochs", "3", "--max-samples", "1000000", "--batch-size", "128")
    follower, leader = _nodes(home, *slow)
    deadline = time.monotonic() + 600
    while not (done := list(set((home / "checkpoints").glob("*/checkpoint.pt")) - before)):  # epoch 1 ended
        assert time.monotonic() < deadline and leader.poll() is None, leader.stderr.read()[-3000:]
        time.sleep(0.1)
    for pid in _tree(follower.pid):  # node 1 dies: its CLI, its torchrun agent and its worker
        os.kill(pid, signal.SIGKILL)
    follower.wait()
    _, err0 = leader.communicate(timeout=600)
    assert leader.returncode != 0
    flat = " ".join(err0.split())
    assert "node 0 lost contact with node 1" in flat, err0[-3000:]
    assert "--resume on every node" in flat

    # resumed after epoch 1 with --epochs 2: one more epoch is enough to see it go on
    follower, leader = _nodes(home, *(("2" if arg == "3" else arg) for arg in slow), "--resume")
    (out1, err1), (out0, err0) = follower.communicate(timeout=900), leader.communicate(timeout=900)
    assert leader.returncode == 0, err0[-3000:]
    assert follower.returncode == 0, err1[-3000:]
    resumed = _last_json(out0)["train"]
    assert resumed["run_dir"] == str(done[0].parent)  # the interrupted run went on, no new one
    assert len(resumed["result"]["history"]) == resumed["result"]["epochs_run"] >= 2
