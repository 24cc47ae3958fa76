"""The Ray Serve application: classifier replicas that pull frame batches from the bus.

Each replica loads the model once (GPU when one is usable and ``num_gpus`` > 0, else CPU) and runs
an :class:`~pipeline.inference.loop.InferenceLoop` in a background thread, pulling batches straight from
the per-camera Redis streams with a consumer group. No frame crosses a DeploymentHandle: one handle
call costs about a millisecond, which could not feed a GPU that classifies 10-20k frames/s.

The same deployment answers ``POST /classify`` (image bytes in, JSON out) through ``@serve.batch``,
so concurrent HTTP requests share model batches; every request gets exactly one answer, an error
included. ``GET /healthz`` returns the replica's loop statistics.

Model swap: ``reconfigure(user_config)`` with ``{"model": PATH}`` and/or ``{"classifiers": [...]}`` (the
``classifiers:`` entries) loads and warms the new runtime, then swaps it in between two batches; no frame is
lost (one that waits longer than ``inference.max_frame_age_ms`` meanwhile is dropped as stale and counted),
results carry the model version.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from pipeline.bus.reader import ConsumerOptions, FrameConsumer
from pipeline.core.clock import iso_utc
from pipeline.core.config import ClassifierConfig, VigilConfig
from pipeline.core.errors import VigilError
from pipeline.core.preprocess import bgr_to_rgb, resize
from pipeline.inference.http_limits import Rejected, check_pixels, check_token, read_body
from pipeline.inference.loop import InferenceLoop, LoopOptions
from pipeline.inference.precision import check_served_model
from pipeline.inference.replica_stats import ReplicaStatsRecorder
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from pipeline.results.writer import ResultWriter

log = logging.getLogger(__name__)

APP_NAME = "vigil"  # the RayService's application (k8s/); `vigil run` deploys under ``ray.app_name``
DEPLOYMENT_NAME = "classifier"


@dataclass(frozen=True)
class ServeSettings:
    """Everything a replica needs, resolved by the launcher (plain data: it crosses processes)."""

    config: dict[str, Any]  # the config's streams, redis, inference and classifiers (model_dump), never its sinks
    model_path: str
    replicas_per_machine: int = 1  # replicas sharing one machine's CPU cores (all of them in `vigil run`)

    @classmethod
    def from_config(cls, cfg: VigilConfig, model_path: Path, replicas_per_machine: int = 1) -> ServeSettings:
        """The settings of ``cfg``'s Serve application, running the model at ``model_path``."""
        cfg.redis.bus_urls("the Serve application")
        return cls(config=cfg.model_dump(mode="json", include={"streams", "redis", "inference", "classifiers"}),
                   model_path=str(model_path), replicas_per_machine=replicas_per_machine)

    @property
    def stream_ids(self) -> list[str]:
        return [str(s["id"]) for s in self.config["streams"]]


def _replica_name() -> str:
    try:
        ctx = serve.get_replica_context()
        rid = getattr(ctx, "replica_id", None)
        return str(getattr(rid, "unique_id", None) or getattr(ctx, "replica_tag", "replica"))
    except (RuntimeError, AttributeError):  # not inside a Serve replica (tests, tools)
        return f"{socket.gethostname()}-{os.getpid()}"


def _replica_grpc_on_loopback() -> None:
    """On a Ray that listens on loopback only (`vigil run`'s, see :func:`_keep_on_loopback`), keep this
    replica's inter-deployment gRPC server there too.

    Serve 2.60 starts that server on ``[::]:0`` in every replica, after the user class is built, with no
    setting to change it; Vigil never calls from one deployment into another (frames never cross a
    handle), so the server only needs to exist. On a cluster (KubeRay) the node IP is not loopback and
    nothing changes.
    """
    import ray

    if not ray.is_initialized() or ray.util.get_node_ip_address() not in ("127.0.0.1", "::1"):  # type: ignore[no-untyped-call]
        return
    from ray.serve._private import replica

    bind: Any = getattr(replica, "add_port_to_grpc_server", None)
    if bind is None or getattr(bind, "vigil_loopback", False):
        return

    def on_loopback(server: Any, address: str) -> Any:
        return bind(server, address.replace("[::]", "127.0.0.1", 1))

    on_loopback.vigil_loopback = True  # type: ignore[attr-defined]
    setattr(replica, "add_port_to_grpc_server", on_loopback)  # noqa: B010 - a module attribute of Ray's


