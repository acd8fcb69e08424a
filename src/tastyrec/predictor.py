"""Preprocessing + model in one object: the single loading path for evaluation, service, app, tests.

A model directory holds `preprocess.json` (the fitted Preprocessor, never refitted) and
`model.pt` (written by `model.save_model`); the model is always rebuilt from its saved config.
Serving code imports this module, never the training loop.

A Predictor runs on a CUDA GPU when one is present (chosen once per process), else on the CPU:
the model lives on that device, each batch is moved there, and scores come back as CPU numpy.
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tastyrec.model import MODEL_FILE, MODEL_KINDS, load_model
from tastyrec.preprocess import Preprocessor

PREPROCESS_FILE = "preprocess.json"


@cache
def default_device() -> torch.device:
    """CUDA when a GPU is present, else the CPU; asked once per process."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """Scores feature frames (the columns of a training set) with purchase probabilities."""

    def __init__(self, preprocessor: Preprocessor, model: torch.nn.Module, kind: str,
                 device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.preprocessor, self.model, self.kind = preprocessor, model.eval().to(self.device), kind

    @classmethod
    def from_dir(cls, path: str | Path, device: torch.device | str | None = None) -> "Predictor":
        path = Path(path)
        preprocessor = Preprocessor.from_dict(json.loads((path / PREPROCESS_FILE).read_text()))
        model, kind = load_model(path / MODEL_FILE)
        return cls(preprocessor, model, kind, device)

    @staticmethod
    def write_dir(path: str | Path, preprocessor: Preprocessor, model_file: str | Path) -> Path:
        """Write a model directory from a fitted preprocessor and a training run's model file."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / PREPROCESS_FILE).write_text(json.dumps(preprocessor.to_dict()))
        shutil.copyfile(model_file, path / MODEL_FILE)
        return path

    @property
    def explores(self) -> bool:
        """Whether the model has an explore head (cross-sell ranking); models trained before do not."""
        return getattr(self.model, "explores", False)

    def predict(self, frame: pd.DataFrame, explore: bool = False) -> np.ndarray:
        """P(purchase) for every row of frame, shape (len(frame),).

        explore: score with the explore head, trained on items new to the customer: the
        ranking for cross-sell (--items-not-ordered); the main head where the model has none."""
        return self._scores(self.preprocessor.transform(frame), explore)

    def predict_pairs(self, pairs, explore: bool = False) -> np.ndarray:
        """`predict` of the rows of `pairs` (features.online.Pairs): the same scores, from tensors
        built without a frame (the serving path)."""
        return self._scores(self.preprocessor.transform_pairs(pairs), explore)

    @torch.no_grad()
    def _scores(self, batch, explore: bool) -> np.ndarray:
        batch_size = MODEL_KINDS[self.kind].score_batch
        forward = self.model.heads if explore and self.explores else self.model
        # rows that share their bags (Batch.groups: one customer's candidates) embed each bag once
        grouped = batch.groups is not None and hasattr(self.model, "embed_bags")
        vectors = self.model.embed_bags({k: v.to(self.device) for k, v in batch.bags.items()}) if grouped else None
        out = np.empty(len(batch), dtype=np.float32)
        for start in range(0, len(batch), batch_size):
            part = batch.slice(start, start + batch_size).to(self.device)  # a no-op on the CPU
            if grouped:
                logits = forward(part.sparse, part.dense, None, {k: v[part.groups] for k, v in vectors.items()})
            else:
                logits = forward(*part.inputs())
            scores = torch.sigmoid(logits[:, 1] if explore and self.explores else logits)  # (B,)
            out[start:start + len(part)] = scores.cpu().numpy()
        return out
