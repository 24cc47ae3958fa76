"""The environment: the one place Vigil reads ``os.environ`` (and ``${VAR}`` substitution in config strings)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.core.config.schema import VigilConfig


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where downloaded/exported models live: ``$VIGIL_CACHE_DIR`` or ``~/.cache/vigil``."""
    env = os.environ if environ is None else environ
    if env.get("VIGIL_CACHE_DIR"):
        return Path(env["VIGIL_CACHE_DIR"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vigil"


def default_engine_cache(environ: Mapping[str, str] | None = None) -> Path:
    """Where TensorRT engines are cached unless ``inference.gpu.tensorrt_cache_dir`` says: ``<cache>/tensorrt``."""
    return cache_dir(environ) / "tensorrt"


def log_level(environ: Mapping[str, str] | None = None) -> str:
    """``$VIGIL_LOG_LEVEL`` (default INFO)."""
    env = os.environ if environ is None else environ
    return env.get("VIGIL_LOG_LEVEL", "INFO").upper()


def ray_address(cfg: VigilConfig, flag: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The Ray cluster `vigil run` joins: ``--ray-address``, else ``$RAY_ADDRESS``, else ``ray.address``.

    None: `vigil run` starts a Ray of its own. An empty flag or variable counts as unset.
    """
    env = os.environ if environ is None else environ
    return flag or env.get("RAY_ADDRESS") or cfg.ray.address or None


def serve_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file a Serve application built by ``workers.serve_app`` reads: ``$VIGIL_CONFIG``.

    Set on the Ray pods of a KubeRay ``RayService`` (``import_path: workers.serve_app:app``).
    """
    env = os.environ if environ is None else environ
    value = env.get("VIGIL_CONFIG", "")
    if not value:
        raise ConfigError("VIGIL_CONFIG is not set: point it at the Vigil YAML config that the Serve "
                          "application (workers.serve_app:app) should read")
    return Path(value).expanduser()


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``${VAR}`` / ``${VAR:-default}``; return the result and the names that were unset."""
    missing: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _VAR.sub(repl, value), missing
