"""`vigil --help` and every command's help: each option says what it does, in 80 columns."""

from __future__ import annotations

import re
from typing import Any

import typer

from pipeline.cli import app
from tests.cli_helpers import vigil


def _commands(group: Any, path: tuple[str, ...] = ("vigil",)) -> list[tuple[str, Any]]:
    if hasattr(group, "commands"):  # a group (typer's own click)
        return [c for name, sub in group.commands.items() for c in _commands(sub, (*path, name))]
    return [(" ".join(path), group)]


def test_every_option_and_argument_has_help_text() -> None:
    commands = _commands(typer.main.get_command(app))
    assert len(commands) >= 18
    missing = [f"{path} {'/'.join(p.opts)}" for path, cmd in commands for p in cmd.params
               if p.name != "help" and not getattr(p, "help", None)]
    assert missing == []
    assert all(cmd.help for _, cmd in commands)


def test_help_reads_well_at_80_columns() -> None:
    for args in (["--help"], ["bench", "pipeline", "--help"], ["run", "--help"]):
        out = vigil(*args, env={"COLUMNS": "80"})
        assert out.returncode == 0, out.stderr
        assert "<bool>" not in out.stdout
        assert max(len(line) for line in out.stdout.splitlines()) <= 80, out.stdout
    assert "-v, --verbose  Debug logging." in vigil("--help", env={"COLUMNS": "80"}).stdout
    bench = vigil("bench", "pipeline", "--help", env={"COLUMNS": "80"}).stdout
    assert re.search(r"--batch-size <int range>\s+Frames classified at once\.", bench), bench
