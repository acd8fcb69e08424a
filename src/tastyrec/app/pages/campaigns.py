"""Campaigns: the saved recommendation runs (newest first); one reopened with its items in columns
of their own, the campaign's totals and its mailing file; its description, name and deletion."""

from collections.abc import Callable

import pandas as pd
import streamlit as st

from tastyrec.app import data, results
from tastyrec.app.backend import failure_shown, literal, settings
from tastyrec.campaigns import (DESCRIPTION_MAX, campaign_mailing, delete_campaign, describe_campaign,
                                list_campaigns, mailing, mailing_file_name, rename_campaign, spreadsheet_safe,
                                totals)

MISSING = "–"  # what the table shows for a missing value
NOTICE = "campaign_notice"  # what the last change did, shown after the rerun it asks for
CLOSE = "campaign_close"  # set when the open campaign was deleted: the selectbox is emptied on the next run
CHANCE_HELP = "the model's chance that the customer buys the item within the label window"

ws = settings().ws
st.title("Saved campaigns")
if st.session_state.pop(CLOSE, False):  # before the selectbox exists: its value may be set only then
    st.session_state["campaign_run"] = None
if notice := st.session_state.pop(NOTICE, None):
    st.success(notice)
saved = None
with failure_shown("list the campaigns"):
    saved = list_campaigns(ws)
if saved is None:
    st.stop()
if not saved:
    st.info("No campaign saved yet: get recommendations on the Recommend page and save them.")
    st.stop()


def _filters(filters: dict) -> str:
    shown = [f"{k.replace('_', ' ')}: {', '.join(map(str, v)) if isinstance(v, list) else 'yes'}"
             for k, v in filters.items() if v]
    return "; ".join(shown) or "all customers"


def _act(action: str, change: Callable[[], str], close: bool = False) -> None:
    """Make a change (describe, rename, delete): a failure is shown in plain words (failure_shown);
    a success reruns the page, which reads the campaigns again and shows what `change` says."""
    done = None
    with failure_shown(action):
        done = change()
    if done is not None:  # st.rerun outside failure_shown: it ends this run with an exception of its own
        st.session_state[NOTICE] = done
        st.session_state[CLOSE] = close
        st.rerun()


def _table(screen: pd.DataFrame):
    """The reopened campaign's table: prices in dollars, chances in percent, MISSING where empty
    (display values: the numbers stay numbers, to sort by)."""
    money = [c for c in screen.columns if c.endswith("_price_usd") or c == "expected_revenue_usd"]
    chances = [c for c in screen.columns if c.endswith("_chance") or c == "chance_of_any"]
    return screen.style.format({**{c: "${:,.2f}" for c in money}, **{c: "{:.1%}" for c in chances}}, na_rep=MISSING)


def _labels(screen: pd.DataFrame) -> dict:
    """Column headers in words: "item 1", "brand 1", "price 1", "chance 1", "why 1", ..."""
    labels = {"customer_id": st.column_config.NumberColumn("customer", format="%d"),
              "chance_of_any": st.column_config.Column("chance of any", help="The chance of buying at least one of "
                                                       "the items (taken as independent)."),
              "expected_revenue_usd": st.column_config.Column("expected revenue", help="Σ chance × price.")}
    for column in screen.columns:
        if column.startswith("item_"):
            rank, _, part = column.removeprefix("item_").partition("_")
            word = {"": "item", "brand": "brand", "price_usd": "price", "chance": "chance", "reason": "why"}[part]
            labels[column] = st.column_config.Column(f"{word} {rank}", help=CHANCE_HELP if part == "chance" else None)
    return labels


st.dataframe(pd.DataFrame([{"name": c.name, "description": c.description or MISSING,
                            "created": c.created_at.replace("T", " "), "filters": _filters(c.filters),
                            "customers": c.customers, "rows": c.rows, "model version": c.model_version,
                            "run id": c.run_id} for c in saved]),
             hide_index=True, width="stretch")

by_id = {c.run_id: c for c in saved}
run_id = st.selectbox("Open a campaign", list(by_id), index=None, key="campaign_run",
                      format_func=lambda r: f"{by_id[r].name} ({by_id[r].created_at.replace('T', ' ')}, run {r})",
                      placeholder="Choose a campaign")
if run_id is None or run_id not in by_id:
    st.stop()
campaign = by_id[run_id]
rows = None
with failure_shown("open the campaign"):
    rows = data.campaign_rows(str(ws.home), run_id)  # with brand, price, reason, city and country
if rows is None:
    st.stop()
st.subheader(literal(campaign.name))
if campaign.description:
    st.markdown(literal(campaign.description))
st.write(f"Run {run_id} · saved {campaign.created_at.replace('T', ' ')} · model version {campaign.model_version} · "
         f"{campaign.customers:,} customers · filters: {_filters(campaign.filters)}")

# one row per customer, items in columns of their own; no personal field on screen (only in the file)
screen = mailing(rows, rows[["customer_id", "city", "country"]])
expected = totals(screen)
customers_col, buyers_col, revenue_col = st.columns(3)
customers_col.metric("Customers", f"{expected['customers']:,}")
buyers_col.metric("Expected buyers", f"{expected['expected_buyers']:,.0f}",
                  help="Σ over customers of the chance to buy at least one of their items within the label window "
                       "(the items taken as independent), if each chance holds.")
revenue_col.metric("Expected revenue", f"${expected['expected_revenue_usd']:,.0f}",
                   help="Σ of chance × price over every item of the campaign (today's menu prices).")
if len(screen) > results.TABLE_ROWS:
    st.caption(f"Showing the first {results.TABLE_ROWS:,} of {len(screen):,} customers; the mailing file has them all.")
shown = screen.head(results.TABLE_ROWS)
st.dataframe(_table(shown), hide_index=True, width="stretch", column_config=_labels(shown))
st.download_button("Download the mailing file (CSV)",
                   lambda: spreadsheet_safe(campaign_mailing(ws, run_id)).to_csv(index=False).encode(),
                   file_name=mailing_file_name(campaign.name, run_id, "csv"), mime="text/csv", key="campaign_csv",
                   on_click="ignore",
                   help="One row per customer: first name, e-mail, language, city and country, then each item with "
                        "brand, price, chance and why, then the chance of any and the expected revenue.")


def _describe(text: str) -> str:
    described = describe_campaign(ws, run_id, text)
    return (f"Saved the description of {literal(campaign.name)}." if described.description
            else f"Removed the description of {literal(campaign.name)}.")


def _rename(new_name: str) -> str:
    renamed = rename_campaign(ws, run_id, new_name)
    return f"Renamed {literal(campaign.name)} to {literal(renamed.name)} (its files too)."


def _delete() -> str:
    delete_campaign(ws, run_id)
    return f"Deleted {literal(campaign.name)} (run {run_id}) and its files."


with st.expander("Describe, rename or delete this campaign"):
    text = st.text_area("Description", value=campaign.description or "", max_chars=DESCRIPTION_MAX,
                        key=f"campaign_description_{run_id}")
    if st.button("Save the description", key="campaign_describe"):
        _act("describe the campaign", lambda: _describe(text))
    new_name = st.text_input("New name", value=campaign.name, key=f"campaign_new_name_{run_id}")
    if st.button("Rename", key="campaign_rename"):
        _act("rename the campaign", lambda: _rename(new_name))
    sure = st.checkbox(f"Yes, delete this campaign ({campaign.customers:,} customers) and its files",
                       key=f"campaign_delete_sure_{run_id}")
    if st.button("Delete", key="campaign_delete", disabled=not sure):
        _act("delete the campaign", _delete, close=True)
