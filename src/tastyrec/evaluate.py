"""Evaluation on the test window: the model, the baselines and the oracle, with the same metrics.

Every method scores the same candidate rows (test customers x their candidate items). The
baselines are fitted on the history before the test cutoff, which the test rows carry as
`item_purchase_count` (point in time, like every other feature). The oracle ranks by the
generator's true propensities (`synth.true_propensity`), only when they describe this very
window: synthetic data and the time split.

The result is an `Evaluation`, produced here and read by the CLI, the registry and the tests;
its figures (loss curves, ranking bars) live here too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tastyrec.baselines import BASKET, ORDERED_AT, PROPENSITY, TifuKNN, score_all
from tastyrec.columns import CITY, CUSTOMER_ID, ITEM, ITEM_PURCHASE_COUNT, ITEM_RECENT_ORDERS, LABEL, TIMESTAMP
from tastyrec.config import Progress, Workspace
from tastyrec.metrics import evaluate_scores, finite

# Every method is scored on the same customers: at most this many test customers, drawn with a
# fixed seed. The seed's DLRM costs ~4 MFLOP per row (its 33,024-wide top MLP), so scoring all
# 20,000 test customers x ~40 items with it would take minutes; paired comparisons on 4,000
# customers are precise to about +-0.005 NDCG@10.
EVAL_CUSTOMERS = 4_000
GATE_METRIC = "ndcg@10"  # the figure the champion gate and the headline ratios compare
# TIFU-KNN's settings tried on the validation window (m = 7, the paper's); the paper's Ta-Feng
# setting (k 300, rb 0.9, rg 0.7, alpha 0.7) is among them.
TIFU_GRID = {"k": (100, 300), "rb": (0.9, 1.0), "rg": (0.7, 1.0), "alpha": (0.5, 0.7, 0.9)}
METRICS = ("auc", "precision", "recall", "recall@3", "ndcg@3", "recall@10", "ndcg@10",
           "new_recall@10", "new_ndcg@10")

Metrics = dict[str, Any]  # metric name -> value (None where undefined)


@dataclass
class Evaluation:
    """One model, the baselines and the oracle (None without a truth) on the same test rows.

    model_name labels the model's row ("dlrm", "seed-dlrm", "version 3"); version is the
    registered version that was scored, when it was one.
    """

    model_name: str
    model: Metrics
    baselines: dict[str, Metrics]
    oracle: Metrics | None
    rows: int
    customers: int
    test_customers_total: int
    version: int | None = None
    window: str | None = None  # which test window and warehouse the rows came from (jobs.window_label)
    # the champion of the moment scored on these same rows, for the gate: {"version", "metrics"}
    champion: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what the caller adds (e.g. the training split)

    def _ndcg(self, metrics: Metrics | None) -> float | None:
        return finite((metrics or {}).get(GATE_METRIC))

    @property
    def best_baseline(self) -> str | None:
        """The baseline with the highest NDCG@10 (None when none has one)."""
        scored = {name: v for name, m in self.baselines.items() if (v := self._ndcg(m)) is not None}
        return max(scored, key=scored.__getitem__) if scored else None

    @staticmethod
    def _ratio(a: float | None, b: float | None) -> float | None:
        # None, never inf or a crash, when the denominator is 0 (tiny data sets) or missing
        return a / b if a is not None and b else None

    @property
    def fraction_of_oracle_ndcg10(self) -> float | None:
        return self._ratio(self._ndcg(self.model), self._ndcg(self.oracle))

    @property
    def lift_over_best_baseline_ndcg10(self) -> float | None:
        best = self.best_baseline
        return self._ratio(self._ndcg(self.model), self._ndcg(self.baselines[best]) if best else None)

    def methods(self) -> list[tuple[str, Metrics]]:
        """(name, metrics) of the model, every baseline and the oracle, in table order."""
        rows = [(self.model_name, self.model), *self.baselines.items()]
        return rows + ([("oracle (truth)", self.oracle)] if self.oracle else [])

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "version": self.version, "model": self.model,
                "baselines": self.baselines, "oracle": self.oracle, "best_baseline": self.best_baseline,
                "fraction_of_oracle_ndcg10": self.fraction_of_oracle_ndcg10,
                "lift_over_best_baseline_ndcg10": self.lift_over_best_baseline_ndcg10,
                "rows": self.rows, "customers": self.customers, "window": self.window, "champion": self.champion,
                "test_customers_total": self.test_customers_total, **self.extra}


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


def baskets_before(ws: Workspace, customers: np.ndarray, cutoff: pd.Timestamp) -> pd.DataFrame:
    """The food items of every order these customers placed before `cutoff`, one row per line:
    CUSTOMER_ID, BASKET, ORDERED_AT, ITEM (what TIFU-KNN reads; the features see the same orders)."""
    from tastyrec.warehouse.load import connect

    con = connect(ws.warehouse, read_only=True)
    try:
        con.register("wanted", pd.DataFrame({CUSTOMER_ID: np.asarray(customers, dtype=np.int64)}))
        return con.execute(
            f"SELECT oh.customer_id AS {CUSTOMER_ID}, oh.order_id AS {BASKET}, oh.order_ts AS {ORDERED_AT}, "
            f"m.menu_item_name AS {ITEM} FROM raw_pos.order_header oh JOIN wanted USING (customer_id) "
            "JOIN raw_pos.order_detail od ON od.order_id = oh.order_id "
            "JOIN raw_pos.menu m ON m.menu_item_id = od.menu_item_id "
            "WHERE oh.order_ts < $cutoff AND m.item_category <> 'Beverage'",
            {"cutoff": (cutoff.tz_convert("UTC").tz_localize(None) if cutoff.tzinfo else cutoff).to_pydatetime()}).df()
    finally:
        con.close()


def _cutoff(rows: pd.DataFrame) -> pd.Timestamp | None:
    """The one snapshot of a time split's rows (None for rows of several: no basket cutoff)."""
    stamps = rows[TIMESTAMP].unique()
    return pd.Timestamp(stamps[0]) if len(stamps) == 1 else None


