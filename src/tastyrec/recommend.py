"""The one recommendation engine: customers -> candidates -> online features -> saved preprocessing
-> model -> top-k, with each customer's purchase history. The CLI, the REST service and the app
all call `Engine.recommend`; none of them ranks or filters anything itself.

Selection, as in the seed's app: explicit customer ids, or filters. Several values of one filter
are OR, different filters AND. `country` and `city` select customers; `brand` keeps the candidate
items of those truck brands (so only customers in cities those brands serve get results).
Candidates are the non-beverage items of the brands with a truck in the customer's city (the
definition training uses); "trucks not visited" keeps the items of brands the customer never
bought from, "menu items not ordered" drops the items the customer already bought. Both read the
customer's history as of the serving snapshot, from the online store: what the model sees.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from tastyrec.columns import BRAND, CITY, CUSTOMER_ID, ITEM, ITEM_PURCHASE_COUNT
from tastyrec.config import Progress, Workspace
from tastyrec.reasons import Reasons

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 3
MAX_TOP_K = 50
CHUNK_CUSTOMERS = 2_000  # customers scored per pass: bounds memory for any selection size
BULK_FROM = 500  # selections of more customers read the serving snapshot in bulk, not one lookup each
ITEM_FIELDS = ("menu_item_name", "truck_brand_name", "item_category", "sale_price_usd")
# Why a selected customer gets no recommendation: code -> (the reason for one customer ({city}:
# theirs), the same counted for one and for several ({n})). A customer's candidates are the items
# of the brands with a truck in their city; the filters then remove some, in the order brand,
# trucks not visited, items not ordered.
REASONS = {
    "not_in_online_store": ("not in the online store: the features are older than the warehouse, "
                            "run `tastyrec features`", "{n} is not in the online store (run `tastyrec features`)",
                            "{n} are not in the online store (run `tastyrec features`)"),
    "no_trucks": ("no truck serves {city}", "{n} lives where no truck serves", "{n} live where no truck serves"),
    "brand": ("no truck of the chosen brands serves {city}", "{n} lives where no truck of the chosen brands serves",
              "{n} live where no truck of the chosen brands serves"),
    "trucks_not_visited": ("has bought from every truck brand left in {city}",
                           "{n} has bought from every truck brand there", "{n} have bought from every truck brand there"),
    "items_not_ordered": ("has already bought every item left to recommend", "{n} has already bought every item left",
                          "{n} have already bought every item left"),
}


class RecommendError(Exception):
    """A request the engine cannot serve (no model, no features, bad arguments)."""


@dataclass(frozen=True)
class Filters:
    """Which customers and candidate items a request covers (empty tuples = no restriction)."""

    country: tuple[str, ...] = ()
    city: tuple[str, ...] = ()
    brand: tuple[str, ...] = ()
    trucks_not_visited: bool = False
    items_not_ordered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class CustomerRecommendations:
    customer_id: int
    city: str | None
    country: str | None
    history: list[dict[str, Any]]  # menu_item_name, orders, last_purchase (ISO date); most recent first
    # rank, ITEM_FIELDS..., score (the model's chance that the customer buys the item within the
    # label window: model["label_days"] days), reason (why, in plain words: tastyrec.reasons)
    recommendations: list[dict[str, Any]]


@dataclass
class Recommendations:
    """What a request produced: the shape of `recommend --json` and of the service's response."""

    model: dict[str, Any]  # name, version, alias, label_days (the window a score is a chance over)
    filters: dict[str, Any]
    top_k: int
    customers: list[CustomerRecommendations]
    unknown_customers: list[int] = field(default_factory=list)
    # selected customers who got nothing: {"customer_id", "city", "code" (a key of REASONS), "reason"}
    without_recommendations: list[dict[str, Any]] = field(default_factory=list)
    selected: int = 0  # customers the selection matched: len(customers) + len(without_recommendations)
    truncated: bool = False  # the selection matched more than the limit
    message: str | None = None  # why nothing came back, in plain words
    seconds: float = 0.0
    served: int = 0  # customers with recommendations: len(customers), or those sent to a sink
    without_counts: dict[str, int] = field(default_factory=dict)  # code (REASONS) -> customers without a list

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, shallow: dataclasses.asdict deep-copies every history entry
        (0.5 s for 1,300 customers), and nothing here is modified after it is built."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["customers"] = [dict(vars(c)) for c in self.customers]
        return out


