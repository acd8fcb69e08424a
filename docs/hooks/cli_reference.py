"""MkDocs hook: the CLI reference page (docs/cli.md) is generated from the Typer app at build time.

The page holds the marker `<!-- cli-reference -->`; this hook replaces it with every command of
`tastyrec.cli.app` (walked through `typer.main.get_command`, groups and their sub-commands
included): its usage line, its help text and a table of its arguments and options as `--help`
prints them (`get_help_record`: names, types, defaults). Nothing is copied by hand, so the page
cannot fall behind the code; a page without the marker, or an app that cannot be walked, fails the
build. Each command's heading carries a stable anchor, `tastyrec-<command path>`
(`tastyrec-campaigns-report`), which other pages link to and tests/test_docs_site.py checks.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator

MARKER = "<!-- cli-reference -->"
PAGE = "cli.md"


def walk(command, ctx) -> Iterator[tuple[object, object]]:
    """(command, context) for the command and, depth first, every sub-command in --help's order."""
    from typer import _click  # Typer >= 0.20 carries its own copy of click

    yield command, ctx
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, _click.Context(sub, info_name=name, parent=ctx))


def anchor(command_path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", command_path.lower()).strip("-")


def text(value: str) -> str:
    """Help text as HTML: Rich's escapes undone (`\\[` is a literal bracket in --help), escaped, and
    `code` in backticks set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(value.replace("\\[", "[")))


def render_command(command, ctx) -> str:
    path = ctx.command_path
    level = "#" * min(2 + path.count(" "), 4)
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    parts = [f"{level} {path} {{ #{anchor(path)} }}", "", f"<pre><code>{text(usage)}</code></pre>", ""]
    help_text = (command.help or "").split("\f")[0].strip()
    for paragraph in re.split(r"\n\s*\n", help_text):
        if paragraph.strip():
            parts += [f"<p>{text(' '.join(paragraph.split()))}</p>", ""]
    records = [r for p in command.get_params(ctx) if (r := p.get_help_record(ctx)) and p.name != "help"]
    if records:
        rows = "".join(f"<tr><td><code>{text(name)}</code></td><td>{text(' '.join(help.split()))}</td></tr>"
                       for name, help in records)
        parts += [f'<table class="cli-params"><thead><tr><th>argument / option</th><th>meaning</th></tr>'
                  f"</thead><tbody>{rows}</tbody></table>", ""]
    if getattr(command, "commands", None):
        items = ", ".join(f"[`{sub}`](#{anchor(f'{path} {sub}')})" for sub in command.commands)
        parts += [f"Commands: {items}.", ""]
    return "\n".join(parts)


def render_reference() -> str:
    """The whole reference: `tastyrec` (its global options), then each command as --help lists them."""
    os.environ.setdefault("FEAST_USAGE", "False")  # importing the CLI must not reach the network
    from typer import _click
    from typer.main import get_command

    from tastyrec.cli import app

    root = get_command(app)
    ctx = _click.Context(root, info_name="tastyrec")
    return "\n".join(render_command(command, c) for command, c in walk(root, ctx))


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE} has lost its marker {MARKER}: the CLI reference would be missing")
    return markdown.replace(MARKER, render_reference())
