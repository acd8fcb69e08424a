"""`tastyrec monitor`: the champion watched over the data that came after its training data.

Windows. The champion's features ended at E0 (the day after their last order: its test cutoff
plus its label window W, from the version's lineage). Every complete window [E0 + (k-1)W,
E0 + kW) with E0 + kW at or before the warehouse's end of data is monitor window k; the series
is anchored at E0, so it never re-aligns as data arrives. Window k is evaluated exactly as
`tastyrec features --until E0+kW --window-days W` followed by `tastyrec evaluate` would do it
(`jobs.evaluate_job`: the champion, its seed baseline if it has one, every baseline, the same
sampled customers), on features built aside in <home>/monitor/<E0+kW>/: a workspace of its own
whose only link to the home is its warehouse (the home's file, opened read-only). The home's features
run, its serving pointer (features.json) and its datasets are never touched. A window's figures
are kept in <home>/monitor/<day>/window.json, keyed by the warehouse fingerprint, the champion
(version and run) and the window: a second monitor on the same data reuses them. Those aside
features are built with one training cutoff: evaluation reads the validation window (TIFU-KNN's
settings) and the test window only, whose rows do not depend on the training cutoffs.

Drift. For every model input (the SPARSE and DENSE columns of columns.py, and the length of each
MULTI_HOT bag), the population stability index between the training snapshot (the serving
snapshot as of E0, built aside in <home>/monitor/<E0>/ unless the home's features are that very
snapshot) and the serving snapshot of now (the home's current features run). Rows: every
customer signed up before the snapshot x their city's candidate items, built by the serving
code (features.online: the engine's bulk read and its per-pair lookups), so the inputs are
exactly what the model is given. Bins come from the reference: its deciles for a numeric input
(ties merge bins), its categories (plus one bin for values it never had) for a categorical one.
PSI = sum over bins of (current share - reference share) * ln(current share / reference share),
an empty bin counting as a share of PSI_EPSILON. Below PSI_MODERATE: no drift; up to PSI_MAJOR:
moderate; above: major.

Each call is logged to MLflow as one run of the experiment "tastyrec-monitor": per window
(step = window index, timestamp = the window's end) the NDCG@10 and new-item NDCG@10 of the
champion and of every baseline, the PSI of every input, and the whole report as monitor.json
(what the app's Model page draws).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from tastyrec.columns import DENSE, MULTI_HOT, SPARSE
from tastyrec.config import Progress, Workspace
from tastyrec.metrics import finite

EXPERIMENT = "tastyrec-monitor"
REPORT_FILE = "monitor.json"  # run artifact: the whole MonitorResult
MONITOR_DIR = "monitor"  # in the home: one folder per window end (and one for the training snapshot)
WINDOW_FILE = "window.json"  # in a window's folder: its key and figures
CACHE_FORMAT = 1  # bumped when what a window records changes: older files are recomputed
WATCHED = ("ndcg@10", "new_ndcg@10")  # what the series and the warnings compare
PSI_EPSILON = 1e-4  # the share an empty bin counts as (ln(0) is not a number)
PSI_MODERATE, PSI_MAJOR = 0.1, 0.25  # the usual thresholds: < 0.1 no drift, 0.1-0.25 moderate, > 0.25 major
DECILES = np.linspace(0.1, 0.9, 9)
MISSING = "(missing)"
ASIDE_TRAIN_WINDOWS = 1  # training cutoffs of the features built aside (evaluation reads val and test only)


class MonitorError(Exception):
    """Monitoring cannot run (no champion, a champion without lineage, no warehouse...)."""


@dataclass(frozen=True)
class Champion:
    """The registered champion and where its training data ended."""

    version: int
    run_id: str
    kind: str
    trained_until: date  # E0: the day after the last order its features saw
    window_days: int  # W: its label window

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "run_id": self.run_id, "kind": self.kind,
                "trained_until": self.trained_until.isoformat(), "window_days": self.window_days}


@dataclass
class WindowResult:
    """One monitor window: [first_day, last_day], evaluated with `features --until until`."""

    index: int
    first_day: str
    last_day: str
    until: str
    champion: str  # the champion's row name in `methods` ("version 2 (dlrm)")
    methods: dict[str, dict[str, Any]]  # the champion, then every baseline: metric -> value
    oracle: dict[str, Any] | None
    rows: int
    customers: int
    test_customers_total: int
    window: str  # jobs.window_label of the features it was evaluated on
    seconds: float
    cached: bool = False

    def figure(self, method: str, metric: str) -> float | None:
        return finite(self.methods.get(method, {}).get(metric))

    @property
    def baselines(self) -> list[str]:
        return [m for m in self.methods if m != self.champion]


@dataclass(frozen=True)
class InputDrift:
    feature: str
    kind: str  # numeric, categorical, bag length
    psi: float | None
    level: str  # no drift, moderate, major, or n/a
    bins: int


@dataclass
class MonitorResult:
    champion: dict[str, Any]
    orders_until: str  # the warehouse's last order day
    windows: list[WindowResult]
    next_window: dict[str, str]  # first_day, last_day of the first window not complete yet
    drift: dict[str, Any]  # reference / current snapshots, thresholds, inputs
    warnings: list[str]
    message: str | None  # when there is no complete window yet
    cache: dict[str, Any]  # reused / computed window indices, the folder
    mlflow: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# the champion and its windows
# ---------------------------------------------------------------------------------------------
def champion_info(ws: Workspace) -> Champion:
    """The champion and E0, the end of the data its features saw: its test cutoff plus its label
    window for the time split (the random split's cutoffs are the serving snapshot itself)."""
    from tastyrec.registry import RegistryError
    from tastyrec.registry.lineage import show

    try:
        shown = show(ws, "champion")
    except RegistryError as e:
        raise MonitorError(f"{e}: monitoring watches the champion; run `tastyrec pipeline` (or `train`) first") from None
    lineage = shown["lineage"]
    if not lineage:
        raise MonitorError(f"version {shown['version']} recorded no lineage (it was registered by an older "
                           "tastyrec): where its training data ends is unknown; train a new version to monitor it")
    window_days = int(lineage["features"]["windows"]["window_days"])
    test = date.fromisoformat(lineage["cutoffs"]["test"][0][:10])
    until = test if lineage.get("training_split") == "random" else test + timedelta(days=window_days)
    return Champion(shown["version"], shown["run_id"], shown.get("model_kind") or "?", until, window_days)


def windows_between(trained_until: date, window_days: int, data_end: date) -> list[tuple[date, date]]:
    """(first day, until) of every complete window after trained_until: [E0 + (k-1)W, E0 + kW)
    with E0 + kW <= data_end (the day after the last order)."""
    out = []
    while (until := trained_until + timedelta(days=window_days * (len(out) + 1))) <= data_end:
        out.append((until - timedelta(days=window_days), until))
    return out


@dataclass(frozen=True)
class Aside(Workspace):
    """A workspace of its own (features runs, datasets, its serving pointer) that reads the home's
    warehouse file itself: not a copy, never written (every read opens it read-only), and with
    its WAL where DuckDB looks for it (next to the real file, which a symlink would hide)."""

    source: Path = Path()

    @property
    def warehouse(self) -> Path:
        return self.source


def aside(ws: Workspace, day: date) -> Aside:
    """<home>/monitor/<day>/: where features as of `day` are built aside from the home's own."""
    return Aside(ws.home / MONITOR_DIR / day.isoformat(), ws.warehouse).ensure()


def _clear(scratch: Workspace) -> None:
    """Remove what a window's aside features left (their runs, datasets, temp files): its
    window.json is all that is kept."""
    for name in ("feature_runs", "datasets", "duckdb_tmp"):
        shutil.rmtree(scratch.home / name, ignore_errors=True)
    scratch.features_pointer.unlink(missing_ok=True)


def _build_aside(scratch: Workspace, until: date, window_days: int, progress: Progress | None):
    from tastyrec.features.build import FeaturesError, build_features

    try:
        # SQLite whatever the home uses: these rows are read by this process only, and never
        # mix with a Redis that serves (each run is its own project anyway)
        return build_features(scratch, progress=progress, window_days=window_days,
                              train_windows=ASIDE_TRAIN_WINDOWS, online_store="sqlite", until=until)
    except FeaturesError as e:
        raise MonitorError(f"features as of {until} could not be built: {e}") from None


def evaluate_window(ws: Workspace, champion: Champion, index: int, first: date, until: date, warehouse: str,
                    progress: Progress | None = None) -> WindowResult:
    """Window `index` [first, until): its cached figures when the key matches, else the
    evaluation of `features --until until` + `evaluate`, built aside and then cached."""
    from tastyrec.jobs import evaluate_job
    from tastyrec.registry.tracking import json_safe

    scratch = aside(ws, until)
    key = {"format": CACHE_FORMAT, "warehouse": warehouse, "champion": champion.version,
           "run_id": champion.run_id, "until": until.isoformat(), "window_days": champion.window_days}
    path = scratch.home / WINDOW_FILE
    try:
        cached = json.loads(path.read_text())
        if cached["key"] == key:
            return WindowResult(**cached["result"] | {"cached": True})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    started = time.perf_counter()
    _build_aside(scratch, until, champion.window_days, progress)
    evaluation = evaluate_job(ws, champion.version, rows=scratch, progress=progress)
    methods = {evaluation.model_name: evaluation.model, **evaluation.baselines}
    result = WindowResult(index=index, first_day=first.isoformat(), last_day=(until - timedelta(days=1)).isoformat(),
                          until=until.isoformat(), champion=evaluation.model_name, methods=methods,
                          oracle=evaluation.oracle, rows=evaluation.rows, customers=evaluation.customers,
                          test_customers_total=evaluation.test_customers_total, window=evaluation.window or "",
                          seconds=round(time.perf_counter() - started, 2))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe({"key": key, "result": asdict(result),
                                         "evaluation": evaluation.to_dict()}), indent=2))
    os.replace(tmp, path)
    _clear(scratch)
    return WindowResult(**json_safe(asdict(result)))  # as a cached one reads back: NaN as None


