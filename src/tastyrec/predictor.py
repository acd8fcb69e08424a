"""Preprocessing + model in one object: the single loading path for evaluation, service, app, tests.

A model directory holds `preprocess.json` (the fitted Preprocessor, never refitted) and
`model.pt` (weights + model kind + config, written by training); the model is always rebuilt
from that saved config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tastyrec.preprocess import Preprocessor
from tastyrec.train import MODEL_FILE, model_from_saved

PREPROCESS_FILE = "preprocess.json"
# Rows scored per forward pass. The seed's model expands every row into 32,896 pairwise products
# (a (B, 256, 256) outer product first), so it gets small batches to stay within memory.
SCORE_BATCH = {"dlrm": 16_384, "seed-dlrm": 1_024}


class Predictor:
    """Scores feature frames (the columns of a training set) with purchase probabilities."""

    def __init__(self, preprocessor: Preprocessor, model: torch.nn.Module, kind: str):
        self.preprocessor, self.model, self.kind = preprocessor, model.eval(), kind

    @classmethod
    def from_dir(cls, path: str | Path) -> "Predictor":
        path = Path(path)
        preprocessor = Preprocessor.from_dict(json.loads((path / PREPROCESS_FILE).read_text()))
        saved = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True)
        return cls(preprocessor, model_from_saved(saved), saved["model_kind"])  # model.pt read once

    @staticmethod
    def write_dir(path: str | Path, preprocessor: Preprocessor, model_file: str | Path) -> Path:
        """Write a model directory from a fitted preprocessor and a training run's model.pt."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / PREPROCESS_FILE).write_text(json.dumps(preprocessor.to_dict()))
        shutil.copyfile(model_file, path / MODEL_FILE)
        return path

    @torch.no_grad()
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(purchase) for every row of frame, shape (len(frame),)."""
        batch = self.preprocessor.transform(frame)
        batch_size = SCORE_BATCH[self.kind]
        out = np.empty(len(batch), dtype=np.float32)
        for start in range(0, len(batch), batch_size):
            part = batch.slice(start, start + batch_size)
            out[start:start + len(part)] = torch.sigmoid(self.model(part.sparse, part.dense, part.bags)).numpy()
        return out
