"""Vigil's one typed configuration: the only module that reads YAML files and environment variables.

A config file is validated into :class:`VigilConfig`, a pydantic tree with ``extra="forbid"`` at
every level, so a typo is an error rather than a silently ignored key. Each process gets its own
typed sub-config (``cfg.ingest``, ``cfg.inference``, ...). ``${VAR}`` and ``${VAR:-default}`` in any
string are replaced from the environment before validation; ``$${`` escapes a literal ``${``.

:func:`load_config` raises :class:`~pipeline.core.errors.ConfigError` listing *every* problem as
``path: message (line N)``, e.g. ``streams[2].fps: must be > 0 (line 14)``. Values are never echoed
in messages because they may be secrets.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from pipeline.core.config_base import ID_PATTERN, BackoffOptions
from pipeline.core.config_base import Strict as _Strict
from pipeline.core.errors import ConfigError
from pipeline.core.health_config import HealthConfig
from pipeline.core.redact import redact_url
from pipeline.core.redis_config import RedisConfig
from pipeline.core.sink_config import SinkConfig, sink_name

# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


ResizePolicy = Literal["squash", "center_crop", "letterbox"]
#: URL schemes a camera may use (OpenCV's FFmpeg backend opens them); a URL without one is a local file.
SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")


class StreamConfig(_Strict):
    """One camera (or file) that ingest reads."""

    id: Annotated[str, Field(pattern=ID_PATTERN, description="Unique id; used in Redis keys and metrics.")]
    url: Annotated[str, Field(min_length=1, description="rtsp://, rtsps://, http(s)://, file path, /dev/videoN")]
    fps: Annotated[float, Field(gt=0, le=120, description="Frames per second sampled for inference.")] = 5.0
    resize: ResizePolicy = "squash"
    transport: Literal["tcp", "udp"] = "tcp"
    loop: bool = Field(default=False, description="Loop a local file (paced at its native fps).")
    keyframes_only: bool = Field(default=False, description="Decode only keyframes (saves CPU at low fps).")
    health: HealthConfig = Field(default_factory=HealthConfig, description=(
        "This camera's health checks: the top-level health: section, with the keys set here overriding it."))

    @field_validator("url")
    @classmethod
    def _supported_source(cls, url: str) -> str:
        scheme, sep, _ = url.partition("://")
        if sep and scheme.lower() not in SOURCE_SCHEMES:
            raise ValueError(f"{redact_url(url)!r}: unsupported scheme {scheme + '://'!r}; use one of "
                             f"{', '.join(s + '://' for s in SOURCE_SCHEMES)}, a local file path or /dev/videoN")
        return url

    def redacted_url(self) -> str:
        return redact_url(self.url)


class IngestConfig(BackoffOptions):
    """Timeouts and backoff of the ingest worker."""

    open_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    read_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    stall_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    max_failures: Annotated[int, Field(ge=0, description=(
        "A camera that fails with the same permanent error (a file that is not a video, credentials "
        "rejected, no stream at that path) this many times in a row goes to `failed`; transient errors "
        "(network, timeouts) are retried for ever. 0 = never give up."))] = 3


class GpuOptions(_Strict):
    """onnxruntime options that only matter on the CUDA/TensorRT execution providers."""

    device_id: Annotated[int, Field(ge=0)] = 0
    io_binding: bool = Field(default=True, description="Bind inputs/outputs to device memory.")
    prefer_nhwc: bool = Field(default=True, description="CUDA EP NHWC kernels (faster convs on tensor cores).")
    cuda_graphs: bool = Field(default=False, description="Capture a CUDA graph per batch shape.")
    tensorrt: bool = Field(default=False, description="Try the TensorRT EP before CUDA.")
    tensorrt_fp16: bool = True
    tensorrt_cache_dir: str | None = Field(default=None, description=(
        "Engine cache: a folder per model, GPU and TensorRT build (default: <model cache>/tensorrt)."))


class InferenceConfig(_Strict):
    """The model runtime and the Serve deployment around it."""

    model: str | None = Field(default=None, description="ONNX file; default: `vigil models fetch` cache.")
    labels: str | None = Field(default=None, description="Labels file; default: metadata or beside model.")
    scene_map: str | None = Field(default=None, description="Scene map YAML; default: built-in ImageNet map.")
    scene_model: str | None = Field(default=None, description="ONNX scene classifier used instead of the map.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    batch_window_ms: Annotated[float | None, Field(ge=0, le=10_000, description=(
        "How long a batch waits after its first frame for more. Default: 20 with one lane (GPU: fuller "
        "batches are cheaper per frame), 0 with several CPU lanes (a smaller batch is not slower per frame "
        "there, so waiting would only add latency)."))] = None
    replicas: Annotated[int, Field(ge=1, le=256)] = 1
    num_gpus: Annotated[float, Field(ge=0, le=8)] = 0.0
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    replica_cpus: Annotated[float, Field(gt=0, le=256, description="Ray CPUs reserved per replica.")] = 1.0
    max_frame_age_ms: Annotated[float, Field(gt=0, le=3_600_000, description=(
        "A frame that waited longer than this (since it entered Redis) when a replica would read it is not "
        "classified but dropped as `stale` and counted: results stay fresh when cameras offer more than "
        "inference takes. Frames reclaimed from a crashed replica are classified whatever their age."))] = 2000.0
    claim_idle_s: Annotated[float, Field(gt=0, description="Reclaim frames pending this long.")] = 30.0
    max_deliveries: Annotated[int, Field(ge=1, description="Dead-letter after this many tries.")] = 3
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535, description="Serve HTTP (POST /classify).")] = 8000
    http_max_body_mb: Annotated[float, Field(gt=0, le=1024, description=(
        "Largest POST /classify body; a larger one is refused (413) without being read."))] = 20.0
    http_max_pixels: Annotated[int, Field(ge=1, description=(
        "Largest image POST /classify decodes, width x height, checked from its header (413)."))] = 40_000_000
    http_token: Annotated[str | None, Field(min_length=16, description=(
        "Bearer token POST /classify requires (write ${VAR} to keep it out of the file); unset: none."))] = None
    intra_op_threads: Annotated[int, Field(ge=0, description="0 = onnxruntime default.")] = 0
    lanes: Annotated[int, Field(ge=0, le=256, description=(
        "Threads that classify a replica's batch side by side, each an equal share of it on one core. "
        "0 = auto: on CPU one per usable core (shared among the replicas of `vigil run`); on GPU 1."))] = 0
    decode_threads: Annotated[int, Field(ge=0, le=64, description=(
        "Threads that decode a batch's JPEG frames side by side (redis.frame_encoding: jpeg; about 0.4 ms a "
        "frame on one core, 200 ms for a GPU batch of 512 on one thread). 0 = auto: on one lane (GPU) one "
        "per usable core, up to 8; with several CPU lanes 1 (each lane decodes its own share)."))] = 0
    reader_threads: Annotated[int, Field(ge=0, le=64, description=(
        "On one lane (GPU), threads that read the next batches from Redis while the model classifies, each "
        "from its own share of the bus's shards (redis.urls instances or cluster shards), so reading keeps up "
        "with a GPU. 0 = auto: one per shard, up to 4; with several CPU lanes each lane reads its own."))] = 0
    gpu: GpuOptions = Field(default_factory=GpuOptions)


class RayConfig(_Strict):
    """Where `vigil run` runs its inference replicas: a Ray of its own, or an existing Ray cluster."""

    address: str | None = Field(default=None, description=(
        "An existing Ray cluster: its head's HOST:PORT (GCS), ray://HOST:10001 (Ray Client) or `auto` (the "
        "cluster this machine belongs to). $RAY_ADDRESS and `vigil run --ray-address` set it too. Unset: "
        "`vigil run` starts a Ray of its own on this machine and stops it on exit."))
    app_name: str = Field(default="vigil-run", pattern=ID_PATTERN, description=(
        "The Serve application `vigil run` deploys, and deletes on exit. On a cluster no other application "
        "may have this name (the RayService's is `vigil`): `vigil run` refuses to start rather than replace it."))
    route_prefix: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9_./-]*$", description=(
        "The application's HTTP route (POST <prefix>/classify). Default: `/` on a Ray of its own, "
        "`/<app_name>` on a cluster (beside the cluster's other applications)."))

    def route_on(self, attached: bool) -> str:
        """The route prefix of the application, on a cluster (``attached``) or on a Ray of its own."""
        if self.route_prefix is not None:
            return self.route_prefix
        return f"/{self.app_name}" if attached else "/"


class MetricsConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description=(
        "Every process that serves /metrics reads this; give each worker on one host its own with "
        "--metrics-port. 0 picks a free port."))] = 9100


class ConsoleConfig(_Strict):
    """The web console and REST API (``vigil run``, ``vigil console``); see :mod:`pipeline.console`."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="0 picks a free port.")] = 8080
    token: SecretStr | None = Field(default=None, description=(
        "Bearer token every change needs (write ${VAR}; at least 16 characters); unset or empty: the "
        "console is read-only."))
    token_for_reads: bool = Field(default=False, description="Ask for the token on reads too.")
    preview_width: Annotated[int, Field(ge=64, le=3840, description=(
        "Width of the camera pictures ingest keeps for the console (height follows the aspect)."))] = 640
    preview_fps: Annotated[float, Field(gt=0, le=10, description="Pictures per camera and second, at most.")] = 1.0
    preview_ttl_s: Annotated[float, Field(gt=0, description=(
        "How long a picture stays in Redis: a camera that stops delivering shows none after this."))] = 10.0


    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None or not token.get_secret_value():
            return None  # "${CONSOLE_TOKEN:-}" where the variable is unset: no token, a read-only console
        if len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (use a random token: openssl rand -hex 24)")
        return token