# ---------------------------------------------------------------------------------------------
# drift: the population stability index of every model input
# ---------------------------------------------------------------------------------------------
def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float | None:
    """PSI of two histograms over the same bins (counts): sum of (a - e) * ln(a / e), e and a
    the reference and current shares, an empty bin counting as `epsilon`. None without data."""
    reference, current = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if reference.sum() == 0 or current.sum() == 0:
        return None
    e = np.maximum(reference / reference.sum(), epsilon)
    a = np.maximum(current / current.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def level(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "major" if value > PSI_MAJOR else "moderate" if value >= PSI_MODERATE else "no drift"


def decile_edges(reference: np.ndarray) -> np.ndarray:
    """The reference's deciles as bin edges (equal ones merged): bin i holds edges[i-1] < x <= edges[i]."""
    return np.unique(np.quantile(reference, DECILES)) if len(reference) else np.empty(0)


def numeric_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def categorical_counts(reference: Counter, current: Counter) -> tuple[np.ndarray, np.ndarray]:
    """Both histograms over the reference's categories plus one bin for values it never had."""
    categories = sorted(reference)
    unseen = sum(n for value, n in current.items() if value not in reference)
    return (np.array([reference[c] for c in categories] + [0]),
            np.array([current.get(c, 0) for c in categories] + [unseen]))


NUMERIC = DENSE
BAGS = MULTI_HOT  # their length per row


def input_kind(feature: str) -> str:
    return "bag length" if feature in BAGS else "numeric" if feature in NUMERIC else "categorical"


def snapshot_inputs(ws: Workspace, chunk: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Every model input of the rows of ws's current serving snapshot (every customer signed up
    before it x their city's candidate items), a chunk of customers at a time, as the engine
    builds them (features.online)."""
    from tastyrec.features.online import OnlineFeatures
    from tastyrec.recommend import CHUNK_CUSTOMERS
    from tastyrec.warehouse.load import connect

    online = OnlineFeatures(ws)
    con = connect(ws.warehouse, read_only=True)
    try:
        ids = con.execute("SELECT customer_id FROM raw_customer.customer_loyalty WHERE sign_up_date < $as_of "
                          "ORDER BY customer_id", {"as_of": online.as_of.tz_localize(None).to_pydatetime()}
                          ).fetchnumpy()["customer_id"].tolist()
    finally:
        con.close()
    for customers in online.snapshot(ids, chunk or CHUNK_CUSTOMERS):
        pairs = online.pairs(customers)
        values = {}
        for feature in SPARSE + DENSE:
            column = pairs.column(feature)
            values[feature] = np.asarray(column, dtype=np.float64) if feature in NUMERIC else column
        for bag in BAGS:  # (customers,) lengths, then one per row
            lengths = pc.fill_null(pc.list_value_length(customers.column(bag)), 0).to_numpy(zero_copy_only=False)
            values[bag] = np.asarray(lengths, dtype=np.float64)[pairs.customer]
        yield values


def _categories(values: np.ndarray) -> Counter:
    counted = pd.Series(values, dtype=object).fillna(MISSING).astype(str).value_counts()
    return Counter(dict(zip(counted.index, counted.to_numpy().tolist())))


def input_drift(reference: Workspace, current: Workspace, progress: Progress | None = None) -> list[InputDrift]:
    """PSI of every model input between the serving snapshots of two workspaces' features."""
    features = list(SPARSE + DENSE + BAGS)
    numeric = [f for f in features if input_kind(f) != "categorical"]
    kept: dict[str, list[np.ndarray]] = {f: [] for f in numeric}  # the reference's values: its deciles
    ref_cats: dict[str, Counter] = {f: Counter() for f in features if f not in numeric}
    for values in snapshot_inputs(reference):
        for f in numeric:
            kept[f].append(values[f])
        for f in ref_cats:
            ref_cats[f] += _categories(values[f])
    if progress:
        progress("drift: training snapshot", 1, 1)
    ref_values = {f: np.concatenate(v) if v else np.empty(0) for f, v in kept.items()}
    del kept
    edges = {f: decile_edges(v) for f, v in ref_values.items()}
    counts = {f: [numeric_counts(ref_values[f], edges[f]), np.zeros(len(edges[f]) + 1, np.int64)] for f in numeric}
    del ref_values
    cur_cats: dict[str, Counter] = {f: Counter() for f in ref_cats}
    for values in snapshot_inputs(current):
        for f in numeric:
            counts[f][1] += numeric_counts(values[f], edges[f])
        for f in cur_cats:
            cur_cats[f] += _categories(values[f])
    if progress:
        progress("drift: serving snapshot", 1, 1)
    for f in ref_cats:
        counts[f] = list(categorical_counts(ref_cats[f], cur_cats[f]))
    out = []
    for f in features:
        value = psi(*counts[f])
        value = None if value is None else round(value, 6)
        out.append(InputDrift(f, input_kind(f), value, level(value), len(counts[f][0])))
    return out


def reference_snapshot(ws: Workspace, champion: Champion, warehouse: str,
                       progress: Progress | None = None) -> Workspace:
    """Features whose serving snapshot is E0 (the champion's training snapshot): the home's own
    when they are that (built from this warehouse, ending at E0 with the champion's window), else
    a run built aside in <home>/monitor/<E0>/ (reused while the warehouse stays the same)."""
    from tastyrec.features.build import FeaturesError, built_features

    def matches(candidate: Workspace) -> bool:
        try:
            built = built_features(candidate)
        except FeaturesError:
            return False
        return (built.warehouse == warehouse and built.data_span[1] == champion.trained_until.isoformat()
                and int(built.windows["window_days"]) == champion.window_days
                and (candidate.feature_repo / "data").is_dir())

    if matches(ws):
        return ws
    scratch = aside(ws, champion.trained_until)
    if not matches(scratch):
        _clear(scratch)
        _build_aside(scratch, champion.trained_until, champion.window_days, progress)
    return scratch


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


METRIC_WORDS = {"ndcg@10": "NDCG@10", "new_ndcg@10": "new-item NDCG@10"}


def window_warnings(latest: WindowResult) -> list[str]:
    """A warning per watched metric on which the champion falls behind a baseline."""
    out = []
    for metric in WATCHED:
        own = latest.figure(latest.champion, metric)
        ahead = [(b, v) for b in latest.baselines if (v := latest.figure(b, metric)) is not None
                 and own is not None and v > own]
        if ahead:
            names = ", ".join(f"{b} ({fmt(v)})" for b, v in sorted(ahead, key=lambda x: -x[1]))
            out.append(f"the champion ({latest.champion}) falls behind {names} on {METRIC_WORDS[metric]} "
                       f"({fmt(own)}) in the latest window, {latest.first_day} .. {latest.last_day}")
    return out


def drift_warnings(inputs: list[InputDrift], reference: str, current: str) -> list[str]:
    between = f"between the training snapshot ({reference}) and the serving snapshot ({current})"
    major = [d for d in inputs if d.level == "major"]
    moderate = [d for d in inputs if d.level == "moderate"]
    out = []
    if major:
        out.append(f"major drift (PSI > {PSI_MAJOR}) {between}: "
                   + ", ".join(f"{d.feature} ({d.psi:.3f})" for d in sorted(major, key=lambda d: -d.psi)))
    if moderate:
        out.append(f"moderate drift (PSI {PSI_MODERATE}-{PSI_MAJOR}) {between}: "
                   + ", ".join(f"{d.feature} ({d.psi:.3f})" for d in sorted(moderate, key=lambda d: -d.psi)))
    return out


def monitor(ws: Workspace, progress: Progress | None = None) -> MonitorResult:
    """Evaluate the champion on every complete window after its training data (cached), measure
    its inputs' drift, log the report to MLflow and return it (see the module docstring)."""
    from tastyrec.features.build import FeaturesError, built_features
    from tastyrec.warehouse.fingerprint import warehouse_fingerprint

    started = time.perf_counter()
    if not ws.warehouse.exists():
        raise MonitorError(f"no warehouse at {ws.warehouse}; run `tastyrec setup` first")
    champion = champion_info(ws)
    fingerprint = warehouse_fingerprint(ws)
    if fingerprint["last_order"] is None:
        raise MonitorError(f"the warehouse at {ws.warehouse} has no orders")
    last_order = datetime.fromisoformat(fingerprint["last_order"]).date()
    data_end = last_order + timedelta(days=1)
    complete = windows_between(champion.trained_until, champion.window_days, data_end)
    W = timedelta(days=champion.window_days)
    next_first = champion.trained_until + len(complete) * W
    next_window = {"first_day": next_first.isoformat(), "last_day": (next_first + W - timedelta(days=1)).isoformat()}

    results: list[WindowResult] = []
    for index, (first, until) in enumerate(complete, start=1):
        results.append(evaluate_window(ws, champion, index, first, until, fingerprint["hash"], progress))
        if progress:
            progress("monitor windows", index, len(complete))

    warnings: list[str] = []
    message = None
    if not results:
        message = (f"no complete window after the champion's training data yet: orders run to {last_order}, "
                   f"the first window ends {next_window['last_day']}")
    else:
        warnings += window_warnings(results[-1])

    try:
        serving = built_features(ws)
    except FeaturesError as e:
        raise MonitorError(f"{e}: drift compares the training snapshot with what is served now") from None
    rebuild = ("drift is measured on what is served now; run `tastyrec features` to move the serving snapshot to "
               "the end of the data, then `tastyrec monitor` again")
    if serving.data_span[1] < data_end.isoformat():
        warnings.append(f"the serving features ({ws.feature_repo.name}) end at {serving.data_span[1]} but the orders "
                        f"run to {last_order}: {rebuild}")
    elif serving.warehouse != fingerprint["hash"]:
        warnings.append(f"the serving features ({ws.feature_repo.name}) were computed from another warehouse than the "
                        f"one of now: {rebuild}")
    reference = reference_snapshot(ws, champion, fingerprint["hash"], progress)
    inputs = input_drift(reference, ws, progress)
    current_as_of = serving.data_span[1]
    warnings += drift_warnings(inputs, champion.trained_until.isoformat(), current_as_of)

    result = MonitorResult(
        champion=champion.to_dict(), orders_until=last_order.isoformat(), windows=results, next_window=next_window,
        drift={"reference": {"as_of": champion.trained_until.isoformat(), "features": str(reference.feature_repo)},
               "current": {"as_of": current_as_of, "features": str(ws.feature_repo)},
               "thresholds": {"moderate": PSI_MODERATE, "major": PSI_MAJOR, "epsilon": PSI_EPSILON},
               "inputs": [asdict(d) for d in inputs]},
        warnings=warnings, message=message,
        cache={"folder": str(ws.home / MONITOR_DIR), "reused": [w.index for w in results if w.cached],
               "computed": [w.index for w in results if not w.cached]})
    result.seconds = round(time.perf_counter() - started, 2)
    result.mlflow = log_report(ws, result)
    return result


# ---------------------------------------------------------------------------------------------
# MLflow: one run per call, the series as metrics, the report as an artifact
# ---------------------------------------------------------------------------------------------
def _method_key(w: WindowResult, method: str) -> str:
    return "champion" if method == w.champion else f"baseline.{method}"


def log_report(ws: Workspace, result: MonitorResult) -> dict[str, Any]:
    """Log `result` as one run of the "tastyrec-monitor" experiment; returns its ids."""
    from mlflow.entities import Metric, Param, RunTag

    from tastyrec.registry.tracking import client, experiment_id, flat_metrics, json_safe, mlflow_name

    bound = client(ws)
    experiment = experiment_id(bound, ws, EXPERIMENT)
    now = int(time.time() * 1000)
    metrics, tags = [], [RunTag("champion_version", str(result.champion["version"]))]
    for w in result.windows:
        stamp = int(datetime.fromisoformat(w.until).replace(tzinfo=timezone.utc).timestamp() * 1000)
        tags.append(RunTag(f"window.{w.index}", f"{w.first_day} .. {w.last_day}"))
        for method, figures in w.methods.items():
            for metric, value in flat_metrics({m: figures.get(m) for m in WATCHED}).items():
                metrics.append(Metric(mlflow_name(f"{_method_key(w, method)}.{metric}"), value, stamp, w.index))
    step = len(result.windows)
    metrics += [Metric(mlflow_name(f"psi.{d['feature']}"), d["psi"], now, step)
                for d in result.drift["inputs"] if d["psi"] is not None]
    params = [Param(k, str(v)) for k, v in {
        "champion_version": result.champion["version"], "trained_until": result.champion["trained_until"],
        "window_days": result.champion["window_days"], "orders_until": result.orders_until,
        "windows": len(result.windows)}.items()]
    run = bound.create_run(experiment, run_name=f"monitor {result.orders_until}")
    run_id = run.info.run_id
    try:
        for i in range(0, len(metrics), 900):  # MLflow takes at most 1,000 metrics per batch
            bound.log_batch(run_id, metrics=metrics[i:i + 900], params=params if i == 0 else [],
                            tags=tags if i == 0 else [])
        bound.log_dict(run_id, json_safe(result.to_dict()), REPORT_FILE)
    except BaseException:
        bound.set_terminated(run_id, "FAILED")
        raise
    bound.set_terminated(run_id)
    return {"experiment": EXPERIMENT, "run_id": run_id}


def latest_report(ws: Workspace) -> dict[str, Any] | None:
    """The report of the last `tastyrec monitor` (its monitor.json), or None if it never ran."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from tastyrec.registry.tracking import client, has_registry

    if not has_registry(ws):
        return None
    bound = client(ws)
    found = bound.get_experiment_by_name(EXPERIMENT)
    if found is None:
        return None
    runs = bound.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                             order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = json.loads(Path(bound.download_artifacts(runs[0].info.run_id, REPORT_FILE, tmp)).read_text())
        except (MlflowException, OSError, ValueError):
            return None
    return report | {"mlflow": {"experiment": EXPERIMENT, "run_id": runs[0].info.run_id}}
