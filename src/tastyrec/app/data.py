"""What the pages read besides recommendations: filter values and the menu from the warehouse,
saved campaigns, a version's evaluation. Every query is parameterised; each opens the warehouse
read-only and closes it at once (the app never holds it, so the CLI can write meanwhile).

Cached with st.cache_data. Warehouse reads are keyed by the file's modification time too, so a
rebuilt warehouse (or a new campaign) is read afresh; a version's evaluation never changes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from tastyrec.config import Workspace

COUNTRIES = "SELECT DISTINCT country FROM raw_customer.customer_loyalty WHERE country IS NOT NULL ORDER BY country"
# cities of the chosen countries (all cities when none is chosen)
CITIES = ("SELECT DISTINCT city FROM raw_customer.customer_loyalty WHERE city IS NOT NULL "
          "AND (len($countries::VARCHAR[]) = 0 OR list_contains($countries::VARCHAR[], country)) ORDER BY city")
# customers of the chosen countries and cities (every one when none is chosen): before the click
MATCHING = ("SELECT count(*) AS n FROM raw_customer.customer_loyalty "
            "WHERE (len($countries::VARCHAR[]) = 0 OR list_contains($countries::VARCHAR[], country)) "
            "AND (len($cities::VARCHAR[]) = 0 OR list_contains($cities::VARCHAR[], city))")
BRANDS = "SELECT DISTINCT truck_brand_name FROM raw_pos.menu WHERE truck_brand_name IS NOT NULL ORDER BY 1"
MENU = ("SELECT menu_item_name, any_value(truck_brand_name) AS truck_brand_name, "
        "any_value(item_category) AS item_category FROM raw_pos.menu GROUP BY menu_item_name")


def _stamp(ws: Workspace) -> int:
    return ws.warehouse.stat().st_mtime_ns if ws.warehouse.exists() else 0


@st.cache_data(show_spinner=False, max_entries=64)
def _query(home: str, stamp: int, sql: str, params: tuple[tuple[str, Any], ...] = ()) -> pd.DataFrame:
    from tastyrec.warehouse.load import connect

    con = connect(Workspace.from_env(home).warehouse, read_only=True)
    try:
        return con.execute(sql, {k: list(v) if isinstance(v, tuple) else v for k, v in params}).df()
    finally:
        con.close()


def query(ws: Workspace, sql: str, **params: Any) -> pd.DataFrame:
    """A parameterised query on the warehouse (tuples bind as lists), cached until it changes."""
    return _query(str(ws.home), _stamp(ws), sql, tuple(sorted(params.items())))


def countries(ws: Workspace) -> list[str]:
    return query(ws, COUNTRIES)["country"].tolist()


def cities(ws: Workspace, in_countries: tuple[str, ...] = ()) -> list[str]:
    return query(ws, CITIES, countries=tuple(in_countries))["city"].tolist()


def matching(ws: Workspace, in_countries: tuple[str, ...] = (), in_cities: tuple[str, ...] = ()) -> int:
    """How many customers the country and city filters select (what the engine's Directory selects)."""
    return int(query(ws, MATCHING, countries=tuple(in_countries), cities=tuple(in_cities))["n"].iloc[0])


def brands(ws: Workspace) -> list[str]:
    return query(ws, BRANDS)["truck_brand_name"].tolist()


def menu(ws: Workspace) -> pd.DataFrame:
    """menu_item_name -> truck_brand_name, item_category (to chart purchases by brand)."""
    return query(ws, MENU)


@st.cache_data(show_spinner="Opening the campaign...", max_entries=16)
def campaign_rows(home: str, run_id: str) -> pd.DataFrame:
    """A saved campaign's rows (a run never changes once saved)."""
    from tastyrec.campaigns import load_campaign

    return load_campaign(Workspace.from_env(home), run_id)


@st.cache_data(show_spinner="Measuring the campaign...", max_entries=16)
def _campaign_report(home: str, stamp: int, run_id: str, days: int):
    from tastyrec.campaign_report import campaign_report

    return campaign_report(Workspace.from_env(home), run_id, days)


def campaign_report(ws: Workspace, run_id: str, days: int):
    """A saved campaign's report (campaign_report.Report), read again when the warehouse changes
    (new orders ingested)."""
    return _campaign_report(str(ws.home), _stamp(ws), run_id, days)


@st.cache_data(show_spinner="Reading the model's evaluation...", max_entries=16)
def evaluation(home: str, version: int, run_id: str) -> dict[str, Any]:
    """A version's evaluation.json and loss curves; `run_id` keys it (a rebuilt home reuses numbers)."""
    from tastyrec.registry.loading import load_evaluation

    return load_evaluation(Workspace.from_env(home), version)