class VigilConfig(_Strict):
    """The whole configuration file."""

    def with_metrics_port(self, port: int | None) -> VigilConfig:
        """This config with /metrics on ``port`` (a worker's ``--metrics-port``); unchanged for None."""
        if port is None:
            return self
        return self.model_copy(update={"metrics": self.metrics.model_copy(update={"port": port})})

    streams: list[StreamConfig] = Field(default_factory=list)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    sinks: list[SinkConfig] = Field(default_factory=list)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)

    @model_validator(mode="after")
    def _streams_inherit_health(self) -> VigilConfig:
        """Each stream's ``health:`` is the top-level one with the keys the stream set itself on top."""
        streams = [s.model_copy(update={"health": self.health.model_copy(
            update={k: getattr(s.health, k) for k in s.health.model_fields_set})}) for s in self.streams]
        object.__setattr__(self, "streams", streams)  # frozen: this validator completes the value
        return self

    @field_validator("sinks")
    @classmethod
    def _unique_sink_names(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        names = [sink_name(s, i) for i, s in enumerate(sinks)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sink name(s) {', '.join(dup)} used twice; give each sink a unique name")
        return sinks

    @field_validator("streams")
    @classmethod
    def _unique_ids(cls, streams: list[StreamConfig]) -> list[StreamConfig]:
        seen: set[str] = set()
        for s in streams:
            if s.id in seen:
                raise ValueError(f"stream id {s.id!r} is used twice; ids must be unique")
            seen.add(s.id)
        return streams


# --------------------------------------------------------------------------------------------------
# Environment (the only place Vigil reads os.environ)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``("streams", 2, "fps")`` -> ``streams[2].fps``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _node_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    """Record the 1-based line of every mapping key / sequence item, to point errors at the file."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, str(key_node.value))
            _node_lines(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, (*loc, i), lines)


def _substitute_tree(data: Any, loc: Loc, environ: Mapping[str, str], problems: list[tuple[Loc, str]]) -> Any:
    if isinstance(data, str):
        value, missing = substitute_env(data, environ)
        for name in missing:
            problems.append((loc, f"environment variable ${{{name}}} is not set (export it, or write "
                                  f"${{{name}:-default}})"))
        return value
    if isinstance(data, dict):
        return {k: _substitute_tree(v, (*loc, str(k)), environ, problems) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute_tree(v, (*loc, i), environ, problems) for i, v in enumerate(data)]
    return data


def _allowed_keys(loc: Loc) -> list[str]:
    """Field names allowed at ``loc``'s parent, for 'did you mean' hints."""
    model: Any = VigilConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return []
        ann = fields[part].annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if hasattr(a, "model_fields")), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


_MESSAGES: dict[str, str] = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "is required",
    "too_short": "must have at least {min_length} item(s)",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "must match {pattern}",
}


