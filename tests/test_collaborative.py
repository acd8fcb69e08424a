"""The collaborative inputs: item popularity, item-kNN and EASE weights of one snapshot's history
bags, and the bag scores built from them (the feature store's part is in test_features.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tastyrec.collaborative import ItemSimilarity, bag_scores, ease_weights, snapshot_table, weight_tables
from tastyrec.columns import COLLAB_ITEMS, ITEM
from tastyrec.preprocess import Preprocessor, synthetic_frame

TS = pd.Timestamp("2022-04-01", tz="UTC")


def lists(values: list[list], kind=pa.string()) -> pa.ListArray:
    return pa.array(values, pa.list_(kind))


def table(bags: dict[int, list[str]], days: dict[int, list[float]] | None = None, window: float = 30) -> pd.DataFrame:
    days = days or {c: [1.0] * len(b) for c, b in bags.items()}
    out = snapshot_table(TS, lists(list(bags.values())), lists(list(days.values()), pa.float64()), window)
    return out.to_pandas().set_index(ITEM)


def test_one_snapshot_by_hand() -> None:
    bags = {1: ["salsa", "taco"], 2: ["burger", "salsa", "taco"], 3: ["burger"], 4: []}
    days = {1: [5.0, 40.0], 2: [3.0, 3.0, 3.0], 3: [60.0], 4: []}
    got = table(bags, days, window=30)
    items = ["burger", "salsa", "taco"]
    assert got.index.tolist() == items and all(list(v) == items for v in got[COLLAB_ITEMS])
    # shares of the 4 customers: 2 of 4 each; in the last 30 days customers 1 and 2 ordered:
    # burger by 2 (1 of 2), salsa by 1 and 2 (2 of 2), taco by 2 (1 of 2)
    np.testing.assert_allclose(got["item_popularity"], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(got["item_recent_popularity"], [0.5, 1.0, 0.5])
    # cosine, the weight of each history item (position in collab_items) for the row's item:
    # taco and salsa bought together by both their buyers: 1; burger and taco: 1 / (sqrt2 sqrt2)
    knn = {item: dict(zip(items, w)) for item, w in got["collab_knn"].items()}
    assert knn["taco"]["salsa"] == 1.0 and knn["taco"]["burger"] == 0.5 and knn["taco"]["taco"] == 0.0
    # EASE, one column of B per item (what each history item contributes to predicting it)
    bought = np.array([[0, 1, 1], [1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=float)
    ease = ease_weights(bought.T @ bought)
    for j, item in enumerate(items):
        np.testing.assert_allclose(got.loc[item, "collab_ease"], np.round(ease[:, j], 6))

    # a customer who bought taco and burger: the item's weights summed over the bag
    scores = bag_scores([["taco", "burger"], [], None, ["unknown"]], ["salsa", "salsa", "salsa", "salsa"],
                        weight_tables(got))
    assert scores["item_knn_score"].tolist() == [round(1.0 + 0.5, 6), 0.0, 0.0, 0.0]
    assert scores["item_ease_score"][0] == pytest.approx(round(ease[2, 1] + ease[0, 1], 6), abs=2e-6)


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


def test_a_model_from_before_still_computes_its_inputs_from_its_frozen_weights() -> None:
    """Models trained when the collaborative inputs were fitted on training rows carry their
    weights in preprocess.json; they compute item_popularity and item_knn_score from them."""
    train = synthetic_frame(800, seed=3)
    prep = Preprocessor().fit(train)
    assert prep.similarity is None and "item_knn_score" in prep.input_columns  # now a column of the rows
    old = prep.to_dict()
    items = sorted(train[ITEM].unique())
    frozen = ItemSimilarity.fit_bags(set(items), pa.array(train["history_items"].tolist(), pa.list_(pa.string())))
    old["similarity"] = frozen.to_dict()
    legacy = Preprocessor.from_dict(old)
    frame = synthetic_frame(100, seed=4)
    assert "item_knn_score" not in legacy.input_columns and "history_items" in legacy.input_columns
    computed = frozen.features(frame)  # item_popularity and item_knn_score from the frozen weights
    assert computed["item_knn_score"].std() > 0
    np.testing.assert_array_equal(legacy.transform(frame.drop(columns=list(computed))).dense.numpy(),
                                  prep.transform(frame.assign(**computed)).dense.numpy())