def tune_tifu(ws: Workspace, val_path: str | Path, max_customers: int = EVAL_CUSTOMERS) -> tuple[TifuKNN, float]:
    """TIFU-KNN's settings with the best NDCG@10 on the validation window's rows (never the test's),
    among TIFU_GRID; returns them and that NDCG@10."""
    val, _ = sample_customers(val_path, max_customers)
    cutoff = _cutoff(val)
    if cutoff is None:
        return TifuKNN(), float("nan")
    baskets = baskets_before(ws, val[CUSTOMER_ID].unique(), cutoff)
    frame = val[[CUSTOMER_ID, ITEM, LABEL]].copy()
    new_only = val[ITEM_PURCHASE_COUNT].to_numpy() == 0
    best, best_ndcg = TifuKNN(), -1.0
    for tifu in TifuKNN.grid(baskets, itertools.product(*TIFU_GRID.values())):
        frame["score"] = tifu.score(frame)
        ndcg = finite(evaluate_scores(frame, "score", new_only_mask=new_only).get(GATE_METRIC)) or 0.0
        if ndcg > best_ndcg:
            best, best_ndcg = tifu, ndcg
    return best, best_ndcg


Scores = np.ndarray | tuple[np.ndarray, np.ndarray]  # a model's scores, or (main head, explore head)


def evaluate_frame(test: pd.DataFrame, model_scores: dict[str, Scores], truth: pd.DataFrame | None,
                   test_customers_total: int | None = None,
                   champion: tuple[int, Scores] | None = None, baskets: pd.DataFrame | None = None,
                   tifu: TifuKNN | None = None) -> Evaluation:
    """Metrics of each model (probabilities), each baseline and the oracle on the test rows.

    model_scores: the model first (its name labels its row), then other trained models shown
    as baselines (the seed's DLRM). champion: (version, scores) of the registered champion, kept
    apart from the baselines (it is what the gate compares with, not a baseline). A model with an
    explore head gives (main, explore) scores: its `new_` figures are the explore head's, the
    ranking that cross-sell requests (--items-not-ordered) get.
    """
    frame = test[[CUSTOMER_ID, ITEM, LABEL]].copy()
    new_only = test[ITEM_PURCHASE_COUNT].to_numpy() == 0  # cross-sell: items the customer never bought
    history = test[[CUSTOMER_ID, ITEM, ITEM_PURCHASE_COUNT, ITEM_RECENT_ORDERS]]
    customers = test[[CUSTOMER_ID, CITY]].drop_duplicates(CUSTOMER_ID)
    scores = score_all(history, customers, frame[[CUSTOMER_ID, ITEM]], truth, baskets, tifu)

    def metrics(values: Scores, probabilities: bool) -> Metrics:
        main, explore = values if isinstance(values, tuple) else (values, None)
        frame["score"] = main
        out = evaluate_scores(frame, "score", probabilities=probabilities, new_only_mask=new_only)
        if explore is not None:
            frame["score"] = explore
            cross_sell = evaluate_scores(frame, "score", probabilities=probabilities, new_only_mask=new_only)
            out |= {k: v for k, v in cross_sell.items() if k.startswith("new_")}
        return out

    (name, values), *others = model_scores.items()
    main = metrics(values, True)
    oracle = metrics(scores.pop("oracle"), True) if "oracle" in scores else None
    baselines = {b: metrics(v, False) for b, v in scores.items()}
    baselines |= {b: metrics(v, True) for b, v in others}
    customers_scored = int(frame[CUSTOMER_ID].nunique())
    held = {"version": champion[0], "metrics": metrics(champion[1], True)} if champion else None
    return Evaluation(model_name=name, model=main, baselines=baselines, oracle=oracle, rows=len(frame),
                      customers=customers_scored, test_customers_total=test_customers_total or customers_scored,
                      champion=held)


