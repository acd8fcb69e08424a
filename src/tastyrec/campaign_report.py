"""Did a campaign work? Its treated customers against its control group over the orders that followed.

A campaign saved with a control group (`tastyrec.campaigns`: `ml.campaign_groups`, and
`ml.campaigns.data_end`, the features' serving day its lists were computed for) is measured over
the loyalty orders with `order_ts` in [data_end, data_end + days): for each customer, whether they
bought at least one item of their own list, how many distinct items of their list they bought, and
the revenue from those items (the order lines' `price`). Three measures compare the groups:

- share: the share of customers who bought at least one item of their own list;
- items: the recommended items (distinct items of their list) bought per customer;
- revenue_usd: the revenue from those items per customer.

For each: the treated value, the control value, the difference (treated − control) and its 95%
confidence interval by the normal approximation, difference ± 1.96 standard errors, where the
standard error is the unpooled one of a difference of proportions for the share,
√(p_t(1 − p_t)/n_t + p_c(1 − p_c)/n_c), and Welch's (unequal variances) for the two means,
√(s_t²/n_t + s_c²/n_c) with sample variances. A group of fewer than two customers has no interval.

The assignment was random (`campaigns.draw_control`), so the difference estimates the campaign's
effect on its customers (the intention to treat: everyone in the treated group counts, whether or
not the mailing reached them).

When the warehouse's orders do not yet cover the window, the report says so ("not enough data yet:
orders run to DATE (the window needs DATE)") and gives the figures over the days covered so far,
marked partial. A campaign saved before control groups (no data_end) or without a control group is
reported with a plain sentence saying why there is nothing to compare.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from tastyrec.campaigns import Campaign, _reading, _side_tables, find_campaign
from tastyrec.config import Workspace
from tastyrec.recommend import RecommendError

DAYS = 28  # the default window after data_end
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
METHOD = ("95% intervals by the normal approximation: difference ± 1.96 standard errors, unpooled for the share "
          "(a difference of proportions), Welch's unequal-variance standard error for the two means")
MEASURES = {"share": "bought an item of their list", "items": "list items bought per customer",
            "revenue_usd": "revenue from them per customer (USD)"}

# One row per customer of the campaign: group, distinct list items bought and their revenue in the
# window. A customer with no group row (a campaign saved before control groups) is treated.
OUTCOMES_SQL = """
WITH lists AS (
    SELECT DISTINCT customer_id, menu_item_name FROM ml.recommendations WHERE run_id = $run
), customers AS (
    SELECT DISTINCT l.customer_id, {control} AS control FROM lists l {groups}
), bought AS (
    SELECT h.customer_id, m.menu_item_name, sum(d.price)::DOUBLE AS revenue
    FROM raw_pos.order_header h
    JOIN raw_pos.order_detail d ON d.order_id = h.order_id
    JOIN raw_pos.menu m ON m.menu_item_id = d.menu_item_id
    JOIN lists l ON l.customer_id = h.customer_id AND l.menu_item_name = m.menu_item_name
    WHERE h.order_ts >= $start AND h.order_ts < $stop
    GROUP BY h.customer_id, m.menu_item_name
)
SELECT c.customer_id, c.control, count(b.menu_item_name) AS items, coalesce(sum(b.revenue), 0)::DOUBLE AS revenue_usd
FROM customers c LEFT JOIN bought b USING (customer_id)
GROUP BY c.customer_id, c.control ORDER BY c.customer_id"""
GROUPS = {"control": "coalesce(g.control, false)",
          "groups": "LEFT JOIN ml.campaign_groups g ON g.run_id = $run AND g.customer_id = l.customer_id"}
NO_GROUPS = {"control": "false", "groups": ""}


@dataclass
class Figure:
    """One measure for both groups: the values, treated − control, and its 95% interval."""

    measure: str  # a key of MEASURES
    label: str
    treated: float
    control: float
    difference: float
    low: float | None  # None: a group of fewer than two customers
    high: float | None
    standard_error: float | None


@dataclass
class Report:
    run_id: str
    name: str
    days: int
    data_end: str | None  # the first day of the window (None: saved before data_end was recorded)
    window_last_day: str | None  # data_end + days - 1: the last day the window needs
    orders_until: str | None  # the day of the warehouse's last order (None: no orders)
    treated: int  # customers in each group
    control: int
    complete: bool  # the orders cover the whole window
    covered_days: int  # days of the window the figures are over (days when complete)
    figures: list[Figure] = field(default_factory=list)  # empty when there is nothing to compare
    message: str | None = None  # why there are no figures, or why they are partial
    method: str = METHOD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interval(difference: float, standard_error: float) -> tuple[float, float]:
    """The 95% interval of a difference by the normal approximation."""
    return difference - Z95 * standard_error, difference + Z95 * standard_error


def share_figure(bought_t: np.ndarray, bought_c: np.ndarray) -> Figure:
    """(a) The share who bought, treated − control, with the unpooled standard error of a
    difference of proportions. `bought_*`: one 0/1 per customer."""
    n_t, n_c = len(bought_t), len(bought_c)
    p_t, p_c = float(np.mean(bought_t)), float(np.mean(bought_c))
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c) if min(n_t, n_c) >= 2 else None
    return _figure("share", p_t, p_c, se)


def mean_figure(measure: str, values_t: np.ndarray, values_c: np.ndarray) -> Figure:
    """(b), (c) A mean per customer, treated − control, with Welch's standard error (sample
    variances, unequal between the groups)."""
    n_t, n_c = len(values_t), len(values_c)
    se = (math.sqrt(float(np.var(values_t, ddof=1)) / n_t + float(np.var(values_c, ddof=1)) / n_c)
          if min(n_t, n_c) >= 2 else None)
    return _figure(measure, float(np.mean(values_t)), float(np.mean(values_c)), se)


def _figure(measure: str, treated: float, control: float, se: float | None) -> Figure:
    difference = treated - control
    if se == 0:  # every customer alike in both groups (e.g. nobody bought yet): the approximation says nothing
        se = None
    low, high = interval(difference, se) if se is not None else (None, None)
    return Figure(measure, MEASURES[measure], treated, control, difference, low, high, se)


def figures(outcomes: pd.DataFrame) -> list[Figure]:
    """The three measures from one row per customer: control (bool), items (distinct list items
    bought), revenue_usd."""
    t, c = outcomes[~outcomes["control"]], outcomes[outcomes["control"]]
    return [share_figure((t["items"] > 0).to_numpy(float), (c["items"] > 0).to_numpy(float)),
            mean_figure("items", t["items"].to_numpy(float), c["items"].to_numpy(float)),
            mean_figure("revenue_usd", t["revenue_usd"].to_numpy(float), c["revenue_usd"].to_numpy(float))]


def outcomes(con, run_id: str, start: date, stop: date) -> pd.DataFrame:
    """One row per customer of the campaign: customer_id, control, items, revenue_usd, over the
    orders with order_ts in [start, stop)."""
    parts = GROUPS if "campaign_groups" in _side_tables(con) else NO_GROUPS
    return con.execute(OUTCOMES_SQL.format(**parts), {"run": run_id, "start": start, "stop": stop}).df()


def campaign_report(ws: Workspace, ref: str, days: int = DAYS) -> Report:
    """The report of a saved campaign (`ref`: its name or run id) over the `days` after its
    data_end (see the module's docstring). A RecommendError when there is no such campaign."""
    if days < 1:
        raise RecommendError(f"the window is at least 1 day long; got {days}")
    campaign = find_campaign(ws, ref)
    report = Report(campaign.run_id, campaign.name, days, campaign.data_end, None, None,
                    campaign.treated, campaign.control, False, 0)
    if campaign.data_end is None or campaign.holdout is None:
        report.message = (f"campaign {campaign.name!r} was saved before campaigns recorded the day their lists were "
                          "computed for and kept a control group: there is nothing to compare its customers with "
                          "(a campaign saved now keeps one: `recommend --save NAME --holdout 0.1`)")
        return report
    if not campaign.control:
        report.message = _no_control(campaign)
        return report
    start = date.fromisoformat(campaign.data_end)
    stop = start + timedelta(days=days)
    report.window_last_day = (stop - timedelta(days=1)).isoformat()
    with _reading(ws) as con:
        (last,) = con.execute("SELECT max(order_ts)::DATE FROM raw_pos.order_header").fetchone()
        report.orders_until = last.isoformat() if last else None
        covered = min(stop, last + timedelta(days=1)) if last else start  # the window's days with data
        report.covered_days = max((covered - start).days, 0)
        report.complete = report.covered_days == days
        if report.covered_days:
            frame = outcomes(con, campaign.run_id, start, covered)
    if not report.complete:
        report.message = (f"not enough data yet: orders run to {report.orders_until or 'no day at all'} (the window "
                          f"needs {report.window_last_day})")
        if report.covered_days:
            report.message += (f"; the figures are partial, over the {report.covered_days} of {days} days from "
                               f"{campaign.data_end} to {(covered - timedelta(days=1)).isoformat()}")
    if report.covered_days:
        report.figures = figures(frame)
    return report


def _no_control(campaign: Campaign) -> str:
    return (f"campaign {campaign.name!r} has no control group (it was saved with a holdout of "
            f"{campaign.holdout:g}, which kept none of its {campaign.customers:,} customers): there is nothing to "
            "compare its customers with")
