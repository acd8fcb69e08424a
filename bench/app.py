"""App figures: in a real Chromium, the time from clicking "Get Recommendations" to the customer
table showing, for the largest city, the largest country and every customer of a workspace, and
the time of a rerun (any click) with that result on the page.

Usage: .venv/bin/python bench/app.py --home DIR [--runs 3] [--quick]
--quick: that it runs and prints its figures, in seconds (a test runs it); not figures to quote. (1 run)

DIR is a workspace with a champion (e.g. `tastyrec pipeline`'s, 20,000 customers by default).
`tastyrec app` runs on a free loopback port and is stopped at the end; Chromium is Debian's
(/usr/bin/chromium, installed by `make test`). Each measurement uses a fresh browser session;
the model is opened once, before the first measurement.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from tastyrec.config import Workspace  # noqa: E402
from tastyrec.warehouse.load import connect  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 600_000


def largest(ws: Workspace, column: str) -> tuple[str, int]:
    con = connect(ws.warehouse, read_only=True)
    try:
        return con.execute(f"SELECT {column}, count(*) AS n FROM raw_customer.customer_loyalty "  # column: ours
                           "GROUP BY ALL ORDER BY n DESC, 1 LIMIT 1").fetchone()
    finally:
        con.close()


def start_app(home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "tastyrec.cli", "--home", str(home), "app", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return process, url
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("`tastyrec app` did not come up")


def idle(page: Page) -> None:
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=TIMEOUT_MS)


def measure(page: Page, url: str, filters: dict[str, str]) -> tuple[float, float, int]:
    """(click -> table seconds, rerun seconds with the result shown, customers shown)."""
    page.goto(url)
    page.get_by_role("button", name="Get Recommendations").wait_for(timeout=TIMEOUT_MS)
    for label, value in filters.items():
        box = page.get_by_role("combobox", name=label)
        box.click()
        box.fill(value)
        page.get_by_role("option", name=value, exact=True).click()
        page.keyboard.press("Escape")
    idle(page)
    started = time.perf_counter()
    page.get_by_role("button", name="Get Recommendations").click()
    page.get_by_test_id("stDataFrame").first.locator("table[role=grid]").wait_for(state="attached",
                                                                                  timeout=TIMEOUT_MS)
    table = time.perf_counter() - started
    summary = page.get_by_text(re.compile(r"^[\d,]+ match; (all )?[\d,]+ get a list")).inner_text()
    customers = int(re.search(r"([\d,]+) get a list", summary).group(1).replace(",", ""))
    idle(page)
    page.get_by_role("tab", name="One customer").click()
    shown = page.get_by_text(re.compile(r"^Customer \d+ · "))
    before = shown.inner_text()
    started = time.perf_counter()
    page.get_by_role("combobox", name="Customer", exact=True).click()  # another customer: the whole script reruns
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(shown).not_to_have_text(before, timeout=TIMEOUT_MS)
    return table, time.perf_counter() - started, customers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 run of each: that it runs")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    ws = Workspace.from_env(args.home)
    city, country = largest(ws, "city")[0], largest(ws, "country")[0]
    cases = {f"city {city}": {"City": city}, f"country {country}": {"Country": country}, "every customer": {}}
    print(f"machine: {machine()}")
    process, url = start_app(ws.home)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            warm = browser.new_page()
            warm.goto(url)
            warm.get_by_role("button", name="Get Recommendations").wait_for(timeout=TIMEOUT_MS)  # model open
            warm.close()
            for name, filters in cases.items():
                runs = []
                for _ in range(args.runs):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    runs.append(measure(context.new_page(), url, filters))
                    context.close()
                table, rerun = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
                print(f"{name}: {runs[0][2]:,} customers; Get Recommendations -> table {table:.2f} s, "
                      f"a rerun with the result shown {rerun:.2f} s (median of {args.runs})")
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
