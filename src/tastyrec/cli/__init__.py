"""The `tastyrec` command line: thin Typer commands that call the stage functions and print.

    base.py       the app, consoles, progress bars, errors, quieting third-party noise
    data.py       setup, export-csv, features, ingest
    simulate.py   simulate (the synthetic world's next days)
    training.py   train, evaluate, pipeline, registry list / promote / rollback
    serving.py    recommend, campaigns (export, report, ...), serve, app
    monitor.py    monitor
"""

# importing them registers their commands, in this order in `tastyrec --help`
from tastyrec.cli import data, simulate, training, serving, monitor  # noqa: F401, I001
from tastyrec.cli.base import app

__all__ = ["app"]
