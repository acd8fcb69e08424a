"""Campaigns: the saved recommendation runs (newest first); one reopened with its items in columns
of their own, its groups (treated, control), the totals and mailing file of the treated customers,
the report (did it work: treated against control over the orders since); its description, name and
deletion."""

from collections.abc import Callable

import pandas as pd
import streamlit as st

from tastyrec.app import data, results
from tastyrec.app.backend import failure_shown, literal, settings
from tastyrec.campaign_report import DAYS
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
              "group": st.column_config.Column("group", help="treated: in the mailing; control: kept out of it, "
                                                             "to measure the campaign against"),
              "chance_of_any": st.column_config.Column("chance of any", help="The chance of buying at least one of "
                                                       "the items (taken as independent)."),
              "expected_revenue_usd": st.column_config.Column("expected revenue", help="Σ chance × price.")}
    for column in screen.columns:
        if column.startswith("item_"):
            rank, _, part = column.removeprefix("item_").partition("_")
            word = {"": "item", "brand": "brand", "price_usd": "price", "chance": "chance", "reason": "why"}[part]
            labels[column] = st.column_config.Column(f"{word} {rank}", help=CHANCE_HELP if part == "chance" else None)
    return labels


def _groups(c) -> str:
    if c.holdout is None:
        return "all treated (saved before control groups)"
    return f"{c.treated:,} treated, {c.control:,} control ({c.holdout:.0%} held out, seed {c.holdout_seed})"


def _report(run_id: str) -> None:
    """Did it work: the campaign's treated customers against its control group (campaign_report)."""
    st.subheader("Did it work?")
    days = st.number_input("Days of orders after the lists' day", min_value=1, max_value=365, value=DAYS, step=1,
                           key=f"report_days_{run_id}")
    report = None
    with failure_shown("report on the campaign"):
        report = data.campaign_report(ws, run_id, int(days))
    if report is None:
        return
    if report.window_last_day:
        st.write(f"Orders from {report.data_end} to {report.window_last_day} ({report.days} days) · "
                 f"{report.treated:,} treated, {report.control:,} control")
    if report.message:
        (st.warning if report.figures else st.info)(report.message)
    if not report.figures:
        return
    rows = []
    for f in report.figures:
        money = f.measure == "revenue_usd"
        scale = 100 if f.measure == "share" else 1  # the share in percent, its difference in points
        rows.append({"measure": f.label, "treated": f.treated * scale, "control": f.control * scale,
                     "difference": f.difference * scale,
                     "95% low": None if f.low is None else f.low * scale,
                     "95% high": None if f.high is None else f.high * scale,
                     "unit": "USD" if money else "% / points" if scale == 100 else "items"})
    st.dataframe(pd.DataFrame(rows).style.format("{:,.2f}", subset=["treated", "control", "difference", "95% low",
                                                                     "95% high"], na_rep=MISSING),
                 hide_index=True, width="stretch", key=f"report_table_{run_id}")
    st.caption(("Partial: the window is not covered yet. " if not report.complete else "") + report.method + ".")


st.dataframe(pd.DataFrame([{"name": c.name, "description": c.description or MISSING,
                            "created": c.created_at.replace("T", " "), "filters": _filters(c.filters),
                            "customers": c.customers, "treated": c.treated,
                            "control": c.control if c.holdout is not None else None,
                            "lists' day": c.data_end or MISSING, "rows": c.rows, "model version": c.model_version,
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
         f"{campaign.customers:,} customers: {_groups(campaign)} · lists for {campaign.data_end or 'an unrecorded day'}"
         f" · filters: {_filters(campaign.filters)}")

# one row per customer, items in columns of their own, with their group; no personal field on screen
# (only in the file)
screen = mailing(rows, rows[["customer_id", "city", "country"]])
control = set(rows.loc[rows["control"], "customer_id"])
screen.insert(1, "group", ["control" if c in control else "treated" for c in screen["customer_id"]])
expected = totals(screen[screen["group"] == "treated"])  # what the mailing can expect: the control is not sent
customers_col, control_col, buyers_col, revenue_col = st.columns(4)
customers_col.metric("Treated (sent)", f"{expected['customers']:,}")
control_col.metric("Control (not sent)", f"{len(control):,}",
                   help="Kept out of the mailing at random, to measure the campaign against (Did it work?, below).")
buyers_col.metric("Expected buyers", f"{expected['expected_buyers']:,.0f}",
                  help="Σ over the treated customers of the chance to buy at least one of their items within the "
                       "label window (the items taken as independent), if each chance holds.")
revenue_col.metric("Expected revenue", f"${expected['expected_revenue_usd']:,.0f}",
                   help="Σ of chance × price over every item sent (today's menu prices).")
if len(screen) > results.TABLE_ROWS:
    st.caption(f"Showing the first {results.TABLE_ROWS:,} of {len(screen):,} customers; the mailing file has them all.")
shown = screen.head(results.TABLE_ROWS)
st.dataframe(_table(shown), hide_index=True, width="stretch", column_config=_labels(shown))
st.download_button("Download the mailing file (CSV, treated customers only)",
                   lambda: spreadsheet_safe(campaign_mailing(ws, run_id)).to_csv(index=False).encode(),
                   file_name=mailing_file_name(campaign.name, run_id, "csv"), mime="text/csv", key="campaign_csv",
                   on_click="ignore",
                   help="One row per treated customer (the control group is not sent): first name, e-mail, "
                        "language, city and country, then each item with brand, price, chance and why, then the "
                        "chance of any and the expected revenue.")
_report(run_id)


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
