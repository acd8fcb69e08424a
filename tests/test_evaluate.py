"""Evaluation directly: the typed result, its ratios on degenerate data, the oracle, the table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tastyrec.baselines import PROPENSITY
from tastyrec.columns import CITY, CUSTOMER_ID, ITEM, ITEM_PURCHASE_COUNT, ITEM_RECENT_ORDERS, LABEL
from tastyrec.evaluate import Evaluation, evaluate_frame, loss_figure, ranking_figure

ITEMS = [chr(ord("a") + i) for i in range(12)]


def tiny_test(positive: str = "l") -> pd.DataFrame:
    """Customers 1 and 2 bought `positive` in the window; customer 3 bought "a" once before."""
    return pd.DataFrame([
        {CUSTOMER_ID: c, ITEM: item, LABEL: int(item == positive and c < 3),
         ITEM_PURCHASE_COUNT: float(c == 3 and item == "a"), ITEM_RECENT_ORDERS: float(c == 3 and item == "a"),
         CITY: "X"}
        for c in (1, 2, 3) for item in ITEMS])


def test_a_zero_best_baseline_gives_null_ratios_not_a_crash() -> None:
    # every baseline ranks "l" (alphabetically last, never bought) outside its top 10: NDCG@10 = 0
    test = tiny_test()
    perfect = (test[ITEM] == "l").to_numpy(dtype=float)
    evaluation = evaluate_frame(test, {"tastyrec dlrm": perfect}, truth=None)
    assert {name: m["ndcg@10"] for name, m in evaluation.baselines.items()} == {
        "popularity": 0.0, "city_popularity": 0.0, "item_knn": 0.0, "als": 0.0, "repeat": 0.0, "repeat_recent": 0.0}
    assert evaluation.model["ndcg@10"] == pytest.approx(1.0)
    assert evaluation.lift_over_best_baseline_ndcg10 is None
    assert evaluation.fraction_of_oracle_ndcg10 is None  # no truth, no oracle
    text = json.dumps(evaluation.to_dict(), allow_nan=False)  # strict JSON: no inf, no NaN
    assert json.loads(text)["lift_over_best_baseline_ndcg10"] is None


def test_the_table_prints_a_dash_for_undefined_ratios(capsys) -> None:
    from tastyrec.cli import training as cli

    test = tiny_test()
    evaluation = evaluate_frame(test, {"tastyrec seed-dlrm": np.zeros(len(test))}, truth=None)
    cli.print_evaluation(evaluation)
    printed = capsys.readouterr().out
    assert "tastyrec seed-dlrm" in printed and "tastyrec dlrm" not in printed
    assert "x the best baseline's" in printed and "inf" not in printed


def test_the_oracle_and_the_ratios_when_a_truth_is_given() -> None:
    test = tiny_test(positive="c")
    truth = test[[CUSTOMER_ID, ITEM]].assign(**{PROPENSITY: np.where(test[ITEM] == "c", 0.9, 0.1)})
    half = np.where(test[ITEM] == "c", 0.2, 0.5) + np.where(test[ITEM] == "a", 0.4, 0.0)
    evaluation = evaluate_frame(test, {"m": half, "seed-dlrm": np.zeros(len(test))}, truth)
    assert evaluation.oracle is not None and evaluation.oracle["ndcg@10"] == pytest.approx(1.0)
    assert "seed-dlrm" in evaluation.baselines and "oracle" not in evaluation.baselines
    assert evaluation.fraction_of_oracle_ndcg10 == pytest.approx(evaluation.model["ndcg@10"])
    best = evaluation.best_baseline
    assert evaluation.baselines[best]["ndcg@10"] == max(m["ndcg@10"] for m in evaluation.baselines.values())
    assert evaluation.lift_over_best_baseline_ndcg10 == pytest.approx(
        evaluation.model["ndcg@10"] / evaluation.baselines[best]["ndcg@10"])
    assert [name for name, _ in evaluation.methods()][0] == "m"
    assert [name for name, _ in evaluation.methods()][-1] == "oracle (truth)"
    assert evaluation.rows == len(test) and evaluation.customers == 3


def test_figures_draw_without_pyplot_state() -> None:
    evaluation = Evaluation("m", {"ndcg@10": 0.5, "recall@10": None}, {"popularity": {"ndcg@10": 0.2}},
                            None, rows=10, customers=2, test_customers_total=2)
    assert len(ranking_figure(evaluation).axes) == 1
    assert len(loss_figure([{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6}]).axes) == 1
