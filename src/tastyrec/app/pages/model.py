"""Model: the champion version, its test metrics next to the baselines' and the oracle's, its
loss curves, how it fared on the windows after its training data (`tastyrec monitor`), and every
registered version."""

import pandas as pd
import streamlit as st

from tastyrec.app import data, monitoring, results
from tastyrec.app.backend import backend, failure_shown, settings
from tastyrec.evaluate import METRICS
from tastyrec.monitor import latest_report
from tastyrec.recommend import RecommendError
from tastyrec.registry import RegistryError, list_versions

config = settings()
st.title("The model")
versions = list_versions(config.ws)
champion = next((v for v in versions if "champion" in v["aliases"]), None)
if champion is None:
    st.info("No champion model in this workspace yet: run `tastyrec pipeline` (or `tastyrec train`).")
    st.stop()

try:
    serving = f"The app serves version {backend(config).model_info['version']}"
except RecommendError as e:
    serving = f"The app's model is not available ({e})"
st.write(f"**Champion: tastyrec-dlrm version {champion['version']}** ({champion.get('model_kind') or '?'}, "
         f"trained on the {champion.get('training_split') or '?'} split, registered "
         f"{champion['created'][:19].replace('T', ' ')} UTC). "
         + serving + (f" through the service at {config.service}." if config.service else "."))
if champion["description"]:
    st.caption(champion["description"])

try:
    recorded = data.evaluation(str(config.ws.home), champion["version"], champion["run_id"])
except RegistryError as e:
    st.error(str(e))
    st.stop()
evaluation = recorded["evaluation"]
methods = [(evaluation["model_name"], evaluation["model"]), *evaluation["baselines"].items()]
methods += [("oracle (truth)", evaluation["oracle"])] if evaluation.get("oracle") else []
st.markdown(results.headline(evaluation))
st.subheader("Test metrics")
st.caption(f"The final time window: {evaluation['customers']:,} of {evaluation['test_customers_total']:,} test "
           f"customers, {evaluation['rows']:,} rows. Best baseline: {evaluation.get('best_baseline') or 'none'}.")
st.dataframe(pd.DataFrame([{"method": name, **{m: results.figure(metrics.get(m)) for m in METRICS}}
                           for name, metrics in methods]), hide_index=True, width="stretch")

if recorded["history"]:
    st.subheader("Training")
    st.altair_chart(results.loss_chart(recorded["history"]), width="stretch")

st.subheader("Watched over time")
with failure_shown("read the monitoring report"):
    report = latest_report(config.ws)
    if report is None:
        st.info("The champion has not been monitored in this workspace yet: `tastyrec monitor` scores it against the "
                "baselines on every complete window of orders after its training data, and measures the drift of "
                "its inputs; its report then shows here.")
    else:
        st.caption(f"`tastyrec monitor` of version {report['champion']['version']}: trained on data up to "
                   f"{report['champion']['trained_until']} (exclusive), {report['champion']['window_days']}-day "
                   f"windows; orders run to {report['orders_until']}.")
        if report["message"]:
            st.info(report["message"])
        for warning in report["warnings"]:
            st.warning(warning)
        if report["windows"]:
            for metric in monitoring.METRICS:
                st.altair_chart(monitoring.chart(report, metric), width="stretch",
                                height=monitoring.chart_height(report))
            st.dataframe(monitoring.windows_table(report), hide_index=True, width="stretch")
        thresholds = report["drift"]["thresholds"]
        st.markdown(f"**Input drift** between the training snapshot ({report['drift']['reference']['as_of']}) and the "
                    f"serving snapshot ({report['drift']['current']['as_of']}): population stability index, "
                    f"below {thresholds['moderate']} no drift, {thresholds['moderate']} to {thresholds['major']} "
                    f"moderate, above {thresholds['major']} major.")
        st.dataframe(monitoring.drift_table(report), hide_index=True, width="stretch")

st.subheader("Registered versions")
st.dataframe(pd.DataFrame([{"version": v["version"], "aliases": ", ".join(v["aliases"]) or results.MISSING,
                            "model": v.get("model_kind") or results.MISSING,
                            "split": v.get("training_split") or results.MISSING,
                            "ndcg@10": results.figure(v["metrics"].get("ndcg@10")),
                            "recall@10": results.figure(v["metrics"].get("recall@10")),
                            "created": v["created"][:19].replace("T", " ")}
                           for v in versions]),
             hide_index=True, width="stretch")