class Directory:
    """Every loyalty customer's city and country, read once from the warehouse (the engine holds
    no connection open, so the CLI can write to the warehouse while a service runs)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame  # customer_id, city, country; sorted by customer_id
        self.place = {cid: (city, country) for cid, city, country in frame.itertuples(index=False)}

    @classmethod
    def load(cls, ws: Workspace) -> "Directory":
        from tastyrec.warehouse.load import connect

        con = connect(ws.warehouse, read_only=True)
        try:
            frame = con.execute("SELECT customer_id, city, country FROM raw_customer.customer_loyalty "
                                "ORDER BY customer_id").df()
        finally:
            con.close()
        return cls(frame)

    def select(self, filters: Filters) -> np.ndarray:
        keep = np.ones(len(self.frame), dtype=bool)
        if filters.country:
            keep &= self.frame["country"].isin(filters.country).to_numpy()
        if filters.city:
            keep &= self.frame[CITY].isin(filters.city).to_numpy()
        return self.frame[CUSTOMER_ID].to_numpy()[keep]

    def known(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """(known ids in the given order without repeats, unknown ids)."""
        ordered = list(dict.fromkeys(int(i) for i in ids))
        return [i for i in ordered if i in self.place], [i for i in ordered if i not in self.place]


class Precomputed:
    """Both heads' scores of every customer x candidate item at the serving snapshot: what
    `Predictor.predict_pairs` gives for them, computed once per model version and features run,
    in the background (`Engine(precompute=True)`: the service and the app). A request then looks
    its scores up instead of running the model; until they are ready, and for rows they do not
    cover, the engine scores as before. A test checks that the recommendations are the same."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.stopping = threading.Event()  # set: the work ends after the current chunk, never ready
        self.thread: threading.Thread | None = None
        self.keys = np.empty(0, np.int64)  # (R,) customer_id * items + item position, sorted
        self.main = self.explore = np.empty(0, np.float32)  # (R,) the scores of each head
        self.items = 0

    def compute(self, online, predictor, ids: list[int], chunk: int) -> None:
        """Score every customer in `ids` (the bulk read, as `recommend --all`), then mark ready."""
        self.items = len(online.items)
        keys, main, explore = [], [], []
        for customers in online.snapshot(ids, chunk):
            if self.stopping.is_set():  # a reload or the process's end: these scores are not needed
                return
            pairs = online.pairs(customers)
            keys.append(pairs.ids[pairs.customer] * self.items + pairs.item)
            main.append(predictor.predict_pairs(pairs))
            explore.append(predictor.predict_pairs(pairs, explore=True) if predictor.explores else main[-1])
        if keys:
            keys = np.concatenate(keys)
            order = np.argsort(keys, kind="stable")
            self.keys = keys[order]
            self.main, self.explore = np.concatenate(main)[order], np.concatenate(explore)[order]
        self.ready.set()

    def start(self, online, predictor, ids: list[int], chunk: int, reasons: Reasons | None = None) -> "Precomputed":
        def run() -> None:
            try:
                started = time.perf_counter()
                if reasons is not None:  # the first request needs them too; a failure there is its own
                    try:
                        reasons.stats()
                    except Exception:
                        log.exception("the counts behind the reasons could not be read")
                self.compute(online, predictor, ids, chunk)
                log.info("scores of %d customer x item rows precomputed in %.1f s", len(self.keys),
                         time.perf_counter() - started)
            except Exception:  # requests go on scoring as before
                log.exception("the scores could not be precomputed; every request runs the model")

        self.thread = threading.Thread(target=run, name="tastyrec-precompute", daemon=True)
        self.thread.start()
        return self

    def stop(self, wait: float | None = None) -> None:
        """End the work after the current chunk; `wait`: seconds to wait for it (a thread still in
        torch when the interpreter exits can abort the process: "terminate called ...")."""
        self.stopping.set()
        if wait is not None and self.thread is not None:
            self.thread.join(wait)

    def scores(self, pairs, explore: bool) -> np.ndarray | None:
        """The scores of these rows (features.online.Pairs), or None when not every row is covered."""
        if not self.ready.is_set() or not len(self.keys):
            return None
        wanted = pairs.ids[pairs.customer] * self.items + pairs.item
        at = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        if not np.array_equal(self.keys[at], wanted):
            return None
        return (self.explore if explore else self.main)[at]


