"""Evaluation on the test window: the model, the baselines and the oracle, with the same metrics.

Every method scores the same candidate rows (test customers x their candidate items). The
baselines are fitted on the history before the test cutoff, which the test rows carry as
`item_purchase_count` (point in time, like every other feature). The oracle ranks by the
generator's true propensities (`synth.true_propensity`), only when they describe this very
window: synthetic data and the time split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tastyrec.baselines import PROPENSITY, score_all
from tastyrec.columns import CUSTOMER_ID, ITEM, LABEL, TIMESTAMP
from tastyrec.config import Workspace
from tastyrec.metrics import evaluate_scores

HISTORY_COUNT = "item_purchase_count"
# Every method is scored on the same customers: at most this many test customers, drawn with a
# fixed seed. The seed's DLRM costs ~4 MFLOP per row (its 33,024-wide top MLP), so scoring all
# 20,000 test customers x ~40 items with it would take minutes; paired comparisons on 4,000
# customers are precise to about +-0.005 NDCG@10.
EVAL_CUSTOMERS = 4_000


def truth_for(ws: Workspace, test: pd.DataFrame) -> pd.DataFrame | None:
    """The generator's propensities for the test rows, if the warehouse has them for this window."""
    from tastyrec.warehouse.load import connect

    con = connect(ws.warehouse, read_only=True)
    try:
        has_synth = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'synth' "
                                "AND table_name = 'true_propensity'").fetchone()[0]
        if not has_synth:
            return None
        start = con.execute("SELECT value::DATE FROM synth.info WHERE key = 'window_start'").fetchone()
        cutoff = pd.Timestamp(test[TIMESTAMP].iloc[0]).date()
        if start is None or start[0] != cutoff or test[TIMESTAMP].nunique() != 1:
            return None  # the truth describes another window (e.g. the random split)
        con.register("test_customers", pd.DataFrame({CUSTOMER_ID: test[CUSTOMER_ID].unique()}))
        return con.execute(f"SELECT t.{CUSTOMER_ID}, t.{ITEM}, t.{PROPENSITY} FROM synth.true_propensity t "
                           f"JOIN test_customers USING ({CUSTOMER_ID})").df()
    finally:
        con.close()


def evaluate_frame(test: pd.DataFrame, model_scores: dict[str, np.ndarray],
                   truth: pd.DataFrame | None) -> dict:
    """Metrics of each model (probabilities), each baseline and the oracle on the test rows.

    model_scores: the model first, then other trained models shown as baselines (the seed's DLRM).
    Returns {"model": {...}, "baselines": {name: {...}}, "oracle": {...} | None,
    "fraction_of_oracle_ndcg10": x | None, "best_baseline": name, ...}.
    """
    frame = test[[CUSTOMER_ID, ITEM, LABEL]].copy()
    new_only = test[HISTORY_COUNT].to_numpy() == 0  # cross-sell: items the customer never bought
    history = test[[CUSTOMER_ID, ITEM, HISTORY_COUNT]]
    customers = test[[CUSTOMER_ID, "city"]].drop_duplicates(CUSTOMER_ID)
    scores = score_all(history, customers, frame[[CUSTOMER_ID, ITEM]], truth)

    def metrics(values: np.ndarray, probabilities: bool) -> dict:
        frame["score"] = values
        return evaluate_scores(frame, "score", probabilities=probabilities, new_only_mask=new_only)

    (_, values), *others = model_scores.items()
    main = metrics(values, True)
    oracle = metrics(scores.pop("oracle"), True) if "oracle" in scores else None
    baselines = {name: metrics(values, False) for name, values in scores.items()}
    baselines |= {name: metrics(values, True) for name, values in others}
    fraction = (main["ndcg@10"] / oracle["ndcg@10"]) if oracle and oracle["ndcg@10"] else None
    best = max(baselines, key=lambda name: baselines[name]["ndcg@10"])
    return {"model": main, "baselines": baselines, "oracle": oracle,
            "fraction_of_oracle_ndcg10": fraction, "best_baseline": best,
            "lift_over_best_baseline_ndcg10": main["ndcg@10"] / baselines[best]["ndcg@10"],
            "rows": len(frame), "customers": int(frame[CUSTOMER_ID].nunique())}


def sample_customers(test: pd.DataFrame, n: int = EVAL_CUSTOMERS, seed: int = 0) -> pd.DataFrame:
    """The test rows of at most n customers, drawn with a fixed seed (all of them if fewer)."""
    customers = np.sort(test[CUSTOMER_ID].unique())
    if len(customers) <= n:
        return test
    chosen = np.random.default_rng(seed).choice(customers, size=n, replace=False)
    return test[test[CUSTOMER_ID].isin(chosen)].reset_index(drop=True)


def evaluate_predictors(ws: Workspace, test_path: str | Path, predictors: dict,
                        max_customers: int = EVAL_CUSTOMERS) -> dict:
    """Score the test split with each predictor (first = the model) and evaluate everything."""
    test = pd.read_parquet(test_path)
    total = int(test[CUSTOMER_ID].nunique())
    test = sample_customers(test, max_customers)
    scores = {name: predictor.predict(test) for name, predictor in predictors.items()}
    return evaluate_frame(test, scores, truth_for(ws, test)) | {"test_customers_total": total}


def evaluate_registered(ws: Workspace, ref: str | int = "champion") -> dict:
    """Evaluate a registered version (and the newest seed baseline run) on the time split's test set."""
    from tastyrec.features.training import build_training_set
    from tastyrec.predictor import Predictor
    from tastyrec.registry import load_predictor

    predictor, version = load_predictor(ws, ref)
    test_path = ws.home / "datasets" / "time" / "test.parquet"
    if not test_path.exists():
        test_path = Path(build_training_set(ws, "time").paths["test"])
    predictors = {f"version {version}": predictor}
    seeds = sorted(ws.checkpoints.glob("*-seed-dlrm-time/model")) if ws.checkpoints.exists() else []
    if seeds:
        predictors["seed-dlrm"] = Predictor.from_dir(seeds[-1])
    return evaluate_predictors(ws, test_path, predictors) | {"version": version}
