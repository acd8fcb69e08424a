"""The collaborative inputs: popularity and item-kNN scores from training history bags only (frozen
with the model), and one snapshot's recent popularity and EASE weights (the feature store's part is
in test_features.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tastyrec.collaborative import BagWeights, ItemSimilarity, ease_weights, snapshot_table
from tastyrec.columns import COLLAB_ITEMS, CUSTOMER_ID, ITEM, TIMESTAMP
from tastyrec.preprocess import Preprocessor, synthetic_frame

OLD, NEW = pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2022-04-01", tz="UTC")


def rows(history: dict[int, list[str]], items: list[str], ts: pd.Timestamp) -> pd.DataFrame:
    """One row per customer x item, every row of a customer carrying the customer's history bag."""
    return pd.DataFrame([{CUSTOMER_ID: c, TIMESTAMP: ts, ITEM: i, "history_items": bag}
                         for c, bag in history.items() for i in items])


def test_fit_reads_the_newest_cutoff_and_scores_by_cosine() -> None:
    newest = {1: ["taco", "salsa"], 2: ["taco", "salsa", "burger"], 3: ["burger"], 4: []}
    older = {1: ["sushi"], 2: ["sushi"], 3: ["sushi"]}  # an older cutoff: must not count
    items = ["burger", "salsa", "sushi", "taco"]
    sim = ItemSimilarity.fit(pd.concat([rows(older, items, OLD), rows(newest, items, NEW)]))
    assert sim.items == items
    # shares of the 4 customers at the newest cutoff: burger 2, salsa 2, sushi 0, taco 2
    np.testing.assert_allclose(sim.popularity, [0.5, 0.5, 0.0, 0.5])
    # taco and salsa: bought together by both their buyers -> cosine 1; burger-taco: 1 / (sqrt2 sqrt2)
    s = pd.DataFrame(sim.similarity, index=items, columns=items)
    assert s.loc["taco", "salsa"] == 1.0 and s.loc["burger", "taco"] == 0.5 and s.loc["taco", "taco"] == 0.0
    assert (s["sushi"] == 0).all()  # nobody bought it by then: no similarity, no NaN

    # a new customer who bought taco: salsa scores 1, burger 0.5, taco itself 0 (that is repeat's job)
    feats = sim.features(rows({9: ["taco"], 8: []}, items, NEW))
    got = pd.DataFrame(feats).assign(customer=[9] * 4 + [8] * 4, item=items * 2).set_index(["customer", "item"])
    assert got.loc[(9, "salsa"), "item_knn_score"] == 1.0 and got.loc[(9, "burger"), "item_knn_score"] == 0.5
    assert got.loc[(9, "taco"), "item_knn_score"] == 0.0
    assert (got.loc[8, "item_knn_score"] == 0).all()  # no history, no neighbours
    np.testing.assert_allclose(got.loc[8, "item_popularity"], [0.5, 0.5, 0.0, 0.5])


def test_a_row_scores_the_same_whatever_other_rows_come_with_it() -> None:
    # serving may ask for a few items only: the score comes from the customer's history bag
    train = synthetic_frame(600, seed=1)
    sim = ItemSimilarity.fit(train)
    frame = synthetic_frame(50, seed=2)
    whole = sim.features(frame)
    for i in (0, 17, 49):
        part = sim.features(frame.iloc[[i]])
        assert part["item_knn_score"][0] == whole["item_knn_score"][i]
        assert part["item_popularity"][0] == whole["item_popularity"][i]


def test_the_preprocessor_saves_them_with_the_model() -> None:
    train = synthetic_frame(800, seed=3)
    prep = Preprocessor().fit(train)
    again = Preprocessor.from_dict(prep.to_dict())
    frame = synthetic_frame(100, seed=4)
    np.testing.assert_array_equal(prep.transform(frame).dense.numpy(), again.transform(frame).dense.numpy())
    knn = prep.dense.index("item_knn_score")
    assert float(prep.transform(frame).dense[:, knn].std()) > 0  # a real, varying input
    with pytest.raises(KeyError, match="history_items"):
        prep.transform(frame.drop(columns=["history_items"]))


def lists(values: list[list], kind=pa.string()) -> pa.ListArray:
    return pa.array(values, pa.list_(kind))