def _message(err: Mapping[str, Any], loc: Loc) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return f"unknown key{hint} (allowed: {', '.join(allowed)})" if allowed else f"unknown key{hint}"
    if kind in _MESSAGES:
        return _MESSAGES[kind].format(**{k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()})
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind == "union_tag_invalid":
        return f"unknown sink type; must be one of {ctx.get('expected_tags', '')}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


_SINK_TAGS = {"jsonl", "webhook", "stdout", "redis", "events", "plugin"}


def _clean_loc(loc: tuple[Any, ...]) -> Loc:
    """Drop the discriminator tag pydantic inserts into sink locations (``sinks.0.jsonl.path``)."""
    return tuple(
        p for i, p in enumerate(loc)
        if not (i >= 2 and loc[i - 2] == "sinks" and isinstance(loc[i - 1], int) and p in _SINK_TAGS)
    )


def validate_config(data: Any, source: str = "<config>", lines: Mapping[Loc, int] | None = None,
                    environ: Mapping[str, str] | None = None) -> VigilConfig:
    """Substitute env vars in ``data`` and validate it; raise :class:`ConfigError` with every problem."""
    env = os.environ if environ is None else environ
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (streams:, redis:, ...)",
                          ["(top level): must be a mapping"])
    problems: list[tuple[Loc, str]] = []
    data = _substitute_tree(data, (), env, problems)
    try:
        cfg = VigilConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend((_clean_loc(tuple(e["loc"])), _message(e, _clean_loc(tuple(e["loc"]))))
                        for e in exc.errors(include_input=False))
        cfg = None
    if problems or cfg is None:
        rendered = []
        for loc, msg in problems:
            line = (lines or {}).get(loc) or (lines or {}).get(loc[:-1]) if loc else None
            rendered.append(f"{format_loc(loc)}: {msg}" + (f" (line {line})" if line else ""))
        raise ConfigError(f"{source}: {len(rendered)} problem(s)\n  " + "\n  ".join(rendered), rendered)
    return cfg


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> VigilConfig:
    """Read, substitute and validate a YAML config file; relative paths in it are relative to its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}",
                          [f"(yaml){where}: {problem}"]) from exc
    lines: dict[Loc, int] = {}
    if node is not None:
        _node_lines(node, (), lines)
    from pipeline.core.config_paths import anchor_paths  # it builds on this module's schema

    return anchor_paths(validate_config(data, str(p), lines, environ), p.parent.resolve())
