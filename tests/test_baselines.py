"""Each baseline finds a signal planted in a tiny history; the oracle and score_all align rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastyrec.baselines import (
    PROPENSITY,
    CityPopularity,
    GlobalPopularity,
    ImplicitALS,
    ItemKNN,
    RecentRepeat,
    Repeat,
    oracle_scores,
    score_all,
)
from tastyrec.columns import CITY, CUSTOMER_ID, ITEM, ITEM_RECENT_ORDERS
from tastyrec.columns import ITEM_PURCHASE_COUNT as PURCHASE_COUNT

ITEMS = ["burger", "fries", "salsa", "sushi", "taco"]


def _history(rows: list[tuple]) -> pd.DataFrame:
    """(customer, item, count[, recency-weighted count]); the weighted count defaults to count / 2."""
    frame = pd.DataFrame([r[:3] for r in rows], columns=[CUSTOMER_ID, ITEM, PURCHASE_COUNT])
    frame[ITEM_RECENT_ORDERS] = [r[3] if len(r) > 3 else r[2] / 2 for r in rows]
    return frame


def _candidates(customers: list[str], items: list[str] = ITEMS) -> pd.DataFrame:
    return pd.DataFrame(
        [(c, i) for c in customers for i in items], columns=[CUSTOMER_ID, ITEM]
    )


def _by_item(candidates: pd.DataFrame, scores: np.ndarray, customer: str) -> pd.Series:
    mine = (candidates[CUSTOMER_ID] == customer).to_numpy()
    return pd.Series(scores[mine], index=candidates.loc[mine, ITEM].to_numpy())


# Burger is the most popular item (4 of 5 customers); taco and salsa always go together;
# u1..u3 live in Lisbon, u4..u5 in Tokyo where sushi is the local favourite.
HISTORY = _history([
    ("u1", "burger", 2), ("u1", "taco", 1), ("u1", "salsa", 1),
    ("u2", "burger", 1), ("u2", "taco", 3), ("u2", "salsa", 2),
    ("u3", "burger", 1), ("u3", "fries", 1), ("u3", "sushi", 0),  # a 0 count is no purchase
    ("u4", "sushi", 4), ("u4", "fries", 1),
    ("u5", "sushi", 2), ("u5", "burger", 1),
])
CUSTOMERS = pd.DataFrame({
    CUSTOMER_ID: ["u1", "u2", "u3", "u4", "u5", "new_tokyo", "new_paris"],
    CITY: ["Lisbon", "Lisbon", "Lisbon", "Tokyo", "Tokyo", "Tokyo", "Paris"],
})


def test_global_popularity_counts_distinct_buyers() -> None:
    candidates = _candidates(["u1", "stranger"], ITEMS + ["kimchi"])
    scores = GlobalPopularity().fit(HISTORY, CUSTOMERS).score(candidates)
    # burger 4/5, fries 2/5, salsa 2/5, sushi 2/5 (u3's 0 does not count), taco 2/5,
    # kimchi was never sold: 0. Same for every customer, known or not.
    expected = [4 / 5, 2 / 5, 2 / 5, 2 / 5, 2 / 5, 0.0]
    np.testing.assert_allclose(_by_item(candidates, scores, "u1"), expected)
    np.testing.assert_allclose(_by_item(candidates, scores, "stranger"), expected)


def test_city_popularity_ranks_the_local_favourite_and_falls_back_to_global() -> None:
    model = CityPopularity(prior_weight=1.0).fit(HISTORY, CUSTOMERS)
    candidates = _candidates(["new_tokyo", "new_paris", "not_in_customers"])
    scores = model.score(candidates)

    tokyo = _by_item(candidates, scores, "new_tokyo")
    # Tokyo: 2 customers, both bought sushi; global sushi share 2/5.
    # (2 + 1 * 2/5) / (2 + 1) = 0.8, above burger's (1 + 4/5) / 3 = 0.6.
    assert tokyo.idxmax() == "sushi"
    assert tokyo["sushi"] == pytest.approx((2 + 2 / 5) / 3)
    assert tokyo["burger"] == pytest.approx((1 + 4 / 5) / 3)
    # Paris has no customer in the history and the last customer has no city: global share.
    glob = GlobalPopularity().fit(HISTORY, CUSTOMERS).score(candidates)
    for customer in ("new_paris", "not_in_customers"):
        np.testing.assert_allclose(
            _by_item(candidates, scores, customer), _by_item(candidates, glob, customer)
        )


def test_item_knn_recommends_the_item_that_co_occurs() -> None:
    # "t" bought only taco; taco always comes with salsa, while burger is more popular.
    history = pd.concat([HISTORY, _history([("t", "taco", 1)])])
    candidates = _candidates(["t"])
    scores = _by_item(candidates, ItemKNN().fit(history, CUSTOMERS).score(candidates), "t")
    unbought = scores.drop("taco")
    assert unbought.idxmax() == "salsa"
    # cos(taco, salsa) = 2 / sqrt(3 * 2) (3 taco buyers incl. t, 2 salsa buyers, 2 together),
    # weighted by log1p(1).
    assert scores["salsa"] == pytest.approx(np.log1p(1) * 2 / np.sqrt(3 * 2))
    assert scores["sushi"] == 0.0  # nobody bought sushi with taco


def test_item_knn_self_term_ranks_repeat_purchases_and_leaves_new_items_alone() -> None:
    # "r" bought fries 6 times and burger once. With the self term fries ranks first; without
    # it fries is scored only by its neighbours and burger (fries' neighbour) beats it.
    history = pd.concat([HISTORY, _history([("r", "fries", 6), ("r", "burger", 1)])])
    candidates = _candidates(["r"])
    with_self = _by_item(candidates, ItemKNN().fit(history, CUSTOMERS).score(candidates), "r")
    classic = ItemKNN(include_self=False).fit(history, CUSTOMERS).score(candidates)
    classic = _by_item(candidates, classic, "r")

    assert with_self.idxmax() == "fries"
    assert classic["burger"] > classic["fries"]
    # Items r never bought get no self term: identical scores, so the new-item ranking and
    # the new_ metrics do not depend on include_self.
    new = ["salsa", "sushi", "taco"]
    np.testing.assert_allclose(with_self[new], classic[new])


def test_unknown_customers_and_items_score_zero() -> None:
    candidates = _candidates(["stranger"], ["burger", "kimchi"]).iloc[::-1]
    for model in (ItemKNN(), ImplicitALS(factors=4, iterations=3)):
        scores = model.fit(HISTORY, CUSTOMERS).score(candidates)
        np.testing.assert_array_equal(scores, [0.0, 0.0])


def _block_history(seed: int) -> pd.DataFrame:
    """Two groups of 30 customers, each buying only its own 4 items; "target" bought 3 of
    group a's items, so the fourth (a4) is the one to recommend."""
    rng = np.random.default_rng(seed)
    rows = [
        (f"{group}{n}", f"{group}{j}", int(rng.integers(1, 5)))
        for group in ("a", "b")
        for n in range(30)
        for j in range(1, 5)
    ]
    rows += [("target", "a1", 3), ("target", "a2", 1), ("target", "a3", 2)]
    return _history(rows)


