"""`vigil run`: the whole pipeline on one machine, in one context manager.

Start order (stop order is the reverse): Redis (embedded when ``redis.urls`` is empty) -> a local Ray
instance with the Serve application -> the sink worker -> the ingest worker, whose HTTP endpoint
serves ``/metrics`` for everything (ingest, sinks, and the pipeline accounting read from Redis).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.console.server import ConsoleServer
from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import ClassifierConfig, VigilConfig
from pipeline.core.errors import BusError, ModelContractError, ModelError, UnsupportedServerError, VigilError
from pipeline.inference.classifiers import check_classifier
from pipeline.inference.contract import load_onnx, read_contract
from pipeline.inference.model_store import resolve_model_path, sha256_file
from pipeline.inference.precision import check_served_model
from pipeline.inference.providers import cuda_device_count
from pipeline.inference.serving import ServeSettings, build_app, init_ray, serve_running
from pipeline.ops.embedded_redis import EmbeddedRedis
from pipeline.ops.ingest_service import IngestService
from pipeline.ops.metrics import SinkMetrics
from pipeline.ops.pipeline_metrics import PipelineCollector
from pipeline.ops.ports import check_ports_free
from pipeline.ops.sink_service import SinkService
from pipeline.results.classifier_states import StateSource
from pipeline.results.recent import read_recent

log = logging.getLogger(__name__)


@dataclass
class CameraRow:
    """One line of the live table."""

    stream_id: str
    state: str
    health: list[str]  # the picture's active conditions (frozen, dark, blurred, moved): empty when healthy
    sampling_fps: tuple[float, float]  # (effective, configured): lower under overload
    fps_in: float
    fps_out: float
    age_p95_s: float | None
    dropped: int
    stale: int  # of dropped: older than inference.max_frame_age_ms when a replica would read them
    dead_lettered: int
    last_result: str = "-"  # latest top-1 label and scene
    error: str = ""  # why the camera is not live (its last error), "" while it is


class LocalPipeline:
    """Redis + Ray Serve + sink worker + ingest worker for one config, on this machine."""

    def __init__(self, cfg: VigilConfig, *, ray_cpus: int | None = None, ray_address: str | None = None) -> None:
        self.cfg = cfg
        self.ray_cpus, self.ray_address = ray_cpus, ray_address
        self.registry = CollectorRegistry()
        self.model_path: Path = resolve_model_path(cfg.inference.model)
        self._classifiers = list(cfg.classifiers)  # what the replicas run now (swap_classifier changes it)
        self._redis: EmbeddedRedis | None = None
        self._collector: PipelineCollector | None = None
        self.sink_metrics: SinkMetrics | None = None
        self.ingest: IngestService | None = None
        self.sinks: SinkService | None = None
        self.console: ConsoleServer | None = None
        self._ray_started = False
        self._serve_started = False  # Serve started by this pipeline (on a cluster, it may have run before)
        self._app_deployed = False  # the application ray.app_name is ours: deleted on exit
        self._last: dict[str, tuple[float, float, float]] = {}  # stream -> (t, published, inferred)
        self.totals: dict[str, dict[str, int]] = {}  # per camera, once stopped (see camera_totals)
        self.stopping = False  # True from the first line of __exit__: a stop signal must not interrupt it

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalPipeline:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        contract = read_contract(load_onnx(self.model_path), str(self.model_path))  # fail fast, before Ray
        check_served_model(self.model_path, self.cfg.inference)  # an int8 model's recorded agreement
        # Every port this process will listen on, first. On a cluster, Serve's HTTP proxy is the cluster's.
        check_ports_free(self.cfg, serve_http=self.ray_address is None, console=True)
        log.info("vigil run: model %s (%dx%d input, %d classes)", self.model_path, contract.width, contract.height,
                 contract.num_classes)
        urls = list(self.cfg.redis.urls)
        if not urls:
            self._redis = EmbeddedRedis().__enter__()
            urls = [self._redis.url]
            self.cfg = self.cfg.model_copy(update={"redis": self.cfg.redis.model_copy(update={"urls": urls})})
        try:  # fail fast, before Ray starts: every server answers, and is one Vigil can work with
            BusLayout.from_config(self.cfg.redis).check_servers(self.cfg.redis.socket_timeout_s, must_answer=True)
        except UnsupportedServerError:
            raise
        except BusError as exc:
            raise BusError(f"{exc}; start that Redis, or leave redis.urls empty and vigil run starts its own") \
                from exc
        t0 = time.monotonic()
        self._start_inference()
        log.info("vigil run: inference ready %.1f s after Ray started; starting the sinks and the cameras",
                 time.monotonic() - t0)
        self._collector = PipelineCollector(BusLayout.from_config(self.cfg.redis), self._camera_ids,
                                            self.cfg.redis.socket_timeout_s,
                                            states=StateSource.from_config(self.cfg))
        self.registry.register(self._collector)
        self.sink_metrics = SinkMetrics(self._camera_ids, self.registry)
        if self.cfg.console.enabled:  # before the cameras: results start flowing with them, last
            self.console = ConsoleServer(self.cfg, self._collector.clients).__enter__()
        self.sinks = SinkService(self.cfg, consumer="vigil-run", observer=self.sink_metrics).__enter__()
        self.ingest = IngestService(self.cfg, frame_size=(contract.height, contract.width),
                                   registry=self.registry).__enter__()
        log.info("vigil run: %d camera(s), %d replica(s), metrics on %s:%d, HTTP %s%s", len(self.cfg.streams),
                 self.cfg.inference.replicas, self.cfg.metrics.host, self.ingest.http_port, self._http_where(),
                 f", console {self.console.url}" if self.console is not None else "")

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stopping = True
        if self.console is not None:
            self.console.__exit__(None, None, None)
            self.console = None
        if self.ingest is not None:
            self.ingest.__exit__(None, None, None)
            self.ingest = None
        if self._ray_started:
            self._stop_inference()
        if self.sinks is not None:  # after inference: results written while stopping still reach sinks
            self.sinks.__exit__(None, None, None)
            self.sinks = None
        if self._collector is not None:
            self.totals = self.camera_totals()  # everything has stopped: the final figures, read before Redis goes
            self.registry.unregister(self._collector)
            self._collector.close()
            self._collector = None
        if self._redis is not None:
            self._redis.__exit__(None, None, None)
            self._redis = None

    def _start_inference(self) -> None:
        """Start (or join) Ray and Serve, then deploy ``ray.app_name`` (never over an application it finds)."""
        from ray import serve

        inf, app = self.cfg.inference, self.cfg.ray.app_name
        log.info("vigil run: %s…", f"joining the Ray cluster at {self.ray_address}" if self.ray_address
                 else "starting Ray on this machine (about 15-25 s on 2 cores)")
        if self.ray_address is not None and not self.cfg.redis.urls:
            log.warning("vigil run: redis.urls is empty, so the replicas read frames from the Redis that vigil "
                        "run starts on 127.0.0.1: replicas on other machines of the cluster cannot reach it; "
                        "list a Redis they can reach under redis.urls")
        t0 = time.monotonic()
        init_ray(self.ray_cpus, self.ray_address)
        self._ray_started = True
        if self.ray_address is None or not serve_running():
            serve.start(http_options={"host": inf.http_host, "port": inf.http_port})
            self._serve_started = True
        else:
            taken = serve.status().applications
            if app in taken:
                raise VigilError(f"the Ray cluster at {self.ray_address} already runs a Serve application named "
                                 f"{app!r} (another vigil run, or a RayService): vigil run does not replace it; set "
                                 "ray.app_name to a name of its own")
            log.info("vigil run: the cluster's Serve proxy serves HTTP with its own http_options "
                     "(inference.http_host/http_port apply only to a Serve that vigil run starts)")
        log.info("vigil run: Ray up in %.1f s; starting %d inference replica(s) (device: %s) as Serve application "
                 "%r…", time.monotonic() - t0, inf.replicas, inf.device, app)
        self._app_deployed = True  # from here on, whatever serve.run left of the application is ours to delete
        self._deploy(self.model_path)

    def _stop_inference(self) -> None:
        """Delete the application this pipeline deployed, then leave (or stop) Ray; nothing else it finds."""
        import ray
        from ray import serve

        # Delete the app (replicas finish their batch), then stop Ray. serve.shutdown() would make
        # the raylet print a spurious "ServeController.graceful_shutdown failed" on stdout.
        try:
            if self._app_deployed:
                serve.delete(self.cfg.ray.app_name)
            # On a cluster, Serve goes too if this pipeline started it and nothing else uses it now.
            if self.ray_address is not None and self._serve_started and not serve.status().applications:
                serve.shutdown()  # type: ignore[no-untyped-call]
        finally:  # the driver leaves Ray (on a cluster) or stops it, even when the cluster did not answer
            ray.shutdown()
            self._ray_started = self._serve_started = self._app_deployed = False

    def _http_where(self) -> str:
        """Where POST /classify is served, for the log."""
        prefix = self.cfg.ray.route_on(self.ray_address is not None).rstrip("/")
        inf = self.cfg.inference
        if self.ray_address is None or self._serve_started:
            return f"on {inf.http_host}:{inf.http_port}{prefix}/classify"
        return f"on the cluster's Serve proxy at {prefix}/classify"

    def _camera_ids(self) -> dict[str, tuple[str, ...]]:
        """The cameras now, each with its zones: the ingest worker's (with the console's runtime changes), else
        the config's."""
        return {s.id: s.zone_ids for s in (self.ingest.cfg.streams if self.ingest is not None else self.cfg.streams)}

    def camera_totals(self) -> dict[str, dict[str, int]]:
        """Per camera: frames published, classified, dropped, dead-lettered, and still queued (``backlog``: not
        read yet; ``pending``: read, no result yet), from the pipeline's accounting in Redis; the identity
        published = classified + dropped + dead_lettered + backlog + pending holds at any time."""
        m = self.samples()

        def per_camera(name: str) -> dict[str, float]:
            out: dict[str, float] = {}
            for labels, v in m.get(name, {}).items():
                out[labels[0]] = out.get(labels[0], 0.0) + v
            return out

        published = per_camera("vigil_pipeline_published_frames_total")
        inferred = per_camera("vigil_pipeline_inferred_frames_total")
        dropped = per_camera("vigil_pipeline_dropped_frames_total")
        dead = per_camera("vigil_pipeline_dead_lettered_frames_total")
        queue = m.get("vigil_pipeline_queue_frames", {})
        return {s.id: {"published": int(published.get(s.id, 0)), "classified": int(inferred.get(s.id, 0)),
                       "dropped": int(dropped.get(s.id, 0)), "dead_lettered": int(dead.get(s.id, 0)),
                       "backlog": int(queue.get((s.id, "backlog"), 0)), "pending": int(queue.get((s.id, "pending"), 0))}
                for s in self.cfg.streams}

    @property
    def replica_gpus(self) -> float:
        """``inference.num_gpus``; when it is 0 with device auto/cuda and this machine has GPUs, share them.

        Ray hides GPUs from actors that reserve none, so without this a replica on a GPU machine
        would silently run on the CPU. On a cluster, set ``inference.num_gpus`` to use its GPUs.
        """
        inf = self.cfg.inference
        if inf.num_gpus > 0 or inf.device == "cpu" or self.ray_address is not None:
            return inf.num_gpus  # on a cluster the replicas' machines are not this one: num_gpus says
        count = cuda_device_count()
        if count == 0:
            return 0.0
        share = min(1.0, count / inf.replicas)
        log.info("vigil run: %d GPU(s) here and inference.num_gpus is 0: giving each of the %d replica(s) %.2f GPU",
                 count, inf.replicas, share)
        return share

    # ------------------------------------------------------------------ status
    @property
    def redis_pid(self) -> int | None:
        """The embedded redis-server's process id (None with an external Redis): for operators' tools and tests."""
        return self._redis.pid if self._redis is not None else None

    @property
    def metrics_port(self) -> int:
        return self.ingest.http_port if self.ingest is not None else 0

    def samples(self) -> dict[str, dict[tuple[str, ...], float]]:
        """Current metric samples by name -> label values -> value (for the table and tests)."""
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for family in self.registry.collect():
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(s.labels.values())] = s.value
        return out

    def rows(self) -> list[CameraRow]:
        status: dict[str, Any] = self.ingest.status() if self.ingest is not None else {"cameras": []}
        states = {c["id"]: c["state"] for c in status["cameras"]}
        errors = {c["id"]: c["last_error"] or "" for c in status["cameras"]}
        sampling = {c["id"]: (c["fps"]["effective"], c["fps"]["configured"]) for c in status["cameras"]}
        health = {c["id"]: list(c["health"]) for c in status["cameras"]}
        m = self.samples()
        published = m.get("vigil_ingest_published_frames_total", {})
        inferred = m.get("vigil_pipeline_inferred_frames_total", {})
        dropped = m.get("vigil_pipeline_dropped_frames_total", {})
        dead = m.get("vigil_pipeline_dead_lettered_frames_total", {})
        now = time.monotonic()
        latest = self._latest_results()
        rows = []
        for s in self.ingest.cfg.streams if self.ingest is not None else self.cfg.streams:  # with runtime changes
            pub, inf = published.get((s.id,), 0.0), inferred.get((s.id,), 0.0)
            t0, pub0, inf0 = self._last.get(s.id, (now, pub, inf))
            dt = max(1e-6, now - t0)
            self._last[s.id] = (now, pub, inf)
            ages = self.sink_metrics.recent_ages(s.id) if self.sink_metrics is not None else []
            p95 = sorted(ages)[int(0.95 * (len(ages) - 1))] if ages else None
            rows.append(CameraRow(
                stream_id=s.id, state=states.get(s.id, "-"), health=health.get(s.id, []),
                sampling_fps=sampling.get(s.id, (s.fps, s.fps)),
                fps_in=(pub - pub0) / dt if dt > 1e-3 else 0.0, fps_out=(inf - inf0) / dt if dt > 1e-3 else 0.0,
                age_p95_s=p95, dropped=int(sum(v for k, v in dropped.items() if k[0] == s.id)),
                stale=int(dropped.get((s.id, "stale"), 0)), dead_lettered=int(dead.get((s.id,), 0)),
                last_result=latest.get(s.id, "-"), error=errors.get(s.id, "")))
        return rows

    def _latest_results(self) -> dict[str, str]:
        """The newest result's "label (score) / scene" per camera, from the tail of the results streams."""
        if self._collector is None:
            return {}
        out: dict[str, str] = {}
        for stream_id, recent in read_recent(self._collector.clients, [s.id for s in self.cfg.streams],
                                       20 * max(1, len(self.cfg.streams))).items():
            r = recent.latest
            top = r.classification.top1 if r is not None else None
            if r is not None and top is not None:
                out[stream_id] = f"{top.name.split(',')[0]} ({top.score:.2f}) / {r.scene or '-'}"
        return out

    # ------------------------------------------------------------------ deploying, model swap
    def _deploy(self, model_path: Path, user_config: dict[str, Any] | None = None) -> None:
        """Run (or redeploy) the Serve application with the model at ``model_path``."""
        from ray import serve

        inf = self.cfg.inference
        # On a machine of our own, the replicas share its cores; joining a cluster, Ray places them.
        settings = ServeSettings.from_config(self.cfg, model_path,
                                             replicas_per_machine=inf.replicas if self.ray_address is None else 1)
        serve.run(build_app(settings, replicas=inf.replicas, num_cpus=inf.replica_cpus, num_gpus=self.replica_gpus,
                            user_config=user_config), name=self.cfg.ray.app_name,
                  route_prefix=self.cfg.ray.route_on(self.ray_address is not None))

    def swap_model(self, path: Path | str) -> None:
        """Deploy another model while frames flow; returns once the Serve application runs it.

        The application is redeployed with ``user_config={"model": PATH}``: replicas that Serve
        keeps get :meth:`~pipeline.inference.serving.ClassifierReplica.reconfigure` (load, warm, swap between
        two batches); replicas that it replaces (a rolling update) finish their batch before they
        stop, and whatever they left pending is reclaimed by the new ones, so no frame is lost.
        Results carry the model name and version that classified them.
        """
        if not self._ray_started:
            raise ModelError("the pipeline is not running; swap_model() needs `with LocalPipeline(...)`")
        new_path = resolve_model_path(path)
        new, old = (read_contract(load_onnx(p), str(p)) for p in (new_path, self.model_path))
        if (new.height, new.width) != (old.height, old.width):
            raise ModelContractError(f"{new_path} takes {new.height}x{new.width} frames but ingest resizes to "
                                     f"{old.height}x{old.width}; restart `vigil run` to change the input size")
        check_served_model(new_path, self.cfg.inference)
        self._deploy(new_path, user_config=self._swap_config(model=new_path))
        log.info("vigil run: model swapped from %s to %s", self.model_path, new_path)
        self.model_path = new_path

    def swap_classifier(self, classifier_id: str, path: Path | str) -> None:
        """Serve another model for one of the ``classifiers:`` (a new version of the same classes) while frames flow,
        as :meth:`swap_model` does; the replicas check it first (classes, the serving model it was trained on), and a
        refused one leaves the running classifiers as they were."""
        if not self._ray_started:
            raise ModelError("the pipeline is not running; swap_classifier() needs `with LocalPipeline(...)`")
        ids = [c.id for c in self._classifiers]
        if classifier_id not in ids:
            raise ModelError(f"no classifier {classifier_id!r} (classifiers: {', '.join(ids) or 'none'})")
        check_classifier(self._classifiers[ids.index(classifier_id)].model_copy(update={"model": str(path)}),
                         ids.index(classifier_id), load_onnx(Path(path)), sha256_file(self.model_path))
        swapped = [c.model_copy(update={"model": str(path)}) if c.id == classifier_id else c for c in self._classifiers]
        self._deploy(self.model_path, user_config=self._swap_config(classifiers=swapped))
        log.info("vigil run: classifier %s now runs %s", classifier_id, path)
        self._classifiers = swapped

    def _swap_config(self, *, model: Path | None = None,
                     classifiers: list[ClassifierConfig] | None = None) -> dict[str, Any]:
        """The replicas' ``user_config``: the model and the classifiers now, both (a replica Serve starts anew takes
        them from here, not from the settings it was deployed with)."""
        return {"model": str(model or self.model_path),
                "classifiers": [c.model_dump(mode="json") for c in (classifiers or self._classifiers)]}
