"""Metrics on toy frames whose values are computed by hand (arithmetic in the comments)."""

from __future__ import annotations

from math import log2

import numpy as np
import pandas as pd
import pytest

from tastyrec.columns import CUSTOMER_ID, ITEM, LABEL
from tastyrec.metrics import classification_metrics, evaluate_scores, ranking_metrics


def _frame(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[CUSTOMER_ID, ITEM, LABEL, "score"])


# Customer A ranks a > b > c > d > e and bought a, c, e (3 positives).
# Customer B ranks e > d > c > b > a and bought only a (1 positive, ranked 5th).
# Customer C bought nothing: no ranking signal, so it is left out of every average.
TOY = _frame([
    ("A", "a", 1, 0.9), ("A", "b", 0, 0.8), ("A", "c", 1, 0.7), ("A", "d", 0, 0.6),
    ("A", "e", 1, 0.5),
    ("B", "a", 1, 0.5), ("B", "b", 0, 0.6), ("B", "c", 0, 0.7), ("B", "d", 0, 0.8),
    ("B", "e", 0, 0.9),
    ("C", "a", 0, 0.9), ("C", "b", 0, 0.1),
])
# Items bought before the cutoff: A had a and b, B had a.
SEEN = {("A", "a"), ("A", "b"), ("B", "a")}