def sample_customers(test_path: str | Path, n: int = EVAL_CUSTOMERS, seed: int = 0) -> tuple[pd.DataFrame, int]:
    """The test rows of at most n customers drawn with a fixed seed (all of them if fewer), in file
    order, and the number of test customers. Only the drawn customers' rows are read: at full
    scale the test window holds millions of rows with their history lists."""
    customers = np.sort(pq.read_table(test_path, columns=[CUSTOMER_ID]).column(CUSTOMER_ID).unique().to_numpy())
    if len(customers) <= n:
        return pd.read_parquet(test_path), len(customers)
    chosen = np.random.default_rng(seed).choice(customers, size=n, replace=False)
    rows = pq.read_table(test_path, filters=[(CUSTOMER_ID, "in", chosen.tolist())]).to_pandas()
    return rows, len(customers)


def evaluate_predictors(ws: Workspace, test_path: str | Path, predictors: dict,
                        max_customers: int = EVAL_CUSTOMERS, progress: Progress | None = None,
                        champion: tuple[int, Any] | None = None, window: str | None = None) -> Evaluation:
    """Score the test split with each predictor (first = the model) and evaluate everything;
    champion: (version, Predictor) of the registered champion, scored on the same rows."""
    test, total = sample_customers(test_path, max_customers)
    scores = {}
    steps = len(predictors) + (champion is not None)
    def predict(predictor) -> Scores:
        if getattr(predictor, "explores", False):
            return predictor.predict(test), predictor.predict(test, explore=True)
        return predictor.predict(test)

    for name, predictor in predictors.items():
        scores[name] = predict(predictor)
        if progress:
            progress("scoring the test window", len(scores), steps)
    held, problem = None, None
    if champion:
        try:
            held = (champion[0], predict(champion[1]))
        except Exception as e:  # noqa: BLE001 - e.g. a champion of an older code version; the gate says why
            problem = f"{type(e).__name__}: {e}"
        if progress:
            progress("scoring the test window", steps, steps)
    # TIFU-KNN reads the orders before the test cutoff, with settings chosen on the validation window
    val_path = Path(test_path).with_name("val.parquet")
    tifu, val_ndcg = tune_tifu(ws, val_path, max_customers) if val_path.exists() else (TifuKNN(), None)
    cutoff = _cutoff(test)
    baskets = baskets_before(ws, test[CUSTOMER_ID].unique(), cutoff) if cutoff is not None else None
    evaluation = evaluate_frame(test, scores, truth_for(ws, test), test_customers_total=total, champion=held,
                                baskets=baskets, tifu=tifu)
    if progress:
        progress("baselines and oracle", 1, 1)
    evaluation.extra["tifu_knn"] = {"k": tifu.k, "rb": tifu.rb, "rg": tifu.rg, "alpha": tifu.alpha, "m": tifu.m,
                                    "chosen_on": "validation" if val_ndcg is not None else "published Ta-Feng setting",
                                    "validation_ndcg@10": val_ndcg}
    evaluation.window = window
    if problem:
        evaluation.champion = {"version": champion[0], "metrics": None, "error": problem}
    return evaluation


# ---------------------------------------------------------------------------------------------
# figures (matplotlib's object API on an Agg canvas: no pyplot state, no global backend switch)
# ---------------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def loss_figure(history: list[dict[str, Any]]) -> Figure:
    """Train / validation loss per epoch."""
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    keys = sorted({k for h in history for k in h if k.endswith("loss")})
    for key in keys:
        values = [finite(h.get(key)) for h in history]
        ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o", label=key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="BCE loss", title="Loss curves")
    if keys:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def ranking_figure(evaluation: Evaluation, metrics: tuple[str, ...] = ("ndcg@10", "recall@10")) -> Figure:
    """Bars of `metrics` for the model, each baseline and the oracle (when there is one)."""
    methods = evaluation.methods()
    fig = _figure(max(6.0, 1.3 * len(methods) + 2), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(methods))
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        values = [finite(m.get(metric)) for _, m in methods]
        heights = [np.nan if v is None else v for v in values]
        bars = ax.bar(x + (j - (len(metrics) - 1) / 2) * width, heights, width, label=metric)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.3f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(x, [name for name, _ in methods], rotation=20, ha="right")
    ax.set(ylabel="test metric", title="Ranking quality: model vs baselines vs oracle")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