@dataclass(frozen=True)
class Loaded:
    """What an engine reads when it opens (and again on reload), swapped in as one: a request
    uses one of these from start to end, whatever a reload does meanwhile."""

    predictor: Any  # predictor.Predictor
    info: dict[str, Any]  # name, version, alias, kind, loaded_at, features (the run served)
    online: Any  # features.online.OnlineFeatures: the current features run, its menu, candidates, snapshot
    directory: Directory
    reasons: Any  # reasons.Reasons: who bought what, for each recommended item's reason
    precomputed: Precomputed | None = None  # every customer's scores, once ready


class Engine:
    """Opened once per process (CLI run, service worker, app session): the model of a registered
    version or alias, the current features run (online store, menu, candidate items, serving
    snapshot) and the customer directory. Thread-safe for requests; `reload` reads all of them
    again and swaps them in atomically while requests in flight finish on the old ones.

    precompute: score every customer once in the background (Precomputed), for a process that
    answers many requests (the service, the app); a one-off CLI run scores what it is asked."""

    def __init__(self, ws: Workspace, ref: str | int = "champion", chunk_customers: int | None = None,
                 precompute: bool = False):
        self.ws, self.ref, self.chunk_customers = ws, ref, chunk_customers or CHUNK_CUSTOMERS
        self.precompute = precompute
        # Scoring is many small forwards (one customer: ~40 rows). Torch's intra-op threads cost
        # more than they save there (p50 of one customer's top 3: 60 ms with 2 threads on 2 busy
        # cores, 9 ms with 1), so a process that serves uses one; it scales with more workers.
        torch.set_num_threads(1)
        self._lock = threading.Lock()
        self._stopped: list[Precomputed] = []  # replaced by a reload, maybe still finishing a chunk
        self._state = self._load()

    def _load(self) -> Loaded:
        import duckdb

        from tastyrec.features.online import OnlineFeatures
        from tastyrec.features.stores import OnlineStoreError
        from tastyrec.registry import RegistryError, load_predictor
        from tastyrec.warehouse.load import in_use

        ws = self.ws
        if not (ws.feature_repo / "summary.json").exists():
            raise RecommendError(f"no features in {ws.feature_repo}; run `tastyrec features` first")
        try:
            online = OnlineFeatures(ws)
            directory = Directory.load(ws)
            predictor, version = load_predictor(ws, self.ref)
        except (OnlineStoreError, RegistryError) as e:
            raise RecommendError(str(e)) from None
        except duckdb.IOException as e:  # another process writes to the warehouse (setup, a save)
            if busy := in_use(e, ws.warehouse):
                raise RecommendError(f"{busy}; try again when it has finished") from None
            raise
        alias = None if isinstance(self.ref, int) or str(self.ref).isdigit() else str(self.ref)
        info = {"name": "tastyrec-dlrm", "version": version, "alias": alias, "kind": predictor.kind,
                "loaded_at": datetime.now().isoformat(), "features": online.run, "label_days": online.window_days}
        ids = directory.frame[CUSTOMER_ID].tolist()
        reasons = Reasons(online, ids, self.chunk_customers)
        precomputed = None
        if self.precompute:
            precomputed = Precomputed().start(online, predictor, ids, self.chunk_customers, reasons)
        return Loaded(predictor, info, online, directory, reasons, precomputed)

    def reload(self) -> dict[str, Any]:
        """Open again what the engine read at start: the version the reference names now (a new
        champion), the current features run, the customer directory. On failure the engine keeps
        serving what it had (RecommendError). Returns the model info."""
        loaded = self._load()
        with self._lock:
            old, self._state = self._state, loaded
        if old.precomputed is not None:  # requests in flight on `old` score per request if need be
            old.precomputed.stop()
            self._stopped.append(old.precomputed)
        return self.model_info

    def close(self, wait: float = 30.0) -> None:
        """Stop the background work (precomputing scores) and wait for it: before the process ends."""
        for precomputed in [*self._stopped, self._state.precomputed]:
            if precomputed is not None:
                precomputed.stop(wait)

    def check(self) -> None:
        """OnlineStoreError when the online store cannot be read now (one cheap lookup): what
        /health asks before saying the service can answer."""
        state = self._state
        state.online.customers(state.directory.frame[CUSTOMER_ID].head(1).tolist())

    @property
    def model_info(self) -> dict[str, Any]:
        return dict(self._state.info)

    @property
    def scores(self) -> str:
        """How requests are scored: "precomputed" (every customer's scores are ready),
        "precomputing" (running the model until they are) or "per request"."""
        precomputed = self._state.precomputed
        if precomputed is None:
            return "per request"
        return "precomputed" if precomputed.ready.is_set() else "precomputing"

    @property
    def predictor(self):
        return self._state.predictor

    @property
    def online(self):
        return self._state.online

    @property
    def directory(self) -> Directory:
        return self._state.directory

    # -----------------------------------------------------------------------------------------
    def recommend(self, customer_ids: list[int] | None = None, filters: Filters = Filters(),
                  top_k: int = DEFAULT_TOP_K, limit: int | None = None,
                  sink: Callable[[list[CustomerRecommendations]], None] | None = None,
                  progress: Progress | None = None) -> Recommendations:
        """Top-k items per selected customer (ids, or the filters' customers, sorted by id), with
        their purchase history. `limit` caps how many customers are scored (the rest: truncated).

        Selections of more than BULK_FROM customers read the serving snapshot in bulk (the
        features run's Parquet) instead of the online store, and are scored in chunks with
        every core. `sink`: each chunk's recommendations go to it (without histories) instead of
        into the result, so no selection is ever held in memory whole (`served` counts them)."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise RecommendError(f"top_k must be between 1 and {MAX_TOP_K} (got {top_k})")
        started = time.perf_counter()
        state = self._state  # one model, features run and directory for the whole request
        filters = self.spelt(filters, state)
        info = state.info
        unknown: list[int] = []
        if customer_ids is not None:
            ids, unknown = state.directory.known(customer_ids)
        else:
            ids = state.directory.select(filters).tolist()
        selected = len(ids)
        truncated = limit is not None and selected > limit
        ids = ids[:limit] if truncated else ids
        results: list[CustomerRecommendations] = []
        without: list[dict[str, Any]] = []
        served = 0
        bulk = len(ids) > BULK_FROM
        tables = (state.online.snapshot(ids, self.chunk_customers) if bulk else
                  (state.online.customers(ids[start:start + self.chunk_customers])
                   for start in range(0, len(ids), self.chunk_customers)))
        with _threads(torch.get_num_threads() if not bulk else os.cpu_count() or 1):
            for customers in tables:
                done, missed = self._chunk(state, customers, filters, top_k, histories=sink is None)
                served += len(done)
                if sink is not None:
                    sink(done)
                else:
                    results += done
                without += missed
                if progress:
                    progress("scoring customers", served + len(without), len(ids))
        counts = dict(Counter(w["code"] for w in without).most_common())
        return Recommendations(
            model={k: info[k] for k in ("name", "version", "alias", "label_days")}, filters=filters.to_dict(), top_k=top_k,
            customers=results, unknown_customers=unknown, without_recommendations=without, selected=selected,
            truncated=truncated, message=_message(selected, len(ids), served, counts, unknown),
            seconds=round(time.perf_counter() - started, 4), served=served, without_counts=counts)

    def _chunk(self, state: Loaded, customers: pa.Table, filters: Filters, top_k: int,
               histories: bool = True) -> tuple[list[CustomerRecommendations], list[dict[str, Any]]]:
        """(the recommendations of these customers (their online rows), those who got none with the reason)."""
        ids = customers.column(CUSTOMER_ID).to_pylist()
        online, directory = state.online, state.directory
        pairs = online.pairs(customers)
        # why a customer has no rows: the first step after which none of theirs is left
        left = set(pairs.ids[np.unique(pairs.customer)].tolist())
        online_city = dict(zip(pairs.ids.tolist(), customers.column(CITY).to_pylist()))
        why = {cid: "not_in_online_store" if online_city.get(cid) is None else "no_trucks"
               for cid in ids if cid not in left}
        keep = np.ones(len(pairs), dtype=bool)
        steps = [("brand", lambda: np.isin(pairs.column(BRAND), filters.brand)) if filters.brand else None,
                 ("trucks_not_visited", lambda: ~pairs.found("history_brands")) if filters.trucks_not_visited else None,
                 ("items_not_ordered", lambda: pairs.column(ITEM_PURCHASE_COUNT) == 0)
                 if filters.items_not_ordered else None]
        for code, mask in filter(None, steps):
            keep &= mask()
            still = set(pairs.ids[np.unique(pairs.customer[keep])].tolist())
            why |= dict.fromkeys(left - still, code)
            left = still
        without = [{"customer_id": cid, "city": directory.place[cid][0], "code": why[cid],
                    "reason": REASONS[why[cid]][0].format(city=directory.place[cid][0])}
                   for cid in ids if cid in why]
        pairs = pairs.take(np.flatnonzero(keep))
        if not len(pairs):
            return [], without
        explore = filters.items_not_ordered  # cross-sell: ranked by its own head
        scores = state.precomputed.scores(pairs, explore) if state.precomputed else None
        if scores is None:
            scores = state.predictor.predict_pairs(pairs, explore=explore)
        # best first; equal scores by item name (items are numbered in name order), so they always
        # rank the same way (lexsort: the last key is the primary one)
        customer = pairs.ids[pairs.customer]
        order = np.lexsort((pairs.item, -scores, customer))
        sorted_customers = customer[order]
        first = np.r_[True, sorted_customers[1:] != sorted_customers[:-1]]
        rank = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        in_top = rank < top_k
        top = order[in_top]  # row positions, by customer then rank
        shown_pairs = pairs.take(top)
        shown = {f: shown_pairs.column(f) for f in ITEM_FIELDS}
        why = state.reasons.explain(shown_pairs)
        histories = _histories(customers, online.as_of) if histories else {}
        out: dict[int, CustomerRecommendations] = {}
        for j, (row, r) in enumerate(zip(top, rank[in_top])):
            cid = int(customer[row])
            if cid not in out:
                city, country = directory.place[cid]
                out[cid] = CustomerRecommendations(cid, city, country, histories.get(cid, []), [])
            out[cid].recommendations.append({"rank": int(r) + 1, **{f: _plain(v[j]) for f, v in shown.items()},
                                             "score": float(scores[row]), "reason": why[j]})
        return list(out.values()), without

    def spelt(self, filters: Filters, state: Loaded | None = None) -> Filters:
        """The filters with their values spelt as the data spells them ("hamburg" is Hamburg); a
        RecommendError naming the closest known value for a near miss ("Hamburgg")."""
        if not (filters.country or filters.city or filters.brand):
            return filters
        from tastyrec.matching import known_values, match_filters  # here: matching imports this module

        state = state or self._state
        return match_filters(filters, known_values(state.directory, state.online))

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """P(purchase) for raw feature rows (the columns of a training set): the seed's forward."""
        return self._state.predictor.predict(rows)


