"""The one retry delay: jittered exponential backoff.

Attempt ``n`` (from 0) waits ``min(cap_s, base_s * 2**n) * U(0.5, 1)``. The jitter keeps a fleet of
cameras (or sinks, or publishers) that lost the same server from retrying in lockstep. Every retry loop
uses it, none sleeps a fixed time: camera reconnects, the frame publisher's per-instance backoff, the
inference loop after a bus error, sink retries (of the output and of Redis), webhook retries and the
console's results tail.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for consecutive failed attempts; :meth:`reset` after a success. Not thread-safe."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base_s <= cap_s, got base_s={base_s}, cap_s={cap_s}")
        self.base_s, self.cap_s = base_s, cap_s
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next_delay_s(self) -> float:
        """The delay before the next attempt; counts one more failed attempt."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return float(ceiling * self._rng.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.attempt = 0