def table(bags: dict[int, list[str]], days: dict[int, list[float]] | None = None, window: float = 30) -> pd.DataFrame:
    days = days or {c: [1.0] * len(b) for c, b in bags.items()}
    out = snapshot_table(NEW, lists(list(bags.values())), lists(list(days.values()), pa.float64()), window)
    return out.to_pandas().set_index(ITEM)


def test_one_snapshot_by_hand() -> None:
    bags = {1: ["salsa", "taco"], 2: ["burger", "salsa", "taco"], 3: ["burger"], 4: []}
    days = {1: [5.0, 40.0], 2: [3.0, 3.0, 3.0], 3: [60.0], 4: []}
    got = table(bags, days, window=30)
    items = ["burger", "salsa", "taco"]
    assert got.index.tolist() == items and all(list(v) == items for v in got[COLLAB_ITEMS])
    # in the last 30 days customers 1 and 2 bought food: burger by 2 (1 of 2), salsa by 1 and 2, taco by 2
    np.testing.assert_allclose(got["item_recent_popularity"], [0.5, 1.0, 0.5])
    # EASE, one column of B per item (what each history item contributes to predicting it)
    bought = np.array([[0, 1, 1], [1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=float)
    ease = ease_weights(bought.T @ bought)
    for j, item in enumerate(items):
        np.testing.assert_allclose(got.loc[item, "collab_ease"], np.round(ease[:, j], 6))

    # cosine over who bought what: salsa and taco share customers 1 and 2 of 2 each; burger
    # (customers 2, 3) shares customer 2 with each; the diagonal is item_purchase_count's job
    half = 1 / np.sqrt(2 * 2)
    np.testing.assert_allclose(got.loc["salsa", "collab_cosine"], np.round([half, 0.0, 1.0], 6))
    np.testing.assert_allclose(got.loc["burger", "collab_cosine"], np.round([0.0, half, half], 6))

    # a customer who bought taco (3 orders) and burger (1): the item's weights summed over the
    # bag, EASE's each counted once, cosine's each weighted ln(1 + orders) as item-kNN weighs them
    weights = BagWeights(got)
    scores = weights.scores(pa.array([["taco", "burger"], [], None, ["unknown"]], pa.list_(pa.string())),
                            {"history_item_orders": pa.array([[3.0, 1.0], [], None, [2.0]], pa.list_(pa.float64()))})
    salsa = weights.items.index("salsa")
    assert scores["item_ease_score"][0, salsa] == pytest.approx(round(ease[2, 1] + ease[0, 1], 6), abs=2e-6)
    assert scores["item_cosine_score"][0, salsa] == pytest.approx(np.log(4) * 1.0 + np.log(2) * half, abs=2e-6)
    for name in ("item_ease_score", "item_cosine_score"):
        assert scores[name][1:, salsa].tolist() == [0.0, 0.0, 0.0]


def test_no_bags_no_rows() -> None:
    assert table({1: [], 2: []}).empty


def test_ease_weights_are_the_ridge_regression_of_each_item_on_the_others() -> None:
    """EASE's closed form, checked against its definition: column i of B is the ridge regression
    (penalty lambda) of the 0/1 column of item i on the other items' columns; the diagonal is 0."""
    rng = np.random.default_rng(0)
    bought = (rng.random((300, 6)) < [0.5, 0.3, 0.3, 0.2, 0.1, 0.05]).astype(float)
    bought[:, 2] = np.maximum(bought[:, 2], bought[:, 1] * (rng.random(300) < 0.8))  # item 2 follows item 1
    co = bought.T @ bought
    weights = ease_weights(co, penalty=0.5)
    lam = 0.5 * np.mean(np.diag(co))
    for i in range(6):
        others = [j for j in range(6) if j != i]
        x, y = bought[:, others], bought[:, i]
        ridge = np.linalg.solve(x.T @ x + lam * np.eye(5), x.T @ y)
        np.testing.assert_allclose(weights[others, i], ridge, atol=1e-9)
        assert weights[i, i] == 0.0
    assert weights[1, 2] == weights[1:, 2].max()  # what follows item 1 is predicted by it most

    # in the snapshot table: column i of B is item i's list
    items = [f"i{j}" for j in range(6)]
    got = table({c: [items[j] for j in np.flatnonzero(bought[c])] for c in range(300)})
    for i, item in enumerate(items):
        np.testing.assert_allclose(got.loc[item, "collab_ease"], np.round(weights[:, i], 6))
