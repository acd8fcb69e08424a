"""The Streamlit app for marketing people: a thin shell around the one engine.

    main.py        the entry script `streamlit run` starts: st.navigation over the pages
    backend.py     the settings, the engine (in-process, or the REST service through a client
                   with the same `recommend`), opened once per process with st.cache_resource
    data.py        what the filters and the pages read from the warehouse and the registry
                   (parameterised SQL, st.cache_data)
    results.py     a result as tables, CSV and Altair charts (pandas only: no Streamlit)
    pages/         recommend.py (the seed's flow and more), campaigns.py, model.py

Importing this package imports neither Streamlit nor the engine: the CLI only needs `command`.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAIN = Path(__file__).with_name("main.py")


def command(home: Path, port: int = 8501, host: str = "127.0.0.1", service: str | None = None) -> list[str]:
    """The `streamlit run` command line that serves the app for workspace `home`: headless, no
    usage statistics, no file watcher (nothing here is edited while it runs), no developer menu, and
    no error details in the browser (a traceback shows file paths and process ids; Streamlit's
    default, "full", shows them all): an uncaught exception shows a generic message there, and
    its details go to the console of `tastyrec app`."""
    args = ["--home", str(home), *(["--service", service] if service else [])]
    return [sys.executable, "-m", "streamlit", "run", str(MAIN),
            "--server.port", str(port), "--server.address", host, "--server.headless", "true",
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal", "--client.showErrorDetails", "none", "--", *args]
