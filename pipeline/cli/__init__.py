"""The `vigil` command line. Each sub-command lives in its own module; this one wires them up.

Exit codes: 0 ok, 1 a runtime error (model, image, service), 2 invalid input (config, usage).
"""

from __future__ import annotations

import logging
import sys

import typer

from pipeline.cli import (
    bench_cmd,
    classify_cmd,
    config_cmd,
    console_cmd,
    ingest_cmd,
    lab_cmd,
    models_cmd,
    run_cmd,
    sink_cmd,
)
from pipeline.cli.terminal import setup_logging
from pipeline.core.config import log_level
from pipeline.core.errors import ConfigError, UnsupportedServerError, VigilError

# Plain click help (rich_markup_mode=None): flags without a `<bool>` type column, and it fits 80 columns.
app = typer.Typer(name="vigil", help="Streaming video analytics: cameras -> Redis -> ONNX -> sinks.",
                  rich_markup_mode=None, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("classify")(classify_cmd.classify)
app.command("ingest")(ingest_cmd.ingest)
app.command("sink")(sink_cmd.sink)
app.command("console")(console_cmd.console)
app.command("run")(run_cmd.run)
app.command("demo")(run_cmd.demo)
app.command("evaluate")(lab_cmd.evaluate)
app.command("capture")(lab_cmd.capture)
app.add_typer(config_cmd.app, name="config")
app.add_typer(models_cmd.app, name="models")
app.add_typer(bench_cmd.app, name="bench")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(logging.DEBUG if verbose else log_level())


def main() -> None:
    """Entry point: run the app, turning Vigil's errors into one clear line and an exit code."""
    try:
        # Non-standalone click returns the exit code of typer.Exit instead of raising it.
        rc = app(standalone_mode=False)
    except (ConfigError, UnsupportedServerError) as exc:  # invalid input, or a Redis Vigil cannot work with
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except VigilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:
        # Usage errors (bad option, missing argument): click prints them and sets exit code 2.
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(int(getattr(exc, "exit_code", 2)))
    sys.exit(rc if isinstance(rc, int) else 0)
