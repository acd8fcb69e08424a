"""The one loading path: a model directory written and read back scores like the model in memory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from tastyrec.model import MODEL_FILE, MODEL_KINDS, build_model, load_model, model_config, save_model
from tastyrec.predictor import Predictor
from tastyrec.preprocess import Preprocessor, synthetic_frame


def test_a_model_directory_scores_like_the_model_in_memory(tmp_path, monkeypatch) -> None:
    frame = synthetic_frame(300, seed=2)
    prep = Preprocessor().fit(frame)
    config = model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense), embedding_dim=4)
    torch.manual_seed(0)
    model = build_model("dlrm", config).eval()
    save_model(tmp_path / MODEL_FILE, model.state_dict(), "dlrm", config)
    loaded, kind = load_model(tmp_path / MODEL_FILE)
    assert kind == "dlrm" and loaded.config.embedding_dim == 4 and not loaded.training

    predictor = Predictor.from_dir(Predictor.write_dir(tmp_path / "model", prep, tmp_path / MODEL_FILE))
    batch = prep.transform(frame)
    with torch.no_grad():
        expected = torch.sigmoid(model(batch.sparse, batch.dense, batch.bags)).numpy()
    assert np.allclose(predictor.predict(frame), expected, atol=1e-6)

    # scoring in small batches gives the same numbers
    monkeypatch.setitem(MODEL_KINDS, "dlrm", MODEL_KINDS["dlrm"].__class__(
        **{**MODEL_KINDS["dlrm"].__dict__, "score_batch": 7}))
    assert np.allclose(predictor.predict(frame), expected, atol=1e-6)


def test_serving_never_imports_the_training_loop() -> None:
    code = ("import sys, tastyrec.predictor, tastyrec.registry; "
            "assert 'tastyrec.train' not in sys.modules, 'predictor imports train'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
