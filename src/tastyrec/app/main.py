"""The app's entry script (`streamlit run main.py -- --home HOME [--service URL]`): the pages."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).with_name("pages")

st.set_page_config(page_title="tastyrec", page_icon=":truck:", layout="wide")
st.navigation([
    st.Page(PAGES / "recommend.py", title="Recommend", icon=":material/restaurant_menu:", default=True),
    st.Page(PAGES / "campaigns.py", title="Campaigns", icon=":material/campaign:"),
    st.Page(PAGES / "model.py", title="Model", icon=":material/model_training:"),
]).run()
