"""`vigil --help` and every command's help: each option says what it does, in 80 columns."""

from __future__ import annotations

import re
import subprocess
import sys
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


def test_the_cli_imports_neither_ray_nor_grpc_before_a_command_needs_them() -> None:
    """`vigil run` forks into a session of its own before it starts anything, which is only safe while no thread and
    no gRPC runs: a command module that imports Ray Serve at the top (and gRPC with it) would stop that."""
    code = "import sys, pipeline.cli; print(sorted(m for m in ('grpc', 'ray', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
