"""The report of `tastyrec monitor` (monitor.latest_report's dict) as the Model page shows it:
the NDCG@10 series per window, champion vs baselines, and the PSI table. pandas and Altair only."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from tastyrec.app.results import MISSING, figure
from tastyrec.monitor import METRIC_WORDS as METRICS


def method_name(window: dict[str, Any], method: str) -> str:
    return f"{method} (champion)" if method == window["champion"] else method


def series(report: dict[str, Any]) -> pd.DataFrame:
    """One row per window x method x metric: window (its last day), method, metric, value (None: missing)."""
    rows = [{"window": w["last_day"], "index": w["index"], "method": method_name(w, method), "metric": label,
             "value": figures.get(metric)}
            for w in report["windows"] for method, figures in w["methods"].items()
            for metric, label in METRICS.items()]
    return pd.DataFrame(rows, columns=["window", "index", "method", "metric", "value"])


def chart(report: dict[str, Any], metric: str) -> alt.Chart:
    """One metric (a METRICS key) per window (x: the window's last day), a line per method."""
    frame = series(report)
    frame = frame[frame["metric"] == METRICS[metric]].dropna(subset=["value"])
    return alt.Chart(frame, title=f"{METRICS[metric]} per window").mark_line(point=True).encode(
        x=alt.X("window:O", title="window (last day)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("value:Q", title=METRICS[metric]),
        # the champion first, then the baselines as the evaluation lists them
        color=alt.Color("method:N", title=None, sort=list(dict.fromkeys(frame["method"])), legend=alt.Legend(labelLimit=0)),
        tooltip=["window:O", "method:N", alt.Tooltip("value:Q", format=".4f")],
    )


def chart_height(report: dict[str, Any]) -> int:
    """Pixels for a chart of `chart`: room for every legend entry (~30 px each; Vega clips a
    legend taller than the chart, and the champion's entry must show)."""
    return max(250, 30 * len(report["windows"][-1]["methods"]) + 60)


def windows_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per window: its days, then each method's NDCG@10 and new-item NDCG@10 ("–" when missing)."""
    rows = []
    for w in report["windows"]:
        row = {"window": f"{w['index']}: {w['first_day']} .. {w['last_day']}"}
        for method, figures in w["methods"].items():
            for metric, label in METRICS.items():
                row[f"{method_name(w, method)} {label}"] = figure(figures.get(metric))
        rows.append(row)
    return pd.DataFrame(rows).fillna(MISSING)


def drift_table(report: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"input": d["feature"], "kind": d["kind"], "PSI": figure(d["psi"]), "drift": d["level"]}
                         for d in report["drift"]["inputs"]], columns=["input", "kind", "PSI", "drift"])
