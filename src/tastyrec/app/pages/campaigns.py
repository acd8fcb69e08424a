"""Campaigns: the saved recommendation runs (newest first), and one reopened with its rows."""

import pandas as pd
import streamlit as st

from tastyrec.app import data, results
from tastyrec.app.backend import failure_shown, literal, settings
from tastyrec.campaigns import list_campaigns, spreadsheet_safe

ws = settings().ws
st.title("Saved campaigns")
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


st.dataframe(pd.DataFrame([{"name": c.name, "created": c.created_at.replace("T", " "), "filters": _filters(c.filters),
                            "customers": c.customers, "rows": c.rows, "model version": c.model_version,
                            "run id": c.run_id} for c in saved]),
             hide_index=True, width="stretch")

by_id = {c.run_id: c for c in saved}
run_id = st.selectbox("Open a campaign", list(by_id), index=None, key="campaign_run",
                      format_func=lambda r: f"{by_id[r].name} ({by_id[r].created_at.replace('T', ' ')}, run {r})",
                      placeholder="Choose a campaign")
if run_id is None:
    st.stop()
campaign = by_id[run_id]
rows = None
with failure_shown("open the campaign"):
    rows = data.campaign_rows(str(ws.home), run_id).merge(data.menu(ws), on="menu_item_name", how="left")
if rows is None:
    st.stop()
columns = ["customer_id", "rank", "menu_item_name", "truck_brand_name", "item_category", "score"]
st.subheader(literal(campaign.name))
st.write(f"Run {run_id} · saved {campaign.created_at.replace('T', ' ')} · model version {campaign.model_version} · "
         f"{campaign.customers:,} customers · filters: {_filters(campaign.filters)}")
if len(rows) > results.TABLE_ROWS:
    st.caption(f"Showing the first {results.TABLE_ROWS:,} of {len(rows):,} rows; the CSV download has them all.")
st.dataframe(rows[columns].head(results.TABLE_ROWS), hide_index=True, width="stretch",
             column_config={"customer_id": st.column_config.NumberColumn("customer", format="%d"),
                            "score": st.column_config.NumberColumn(format="%.3f")})
st.download_button("Download CSV", spreadsheet_safe(rows[columns]).to_csv(index=False).encode(),
                   file_name=f"campaign-{run_id}.csv", mime="text/csv", key="campaign_csv", on_click="ignore")
