"""The Serve application as an importable target, for a KubeRay ``RayService`` or ``serve run``.

``vigil run`` builds the application itself (:mod:`pipeline.ops.runner`). On a Ray cluster that Vigil does
not start, Serve imports it instead, in one of two ways:

* ``import_path: workers.serve_app:app`` reads the config file named by ``$VIGIL_CONFIG`` (read in
  :func:`pipeline.core.config.serve_config_path`) when ``app`` is first looked up, not at import;
* ``import_path: workers.serve_app:build_app_from_args`` with ``args: {config: /etc/vigil/vigil.yaml}``
  takes the path from the Serve config (an application builder).

Either way the config's ``redis.urls`` must name the frame bus (``${VAR}`` substitution applies, so a
password comes from the pod's environment), and ``inference`` sets replicas, CPUs and GPUs per replica.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.core.config import VigilConfig, load_config, serve_config_path
from pipeline.inference.model_store import resolve_model_path
from pipeline.inference.serving import ServeSettings, build_app

__all__ = ["build_app_from_args", "build_app_from_config", "serve_settings"]

log = logging.getLogger(__name__)


def serve_settings(cfg: VigilConfig) -> ServeSettings:
    """What every replica needs, from a config whose ``redis.urls`` name the bus."""
    cfg.redis.bus_urls("a Serve application on a cluster")  # before looking for the model
    return ServeSettings.from_config(cfg, resolve_model_path(cfg.inference.model))


def build_app_from_config(path: str | Path) -> Any:
    """The bound Serve application for the config file at ``path``."""
    cfg = load_config(path)
    inf = cfg.inference
    ignored = sorted({"http_host", "http_port"} & inf.model_fields_set)
    if ignored:
        log.warning("%s: %s not used by a Serve application on a cluster: the cluster's Serve decides where it "
                    "listens (http_options of the Serve config, or `serve start --http-host/--http-port`; "
                    "a KubeRay RayService serves on 0.0.0.0:8000)", path,
                    " and ".join(f"inference.{k}" for k in ignored) + (" are" if len(ignored) > 1 else " is"))
    return build_app(serve_settings(cfg), replicas=inf.replicas, num_cpus=inf.replica_cpus, num_gpus=inf.num_gpus)


def build_app_from_args(args: dict[str, str]) -> Any:
    """Serve application builder: ``args: {config: PATH}`` in the Serve config (default ``$VIGIL_CONFIG``)."""
    path = args.get("config")
    return build_app_from_config(Path(path) if path else serve_config_path())


def __getattr__(name: str) -> Any:
    # `app` is built on first lookup, so importing this module never needs a config file.
    if name == "app":
        return build_app_from_config(serve_config_path())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
