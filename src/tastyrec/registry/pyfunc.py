"""The MLflow pyfunc around `Predictor`, with its signature, input example and requirements."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, Schema, TensorSpec
from mlflow.types.schema import Array

from tastyrec.predictor import Predictor
from tastyrec.registry.tracking import RegistryError

MODEL_DIR_KEY = "model_dir"  # the pyfunc artifact holding preprocess.json + model.pt
EXAMPLE_ROWS = 5


class TastyrecModel(PythonModel):
    """MLflow pyfunc around `Predictor`: the PyTorch flavour cannot take the mixed string /
    float / list-of-strings columns, and the preprocessing must travel with the weights.

    Logged with artifacts={"model_dir": <model directory>}; predict returns P(purchase) per row.
    Loading needs the `tastyrec` package importable (the class is pickled by reference).
    """

    def __init__(self) -> None:
        self.predictor: Predictor | None = None

    def load_context(self, context: PythonModelContext) -> None:
        self.predictor = Predictor.from_dir(context.artifacts[MODEL_DIR_KEY])

    # The pd.DataFrame hint tells MLflow not to infer a schema from the hint (the logged
    # signature is the contract); inputs still go through the signature's schema enforcement.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        if self.predictor is None:  # called without load_context (e.g. a bare instance)
            self.load_context(context)
        assert self.predictor is not None
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predictor.predict(frame)  # (N,) float32


def example(predictor: Predictor, input_example: pd.DataFrame) -> pd.DataFrame:
    """A few rows of the feature columns the model reads, list cells as plain lists of str."""
    pre = predictor.preprocessor
    cols = pre.input_columns
    missing = [c for c in cols if c not in input_example.columns]
    if missing:
        raise RegistryError(f"input_example lacks the model's feature columns {missing}")
    out = input_example[cols].head(EXAMPLE_ROWS).reset_index(drop=True).copy()
    for name in pre.multi_hot:
        out[name] = [[] if v is None else [str(x) for x in v] for v in out[name]]
    return out


def signature(predictor: Predictor, example_rows: pd.DataFrame, predictions: np.ndarray) -> ModelSignature:
    """Inferred from the example; every column optional (the preprocessor maps missing values to
    its unknown bucket / 0), so serving rows with a None are not refused by schema enforcement."""
    try:
        inferred = infer_signature(example_rows, predictions)
        specs: list[ColSpec | TensorSpec] = [ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs]
        return ModelSignature(inputs=Schema(specs), outputs=inferred.outputs)
    except Exception:  # older MLflow without list-column inference: spell the schema out
        pre = predictor.preprocessor
        types = {c: DataType.double for c in pre.dense} | {c: Array(DataType.string) for c in pre.multi_hot}
        cols: list[ColSpec | TensorSpec] = [ColSpec(types.get(c, DataType.string), c, required=False)
                                            for c in pre.input_columns]
        return ModelSignature(inputs=Schema(cols), outputs=Schema([ColSpec(DataType.float)]))


def pip_requirements() -> list[str]:
    """Pinned from this environment: MLflow's own inference loads the model in a subprocess
    (slow) and cannot know that `tastyrec` itself must be installed to unpickle the pyfunc."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "pyarrow", "scikit-learn", "tastyrec"):
        try:
            reqs.append(f"{dist}=={version(dist).split('+')[0]}")  # no local tag: torch 2.13.0+cpu
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs
