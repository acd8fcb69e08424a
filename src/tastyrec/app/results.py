"""A recommendation result (the dict of `Recommendations.to_dict()`) as the app shows it: the
customer table, the CSV, the chart data and one customer's detail. pandas and Altair only, no
Streamlit: built once when a result arrives, so a rerun (any click) costs no recomputation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import altair as alt
import pandas as pd

from tastyrec import campaigns
from tastyrec.config import Workspace

TABLE_ROWS = 500  # customers shown in the table; the CSV has them all
HISTORY_SHOWN = 5  # purchase history entries per customer in the table
CHART_ITEMS = 15  # bars in the item chart
RECOMMENDED, BOUGHT = "recommended to", "bought by"
MISSING = "–"  # what a table shows for a missing value
ALREADY_BOUGHT_MOST = 0.5  # above this share of recommended items already bought, point to cross-sell


@dataclass
class Shown:
    """Everything the Recommend page draws for one result; the chart counts, one customer's entry
    and the CSV are computed when first asked for (their tab opened, the download clicked), once
    per result."""

    result: dict[str, Any]
    table: pd.DataFrame  # one row per customer, the first TABLE_ROWS
    menu: pd.DataFrame  # menu_item_name, truck_brand_name: for the brands of bought items
    ws: Workspace  # where the download reads the customers' contacts

    @classmethod
    def of(cls, result: dict[str, Any], menu: pd.DataFrame, ws: Workspace) -> "Shown":
        return cls(result, table(result["customers"][:TABLE_ROWS]), menu, ws)

    @cached_property
    def csv(self) -> bytes:
        """The mailing file (campaigns.mailing_frame: one row per customer with first name, e-mail,
        language, city, then each item with brand, price, chance and reason), every customer, for
        spreadsheets: made when the download is clicked."""
        frame = campaigns.mailing_frame(self.ws, self.result["customers"])  # items 1..the longest list, as saved
        return campaigns.spreadsheet_safe(frame).to_csv(index=False).encode()

    @cached_property
    def totals(self) -> dict[str, float]:
        """customers (with a list), expected buyers and expected revenue over the label window, and
        the share of recommended items the customers bought before (see `totals`)."""
        return totals(self.result["customers"])

    @cached_property
    def _counts(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return counts(self.result["customers"], self.menu)

    @property
    def items(self) -> pd.DataFrame:
        """name, kind (RECOMMENDED / BOUGHT), customers: the CHART_ITEMS most recommended items."""
        return self._counts[0]

    @property
    def brands(self) -> pd.DataFrame:
        """The same per truck brand."""
        return self._counts[1]

    def customer(self, customer_id: int) -> dict[str, Any]:
        return next(c for c in self.result["customers"] if c["customer_id"] == customer_id)


def _history_text(history: list[dict[str, Any]]) -> str:
    shown = "; ".join(f"{h['menu_item_name']} ({h['orders']}x, last {h['last_purchase']})"
                      for h in history[:HISTORY_SHOWN])
    more = f"; +{len(history) - HISTORY_SHOWN} more" if len(history) > HISTORY_SHOWN else ""
    return (shown + more) or "-"


def _item_text(r: dict[str, Any]) -> str:
    price = "" if r.get("sale_price_usd") is None else f" · ${r['sale_price_usd']:.2f}"
    return f"{r['menu_item_name']} ({r.get('truck_brand_name') or MISSING}{price})"


def item_columns(rank: int) -> tuple[str, str, str]:
    """The table's three columns of the item at `rank`: the item, its chance, why."""
    return f"item {rank}", f"chance {rank}", f"why {rank}"


