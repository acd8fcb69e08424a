"""`tastyrec monitor`: the champion's ranking quality on each new window, and its inputs' drift."""

from __future__ import annotations

from tastyrec.cli.base import app  # noqa: F401
