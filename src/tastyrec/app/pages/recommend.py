"""Recommend: the seed's flow (filters, Get Recommendations, history next to the top items, Save)
plus charts, a per-customer drill-down and the CSV download."""

import pandas as pd
import streamlit as st

from tastyrec.app import data, results
from tastyrec.app.backend import as_recommendations, backend, failure_shown, literal, settings
from tastyrec.campaigns import HOLDOUT, campaign_mailing, features_end, save, slug, spreadsheet_safe
from tastyrec.recommend import DEFAULT_TOP_K, MAX_TOP_K, Filters

CUSTOMER_LIMIT = 20_000  # customers one request scores in-process; more: the first ones, with a message

config = settings()
ws = config.ws
engine = backend(config)
st.title("Menu-item recommendations")
st.caption("Upsell and cross-sell menu items for loyalty customers"
           + (f" · recommendations from the service at {config.service}" if config.service else ""))

# ---- filters ----------------------------------------------------------------------------------
left, middle, right = st.columns(3)
country = left.multiselect("Country", data.countries(ws), key="country", placeholder="All countries")
city_options = data.cities(ws, tuple(country))
if "city" in st.session_state:  # drop chosen cities the chosen countries no longer cover
    st.session_state["city"] = [c for c in st.session_state["city"] if c in city_options]
city = middle.multiselect("City", city_options, key="city", placeholder="All cities")
brand = right.multiselect("Truck Brand", data.brands(ws), key="brand", placeholder="All brands")
flags, k_column = st.columns([2, 1])
not_visited = flags.checkbox("Trucks not visited", key="trucks_not_visited",
                             help="Only items of truck brands the customer never bought from.")
not_ordered = flags.checkbox("Menu items not ordered", key="items_not_ordered",
                             help="Only items the customer never bought.")
top_k = k_column.number_input("Items per customer (top-k)", min_value=1, max_value=MAX_TOP_K,
                              value=DEFAULT_TOP_K, step=1, key="top_k")
matching = data.matching(ws, tuple(country), tuple(city))
st.caption(f"{matching:,} customer{'s' if matching != 1 else ''} match these filters")

if st.button("Get Recommendations", key="get_recommendations", type="primary"):
    filters = Filters(tuple(country), tuple(city), tuple(brand), not_visited, not_ordered)
    st.session_state.pop("saved", None)
    st.session_state.pop("saved_run", None)
    st.session_state.pop("shown", None)  # a failure below leaves no earlier result on show
    with st.spinner("Scoring the selected customers..."), failure_shown("get recommendations"):
        result = engine.recommend(filters=filters, top_k=int(top_k), limit=CUSTOMER_LIMIT)
        st.session_state["shown"] = results.Shown.of(result, data.menu(ws), ws)

shown: results.Shown | None = st.session_state.get("shown")
if shown is None:
    st.stop()

# ---- the result -------------------------------------------------------------------------------
result = shown.result
customers = result["customers"]
without = result.get("without_recommendations", [])


def show_without() -> None:
    """The selected customers who got nothing, each with the reason (so the counts add up)."""
    if without:
        with st.expander(f"{len(without):,} selected customers without recommendations, and why"):
            st.dataframe(pd.DataFrame(without, columns=["customer_id", "city", "reason"]), hide_index=True)


if result["message"]:
    st.info(result["message"])
if not customers:
    show_without()
    st.stop()
model = result["model"]
days = model.get("label_days")
if not without:  # else the message above makes the counts add up
    scored = f" (the first {len(customers):,} scored)" if result["truncated"] else ""
    st.success(f"{result['selected']:,} match{scored}; all {len(customers):,} get a list")
st.caption(f"Top {result['top_k']} items per customer · model version {model['version']}"
           f"{', ' + model['alias'] if model['alias'] else ''} · {result['seconds']:.2f} s")
totals = shown.totals
window = f"in the next {days} days" if days else "in the label window"
buyers_col, revenue_col, items_col = st.columns(3)
buyers_col.metric(f"Expected buyers {window}", f"{totals['expected_buyers']:,.0f} of {totals['customers']:,}",
                  help="Σ over customers of the chance to buy at least one of their items (the items taken as "
                       "independent), if each chance holds.")
revenue_col.metric(f"Expected revenue {window}", f"${totals['expected_revenue_usd']:,.0f}",
                   help="Σ of chance × price over every recommended item.")
items_col.metric("Items they already buy", f"{totals['already_bought']:.0%}",
                 help="The share of recommended items the customer bought before.")
if totals["already_bought"] > results.ALREADY_BOUGHT_MOST and not result["filters"].get("items_not_ordered"):
    st.info(f"Most of these items ({totals['already_bought']:.0%}) are ones the customers already buy: a reminder "
            "(upsell). For cross-sell, tick **Menu items not ordered**: each customer then gets items new to them.")
if result["truncated"]:
    st.warning(f"The filters match {result['selected']:,} customers; the first {len(customers):,} by id were "
               "scored. Narrow the filters to reach the others.")

# Only the open tab runs (on_change="rerun"): the table shows first, the charts and the
# drill-down cost nothing until they are opened.
table_tab, charts_tab, detail_tab = st.tabs(["Customers", "Charts", "One customer"], key="result_tab",
                                            on_change="rerun")
