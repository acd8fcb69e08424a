"""Why an item is recommended, in plain words a marketer can repeat, each true to the data the
model saw: the customers' purchases before the serving snapshot (their online history lists).

One reason per recommended item, the first that holds:
1. the customer bought it before: "bought it 5 times, last 3 weeks ago";
2. customers who bought one of the customer's items buy this one clearly more often than
   customers in general (at least MIN_TOGETHER of them bought both, and the item's share among
   them is at least MIN_LIFT times its share among all customers): "often bought with your
   Lobster Mac & Cheese" (the item of the customer's history with the highest such lift);
3. otherwise how common it is where they live: "bought by 23% of customers in Hamburg".

The counts behind 2 and 3 (`ItemStats`) come from every customer's history at the snapshot,
read once per features run. Tests check each kind of reason against the warehouse.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pandas as pd

from tastyrec.columns import CITY, ITEM, ITEM_PURCHASE_COUNT

MIN_TOGETHER = 20  # customers who bought both items before "often bought with" is said
MIN_LIFT = 1.5  # the item's share among buyers of the other item / its share among all customers
HISTORY_REFS = ["customer_features:city", "customer_history:history_items"]


class ItemStats:
    """Who bought what before the serving snapshot, over the candidate items (OnlineFeatures.items):
    buyers per item, customers who bought both of two items, and buyers per item in each city."""

    def __init__(self, items: list[str], bought: np.ndarray, cities: np.ndarray):
        """bought: (customers, items) bool; cities: (customers,) each customer's city."""
        self.items = items
        self.customers = len(bought)
        counts = bought.astype(np.float32)  # sums of 0/1 stay exact in float32 below 2^24 customers
        self.buyers = counts.sum(axis=0, dtype=np.float64)  # (items,)
        self.together = (counts.T @ counts).astype(np.float64)  # (items, items); the diagonal is `buyers`
        code, names = pd.factorize(pd.Series(cities, dtype=object))  # a customer without a city: -1
        self.city_customers = {city: int((code == i).sum()) for i, city in enumerate(names)}
        self.city_buyers = {city: bought[code == i].sum(axis=0) for i, city in enumerate(names)}
        with np.errstate(invalid="ignore", divide="ignore"):
            lift = self.together * self.customers / np.outer(self.buyers, self.buyers)
        lift[(self.together < MIN_TOGETHER) | ~np.isfinite(lift)] = 0.0
        np.fill_diagonal(lift, 0.0)
        self.lift = np.where(lift >= MIN_LIFT, lift, 0.0)  # (history item, item): 0 where no reason

    @classmethod
    def read(cls, online, customer_ids: list[int], chunk: int) -> ItemStats:
        """From every customer's history list at the serving snapshot (the bulk read)."""
        from tastyrec.features.online import _codes

        parts, cities = [], []
        for table in online.snapshot(customer_ids, chunk, refs=HISTORY_REFS):
            owner, code = _codes(table.column("history_items"), online.keys[ITEM])
            bought = np.zeros((table.num_rows, len(online.items)), dtype=bool)
            bought[owner[code >= 0], code[code >= 0]] = True
            parts.append(bought)
            cities += table.column(CITY).to_pylist()
        bought = np.vstack(parts) if parts else np.zeros((0, len(online.items)), dtype=bool)
        return cls(list(online.items), bought, np.asarray(cities, dtype=object))


class Reasons:
    """An engine's ItemStats for one features run, read on first use (or ahead, by the thread
    that precomputes scores), once, whichever thread asks first."""

    def __init__(self, online, customer_ids: list[int], chunk: int):
        self.online, self.customer_ids, self.chunk = online, customer_ids, chunk
        self._lock = threading.Lock()
        self._stats: ItemStats | None = None

    def stats(self) -> ItemStats:
        with self._lock:
            if self._stats is None:
                self._stats = ItemStats.read(self.online, self.customer_ids, self.chunk)
            return self._stats

    def explain(self, pairs) -> list[str]:
        return explain(self.stats, pairs)


def ago(days: float) -> str:
    """A number of days before the snapshot, as people say it."""
    days = int(days)
    if days <= 1:
        return "yesterday" if days == 1 else "on the last day"
    if days < 14:
        return f"{days} days ago"
    if days < 61:
        return f"{round(days / 7)} weeks ago"
    return f"{round(days / 30.4)} months ago"


def bought(times: float, days: float) -> str:
    """The reason for an item the customer bought before."""
    return f"bought it {'once' if times == 1 else f'{int(times)} times'}, last {ago(days)}"


def explain(stats: Callable[[], ItemStats], pairs) -> list[str]:
    """The reason for each row of `pairs` (features.online.Pairs: the recommended rows). `stats`
    is called only when some item is new to its customer (a request for items the customers
    bought before never reads everyone's histories)."""
    count = pairs.column(ITEM_PURCHASE_COUNT)
    days = pairs.column("days_since_item_purchase")
    if (count > 0).all():
        return [bought(n, d) for n, d in zip(count, days)]
    stats = stats()
    mine = pairs.lookups.found("history_items", ITEM)[pairs.customer]  # (rows, items): the customer's items
    lift = np.where(mine, stats.lift[:, pairs.item].T, 0.0)  # (rows, history item)
    best = lift.argmax(axis=1)
    cities = pairs.customer_column(CITY)[pairs.customer]
    out = []
    for row in range(len(pairs)):
        if count[row] > 0:
            out.append(bought(count[row], days[row]))
        elif lift[row, best[row]] > 0:
            out.append(f"often bought with your {stats.items[best[row]]}")
        else:
            city = cities[row]
            share = stats.city_buyers[city][pairs.item[row]] / stats.city_customers[city] if city in stats.city_buyers else 0.0
            out.append(f"bought by {percent(share)} of customers in {city}")
    return out


def percent(share: float) -> str:
    """A share as a whole percentage, never rounded to a misleading 0% or 100%."""
    if 0 < share < 0.01:
        return "under 1%"
    if 0.99 < share < 1:
        return "over 99%"
    return f"{share:.0%}"

