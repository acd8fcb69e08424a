"""Full scale on one machine: `tastyrec pipeline --customers 222000`, wall time and peak RSS per stage.

Usage: .venv/bin/python bench/fullscale.py [--customers 222000] [--home DIR] [--quick] [-- extra pipeline options]
--quick: that it runs and prints its figures, in seconds (a test runs it); not figures to quote. (300 customers, 1 epoch, no seed baseline)

Runs the pipeline once in a child process (a fresh home unless --home is given), samples the
resident memory of its whole process tree (the CLI, torchrun and its workers) every 0.25 s, and
splits the run into stages with the CLI's progress log (TASTYREC_PROGRESS_LOG: one timestamped
line per progress update) and the per-epoch seconds of the training result. Prints one row per
stage: setup, features, training set, preprocessing, each epoch (the `--model auto` probes
first), the seed baseline, evaluation, registration; then the totals and the test metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

TASTYREC = str(Path(sys.executable).with_name("tastyrec"))
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> float:
    """Resident memory of `root` and all its descendants, in bytes (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text().split()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(statm[1]) * PAGE
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


class Sampler(threading.Thread):
    """(time, tree RSS) every `every` seconds while the process runs."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), tree_rss(self.pid)))
            self.stop.wait(self.every)

    def peak(self, start: float, end: float) -> float:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside, default=0.0) / 2**30


def stage_of(what: str) -> str:
    """The stage a progress label belongs to."""
    if what in ("customers", "files", "tables"):
        return "setup"
    if what in ("feature snapshots", "feast apply", "materialise"):
        return "features"
    if what.startswith("training set"):
        return "training set"
    if what.startswith("preprocessing") or what.endswith("tensors"):
        return "preprocessing"
    if what.startswith("scoring"):
        return "evaluation"
    return what  # "register", and "epoch <kind>" (stages() adds the epoch number)


def stages(events: list[dict], started: float) -> list[tuple[str, float, float]]:
    """(stage, start, end): consecutive progress updates of one stage form one interval, which
    starts where the previous interval ended."""
    out: list[list] = []
    for e in events:
        name = stage_of(e["what"])
        if name.startswith("epoch "):  # one per epoch, written by train.py: "<kind> epoch N"
            name = f"{name.split()[1]} epoch {e['done']}"
        if out and out[-1][0] == name:
            out[-1][2] = e["time"]
        else:
            out.append([name, out[-1][2] if out else started, e["time"]])
    return [tuple(s) for s in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=222_000)
    parser.add_argument("--home", help="the pipeline's home (default: a fresh temporary one)")
    parser.add_argument("--quick", action="store_true", help="300 customers, 1 epoch: that it runs")
    parser.add_argument("extra", nargs="*", help="more `tastyrec pipeline` options, after --")
    args = parser.parse_args()
    if args.quick:
        args.customers, args.extra = 300, ["--epochs", "1", "--seed-samples", "0", *args.extra]
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(args.home or Path(tmp) / "home")
        log = Path(tmp) / "progress.jsonl"
        cmd = [TASTYREC, "--home", str(home), "pipeline", "--customers", str(args.customers), *args.extra]
        print("command:", " ".join(cmd[1:]))
        started = time.time()
        errors = open(Path(tmp) / "stderr.txt", "w+")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True,
                                env={**os.environ, "TASTYREC_PROGRESS_LOG": str(log), "COLUMNS": "200"})
        sampler = Sampler(proc.pid)
        sampler.start()
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.time()
        sampler.stop.set()
        sampler.join()
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            sys.exit(f"the pipeline failed (status {os.waitstatus_to_exitcode(status)}):\n{errors.read()[-3000:]}")
        events = [json.loads(line) for line in log.read_text().splitlines()]
        rows = stages(events, started)
        print(f"\n{'stage':<34} {'wall s':>8} {'peak RSS GiB':>13}")
        for name, start, end in rows:
            print(f"{name:<34} {end - start:>8.1f} {sampler.peak(start, end):>13.2f}")
        print(f"{'pipeline (end to end)':<34} {ended - started:>8.1f} {sampler.peak(started, ended):>13.2f}")
        print(f"largest single process: {usage.ru_maxrss / 2**20:.2f} GiB (ru_maxrss of the CLI and the "
              "children it waited for)")
        print(out.strip()[-2500:])


if __name__ == "__main__":
    main()
