"""The docs site and the README's front page.

`mkdocs build --strict` runs for real, into a temporary folder, with every proxy pointed at a
closed port: a broken link or anchor, a page left out of the nav, a plugin that downloads, or a CLI
reference that cannot be generated fails the build. The CLI reference is generated from the Typer
app (docs/hooks/cli_reference.py); the page must list every command and every option of it, so a
generation that breaks or drops commands fails here. The README stays a front page: at most 200
lines, with exactly the two set-up commands, and links into the docs that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer import _click
from typer.main import get_command

from tastyrec.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, so any download fails at once


def commands(command, ctx):
    """(command path, click command, context) of the app and of every command and sub-command."""
    yield ctx.command_path, command, ctx
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, _click.Context(sub, info_name=name, parent=ctx))


ALL = list(commands(get_command(app), _click.Context(get_command(app), info_name="tastyrec")))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "FEAST_USAGE": "False",
           **{k: CLOSED for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy")}}
    env.pop("no_proxy", None), env.pop("NO_PROXY", None)
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                            str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout[-3000:]}\n{build.stderr[-6000:]}"
    return out


def test_strict_build_writes_every_page(site) -> None:
    nav = re.findall(r":\s*([\w-]+)\.md\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert {"index", "architecture", "cli", "data", "model", "serving", "team", "container", "performance",
            "limits"} <= set(nav)
    for page in nav:
        assert (site / ("index.html" if page == "index" else f"{page}/index.html")).is_file(), page
    assert (site / "app.png").is_file()  # the screenshots are served from where they are


def test_cli_reference_lists_every_command_and_option(site) -> None:
    page = (site / "cli" / "index.html").read_text()
    assert "<!-- cli-reference -->" not in page
    for path, command, ctx in ALL:
        anchor = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
        assert f'id="{anchor}"' in page, f"{path!r} is missing from the CLI reference"
        section = re.split(r"<h[1-6][ >]", page.split(f'id="{anchor}"', 1)[1], maxsplit=1)[0]
        for param in command.get_params(ctx):
            if param.name != "help" and not getattr(param, "hidden", False):
                name = param.opts[0] if param.opts[0].startswith("-") else param.name
                assert name in section, f"{path}: {name} is missing from its reference"


class Loads(HTMLParser):
    """What a page makes the browser fetch by itself: scripts, style sheets, fonts, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href") and attrs.get("rel") not in ("canonical", "alternate"):
            self.urls.append(attrs["href"])


def test_site_loads_nothing_from_outside(site) -> None:
    for html in site.rglob("*.html"):
        parser = Loads()
        parser.feed(html.read_text())
        outside = [u for u in parser.urls if re.match(r"(https?:)?//", u)]
        assert outside == [], f"{html.relative_to(site)} loads {outside}"


def test_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200, f"README.md has {len(text.splitlines())} lines (at most 200)"
    setup = re.search(r"^## Set up\n+```sh\n(.*?)```", text, re.S | re.M)
    assert setup, "README.md has no '## Set up' section opening with a sh block"
    assert [line.split("#")[0].strip() for line in setup.group(1).splitlines()] == ["make run", "make test"]
    assert "![" in text and "(docs/app.png)" in text


def test_readme_links_into_the_docs_exist() -> None:
    links = re.findall(r"\]\((?!https?:)([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    assert any(link.startswith("docs/") and link.endswith(".md") for link in links)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == [], f"README.md links to files that do not exist: {missing}"
