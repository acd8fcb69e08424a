"""Where the app gets recommendations from: the engine in this process (default), or the REST
service (`--service URL`) through a client with the same `recommend`. Both return the dict of
`Recommendations.to_dict()`, so the pages never care which one they hold.

The settings come from the command line `tastyrec app` gives `streamlit run` (after `--`), else
from the environment (TASTYREC_HOME, TASTYREC_APP_SERVICE): AppTest runs the script in pytest's
process, whose command line is pytest's.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import httpx
import streamlit as st

from tastyrec.app import MAIN
from tastyrec.config import Workspace
from tastyrec.features.stores import OnlineStoreError
from tastyrec.recommend import (DEFAULT_TOP_K, CustomerRecommendations, Engine, Filters, RecommendError,
                                Recommendations)

SERVICE_ENV = "TASTYREC_APP_SERVICE"
SERVICE_TIMEOUT_S = 300.0  # a large selection takes a while to score
MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation mark: CommonMark escapes each

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    ws: Workspace
    service: str | None  # the REST service's base URL; None: the engine runs in this process


def settings() -> Settings:
    """The workspace and the service URL this app process was started with."""
    parser = argparse.ArgumentParser(prog="tastyrec app", allow_abbrev=False)
    parser.add_argument("--home", default=None)
    parser.add_argument("--service", default=os.environ.get(SERVICE_ENV) or None)
    started_by_streamlit = Path(sys.argv[0]).resolve() == MAIN.resolve()
    args, _ = parser.parse_known_args(sys.argv[1:] if started_by_streamlit else [])
    return Settings(Workspace.from_env(args.home), args.service.rstrip("/") if args.service else None)


class Backend(Protocol):
    def recommend(self, customer_ids: list[int] | None = None, filters: Filters = Filters(),
                  top_k: int = DEFAULT_TOP_K, limit: int | None = None) -> dict[str, Any]: ...

    @property
    def model_info(self) -> dict[str, Any]: ...


class LocalEngine:
    """The engine, opened in this process."""

    def __init__(self, ws: Workspace):
        self.engine = Engine(ws, precompute=True)

    @property
    def model_info(self) -> dict[str, Any]:
        return self.engine.model_info

    def recommend(self, customer_ids: list[int] | None = None, filters: Filters = Filters(),
                  top_k: int = DEFAULT_TOP_K, limit: int | None = None) -> dict[str, Any]:
        result = self.engine.recommend(customer_ids, filters, top_k, limit)
        # Recommendations.to_dict's shape, without asdict's deep copy of every history entry (which
        # took 0.5 s for 1,300 customers): the engine builds new objects for every request.
        return {**vars(result), "customers": [dict(vars(c)) for c in result.customers]}


class ServiceClient:
    """The REST service (`tastyrec serve`) as a backend. The service caps a filter selection at
    its own limit (1,000 customers by default) and says so with `truncated`; `limit` is ignored."""

    def __init__(self, url: str, token: str | None = None, timeout: float = SERVICE_TIMEOUT_S):
        self.url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise RecommendError(f"the service at {self.url} did not answer: {e}") from None
        if response.status_code != 200:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise RecommendError(f"the service answered {response.status_code}: {detail}")
        return response.json()

    @property
    def model_info(self) -> dict[str, Any]:
        health = self._call("GET", "/health")
        return {"name": health["model"], "version": health["version"], "alias": health["alias"],
                "kind": health["kind"], "loaded_at": health["loaded_at"], "features": health.get("features")}

    def recommend(self, customer_ids: list[int] | None = None, filters: Filters = Filters(),
                  top_k: int = DEFAULT_TOP_K, limit: int | None = None) -> dict[str, Any]:
        selection = {"customer_ids": customer_ids} if customer_ids is not None else {"filters": filters.to_dict()}
        return self._call("POST", "/recommendations", json={**selection, "top_k": top_k})


@st.cache_resource(show_spinner="Opening the model...")
def _backend(home: str, service: str | None) -> Backend:
    # One per process and (home, service): every session shares it (the engine is thread-safe).
    if service:
        from tastyrec.service import TOKEN_ENV  # the service's bearer token, sent when set

        return ServiceClient(service, os.environ.get(TOKEN_ENV) or None)
    return LocalEngine(Workspace.from_env(home))


def backend(s: Settings) -> Backend:
    """The process's backend; shows the reason and stops the page when it cannot be opened."""
    try:
        return _backend(str(s.ws.home), s.service)
    except RecommendError as e:
        st.error(f"Recommendations are not available: {e}")
        st.stop()
        raise  # not reached: st.stop ends the script run


@contextmanager
def failure_shown(action: str) -> Iterator[None]:
    """Run a page action that can fail at run time (scoring, saving, reading a campaign). A
    RecommendError is shown as it is (written for the user); anything else as one plain line, with
    the details in the log of `tastyrec app` only: a traceback carries file paths and process ids."""
    try:
        yield
    except (RecommendError, OnlineStoreError) as e:  # both say what to do in plain words
        st.error(str(e))
    except Exception as e:
        log.exception("could not %s", action)
        st.error(f"could not {action}: something went wrong ({type(e).__name__}); the details are in the log "
                 "of `tastyrec app`")


def literal(text: str) -> str:
    """User text (a campaign name) for a Markdown element, shown as typed: no link, no formatting."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def as_recommendations(result: dict[str, Any]) -> Recommendations:
    """A result dict (either backend's) as the engine's object, which campaigns.save stores."""
    def known(cls, values: dict[str, Any]) -> dict[str, Any]:  # a newer service may send more keys
        return {f.name: values[f.name] for f in fields(cls) if f.name in values}

    customers = [CustomerRecommendations(**known(CustomerRecommendations, c)) for c in result["customers"]]
    return Recommendations(**{**known(Recommendations, result), "customers": customers})
