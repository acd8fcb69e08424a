"""Training: loss falls, 2-process DDP equals 1 process, resume equals an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tastyrec.model import load_model, model_config
from tastyrec.preprocess import Batch, Preprocessor, synthetic_frame
from tastyrec.distributed import epoch_permutation, global_batch_sizes
from tastyrec.train import CHECKPOINT_FILE, TrainConfig, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train (an odd row count, so the last global batch splits unevenly) and validation files."""
    root = tmp_path_factory.mktemp("train_data")
    prep = Preprocessor().fit(synthetic_frame(3001, seed=0))
    prep.transform(synthetic_frame(3001, seed=0)).save(root / "train.pt")
    prep.transform(synthetic_frame(1000, seed=1)).save(root / "val.pt")
    cfg = model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense),
                       embedding_dim=8, bottom_mlp=[16], top_mlp=[32])
    (root / "model_config.json").write_text(json.dumps(cfg))
    return root


def make_config(data_dir: Path, ckpt: Path, **overrides) -> TrainConfig:
    base = TrainConfig(
        train_path=str(data_dir / "train.pt"),
        val_path=str(data_dir / "val.pt"),
        checkpoint_dir=str(ckpt),
        model_kind="dlrm",
        model_config=json.loads((data_dir / "model_config.json").read_text()),
        epochs=3,
        batch_size=128,
        lr=3e-3,
        seed=11,
        patience=10,
        num_threads=1,
        progress=False,
    )
    return dataclasses.replace(base, **overrides)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if atol:
            assert torch.allclose(a[key], b[key], atol=atol, rtol=0), key
        else:
            assert torch.equal(a[key], b[key]), key


def test_rank_shards_rebuild_the_global_batches() -> None:
    n, batch, world = 23, 6, 2
    perm = epoch_permutation(n, seed=5, epoch=3)
    assert torch.equal(perm, epoch_permutation(n, seed=5, epoch=3))
    assert not torch.equal(perm, epoch_permutation(n, seed=5, epoch=4))
    shards = [perm[rank::world] for rank in range(world)]
    local = batch // world
    for k, size in enumerate(global_batch_sizes(n, batch)):
        ranks = torch.cat([shard[k * local : (k + 1) * local] for shard in shards])
        assert sorted(ranks.tolist()) == sorted(perm[k * batch : k * batch + size].tolist())


