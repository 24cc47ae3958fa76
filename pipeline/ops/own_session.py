"""`vigil run` in a session of its own, so that whoever sends the stop signal, Vigil stops in its own order.

A service manager stops a unit by signalling its whole process group (systemd's default
``KillMode=control-group``), and so do ``timeout`` and a terminal's Ctrl-C. Ray's processes (GCS, raylet,
workers) are started by ``vigil run`` in its process group: a SIGTERM to the group killed them under the
driver, which then waited for ever to delete its Serve application. So ``vigil run`` forks first: the child
makes a new session and runs the pipeline; the parent, alone in the caller's process group, turns whatever
stop signal reaches it (SIGINT, SIGTERM, SIGHUP) into one SIGINT to the child, which stops in order (ingest,
inference, sinks, Redis) and prints its summary; it repeats that SIGINT every second until the child has
exited (one that lands where Python ignores exceptions would be lost). If the child has not exited ``grace_s``
after the first signal, the parent kills every process of the run; after the child exits, it kills whatever
the child left.
The parent exits with the child's exit status.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

import psutil

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_in_own_session(grace_s: float) -> None:
    """Fork. Returns in the child, now the leader of a new session; the parent supervises it and exits.

    Runs on without forking (returns at once) where forking is not safe: other threads already running, or gRPC
    (Ray's) already imported, whose forked copy crashes at exit.
    """
    if threading.active_count() > 1 or "grpc" in sys.modules:
        log.warning("vigil run: threads or gRPC already started: not forking into a session of its own (a SIGTERM "
                    "to the whole process group would reach Ray's processes too)")
        return
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        os.setsid()
        return
    sys.exit(_supervise(child, grace_s))


def _supervise(child: int, grace_s: float) -> int:
    """Forward stop signals to ``child`` as SIGINT; kill the run ``grace_s`` after the first; its exit status."""
    first_signal_at: list[float] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not first_signal_at:
            first_signal_at.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGINT)

    for s in STOP_SIGNALS:
        signal.signal(s, forward)
    family: set[psutil.Process] = set()
    for tick in itertools.count():
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            break
        if tick % 10 == 0:  # once a second: a process whose parent died first is an orphan, no one's descendant
            family |= _descendants(child)
            if first_signal_at:  # again: a stop that reached the child where Python swallows exceptions (a
                forward(signal.SIGINT, None)  # __del__ running) must not be lost; a stopping child ignores it
        if first_signal_at and time.monotonic() - first_signal_at[0] > grace_s:
            killed = _kill_all({*family, *_descendants(child)}, child)
            print(f"vigil run: still stopping {grace_s:.0f} s after the signal: killed it and {killed} process(es) "
                  "it had started", file=sys.stderr, flush=True)
            os.waitpid(child, 0)
            return 1
        time.sleep(0.1)
    leftovers = [p for p in family if _alive(p)]
    if leftovers:
        log.warning("vigil run: %d process(es) of the run outlived it: killing them", len(leftovers))
        _kill_all(set(leftovers), None)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says it


def _descendants(pid: int) -> set[psutil.Process]:
    try:
        return set(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return set()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_all(processes: set[psutil.Process], child: int | None) -> int:
    """SIGKILL ``processes`` (and ``child``); how many were still alive."""
    alive = [p for p in processes if _alive(p)]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if child is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    return len(alive)