if table_tab.open:
    with table_tab:
        if len(customers) > results.TABLE_ROWS:
            st.caption(f"Showing the first {results.TABLE_ROWS:,} of {len(customers):,} customers; "
                       "the CSV download has them all.")
        chance = f"chance of buying it in the next {days} days" if days else "chance of buying it"
        st.dataframe(shown.table, hide_index=True, width="stretch",
                     column_config={"customer_id": st.column_config.NumberColumn("customer", format="%d", width="small"),
                                    "city": st.column_config.TextColumn(width="small"),
                                    "country": st.column_config.TextColumn(width="small"),
                                    "purchase history": st.column_config.TextColumn(width="medium")}
                     | {results.item_columns(rank)[1]: st.column_config.NumberColumn(format="percent", help=chance)
                        for rank in range(1, result["top_k"] + 1)})
if charts_tab.open:
    with charts_tab:
        st.caption("How many of the selected customers each item (and brand) is recommended to, next to how "
                   "many of them bought it before.")
        item_col, brand_col = st.columns(2)
        item_col.altair_chart(results.bar_chart(shown.items, f"top {results.CHART_ITEMS} recommended items"),
                              width="stretch")
        brand_col.altair_chart(results.bar_chart(shown.brands, "truck brands"), width="stretch")
if detail_tab.open:
    with detail_tab:
        ids = [c["customer_id"] for c in customers[:results.TABLE_ROWS]]  # thousands of options would slow the page
        chosen = st.selectbox("Customer", ids, key="detail_customer",
                              help=f"The first {results.TABLE_ROWS:,} customers, as in the table."
                              if len(customers) > results.TABLE_ROWS else None)
        one = shown.customer(chosen)
        st.write(f"Customer {chosen} · {one['city']}, {one['country']}")
        history_col, recs_col = st.columns(2)
        history_col.markdown("**Purchase history** (most recent first)")
        history_col.dataframe(results.history_frame(one), hide_index=True, width="stretch")
        recs_col.markdown("**Recommendations**")
        recs_col.dataframe(results.recommendations_frame(one), hide_index=True, width="stretch",
                           column_config={"score": st.column_config.NumberColumn(
                                              "chance", format="percent",
                                              help=f"chance of buying it in the next {days} days" if days else None),
                                          "sale_price_usd": st.column_config.NumberColumn("price", format="$%.2f")})

show_without()

# ---- keep it ----------------------------------------------------------------------------------
def serving_day() -> str | None:
    """The serving day of the features run the result was computed from (the campaign's data_end):
    the backend's run, else the workspace's current one; None when neither can be read."""
    run = engine.model_info.get("features")
    for repo in ([ws.feature_runs / run] if run else []) + [ws.feature_repo]:
        try:
            return features_end(repo)
        except (OSError, ValueError, TypeError):
            continue
    return None


saved_run = st.session_state.get("saved_run")  # once saved, the download is the campaign's: the control left out
typed = st.session_state.get("campaign_name", "")
if saved_run:
    st.download_button("Download the mailing file (treated customers only)", key="download_csv", mime="text/csv",
                       data=lambda: spreadsheet_safe(campaign_mailing(ws, saved_run)).to_csv(index=False).encode(),
                       on_click="ignore", file_name=f"{slug(typed) if typed.strip() else 'campaign'}-{saved_run}.csv",
                       help="The saved campaign's mailing file: its control group is not in it.")
else:
    st.download_button("Download CSV", lambda: shown.csv, mime="text/csv", key="download_csv", on_click="ignore",
                       file_name=f"{slug(typed) if typed.strip() else 'recommendations'}.csv",
                       help="For a mailing tool: one row per customer with first name, e-mail and language, then "
                            "each item with brand, price, chance and why. Save the campaign to keep a control group "
                            "out of it.")
name_col, holdout_col, save_col = st.columns([3, 1, 1], vertical_alignment="bottom")
name = name_col.text_input("Campaign name", key="campaign_name", placeholder="e.g. Tokyo spring upsell")
holdout = holdout_col.number_input("Control group (%)", min_value=0, max_value=90, value=round(HOLDOUT * 100), step=1,
                                   key="holdout",
                                   help="The share of the customers kept as control, drawn at random: their lists are "
                                        "saved but left out of the mailing file, so the campaign's effect can be "
                                        "measured against them (the Campaigns page). 0 sends to everyone.")
saved_now = False
if save_col.button("Save", key="save"):
    with failure_shown("save"):
        campaign = save(ws, as_recommendations(result), name, holdout=holdout / 100, data_end=serving_day())
        st.session_state["saved"] = (f"Saved campaign \u201c{literal(campaign.name)}\u201d as run {campaign.run_id} "
                                     f"({campaign.rows:,} rows, {campaign.customers:,} customers: {campaign.treated:,} "
                                     f"treated, {campaign.control:,} control). Its mailing file leaves the control "
                                     "out.")
        st.session_state["saved_run"] = campaign.run_id
        saved_now = True
if saved_now:  # outside failure_shown: st.rerun ends this run with an exception of its own
    st.rerun()  # the download above becomes the saved campaign's mailing file
if "saved" in st.session_state:
    st.success(st.session_state["saved"])