def test_loss_falls_and_result_is_written(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = train(make_config(data_dir, tmp_path / "ckpt", output_path=str(out)))
    train_losses = [h["train_loss"] for h in result.history]
    val_losses = [h["val_loss"] for h in result.history]
    assert train_losses[-1] < train_losses[0] and val_losses[-1] < val_losses[0]
    assert result.epochs_run == 3 and result.world_size == 1 and result.samples_per_s > 0
    saved = json.loads(out.read_text())
    assert saved["best_epoch"] == result.best_epoch and len(saved["history"]) == 3
    # the saved model is the best epoch's weights, rebuilt from its kind and config
    model, _ = load_model(result.model_path)
    assert_same_weights(model.state_dict(), result.state_dict)


def test_training_in_process_leaves_the_callers_thread_count(data_dir: Path, tmp_path: Path) -> None:
    """A service engine in the same process scores with one thread; training in-process must
    not leave the process on the thread count it trained with."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(make_config(data_dir, tmp_path / "ckpt", epochs=1, num_threads=2))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_early_stopping_keeps_the_best_epoch(data_dir: Path, tmp_path: Path) -> None:
    # lr = 0: the validation loss never improves after epoch 1, so patience 1 stops at epoch 2
    result = train(make_config(data_dir, tmp_path / "ckpt", lr=0.0, epochs=5, patience=1))
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1


def test_early_stopping_keeps_the_weights_of_the_best_epoch(data_dir: Path, tmp_path: Path) -> None:
    # Validation labels are the training labels' opposites: fitting the training rows soon makes
    # the validation loss rise, and patience 2 stops the run two epochs after its best one. The
    # saved model must hold the best epoch's weights (those of a run stopped right there), not
    # the last epoch's.
    val = Batch.load(data_dir / "val.pt", mmap=False)
    Batch(val.sparse, val.dense, val.bags, 1.0 - val.label).save(tmp_path / "val_inverted.pt")
    inverted = str(tmp_path / "val_inverted.pt")
    result = train(make_config(data_dir, tmp_path / "ckpt", val_path=inverted, epochs=8, patience=2))
    val_losses = [h["val_loss"] for h in result.history]
    best = result.best_epoch
    assert best == 1 + val_losses.index(min(val_losses))
    assert result.stopped_early and result.epochs_run == best + 2 and result.epochs_run < 8
    assert min(val_losses[best:]) > val_losses[best - 1]  # the loss rose after the best epoch
    until_best = train(make_config(data_dir, tmp_path / "until_best", val_path=inverted, epochs=best))
    saved, _ = load_model(result.model_path)
    assert_same_weights(saved.state_dict(), until_best.state_dict)
    last = torch.load(tmp_path / "ckpt" / CHECKPOINT_FILE, weights_only=True)["model"]
    assert any(not torch.equal(last[k], until_best.state_dict[k]) for k in last)  # later epochs moved on


def test_resume_reaches_the_same_weights(data_dir: Path, tmp_path: Path) -> None:
    straight = train(make_config(data_dir, tmp_path / "straight", epochs=4))
    train(make_config(data_dir, tmp_path / "resumed", epochs=2))
    resumed = train(make_config(data_dir, tmp_path / "resumed", epochs=4))
    assert resumed.epochs_run == 4 and len(resumed.history) == 4
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    assert_same_weights(resumed.state_dict, straight.state_dict)
    last = [torch.load(tmp_path / d / CHECKPOINT_FILE, weights_only=True) for d in ("straight", "resumed")]
    assert_same_weights(last[0]["model"], last[1]["model"])


def test_resume_refuses_another_runs_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    train(make_config(data_dir, tmp_path / "ckpt", epochs=1))
    with pytest.raises(ValueError, match="another run"):
        train(make_config(data_dir, tmp_path / "ckpt", epochs=2, lr=1e-2))


def test_two_process_ddp_matches_one_process(data_dir: Path, tmp_path: Path) -> None:
    # 3001 rows in batches of 120: the last global batch has 1 row, so rank 1 gets none of it
    one = train(make_config(data_dir, tmp_path / "one", batch_size=120))
    config = make_config(data_dir, tmp_path / "two", batch_size=120, output_path=str(tmp_path / "two.json"))
    config.to_json(tmp_path / "two_config.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tastyrec.train", "--config", str(tmp_path / "two_config.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["world_size"] == 2
    for a, b in zip(one.history, two["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    assert_same_weights(load_model(two["model_path"])[0].state_dict(), one.state_dict, atol=1e-5)


def test_the_explore_head_is_fitted_on_items_new_to_the_customer_only(tmp_path) -> None:
    """fit_explore_head: a logistic regression on the dense inputs of the training rows whose item
    the customer never bought. Here those rows are bought when item_ease_score is high, the rows of
    bought items when it is low: fitted on the right rows, the head ranks by item_ease_score."""
    from tastyrec.experiment import fit_explore_head
    from tastyrec.model import MODEL_FILE, build_model, load_model, save_model

    frame = synthetic_frame(3000, seed=5)
    new = frame["item_purchase_count"].to_numpy() == 0
    high = frame["item_ease_score"].to_numpy() > np.median(frame["item_ease_score"])
    frame["label"] = np.where(new, high, ~high).astype(int)
    prep = Preprocessor().fit(frame)
    column = prep.dense.index("item_purchase_count")
    cfg = model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense), embedding_dim=4,
                       explore_column=column)
    save_model(tmp_path / MODEL_FILE, build_model("dlrm", cfg).state_dict(), "dlrm", cfg)
    batch = prep.transform(frame)
    assert torch.equal(batch.dense[:, column] <= 0, torch.as_tensor(new))  # the scaled column tells the rows apart
    batch.groups = torch.arange(len(frame)) // 20  # rankings of 20 rows each on validation
    fitted = fit_explore_head(tmp_path / MODEL_FILE, batch, batch, dense=prep.dense)
    assert set(fitted["validation_new_ndcg@10"]["heads"]) == {"every input", "item_cosine_score", "item_ease_score",
                                                              "item_knn_score"}
    assert {k: fitted[k] for k in ("rows", "positives", "kept")} == {"rows": int(new.sum()),
                                                                     "positives": int(high[new].sum()), "kept": True}
    assert fitted["validation_new_ndcg@10"]["explore"] > fitted["validation_new_ndcg@10"]["main"]
    model, _ = load_model(tmp_path / MODEL_FILE)
    knn = prep.dense.index("item_ease_score")
    assert model.explore_weight[knn] > 0 and model.explore_weight[knn] == model.explore_weight.abs().max()
    with torch.no_grad():
        explore = model.heads(*batch.inputs())[:, 1].numpy()
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(frame["label"][new], explore[new]) > 0.95

    # a model without the head is left as it is
    plain = model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense), embedding_dim=4)
    save_model(tmp_path / "plain.pt", build_model("dlrm", plain).state_dict(), "dlrm", plain)
    before = (tmp_path / "plain.pt").read_bytes()
    assert fit_explore_head(tmp_path / "plain.pt", batch, batch) is None and (tmp_path / "plain.pt").read_bytes() == before

    # kept only when it ranks the validation rows better than the main head: not where the main head
    # ranks them perfectly (validation bought what the untrained main head scores above its median)
    main_model = build_model("dlrm", cfg)
    save_model(tmp_path / MODEL_FILE, main_model.state_dict(), "dlrm", cfg)
    with torch.no_grad():
        main = main_model.eval().heads(*batch.inputs())[:, 0].numpy()
    worse = prep.transform(frame.assign(label=(main > np.median(main)).astype(int)))
    worse.groups = batch.groups
    fitted = fit_explore_head(tmp_path / MODEL_FILE, batch, worse, dense=prep.dense)
    assert not fitted["kept"] and not load_model(tmp_path / MODEL_FILE)[0].explores


def test_an_explore_head_on_one_input_wins_where_validation_says_so(tmp_path) -> None:
    """The training rows of new items are bought when item_cosine_score is high or, by chance of
    that window, when the customer is old; on validation only item_cosine_score counts. The head
    on every input learns age too; the head on item_cosine_score alone ranks validation better,
    and is the one saved."""
    from tastyrec.experiment import fit_explore_head
    from tastyrec.model import MODEL_FILE, build_model, load_model, save_model

    frame = synthetic_frame(4000, seed=7)
    frame["age"] = frame["age"].fillna(40)
    new = frame["item_purchase_count"].to_numpy() == 0
    high = frame["item_cosine_score"].to_numpy() > np.median(frame["item_cosine_score"])
    old = frame["age"].to_numpy() > np.median(frame["age"])
    frame["label"] = np.where(new, high | old, 0).astype(int)
    prep = Preprocessor().fit(frame)
    column = prep.dense.index("item_purchase_count")
    cfg = model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense), embedding_dim=4,
                       explore_column=column)
    save_model(tmp_path / MODEL_FILE, build_model("dlrm", cfg).state_dict(), "dlrm", cfg)
    train = prep.transform(frame)
    val = prep.transform(frame.assign(label=np.where(new, high, 0).astype(int)))
    val.groups = torch.arange(len(frame)) // 20
    fitted = fit_explore_head(tmp_path / MODEL_FILE, train, val, dense=prep.dense)
    heads = fitted["validation_new_ndcg@10"]["heads"]
    assert heads["item_cosine_score"] > heads["every input"]
    assert fitted["inputs"] == "item_cosine_score" and fitted["kept"]
    model, _ = load_model(tmp_path / MODEL_FILE)
    cosine = prep.dense.index("item_cosine_score")
    assert model.explore_weight[cosine] > 0 and int((model.explore_weight != 0).sum()) == 1


def test_the_predictor_ranks_cross_sell_with_the_explore_head(tmp_path) -> None:
    from tastyrec.model import MODEL_FILE, build_model, save_model
    from tastyrec.predictor import Predictor

    frame = synthetic_frame(300, seed=6)
    prep = Preprocessor().fit(frame)
    for column in (prep.dense.index("item_purchase_count"), None):
        cfg = model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense), embedding_dim=4,
                           explore_column=column)
        torch.manual_seed(1)
        model = build_model("dlrm", cfg).eval()
        if column is not None:
            model.explore_weight.normal_()
        save_model(tmp_path / MODEL_FILE, model.state_dict(), "dlrm", cfg)
        predictor = Predictor.from_dir(Predictor.write_dir(tmp_path / "model", prep, tmp_path / MODEL_FILE))
        with torch.no_grad():
            main = torch.sigmoid(model(*prep.transform(frame).inputs())).numpy()
        assert predictor.explores == (column is not None)
        assert np.allclose(predictor.predict(frame), main, atol=1e-6)
        if column is None:  # a model from before the explore head: its one head for both
            assert np.allclose(predictor.predict(frame, explore=True), main, atol=1e-6)
        else:
            with torch.no_grad():
                explore = torch.sigmoid(model.heads(*prep.transform(frame).inputs())[:, 1]).numpy()
            assert np.allclose(predictor.predict(frame, explore=True), explore, atol=1e-6)
            assert not np.allclose(explore, main, atol=1e-3)
