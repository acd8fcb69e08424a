"""The synthetic Tasty Bytes data set, reproducible from its seed and generated in chunks.

The planted purchase model (documented in docs/data.md, "The synthetic data"):

For loyalty customer c and non-beverage item i of brand b(i), the utility is

    u[c, i] = pop[i]                                   item popularity (+ category effect)
            + FAV * [b(i) == favourite_brand[c]]       affinity to the favourite brand
            + demo[c, style(b(i))]                     age group, gender, marital status, children
            - price_sens[c] * zprice[i]                price sensitivity
            + z[c] . v[i]                              latent taste only the customer's history shows
            + habit[c] * log1p(n[c, i])                repeat-purchase habit (n = past orders with i)
            = -inf when no truck of b(i) serves the customer's city.

An order first picks a brand with a nested logit, P(b) ~ sum_{i in b} exp(u[c, i]), then
1 + Poisson(EXTRA_LINES) non-beverage lines within the brand with P(i | b) = softmax(u[c, b]),
and a beverage with probability BEVERAGE_P. Customers order as a Poisson process from
their sign-up date with a personal rate. Non-loyalty orders follow item popularity only.

The true propensity of the final window, P(c buys i at least once in the window), is computed
from each customer's state at the window start and written to `synth.true_propensity`.

A chunk's random stream (chunk_rng) draws its customers first (draw_customers), then their orders:
`tastyrec simulate` (simulate.py) regenerates the same customers from it and continues their orders
with the same parts (poisson_orders, draw_loyalty_lines, walk_in_orders, number_orders).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from tastyrec.config import DATA_END, DATA_START, WINDOW_DAYS
from tastyrec.warehouse.catalog import BEVERAGES, BRANDS, FIRST_NAMES, LAST_NAMES
from tastyrec.warehouse.dimensions import LATENT_DIM, Dimensions, build_dimensions

CHUNK_CUSTOMERS = 10_000  # fixed: results depend on the seed and N only, not on memory
FAV = 1.3
HABIT_MEAN = 0.9
EXTRA_LINES = 0.5
MAX_LINES = 4
BEVERAGE_P = 0.45
ORDER_EVERY_DAYS = 21.0  # mean days between a loyalty customer's orders
NON_LOYALTY_SHARE = 0.5  # non-loyalty orders per loyalty order
EPOCH = np.datetime64("1970-01-01")


def epoch_day(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _pick(rng: np.random.Generator, options: list[str], p: list[float], n: int) -> np.ndarray:
    return np.array(options, dtype=object)[rng.choice(len(options), size=n, p=p)]


def _demographic_effects(age: np.ndarray, gender: np.ndarray, married: np.ndarray,
                         kids: np.ndarray) -> np.ndarray:
    """(n, len(catalog.STYLES)) utility shift of each brand style for each customer."""
    young, old = (age < 30).astype(float), (age >= 50).astype(float)
    female = (gender == "Female").astype(float)
    #               sweet hearty fresh comfort adventurous
    effect = (np.outer(young, [0.3, -0.3, 0.2, 0.2, 0.5])
              + np.outer(old, [-0.2, 0.5, -0.1, 0.2, -0.5])
              + np.outer(female, [0.3, -0.4, 0.5, 0.0, 0.1])
              + np.outer(married, [0.0, 0.3, 0.0, 0.1, 0.0])
              + np.outer(kids, [0.7, 0.0, -0.2, 0.5, -0.4]))
    return effect


def _draw_orders(rng: np.random.Generator, dims: Dimensions, expu: np.ndarray,
                 brand_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nested logit of one order per row of expu (A, I), the exp-utilities of the items:
    a brand (A,), then 1 + Poisson(EXTRA_LINES) item lines within it (A, MAX_LINES; -1: no line)."""
    brand_w = expu @ brand_matrix                                             # (A, B)
    with np.errstate(divide="ignore"):  # weight 0 (no truck in the city): log 0 = -inf rules the brand out
        log_w = np.log(brand_w)
    brand = np.argmax(log_w + rng.gumbel(size=brand_w.shape), axis=1)
    within = expu * (dims.item_brand[None, :] == brand[:, None])
    cdf = np.cumsum(within / within.sum(axis=1, keepdims=True), axis=1)
    n = expu.shape[0]
    n_lines = np.minimum(1 + rng.poisson(EXTRA_LINES, n), MAX_LINES)
    lines = (cdf[:, None, :] < rng.random((n, MAX_LINES, 1))).sum(axis=2)   # (A, L)
    lines = np.minimum(lines, expu.shape[1] - 1)
    lines[np.arange(MAX_LINES)[None, :] >= n_lines[:, None]] = -1
    return brand, lines