def table(customers: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per customer: where they are, what they bought, then each recommended item in
    columns of its own (item with brand and price, chance of buying, why); MISSING where empty."""
    ranks = max((len(c["recommendations"]) for c in customers), default=0)
    columns = ["customer_id", "city", "country", "purchase history"]
    columns += [name for rank in range(1, ranks + 1) for name in item_columns(rank)]
    rows = []
    for c in customers:
        row = {"customer_id": c["customer_id"], "city": c["city"] or MISSING, "country": c["country"] or MISSING,
               "purchase history": _history_text(c["history"])}
        for r in c["recommendations"]:
            item, chance, why = item_columns(r["rank"])
            row |= {item: _item_text(r), chance: r["score"], why: r.get("reason") or MISSING}
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    text = [c for c in columns if not c.startswith("chance") and c != "customer_id"]
    return frame.fillna({c: MISSING for c in text})


def totals(customers: list[dict[str, Any]]) -> dict[str, float]:
    """What a campaign to these customers can expect over the label window, if each chance holds
    (campaigns.totals of their mailing frame: expected buyers, expected revenue), and
    `already_bought`, the share of recommended items the customer bought before."""
    frame = campaigns.mailing(campaigns.items_of(customers), pd.DataFrame({"customer_id": []}))
    bought = [r["menu_item_name"] in {h["menu_item_name"] for h in c["history"]}
              for c in customers for r in c["recommendations"]]
    return campaigns.totals(frame) | {"already_bought": sum(bought) / len(bought) if bought else 0.0}


def counts(customers: list[dict[str, Any]], menu: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For each item and each brand: how many selected customers it is recommended to, and how
    many of them bought it before (from their histories). Items: the CHART_ITEMS most
    recommended; brands: every one either count names."""
    recommended = pd.DataFrame([(c["customer_id"], r["menu_item_name"], r["truck_brand_name"])
                                for c in customers for r in c["recommendations"]],
                               columns=["customer_id", "item", "brand"])
    brand_of = dict(zip(menu["menu_item_name"], menu["truck_brand_name"], strict=True))
    bought = pd.DataFrame([(c["customer_id"], h["menu_item_name"], brand_of.get(h["menu_item_name"]))
                           for c in customers for h in c["history"]], columns=["customer_id", "item", "brand"])

    def per(column: str, keep: list[str] | None) -> pd.DataFrame:
        both = pd.DataFrame({RECOMMENDED: recommended.groupby(column)["customer_id"].nunique(),
                             BOUGHT: bought.dropna(subset=[column]).groupby(column)["customer_id"].nunique()})
        both = both.fillna(0).astype(int).sort_values([RECOMMENDED, BOUGHT], ascending=False)
        both = both.loc[[k for k in keep if k in both.index]] if keep is not None else both
        return both.rename_axis("name").reset_index().melt("name", var_name="kind", value_name="customers")

    top_items = recommended["item"].value_counts().index[:CHART_ITEMS].tolist()
    return per("item", top_items), per("brand", None)


def bar_chart(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Grouped horizontal bars: per name, customers recommended it next to customers who bought it."""
    order = frame.loc[frame["kind"] == RECOMMENDED, "name"].tolist()
    return alt.Chart(frame, title=title).mark_bar().encode(
        y=alt.Y("name:N", sort=order, title=None, axis=alt.Axis(labelLimit=0)),  # full names, never cut
        yOffset=alt.YOffset("kind:N", sort=[RECOMMENDED, BOUGHT]),
        x=alt.X("customers:Q", title="customers"),
        color=alt.Color("kind:N", sort=[RECOMMENDED, BOUGHT], title=None, legend=alt.Legend(orient="top")),
        tooltip=["name:N", "kind:N", "customers:Q"],
    )


def history_frame(customer: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(customer["history"], columns=["menu_item_name", "orders", "last_purchase"])


def recommendations_frame(customer: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(customer["recommendations"],
                        columns=["rank", "menu_item_name", "truck_brand_name", "item_category", "sale_price_usd",
                                 "score", "reason"])


def figure(value: float | None) -> str:
    """A metric as the Model page's tables show it: three decimals, MISSING where not measured."""
    return MISSING if value is None else f"{value:.3f}"


def headline(evaluation: dict[str, Any]) -> str:
    """The evaluation in plain words (Markdown): of what customers bought in the test window, the
    share the model's top 10 held, next to each customer's usual items (the repeat baseline: their
    most-bought) and, for items new to the customer, the best baseline there."""
    model, baselines = evaluation["model"], evaluation["baselines"]
    window = str(evaluation.get("window", "")).split(",")[0]  # "2022-10-02 + 91 days"
    lines = [f"**Of the menu items customers bought in the test window ({window}), the model's top 10 held "
             f"{model['recall@10']:.0%}**"]
    repeat = baselines.get("repeat") or {}
    if repeat.get("recall@10") is not None:
        lines[0] += f"; each customer's usual items (their 10 most bought) held {repeat['recall@10']:.0%}."
    new = {name: m["new_recall@10"] for name, m in baselines.items() if m.get("new_recall@10") is not None}
    if model.get("new_recall@10") is not None and new:
        best = max(new, key=new.get)
        lines.append(f"Of the items that were new to the customer, the top 10 held {model['new_recall@10']:.0%}; "
                     f"the best other method ({best.replace('_', ' ')}) held {new[best]:.0%}.")
    return "  \n".join(lines)


def loss_chart(history: list[dict[str, Any]]) -> alt.Chart:
    """Training and validation loss per epoch."""
    frame = pd.DataFrame(history).melt("epoch", var_name="curve", value_name="loss").dropna()
    return alt.Chart(frame, title="loss per epoch").mark_line(point=True).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y("loss:Q"), color=alt.Color("curve:N", title=None),
        tooltip=["epoch:Q", "curve:N", alt.Tooltip("loss:Q", format=".4f")])
