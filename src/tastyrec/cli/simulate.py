"""`tastyrec simulate`: the next days of the synthetic world's orders, as stage CSV for `ingest`."""

from __future__ import annotations

from tastyrec.cli.base import app  # noqa: F401