@dataclass
class Customers:
    """One chunk's loyalty customers: their rows and the parameters of their purchase model."""

    ids: np.ndarray      # (n,) customer_id
    city: np.ndarray     # (n,) city index
    signup: np.ndarray   # (n,) sign-up day, in days since 1970-01-01
    base: np.ndarray     # (n, I) utility without the habit term; -inf where no truck of the brand serves the city
    habit: np.ndarray    # (n,) weight of log1p(n[c, i])
    rate: np.ndarray     # (n,) orders per day
    table: pd.DataFrame  # their raw_customer.customer_loyalty rows


def chunk_rng(seed: int, chunk: int) -> np.random.Generator:
    """The random stream of one chunk: its customers first (draw_customers), then their orders."""
    return np.random.default_rng([seed, 1, chunk])


def customer_chunks(n_customers: int) -> Iterator[tuple[int, int, int]]:
    """(chunk, first customer id, customers) of each chunk of a data set of n_customers."""
    for chunk, start in enumerate(range(0, n_customers, CHUNK_CUSTOMERS)):
        yield chunk, start + 1, min(CHUNK_CUSTOMERS, n_customers - start)


def draw_customers(rng: np.random.Generator, dims: Dimensions, first_customer_id: int, n: int) -> Customers:
    """Customers [first_customer_id, +n) and their parameters, the first draws of a chunk's stream
    (`setup` and `simulate` both call this on chunk_rng, so both see the same customers)."""
    start_day = epoch_day(DATA_START)
    window_start = epoch_day(DATA_END) + 1 - WINDOW_DAYS
    n_brands = len(BRANDS)
    ids = np.arange(first_customer_id, first_customer_id + n, dtype=np.int64)
    city = rng.choice(len(dims.city_names), size=n, p=dims.city_weight)
    gender = _pick(rng, ["Male", "Female", "Undisclosed"], [0.48, 0.48, 0.04], n)
    marital = _pick(rng, ["Single", "Married", "Divorced", "Undisclosed"], [0.4, 0.45, 0.1, 0.05], n)
    age = np.clip(rng.normal(38, 13, n), 18, 80).astype(int)
    married = marital == "Married"
    n_kids = np.where(married | (age > 30), rng.poisson(np.where(married, 1.6, 0.5)), 0)
    children = np.where(n_kids >= 5, "5+", n_kids.astype(str)).astype(object)
    children[rng.random(n) < 0.05] = "Undisclosed"
    birthday = np.datetime64(DATA_END) - (age * 365.25 + rng.integers(0, 365, n)).astype("timedelta64[D]")
    signup = start_day - 400 + rng.integers(0, (window_start - 60) - (start_day - 400), n)

    demo = _demographic_effects(age, gender, married, n_kids > 0)           # (n, styles)
    price_sens = np.clip(0.25 + 0.35 * (n_kids > 0) + 0.25 * (age < 25) + rng.normal(0, 0.2, n), 0, None)
    latent = rng.normal(0.0, 1.0, (n, LATENT_DIM))
    habit = HABIT_MEAN * rng.gamma(4.0, 0.25, n)
    available = dims.city_brands[city][:, dims.item_brand]                  # (n, I)
    zprice = (dims.item_price - dims.item_price.mean()) / dims.item_price.std()
    base = (dims.item_pop[None, :] + demo[:, dims.brand_style[dims.item_brand]]
            - price_sens[:, None] * zprice[None, :] + latent @ dims.item_latent.T)
    # favourite brand: mostly the brand the customer likes best among those in their city
    brand_pref = np.log(np.exp(base) @ (dims.item_brand[:, None] == np.arange(n_brands)).astype(float))
    brand_pref = np.where(dims.city_brands[city], brand_pref, -np.inf)
    gumbel = rng.gumbel(size=(n, n_brands))
    fav = np.argmax(brand_pref + gumbel, axis=1)
    anywhere = rng.random(n) < 0.15
    fav[anywhere] = rng.integers(0, n_brands, anywhere.sum())
    base = base + FAV * (dims.item_brand[None, :] == fav[:, None])
    base = np.where(available, base, -np.inf)

    first = rng.choice(FIRST_NAMES, n)
    last = rng.choice(LAST_NAMES, n)
    table = pd.DataFrame({
        "customer_id": ids, "first_name": first, "last_name": last,
        "city": dims.city_names[city], "country": dims.city_country[city],
        "postal_code": rng.integers(10000, 99999, n).astype(str),
        "preferred_language": dims.city_language[city], "gender": gender,
        "favourite_brand": np.array([BRANDS[b][1] for b in fav]), "marital_status": marital,
        "children_count": children,
        "sign_up_date": (EPOCH + signup.astype("timedelta64[D]")).astype("datetime64[D]"),
        "birthday_date": birthday.astype("datetime64[D]"),
        "e_mail": [f"{f}.{l}{i}@example.com".lower() for f, l, i in zip(first, last, ids)],
        "phone_number": [f"{a}-{b}-{c}" for a, b, c in rng.integers([200, 100, 1000], [999, 999, 9999], (n, 3))],
    })
    rate = rng.gamma(2.0, 0.5, n) / ORDER_EVERY_DAYS                        # orders per day
    return Customers(ids=ids, city=city, signup=signup, base=base, habit=habit, rate=rate, table=table)