_threads_lock = threading.Lock()


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to n for the block (one while serving requests: see Engine;
    every core for a bulk selection, whose forwards are large)."""
    if n == torch.get_num_threads():
        yield
        return
    with _threads_lock:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _plain(value: Any) -> Any:
    """numpy / pandas scalars as Python values, missing as None."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value.item() if isinstance(value, np.generic) else value


def _histories(customers: pa.Table, as_of: pd.Timestamp) -> dict[int, list[dict[str, Any]]]:
    """Each customer's food purchases before the serving snapshot: item, orders, last purchase
    date; most recent first, then by name."""
    day = as_of.date()
    out = {}
    for cid, items, orders, days in zip(*(customers.column(c).to_pylist() for c in (
            CUSTOMER_ID, "history_items", "history_item_orders", "history_item_days"))):
        entries = [{"menu_item_name": item, "orders": int(n), "last_purchase": (day - timedelta(days=int(d))).isoformat()}
                   for item, n, d in zip(items or [], orders or [], days or [])]
        entries.sort(key=lambda e: e["menu_item_name"])
        entries.sort(key=lambda e: e["last_purchase"], reverse=True)  # stable: ties stay by name
        out[int(cid)] = entries
    return out


def _message(selected: int, scored: int, served: int, without: dict[str, int],
             unknown: list[int]) -> str | None:
    """What the counts mean, in plain words, whenever someone selected got nothing (None when
    every selected customer has recommendations)."""
    if not selected:
        if unknown:
            return f"none of the customer ids is known: {', '.join(map(str, unknown))}"
        return "no customer matches the filters"
    if not without:
        return None
    reasons = "; ".join(REASONS[code][1 + (n > 1)].format(n=f"{n:,}") for code, n in without.items())
    matched = f"{selected:,} match" + (f" (the first {scored:,} scored)" if scored < selected else "")
    if not served:
        return f"{matched}, but none has a candidate item left: {reasons}"
    return f"{matched}; {served:,} get a list; {reasons}"
