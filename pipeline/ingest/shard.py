"""Which ingest worker owns which camera: ``--shard i/n``.

Camera ``c`` belongs to shard ``sha1("vigil-shard:" + c) mod n``, so each camera has exactly one
owner for any ``n``; ``auto/n`` takes ``i`` from a Kubernetes StatefulSet pod's host name ``name-N``
(read by the CLI and passed down).
"""

from __future__ import annotations

import hashlib
import re

from pipeline.core.config import StreamConfig, VigilConfig
from pipeline.core.errors import ConfigError


def ordinal_from_hostname(hostname: str) -> int:
    """The StatefulSet ordinal ``N`` of a pod host name ``<set-name>-N``."""
    m = re.search(r"-(\d+)$", hostname.split(".", 1)[0])
    if not m:
        raise ConfigError(f"host name {hostname!r} does not end in -N (a StatefulSet ordinal); "
                          "pass --shard i/n explicitly")
    return int(m.group(1))


def parse_shard(text: str, hostname: str | None = None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``; ``"auto/n"`` takes ``i`` from a StatefulSet ``hostname``."""
    m = re.fullmatch(r"\s*(\d+|auto)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ConfigError(f"--shard {text!r}: expected i/n (e.g. 0/4) or auto/n")
    count = int(m.group(2))
    if m.group(1) == "auto":
        if hostname is None:
            raise ConfigError("--shard auto/n needs the pod's host name")
        index = ordinal_from_hostname(hostname)
    else:
        index = int(m.group(1))
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= i < n (got i={index}, n={count})")
    return index, count


def shard_of(stream_id: str, count: int) -> int:
    # Salted differently from the Redis pinning so that shard i's cameras spread over all instances.
    digest = hashlib.sha1(f"vigil-shard:{stream_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % count


def owned_streams(cfg: VigilConfig, shard: tuple[int, int]) -> list[StreamConfig]:
    index, count = shard
    return [s for s in cfg.streams if shard_of(s.id, count) == index]