class ClassifierReplica:
    """The deployment's class body, usable without Ray in tests (see :func:`build_app`)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        _replica_grpc_on_loopback()
        self.settings = ServeSettings(**settings)
        cfg = VigilConfig.model_validate(self.settings.config)
        self.inference = cfg.inference
        self.classifiers = tuple(cfg.classifiers)
        check_served_model(self.settings.model_path, self.inference)  # an int8 model's recorded agreement
        self.name = _replica_name()
        # The HTTP endpoint's batches follow the config too (the decorator's values are placeholders).
        self.classify_one.set_max_batch_size(self.inference.batch_size)  # type: ignore[attr-defined]
        self.classify_one.set_batch_wait_timeout_s(  # type: ignore[attr-defined]
            (self.inference.batch_window_ms if self.inference.batch_window_ms is not None else 5.0) / 1000)
        self.runtime = ModelRuntime(self.settings.model_path, self._runtime_options()).open()
        self.consumer = FrameConsumer(ConsumerOptions.from_config(cfg, self.name)).__enter__()
        writer = ResultWriter(self.consumer.clients, cfg.redis.results_maxlen)
        self._stats = ReplicaStatsRecorder(self.consumer.opts.layout, self.name, timeout_s=cfg.redis.socket_timeout_s)
        self.loop = InferenceLoop(self.runtime, self.consumer, writer,
                                  LoopOptions.from_config(self.inference, lanes=self.runtime.lanes, replica=self.name,
                                                          jpeg=cfg.redis.frame_encoding == "jpeg",
                                                          shards=len(self.consumer.opts.layout)),
                                  metrics=self._stats)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop.run, args=(self._stop,), name="inference", daemon=True)
        self._thread.start()
        log.info("replica %s: model %s (%s) on %s, %d camera stream(s)", self.name, self.runtime.name,
                 self.runtime.version, self.runtime.provider, self.consumer.stream_count)

    def _runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions.from_config(self.inference, cpu_share=self.settings.replicas_per_machine,
                                          classifiers=self.classifiers)

    # ------------------------------------------------------------------ Serve hooks
    def check_health(self) -> None:
        """Serve restarts the replica when this raises: the pull loop must be alive."""
        if not self._thread.is_alive():
            raise RuntimeError(f"inference loop of replica {self.name} stopped: {self.loop.stats.last_error}")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Swap the model or the classifiers without losing a frame: load and warm the new runtime, then swap it in
        between batches. ``{"model": PATH}`` and/or ``{"classifiers": [<classifiers[] entries>]}``."""
        path = Path(user_config.get("model") or self.runtime.model_path)
        listed = user_config.get("classifiers")
        classifiers = self.classifiers if listed is None else \
            tuple(ClassifierConfig.model_validate(c) for c in listed)
        if path == self.runtime.model_path and classifiers == self.classifiers:
            return
        check_served_model(path, self.inference)
        before = self.classifiers
        self.classifiers = classifiers
        try:
            new = ModelRuntime(path, self._runtime_options()).open()
        except BaseException:
            self.classifiers = before  # the running model and classifiers stay
            raise
        old = self.loop.swap_runtime(new)
        self.runtime = new
        old.close()
        log.info("replica %s: model %s (%s) with classifiers %s swapped in", self.name, new.name, new.version,
                 ", ".join(c.id for c in classifiers) or "none")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._stats.close()
        self.consumer.__exit__(None, None, None)
        self.runtime.close()

    def __del__(self) -> None:
        # Ray Serve calls the user class's __del__ explicitly when it shuts a replica down gracefully
        # (its only shutdown hook); finishing the current batch here leaves no frame pending.
        if hasattr(self, "_thread"):
            self.close()

    # ------------------------------------------------------------------ HTTP
    def stats(self) -> dict[str, Any]:
        """The /healthz document; times in ISO 8601 UTC."""
        stats = asdict(self.loop.stats)
        return {"replica": self.name, "model": {**self.runtime.identity.as_dict(), "provider": self.runtime.provider},
                "alive": self._thread.is_alive(), "stale_dropped": self.consumer.stale_dropped,
                **stats, "started_at": iso_utc(stats["started_at"]),
                "previous_error_at": iso_utc(stats["previous_error_at"])}

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/healthz"):
            return JSONResponse(self.stats())
        if request.method != "POST" or not path.endswith("/classify"):
            return JSONResponse({"error": "POST image bytes to /classify, or GET /healthz"}, status_code=404)
        try:
            check_token(request, self.inference)
            body = await read_body(request, self.inference)
            check_pixels(body, self.inference)
        except Rejected as r:
            headers = {"WWW-Authenticate": "Bearer"} if r.status == 401 else None
            return JSONResponse({"error": r.message}, status_code=r.status, headers=headers)
        bgr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) if body else None
        if bgr is None:
            return JSONResponse({"error": "the request body is not a PNG/JPEG/BMP/WebP/TIFF image"}, status_code=400)
        h, w = self.runtime.input_size
        try:
            result: dict[str, Any] = await self.classify_one(resize(bgr_to_rgb(np.asarray(bgr, np.uint8)), h, w))
        except VigilError as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        return JSONResponse({**result, "model": self.runtime.identity.as_dict()})

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def classify_one(self, frames: list[np.ndarray]) -> list[dict[str, Any]]:
        batch = np.stack(frames)
        result = await asyncio.get_running_loop().run_in_executor(None, self.loop.classify, batch)
        return [f.as_dict() for f in result]


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Start a Ray of this machine's own (``address`` None), or join the cluster at ``address``.

    Ray runs its workers at nice 15 by default so that its own daemons stay responsive; here the
    workers (the replicas) *are* the workload, and at nice 15 they lose the CPU to Redis and the
    ingest workers sharing the machine (measured: 224 -> 232 frames/s on 2 cores). Serve's
    controller loop runs every second instead of every 0.1 s: nothing here needs faster control.
    A cluster keeps the settings it was started with: joining one, none of these is passed.
    """
    import ray

    if address is not None and num_cpus is not None:
        raise VigilError(f"--ray-cpus sizes a Ray of vigil's own; the cluster at {address} has its own size "
                         "(leave --ray-cpus out, or the address to start a Ray on this machine)")
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    if address is None:
        _keep_on_loopback()
        # Started here, Ray is private to this machine's pipeline: nobody scrapes its own metrics (Vigil
        # exports its own) and no task waits for a pre-started worker; both cost CPU the model needs.
        # address="local": a new Ray even where $RAY_ADDRESS names a cluster (that one is joined by name).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _node_ip_address="127.0.0.1",
                 _system_config={"worker_niceness": 0, "enable_metrics_collection": False,
                                 "enable_worker_prestart": False, "prestart_worker_first_driver": False},
                 runtime_env={"env_vars": {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1.0"}})
    else:
        host = _reachable_head(address)
        if host is not None and _is_loopback(host):
            _keep_on_loopback()  # else Ray replaces a loopback head address by this machine's outward one
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False,
                     _node_ip_address="127.0.0.1" if host is not None and _is_loopback(host) else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise VigilError(f"cannot join the Ray cluster at {address}: {exc}. Is its head running (`ray start "
                             "--head`)? A cluster with token authentication needs the same RAY_AUTH_MODE=token and "
                             "token (RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) here as on its nodes. To start a Ray on "
                             "this machine instead, leave ray.address, $RAY_ADDRESS and --ray-address unset") from exc
    # Ray installs a crash handler over SIGTERM that aborts the process: keep the caller's (vigil run stops
    # in order on SIGTERM), also for a signal that comes while the rest of the pipeline is still starting.
    for s, handler in previous.items():
        if handler is not None:
            signal.signal(s, handler)


def _reachable_head(address: str, timeout_s: float = 5.0) -> str | None:
    """The host of a ``HOST:PORT`` head address once something answers there (None for ``auto``, ``ray://``).

    Ray waits for an unreachable head for ever, retrying silently; this says what is wrong in seconds.
    """
    if address == "auto" or "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise VigilError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto (the head's GCS "
                         "address is printed by `ray start --head`, e.g. 10.0.0.5:6379)")
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise VigilError(f"no Ray head answers at {address} ({exc.strerror or exc}): start it with `ray start "
                         "--head`, or correct ray.address / $RAY_ADDRESS / --ray-address") from exc
    return host


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def serve_running() -> bool:
    """Whether the Ray that this process joined already runs Serve (its controller actor exists)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def _keep_on_loopback() -> None:
    """Make the Ray that `vigil run` starts listen on 127.0.0.1 only: nothing off this machine talks to it.

    Ray binds its GCS, raylet, workers and agents to the node's IP, and it replaces a node IP of
    127.0.0.1 by the machine's outward address unless it runs as a single machine that forms no
    cluster, which is what ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` declares (Ray reads it once, at its
    import, into ``ray_constants.ENABLE_RAY_CLUSTER``). A test lists every listening socket of the
    process tree, so an upgrade of Ray that changes this fails there.
    """
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def build_app(settings: ServeSettings, replicas: int, num_cpus: float, num_gpus: float,
              user_config: dict[str, Any] | None = None) -> Any:
    """The Serve application for ``serve.run``: ``replicas`` copies of :class:`ClassifierReplica`.

    ``user_config`` ``{"model": PATH}`` reaches :meth:`ClassifierReplica.reconfigure` (the model swap).
    """
    deployment = serve.deployment(
        ClassifierReplica, name=DEPLOYMENT_NAME, num_replicas=replicas, user_config=user_config,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
        health_check_period_s=5, health_check_timeout_s=30, graceful_shutdown_timeout_s=30,
        max_ongoing_requests=256)
    return deployment.bind(json.loads(json.dumps(asdict(settings))))  # type: ignore[attr-defined]
