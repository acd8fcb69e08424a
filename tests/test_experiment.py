"""Training runs: which run `--resume` picks, and options refused before anything is launched."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.experiment import RUN_FILE, _run_dir
from tastyrec.options import TrainError, TrainOptions
from tastyrec.train import CHECKPOINT_FILE


def flat(text: str) -> str:
    """Terminal output without Rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def unfinished(ws: Workspace, name: str, model: str, split: str):
    path = ws.checkpoints / name
    path.mkdir(parents=True)
    (path / CHECKPOINT_FILE).write_bytes(b"")
    (path / RUN_FILE).write_text(json.dumps({"model": model, "split": split}))
    return path


def test_resume_picks_the_newest_unfinished_run_of_the_same_kind_and_split(tmp_path) -> None:
    ws = Workspace.from_env(tmp_path)
    mine = unfinished(ws, "20260101-000000-dlrm-time", "dlrm", "time")
    # newer, and its folder name ends in "-dlrm-time" too: a name glob would take it
    unfinished(ws, "20260102-000000-seed-dlrm-time", "seed-dlrm", "time")
    unfinished(ws, "20260103-000000-dlrm-random", "dlrm", "random")
    assert _run_dir(ws, TrainOptions(resume=True, model="dlrm")) == mine
    assert _run_dir(ws, TrainOptions(resume=True, model="seed-dlrm")).name == "20260102-000000-seed-dlrm-time"
    (mine / "model").mkdir()  # finished: a new run folder, recording its kind and split
    fresh = _run_dir(ws, TrainOptions(resume=True, model="dlrm"))
    assert fresh not in ws.checkpoints.iterdir() or fresh.name != mine.name
    assert json.loads((fresh / RUN_FILE).read_text()) == {"model": "dlrm", "split": "time"}


def test_defaults_follow_the_model_kind_unless_given() -> None:
    assert (TrainOptions(model="dlrm").resolved().batch_size, TrainOptions(model="dlrm").resolved().lr) == (4096, 2e-3)
    dense = TrainOptions(model="dlrm-dense-items").resolved()
    assert (dense.batch_size, dense.lr) == (4096, 5e-4)
    assert TrainOptions().resolved().lr is None  # auto: each kind takes its own
    seed = TrainOptions(model="seed-dlrm").resolved()
    assert (seed.batch_size, seed.lr) == (256, 1e-3)  # the seed notebook's own
    given = TrainOptions(model="seed-dlrm", batch_size=512, lr=0.01).resolved()
    assert (given.batch_size, given.lr) == (512, 0.01)


@pytest.mark.parametrize("options, message", [
    (dict(nproc=2, batch_size=4095), "multiple of --nproc"),
    (dict(nproc=0), "at least 1"),
    (dict(epochs=0), "at least 1"),
    (dict(model="bert"), "auto, dlrm, dlrm-dense-items, seed-dlrm"),
    (dict(split="sideways"), "time, random"),
    (dict(nnodes=2), "needs --rdzv-endpoint HOST:PORT"),
    (dict(nnodes=2, rdzv_endpoint="node0"), "needs --rdzv-endpoint HOST:PORT"),
    (dict(nnodes=2, node_rank=2, rdzv_endpoint="node0:29400"), "--node-rank must be 0..1"),
    (dict(nnodes=2, nproc=2, batch_size=4094, rdzv_endpoint="node0:29400"), "multiple of --nproc x --nnodes 4"),
])
def test_bad_options_are_refused_before_launch(options, message) -> None:
    with pytest.raises(TrainError, match=message):
        TrainOptions(**options).resolved()


@pytest.mark.parametrize("args, code, message", [
    (["--nproc", "2", "--batch-size", "4095"], 1, "must be a multiple of --nproc x --nnodes 2"),
    (["--nnodes", "2", "--node-rank", "1"], 1, "needs --rdzv-endpoint HOST:PORT"),
    (["--model", "bert"], 2, "'auto', 'dlrm', 'dlrm-dense-items', 'seed-dlrm'"),
    (["--split", "sideways"], 2, "'time', 'random'"),
])
def test_the_cli_refuses_bad_options_without_advising_resume(tmp_path, args, code, message) -> None:
    result = CliRunner().invoke(app, ["--home", str(tmp_path), "train", *args])
    assert result.exit_code == code, result.output
    assert message in flat(result.output) and "--resume" not in result.output
    assert not (tmp_path / "checkpoints").exists()  # nothing was started


def test_resume_is_advised_only_when_a_run_was_interrupted(tmp_path) -> None:
    """A worker that fails before its first epoch ends leaves nothing to resume from."""
    from tastyrec.experiment import _torchrun
    from tastyrec.train import TrainConfig

    config = TrainConfig(train_path=str(tmp_path / "missing.pt"), val_path=str(tmp_path / "missing.pt"),
                         checkpoint_dir=str(tmp_path), model_kind="dlrm", model_config={}, epochs=1,
                         batch_size=2, lr=1e-3, progress=False)
    config.to_json(tmp_path / "train_config.json")
    with pytest.raises(TrainError) as failed:
        _torchrun(TrainOptions(nproc=1), tmp_path / "train_config.json", tmp_path)
    assert "exited with status" in str(failed.value) and "--resume" not in str(failed.value)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")  # as if an epoch had completed before the failure
    with pytest.raises(TrainError, match="start again with --resume"):
        _torchrun(TrainOptions(nproc=1), tmp_path / "train_config.json", tmp_path)


def test_auto_carries_its_decision_over_on_the_same_data_until_reprobe(trained_ws, tmp_path) -> None:
    """--model auto probes each kind for an epoch once per data: a second run on the same data
    trains the kind chosen then, without probes; other rows or --reprobe compare again."""
    import shutil

    from tastyrec.experiment import CHOICE_FILE, train_best
    from tastyrec.model import AUTO_KINDS

    ws = Workspace.from_env(shutil.copytree(trained_ws.home, tmp_path / "home"))
    (ws.home / CHOICE_FILE).unlink(missing_ok=True)
    opts = TrainOptions(epochs=1, max_samples=3000, progress=False)

    def run(**changes) -> tuple[dict, dict[str, float], set]:
        before = set(ws.checkpoints.iterdir())
        outcome, losses = train_best(ws, TrainOptions(**{**opts.__dict__, **changes}), AUTO_KINDS)
        return outcome.result, losses, set(ws.checkpoints.iterdir()) - before

    first, losses, made = run()
    assert first["model_choice"] == "probed" and set(losses) == set(AUTO_KINDS) and len(made) == 1
    chosen = json.loads((ws.home / CHOICE_FILE).read_text())
    assert chosen["kind"] == min(losses, key=losses.get) and chosen["losses"] == losses
    kind = json.loads((next(iter(made)) / RUN_FILE).read_text())["model"]
    assert kind == chosen["kind"]

    again, carried, made = run()  # no probes: one run folder, of the chosen kind, and the same losses
    assert again["model_choice"] == f"carried over from {chosen['at']}" and carried == losses
    assert [json.loads((m / RUN_FILE).read_text())["model"] for m in made] == [kind]
    assert again["epochs_run"] == 1

    assert run(max_samples=2500)[0]["model_choice"] == "probed"  # other rows: compared again
    assert run(max_samples=2500, reprobe=True)[0]["model_choice"] == "probed"
