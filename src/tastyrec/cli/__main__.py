"""`python -m tastyrec.cli ...`: the same command line as `tastyrec ...`."""

from tastyrec.cli import app

app()
