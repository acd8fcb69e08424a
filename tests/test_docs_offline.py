"""/docs and /redoc in a real browser with the network closed: every request that leaves the
machine is aborted and recorded, so a page that still loads a script, a style sheet or a font from
a CDN (FastAPI's default) or Google fails here, whether or not this machine is online."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

from test_app import CHROMIUM, CHROMIUM_ARGS
from test_service import TOKEN, Server

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
TIMEOUT_MS = 60_000


@pytest.mark.parametrize("token", [None, TOKEN], ids=["without-token", "with-token"])
def test_docs_and_redoc_render_with_the_network_closed(trained_ws, tmp_path, token) -> None:
    """The docs URL `tastyrec serve` prints, opened by a browser that sends no token (a token set
    leaves the docs public); the read-only session workspace, its log kept out of it."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get)"
    server = Server(trained_ws.home, token=token, log=tmp_path / "serve.log")
    aborted: list[str] = []
    failed: list[str] = []

    def local_only(route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort()

    try:
        docs = re.search(r"\(docs (\S+)\)", server.log.read_text()).group(1)
        assert docs == f"{server.url}/docs"
        for page_url in (docs, f"{server.url}/redoc"):  # what the pages load is the service's own
            loads = re.findall(r'(?:src|href)="([^"]*)"', httpx.get(page_url).text)
            assert loads and all(url.startswith("/") for url in loads), loads
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", local_only)
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            page.goto(docs)
            page.locator('.opblock-summary-path[data-path="/recommendations"]').wait_for()  # Swagger UI ran
            assert "tastyrec" in page.locator(".information-container .title").inner_text()

            page.goto(f"{server.url}/redoc")
            page.get_by_role("heading", name=re.compile(r"^tastyrec")).wait_for()  # ReDoc ran
            page.get_by_text("/recommendations").first.wait_for(state="attached")
            browser.close()
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    assert aborted == [], f"the docs reached outside the machine: {aborted}"
    assert failed == [], f"requests that failed: {failed}"
