"""The CLI's one stderr console, and logging that goes through it.

On a terminal, log records are printed by rich's logging handler on the same console as `vigil run`'s
live table, so they appear above the table instead of breaking it. Elsewhere (a file, a pipe, CI) they
stay plain lines, one per record, never wrapped.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

stderr_console = Console(stderr=True)


def setup_logging(level: int | str) -> None:
    if stderr_console.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr_console, show_path=False, markup=False,
                                               log_time_format="%H:%M:%S", rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
