"""Every command's --help renders (Rich reads "[...]" in help texts as markup: an option like
redis://HOST:PORT[/DB] once made `features --help` crash)."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from tastyrec.cli import app


def commands(group, path=()):
    for name, command in group.commands.items():
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))


@pytest.mark.parametrize("command", list(commands(get_command(app))), ids=" ".join)
def test_help_renders(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Usage" in result.output
