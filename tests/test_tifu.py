"""TIFU-KNN on a hand-computed example: the user vectors and the blended scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastyrec.baselines import TifuKNN, tifu_vectors

# customer, basket, time, item. A: {x} {x,y} {y}; B: {z}; C: {x} {z}
LINES = [("A", 1, 1, "x"), ("A", 2, 2, "x"), ("A", 2, 2, "y"), ("A", 3, 3, "y"),
         ("B", 4, 1, "z"), ("C", 5, 1, "x"), ("C", 6, 2, "z"), ("A", 2, 2, "y")]  # a repeated line counts once


def baskets(seed: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(LINES, columns=["customer_id", "order_id", "order_ts", "menu_item_name"])
    return frame.sample(frac=1, random_state=seed)  # the order of the lines does not matter


def test_user_vectors_by_hand():
    """rb = rg = 0.5, m = 2. A: T = 3 in G = 2 groups [b0, b1], [b2]; basket weights
    rb^(T-1-t) x rg^(G-1-j) / (group size x G): b0 0.25 x 0.5 / 4, b1 0.5 x 0.5 / 4, b2 1 x 1 / 2.
    C: T = 2, groups [b0], [b1]: 0.5 x 0.5 / 2 and 1 / 2. B: one basket, weight 1."""
    customers, items, vectors = tifu_vectors(baskets(), rb=0.5, rg=0.5, m=2)
    assert list(customers) == ["A", "B", "C"] and list(items) == ["x", "y", "z"]
    expected = [[0.03125 + 0.0625, 0.0625 + 0.5, 0], [0, 0, 1], [0.125, 0, 0.5]]
    assert np.allclose(vectors.toarray(), expected)
    again = tifu_vectors(baskets(seed=3), rb=0.5, rg=0.5, m=2)[2]
    assert np.allclose(again.toarray(), expected)


def test_scores_blend_own_and_nearest_neighbour_by_hand():
    """k = 1, alpha = 0.5. Nearest (Euclidean): A -> C (0.567 < 1.325), B -> C (0.266), C -> B."""
    tifu = TifuKNN(k=1, rb=0.5, rg=0.5, alpha=0.5, m=2).fit(baskets())
    candidates = pd.DataFrame({"customer_id": ["A"] * 3 + ["B"] * 3 + ["C"] * 3 + ["D"],
                               "menu_item_name": ["x", "y", "z"] * 3 + ["x"]})
    scores = tifu.score(candidates)
    own = {"A": [0.09375, 0.5625, 0], "B": [0, 0, 1], "C": [0.125, 0, 0.5]}
    expected = [0.5 * np.array(own[c]) + 0.5 * np.array(own[n]) for c, n in (("A", "C"), ("B", "C"), ("C", "B"))]
    assert np.allclose(scores[:9], np.concatenate(expected), atol=1e-6)
    assert scores[9] == pytest.approx(0, abs=1e-6)  # no basket: only the popularity tie-break
    assert np.argmax(scores[:3]) == 1 and np.argmax(scores[6:9]) == 2


def test_alpha_one_is_the_own_vector_and_m_one_is_plain_decay():
    """alpha = 1 ignores the neighbours; with m = 1 every basket is in one group: rb^(T-1-t) / T."""
    tifu = TifuKNN(k=2, rb=0.5, rg=0.9, alpha=1.0, m=1).fit(baskets())
    a = tifu.score(pd.DataFrame({"customer_id": ["A", "A"], "menu_item_name": ["x", "y"]}))
    assert np.allclose(a, [(0.25 + 0.5) / 3, (0.5 + 1) / 3], atol=1e-6)


def test_a_grid_gives_the_blend_of_each_setting():
    """`TifuKNN.grid` (which `fit` and evaluate's tuning use) shares the vectors, the neighbour
    search and the neighbours' mean between settings; each table must still be alpha x own
    vector + (1 - alpha) x the mean of the k nearest other customers, computed here directly."""
    rng = np.random.default_rng(7)
    lines = pd.DataFrame({"customer_id": rng.integers(0, 60, 900), "order_id": rng.integers(0, 300, 900),
                          "menu_item_name": rng.choice([f"item {i}" for i in range(25)], 900)})
    lines["customer_id"] = lines["order_id"] % 60  # an order belongs to one customer
    lines["order_ts"] = lines["order_id"]
    settings = [(k, rb, rg, alpha) for k in (3, 10, 100) for rb in (0.9, 1.0) for rg in (0.7,) for alpha in (0.5, 1.0)]
    grid = list(TifuKNN.grid(lines, settings, m=5))
    assert [(t.k, t.rb, t.rg, t.alpha, t.m) for t in grid] == [(*s, 5) for s in settings]
    for tifu, (k, rb, rg, alpha) in zip(grid, settings):
        customers, items, v = tifu_vectors(lines, rb, rg, 5)
        v = v.toarray()
        distances = ((v[:, None, :] - v[None, :, :]) ** 2).sum(axis=2)
        np.fill_diagonal(distances, np.inf)
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :min(k, len(v) - 1)]
        expected = alpha * v + (1 - alpha) * v[nearest].mean(axis=1)
        assert list(tifu.customers) == list(customers) and list(tifu.items) == list(items)
        assert np.allclose(tifu.table, expected, rtol=0, atol=1e-12), (k, rb, alpha)
        fitted = TifuKNN(k=k, rb=rb, rg=rg, alpha=alpha, m=5).fit(lines)
        assert np.array_equal(fitted.table, tifu.table) and fitted.popularity.equals(tifu.popularity)
    assert not np.allclose(grid[0].table, grid[4].table)  # k = 3 and k = 10 blend other neighbours