def test_recall_and_ndcg_match_hand_computation() -> None:
    out = ranking_metrics(TOY, "score", ks=(3, 10))

    # A: hits in top 3 at ranks 1 and 3 -> recall@3 = 2/3.
    #    DCG@3 = 1/log2(2) + 1/log2(4) = 1.5; IDCG@3 = 1 + 1/log2(3) + 1/log2(4) = 2.1309.
    #    top 10 holds all 5 items -> recall@10 = 3/3; DCG@10 = 1.5 + 1/log2(6) = 1.8869,
    #    IDCG@10 = IDCG@3 (only 3 positives).
    idcg_a = 1 + 1 / log2(3) + 1 / log2(4)
    ndcg3_a = (1 + 1 / log2(4)) / idcg_a
    ndcg10_a = (1 + 1 / log2(4) + 1 / log2(6)) / idcg_a
    # B: its only positive is 5th -> recall@3 = 0, NDCG@3 = 0, recall@10 = 1,
    #    NDCG@10 = (1/log2(6)) / 1 = 0.3869.
    ndcg10_b = 1 / log2(6)

    assert out["customers"] == 2  # C has no positive
    assert out["recall@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert out["ndcg@3"] == pytest.approx((ndcg3_a + 0) / 2)  # 0.3520
    assert out["recall@10"] == pytest.approx((1 + 1) / 2)
    assert out["ndcg@10"] == pytest.approx((ndcg10_a + ndcg10_b) / 2)  # 0.6362
    assert not any(key.startswith("new_") for key in out)


def test_row_order_does_not_change_the_result() -> None:
    shuffled = TOY.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert ranking_metrics(shuffled, "score") == ranking_metrics(TOY, "score")


def test_new_items_restriction_removes_seen_items_from_ranking_and_positives() -> None:
    seen = np.array([(c, i) in SEEN for c, i in zip(TOY[CUSTOMER_ID], TOY[ITEM])])
    out = ranking_metrics(TOY, "score", ks=(1, 3), new_only_mask=~seen)

    # A without a and b ranks c(1) > d(0) > e(1), 2 new positives:
    #   new recall@1 = 1/2, new NDCG@1 = 1/1;
    #   new recall@3 = 2/2, new NDCG@3 = (1 + 1/log2(4)) / (1 + 1/log2(3)) = 0.9197.
    # B's only positive (a) was seen before, so B has no new positive and is left out.
    assert out["new_customers"] == 1
    assert out["new_recall@1"] == pytest.approx(1 / 2)
    assert out["new_ndcg@1"] == pytest.approx(1.0)
    assert out["new_recall@3"] == pytest.approx(1.0)
    assert out["new_ndcg@3"] == pytest.approx((1 + 1 / log2(4)) / (1 + 1 / log2(3)))
    # The unrestricted metrics are still there and unchanged.
    assert out["customers"] == 2
    assert out["recall@3"] == pytest.approx(1 / 3)


def test_new_only_mask_must_align_with_frame() -> None:
    with pytest.raises(ValueError, match="shape"):
        ranking_metrics(TOY, "score", new_only_mask=np.ones(3, dtype=bool))


def test_customers_without_positives_are_excluded() -> None:
    only_c = TOY[TOY[CUSTOMER_ID] == "C"]
    out = ranking_metrics(only_c, "score", ks=(3,))
    assert out["customers"] == 0
    assert np.isnan(out["recall@3"]) and np.isnan(out["ndcg@3"])
    # Adding C to a customer with a perfect ranking does not drag the average down.
    perfect = _frame([("D", "a", 1, 0.9), ("D", "b", 0, 0.1)])
    assert ranking_metrics(pd.concat([perfect, only_c]), "score", ks=(3,))["ndcg@3"] == 1.0


def test_ties_are_broken_by_item_name() -> None:
    # Constant scores: the ranking is alphabetical, a > b > c, whatever the row order.
    # The positive c is 3rd: recall@2 = 0, NDCG@3 = 1/log2(4) = 0.5.
    rows = [("A", "c", 1, 0.0), ("A", "a", 0, 0.0), ("A", "b", 0, 0.0)]
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        out = ranking_metrics(_frame([rows[i] for i in order]), "score", ks=(2, 3))
        assert out["recall@2"] == 0.0
        assert out["ndcg@3"] == pytest.approx(0.5)


def test_nan_scores_rank_last() -> None:
    # a has no score: it ranks below b even though b's score is negative (and "a" would win
    # a tie), so the positive b is first -> NDCG@1 = 1.
    frame = _frame([("A", "a", 0, np.nan), ("A", "b", 1, -5.0)])
    assert ranking_metrics(frame, "score", ks=(1,))["ndcg@1"] == 1.0


def test_vectorised_ranking_matches_a_per_customer_loop() -> None:
    rng = np.random.default_rng(7)
    n_customers, n_items = 40, 12
    frame = pd.DataFrame({
        CUSTOMER_ID: np.repeat(np.arange(n_customers), n_items),
        ITEM: np.tile([f"item{j:02d}" for j in range(n_items)], n_customers),
        LABEL: (rng.random(n_customers * n_items) < 0.2).astype(int),
        # Rounded scores so that ties happen and the tie-break is exercised.
        "score": rng.integers(0, 4, n_customers * n_items).astype(float),
    })
    out = ranking_metrics(frame, "score", ks=(3, 10))

    recalls, ndcgs = [], []
    for _, group in frame.groupby(CUSTOMER_ID):
        ranked = group.sort_values(["score", ITEM], ascending=[False, True])[LABEL].to_numpy()
        n_pos = ranked.sum()
        if n_pos == 0:
            continue
        gains = ranked[:10] / np.log2(np.arange(2, min(10, len(ranked)) + 2))
        ideal = (1 / np.log2(np.arange(2, min(10, n_pos) + 2))).sum()
        recalls.append(ranked[:10].sum() / n_pos)
        ndcgs.append(gains.sum() / ideal)
    assert out["customers"] == len(recalls)
    assert out["recall@10"] == pytest.approx(np.mean(recalls))
    assert out["ndcg@10"] == pytest.approx(np.mean(ndcgs))


def test_classification_metrics_on_a_toy() -> None:
    labels = [1, 0, 1, 0]
    probs = [0.9, 0.6, 0.4, 0.2]
    out = classification_metrics(labels, probs)
    # AUC: positive-negative pairs ordered right: (0.9,0.6) (0.9,0.2) (0.4,0.2), wrong:
    # (0.4,0.6) -> 3/4. Predicted positive at 0.5: 0.9 and 0.6 -> TP = 1, so
    # precision = 1/2 and recall = 1/2 (the positive 0.4 is missed).
    assert out == {"auc": pytest.approx(0.75), "precision": 0.5, "recall": 0.5}


def test_classification_threshold_is_strict_and_edge_cases_are_defined() -> None:
    # 0.5 is not > 0.5: nothing predicted positive -> precision 0, recall 0.
    out = classification_metrics([1, 0], [0.5, 0.5])
    assert out["precision"] == 0.0 and out["recall"] == 0.0
    assert classification_metrics([1, 1], [0.2, 0.8])["auc"] is None  # one class: undefined


def test_evaluate_scores_reports_precision_only_for_probabilities() -> None:
    seen = np.array([(c, i) in SEEN for c, i in zip(TOY[CUSTOMER_ID], TOY[ITEM])])
    as_baseline = evaluate_scores(TOY, "score", new_only_mask=~seen)
    as_model = evaluate_scores(TOY, "score", probabilities=True, new_only_mask=~seen)

    assert as_baseline["precision"] is None and as_baseline["recall"] is None
    assert as_baseline["auc"] == pytest.approx(as_model["auc"])
    expected = classification_metrics(TOY[LABEL], TOY["score"])
    assert as_model["precision"] == pytest.approx(expected["precision"])
    assert as_model["recall"] == pytest.approx(expected["recall"])
    for out in (as_baseline, as_model):
        assert out["recall@3"] == pytest.approx(1 / 3)
        assert out["new_customers"] == 1
