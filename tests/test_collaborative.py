"""The collaborative inputs: popularity and item-kNN scores from training history bags only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastyrec.collaborative import ItemSimilarity
from tastyrec.columns import CUSTOMER_ID, ITEM, TIMESTAMP
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