def brand_matrix(dims: Dimensions) -> np.ndarray:
    """(I, B) one-hot: the brand of each non-beverage item."""
    return (dims.item_brand[:, None] == np.arange(len(BRANDS))).astype(float)


def poisson_orders(rng: np.random.Generator, rate: np.ndarray, active_from: np.ndarray,
                   end_day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each customer's orders in [active_from, end_day) as a Poisson process: the customer (row
    index) and fractional day of every order, sorted by customer then time, and its number j
    among the customer's orders (0, 1, ...)."""
    n_orders = rng.poisson(rate * (end_day - active_from))
    owner = np.repeat(np.arange(rate.size), n_orders)
    order_day = active_from[owner] + rng.random(owner.size) * (end_day - active_from[owner])
    order_idx = np.lexsort((order_day, owner))
    owner, order_day = owner[order_idx], order_day[order_idx]
    seq = np.arange(owner.size) - np.repeat(np.cumsum(n_orders) - n_orders, n_orders)  # order number j
    return owner, order_day, seq


def draw_loyalty_lines(rng: np.random.Generator, dims: Dimensions, customers: Customers, counts: np.ndarray,
                       owner: np.ndarray, seq: np.ndarray, snapshot_before: np.ndarray | None = None,
                       boost: Callable[[np.ndarray], np.ndarray | None] | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The brand (O,) and item lines (O, MAX_LINES) of every loyalty order, order number by order
    number, so each customer's habit sees their earlier orders: counts (n, I), the orders
    containing each item so far, is updated in place.

    snapshot_before (n,): also return each customer's counts just before their order number
    snapshot_before[c] (the window start's state). boost(rows): an (A, I) factor on the
    exp-utilities of orders `rows`, or None (the planted campaign effect of `simulate`)."""
    n, n_items = counts.shape
    snapshot = None if snapshot_before is None else np.zeros((n, n_items))
    brand_of_order = np.zeros(owner.size, dtype=np.int64)
    lines = np.full((owner.size, MAX_LINES), -1, dtype=np.int64)
    brands = brand_matrix(dims)
    last = int(seq.max(initial=-1)) + 1  # the most orders of any customer
    for j in range(last + 1):
        if snapshot is not None:
            snap = snapshot_before == j
            snapshot[snap] = counts[snap]
        rows = np.flatnonzero(seq == j)
        if rows.size == 0:
            continue
        cust = owner[rows]
        u = customers.base[cust] + customers.habit[cust, None] * np.log1p(counts[cust])  # (A, I)
        expu = np.exp(u - u.max(axis=1, keepdims=True))
        if boost is not None and (factor := boost(rows)) is not None:
            expu = expu * factor
        brand, draws = _draw_orders(rng, dims, expu, brands)
        brand_of_order[rows] = brand
        lines[rows] = draws
        bought = np.zeros((rows.size, n_items), dtype=bool)
        a_idx, l_idx = np.nonzero(draws >= 0)
        bought[a_idx, draws[a_idx, l_idx]] = True
        counts[cust] += bought
    if snapshot is not None:
        done = snapshot_before == np.bincount(owner, minlength=n)
        snapshot[done] = counts[done]
    return brand_of_order, lines, snapshot


def in_order_probability(expu: np.ndarray, listed: np.ndarray, dims: Dimensions,
                         listed_beverages: np.ndarray | None = None) -> np.ndarray:
    """P(an order contains at least one listed item), (n,), under the nested logit of _draw_orders:
    sum_b p_b (1 - (1 - q_b) exp(-EXTRA_LINES q_b)), with p_b the brand's share and q_b the listed
    items' share within brand b (ignoring the cap of MAX_LINES lines). expu, listed: (n, I);
    listed_beverages (n,): how many of the 3 beverage names are listed (a beverage comes with
    probability BEVERAGE_P, its kind uniform and independent of the items)."""
    brands = brand_matrix(dims)
    brand_w = expu @ brands                                                   # (n, B)
    total = brand_w.sum(axis=1, keepdims=True)
    p_brand = np.divide(brand_w, total, out=np.zeros_like(brand_w), where=total > 0)
    q = np.divide((expu * listed) @ brands, brand_w, out=np.zeros_like(brand_w), where=brand_w > 0)
    none_listed = (p_brand * (1 - q) * np.exp(-EXTRA_LINES * q)).sum(axis=1)
    if listed_beverages is not None:
        none_listed = none_listed * (1 - BEVERAGE_P * listed_beverages / len(BEVERAGES))
    return 1 - none_listed


def walk_in_orders(rng: np.random.Generator, dims: Dimensions, m: int, start_day: int,
                   end_day: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """m non-loyalty orders in [start_day, end_day): item popularity only, in any city."""
    nl_city = rng.choice(len(dims.city_names), size=m, p=dims.city_weight)
    avail = dims.city_brands[nl_city][:, dims.item_brand]
    nl_brand, nl_lines = _draw_orders(rng, dims, np.where(avail, np.exp(dims.item_pop)[None, :], 0.0),
                                      brand_matrix(dims))
    return order_columns(rng, dims, owner_city=nl_city, customer_id=np.full(m, -1),
                   order_day=start_day + rng.random(m) * (end_day - start_day), brand=nl_brand, lines=nl_lines)


def number_orders(parts: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], first_order_id: int,
                  first_detail_id: int) -> tuple[pa.Table, pa.Table]:
    """The order_header and order_detail tables of `parts` (each order_columns' header and detail, order_id
    the row position), with ids handed out in time order, as a POS system would."""
    offsets = np.cumsum([0] + [len(h["order_id"]) for h, _ in parts])
    header = {k: np.concatenate([h[k] for h, _ in parts]) for k in parts[0][0]}
    detail = {k: np.concatenate([d[k] + (offsets[p] if k == "order_id" else 0) for p, (_, d) in enumerate(parts)])
              for k in parts[0][1]}  # detail rows point at header positions
    order = np.argsort(header["order_ts"], kind="stable")
    new_id = np.empty(order.size, dtype=np.int64)
    new_id[order] = first_order_id + np.arange(order.size)
    header = {k: v[order] for k, v in header.items()}
    header["order_id"] = new_id[order]
    detail["order_id"] = new_id[detail["order_id"]]
    by_id = np.lexsort((detail["line_number"], detail["order_id"]))
    detail = {k: v[by_id] for k, v in detail.items()}
    detail["order_detail_id"] = first_detail_id + np.arange(by_id.size, dtype=np.int64)
    customer_id = header["customer_id"]
    header["customer_id"] = pa.array(customer_id, mask=customer_id < 0)
    return _table(header, HEADER_COLUMNS), _table(detail, DETAIL_COLUMNS)


def generate_chunk(dims: Dimensions, seed: int, chunk: int, first_customer_id: int, n: int,
                   first_order_id: int, first_detail_id: int) -> dict[str, pa.Table]:
    """Customers [first_customer_id, +n), their orders, non-loyalty orders and the truth."""
    rng = chunk_rng(seed, chunk)
    n_items = len(dims.item_ids)
    start_day, end_day = epoch_day(DATA_START), epoch_day(DATA_END) + 1  # [start, end) in days since epoch
    window_start = end_day - WINDOW_DAYS
    customers = draw_customers(rng, dims, first_customer_id, n)
    ids, city, signup, rate = customers.ids, customers.city, customers.signup, customers.rate

    # ---- loyalty orders: a Poisson process per customer ------------------------------------
    owner, order_day, seq = poisson_orders(rng, rate, np.maximum(signup, start_day), end_day)
    before_window = np.bincount(owner, weights=order_day < window_start, minlength=n).astype(int)
    counts = np.zeros((n, n_items))     # orders containing the item so far
    brand_of_order, lines, snapshot = draw_loyalty_lines(rng, dims, customers, counts, owner, seq,
                                                         snapshot_before=before_window)

    # ---- the truth of the final window ----------------------------------------------------
    u = customers.base + customers.habit[:, None] * np.log1p(snapshot)
    expu = np.exp(u - u.max(axis=1, keepdims=True))
    brands = brand_matrix(dims)
    p_brand = (expu @ brands) / expu.sum(axis=1, keepdims=True)             # (n, B)
    brand_total = (expu @ brands)[:, dims.item_brand]
    q = np.divide(expu, brand_total, out=np.zeros_like(expu), where=brand_total > 0)  # P(i | its brand)
    in_order = p_brand[:, dims.item_brand] * (1 - (1 - q) * np.exp(-EXTRA_LINES * q))
    exposure = end_day - np.maximum(window_start, signup)
    propensity = 1 - np.exp(-(rate * exposure)[:, None] * in_order)
    truth = pd.DataFrame({
        "customer_id": np.repeat(ids, n_items),
        "menu_item_name": np.tile(dims.item_names, n),
        "propensity": propensity.reshape(-1),
    })

    loyalty = order_columns(rng, dims, owner_city=city[owner], customer_id=ids[owner], order_day=order_day,
                      brand=brand_of_order, lines=lines)
    # ---- non-loyalty orders: popularity only, anywhere ------------------------------------
    walk_in = walk_in_orders(rng, dims, int(round(owner.size * NON_LOYALTY_SHARE)), start_day, end_day)
    header, detail = number_orders([loyalty, walk_in], first_order_id, first_detail_id)
    return {"raw_customer.customer_loyalty": pa.Table.from_pandas(customers.table, preserve_index=False),
            "raw_pos.order_header": header,
            "raw_pos.order_detail": detail,
            "synth.true_propensity": pa.Table.from_pandas(truth, preserve_index=False)}


HEADER_COLUMNS = ("order_id", "truck_id", "location_id", "customer_id", "discount_id", "shift_id",
                  "shift_start_time", "shift_end_time", "order_channel", "served_ts", "order_currency",
                  "order_amount", "order_tax_amount", "order_discount_amount", "order_total", "order_ts")
DETAIL_COLUMNS = ("order_detail_id", "order_id", "menu_item_id", "discount_id", "line_number", "quantity",
                  "unit_price", "price", "order_item_discount_amount")


def _table(columns: dict[str, np.ndarray], names: tuple[str, ...]) -> pa.Table:
    """An Arrow table in the warehouse's column order; columns not generated are NULL."""
    n = len(next(iter(columns.values())))
    return pa.table({k: columns[k] if k in columns else pa.nulls(n, pa.string()) for k in names})


def distinct_lines(order: np.ndarray, item: np.ndarray,
                   n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (order, item) pairs, sorted by order then item, and how often each occurs.

    item must lie in [0, n_items): the key order * n_items + item is then unique per pair.
    """
    uniq, qty = np.unique(order * n_items + item, return_counts=True)
    d_order, d_item = np.divmod(uniq, n_items)
    return d_order, d_item, qty


def order_columns(rng: np.random.Generator, dims: Dimensions, owner_city: np.ndarray, customer_id: np.ndarray,
            order_day: np.ndarray, brand: np.ndarray, lines: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Header and detail columns; order_id here is the row position (renumbered by the caller)."""
    m = order_day.size
    truck = np.empty(m, dtype=np.int64)
    location = np.empty(m, dtype=np.int64)
    for c in np.unique(owner_city):
        in_city = owner_city == c
        for b in np.unique(brand[in_city]):
            rows = np.flatnonzero(in_city & (brand == b))
            trucks = dims.city_trucks[c][b]
            truck[rows] = trucks[rng.integers(0, trucks.size, rows.size)]
        locs = dims.city_locations[c]
        location[in_city] = locs[rng.integers(0, locs.size, in_city.sum())]
    day = np.floor(order_day).astype(np.int64)
    pm = rng.random(m) < 0.55
    minute = np.where(pm, 15 * 60, 8 * 60) + rng.integers(0, 6 * 60, m)
    seconds = day * 86400 + minute * 60 + rng.integers(0, 60, m)
    order_ts = (EPOCH + seconds.astype("timedelta64[s]")).astype("datetime64[us]")
    served = order_ts + (rng.integers(180, 900, m) * 1_000_000).astype("timedelta64[us]")

    # lines: one row per distinct item (duplicates become quantity), plus an optional beverage
    o_idx, l_idx = np.nonzero(lines >= 0)
    item = lines[o_idx, l_idx]
    d_order, d_item, qty = distinct_lines(o_idx, item, len(dims.item_ids))
    d_menu_id = dims.item_ids[d_item]
    d_price = dims.item_price[d_item]
    has_bev = rng.random(m) < BEVERAGE_P
    bev_kind = rng.integers(0, len(BEVERAGES), m)
    b_order = np.flatnonzero(has_bev)
    d_order = np.concatenate([d_order, b_order])
    d_menu_id = np.concatenate([d_menu_id, dims.bev_ids[brand[b_order], bev_kind[b_order]]])
    d_price = np.concatenate([d_price, dims.bev_price[bev_kind[b_order]]])
    qty = np.concatenate([qty, 1 + (rng.random(b_order.size) < 0.2)])
    by_order = np.lexsort((d_menu_id, d_order))
    d_order, d_menu_id, d_price, qty = d_order[by_order], d_menu_id[by_order], d_price[by_order], qty[by_order]
    line_number = np.arange(d_order.size) - np.searchsorted(d_order, d_order)
    price = np.round(d_price * qty, 4)
    amount = np.bincount(d_order, weights=price, minlength=m).round(4)

    header = {
        "order_id": np.arange(m, dtype=np.int64), "truck_id": truck, "location_id": location.astype(float),
        "customer_id": customer_id.astype(np.int64), "shift_id": day * 2 + pm,
        "shift_start_time": np.where(pm, "15:00:00", "08:00:00"),
        "shift_end_time": np.where(pm, "21:00:00", "14:00:00"),
        "order_channel": np.where(rng.random(m) < 0.3, "Mobile App", "Walk-Up"), "order_ts": order_ts,
        "served_ts": served, "order_currency": np.full(m, "USD"), "order_amount": amount, "order_total": amount,
    }
    detail = {"order_id": d_order, "menu_item_id": d_menu_id, "line_number": line_number + 1,
              "quantity": qty, "unit_price": d_price, "price": price}
    return header, detail


def generate(n_customers: int, seed: int) -> tuple[Dimensions, Iterator[dict[str, pa.Table]]]:
    """The dimensions now, and an iterator over chunks of customers with their facts."""
    dims = build_dimensions(seed)

    def chunks() -> Iterator[dict[str, pa.Table]]:
        order_id, detail_id = 1, 1
        for chunk, first_customer_id, n in customer_chunks(n_customers):
            frames = generate_chunk(dims, seed, chunk, first_customer_id=first_customer_id, n=n,
                                    first_order_id=order_id, first_detail_id=detail_id)
            order_id += len(frames["raw_pos.order_header"])
            detail_id += len(frames["raw_pos.order_detail"])
            yield frames

    return dims, chunks()