def test_als_ranks_the_missing_item_of_the_customers_block() -> None:
    history = _block_history(seed=0)
    candidates = _candidates(["target"], ["a4", "b1", "b2", "b3", "b4"])
    scores = ImplicitALS(factors=8).fit(history, CUSTOMERS).score(candidates)
    assert scores[0] > scores[1:].max()


def test_als_is_deterministic_with_a_fixed_seed() -> None:
    history = _block_history(seed=1)
    candidates = _candidates(["target", "a0", "b0"], ["a1", "a4", "b1", "b4"])
    first = ImplicitALS(random_state=42).fit(history, CUSTOMERS).score(candidates)
    again = ImplicitALS(random_state=42).fit(history, CUSTOMERS).score(candidates)
    other = ImplicitALS(random_state=43).fit(history, CUSTOMERS).score(candidates)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)  # the seed is really what fixes the result


def test_oracle_scores_follow_the_candidate_rows() -> None:
    truth = _candidates(["u1", "u2"]).assign(**{PROPENSITY: np.arange(10) / 10})
    candidates = truth[[CUSTOMER_ID, ITEM]].iloc[[7, 0, 3]]
    np.testing.assert_allclose(oracle_scores(candidates, truth), [0.7, 0.0, 0.3])


def test_oracle_refuses_candidates_without_a_propensity() -> None:
    truth = _candidates(["u1"]).assign(**{PROPENSITY: 0.5})
    with pytest.raises(ValueError, match="1 candidate pairs"):
        oracle_scores(_candidates(["u1"], ["burger", "kimchi"]), truth)


def test_score_all_scores_every_candidate_with_every_method() -> None:
    candidates = _candidates(["u1", "u4", "new_tokyo"])
    truth = candidates.assign(**{PROPENSITY: 0.1})
    scores = score_all(HISTORY, CUSTOMERS, candidates, truth)
    assert list(scores) == ["popularity", "city_popularity", "item_knn", "als", "repeat", "repeat_recent", "oracle"]
    for name, values in scores.items():
        assert values.shape == (len(candidates),), name
        assert np.isfinite(values).all(), name
    assert "oracle" not in score_all(HISTORY, CUSTOMERS, candidates)


def test_oracle_refuses_a_truth_that_repeats_a_pair() -> None:
    truth = _candidates(["u1", "u1"], ["burger"]).assign(**{PROPENSITY: [0.1, 0.9]})
    with pytest.raises(pd.errors.MergeError):
        oracle_scores(_candidates(["u1"], ["burger"]), truth)


def test_repeat_ranks_own_counts_then_popularity() -> None:
    candidates = _candidates(["u2", "stranger"])
    scores = Repeat().fit(HISTORY, CUSTOMERS).score(candidates)
    # u2 bought taco 3x, salsa 2x, burger 1x; fries and sushi (never bought, both 2/5 popular) tie below
    mine = _by_item(candidates, scores, "u2")
    assert list(mine.sort_values(ascending=False).index[:3]) == ["taco", "salsa", "burger"]
    assert mine["fries"] == mine["sushi"] < mine["burger"]
    # a customer with no history gets the popularity order: burger (4/5) first
    stranger = _by_item(candidates, scores, "stranger")
    np.testing.assert_allclose(stranger, GlobalPopularity().fit(HISTORY, CUSTOMERS).score(
        _candidates(["stranger"])) / 2)
    # a count of 1 beats the most popular item the customer never bought: counts come first
    u3 = _by_item(_candidates(["u3"]), Repeat().fit(HISTORY, CUSTOMERS).score(_candidates(["u3"])), "u3")
    assert u3["fries"] > u3["taco"]


def test_recent_repeat_prefers_what_was_bought_lately() -> None:
    # u1 bought burger 5x long ago (weighted 0.2) and taco once last week (weighted 0.9)
    history = _history([("u1", "burger", 5, 0.2), ("u1", "taco", 1, 0.9), ("u2", "burger", 1, 0.5)])
    candidates = _candidates(["u1"])
    plain = _by_item(candidates, Repeat().fit(history, CUSTOMERS).score(candidates), "u1")
    recent = _by_item(candidates, RecentRepeat().fit(history, CUSTOMERS).score(candidates), "u1")
    assert plain["burger"] > plain["taco"]
    assert recent["taco"] > recent["burger"] > recent["fries"]
