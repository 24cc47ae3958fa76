"""The ``sinks:`` section: one entry per sink, keyed by ``type`` (:mod:`pipeline.results.sinks` builds them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator

from pipeline.core.config.base import ID_PATTERN, BackoffOptions, Strict


class _SinkBase(BackoffOptions):
    name: Annotated[str | None, Field(pattern=ID_PATTERN, description="Default: <type>-<index>.")] = None
    batch_size: Annotated[int, Field(ge=1, le=10_000, description="Results per write.")] = 100
    claim_idle_s: Annotated[float, Field(gt=0, description=(
        "Take over results another consumer of this sink (a pod that died, or restarted under a new name) "
        "left unacknowledged this long."))] = 30.0


class JsonlSinkConfig(_SinkBase):
    """One JSON result record per line; rotates at ``rotate_mb``, keeping ``keep`` old files."""

    type: Literal["jsonl"]
    path: Annotated[str, Field(min_length=1)]
    rotate_mb: Annotated[float, Field(gt=0)] = 100.0
    keep: Annotated[int, Field(ge=1)] = 5


class WebhookSinkConfig(_SinkBase):
    """POSTs a JSON array of records; retries with backoff until the server takes them (never drops)."""

    type: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    timeout_s: Annotated[float, Field(gt=0)] = 5.0
    headers: dict[str, str] = Field(default_factory=dict)


class StdoutSinkConfig(_SinkBase):
    type: Literal["stdout"]


class RedisSinkConfig(_SinkBase):
    """Copies records to another Redis stream (e.g. for a downstream consumer)."""

    type: Literal["redis"]
    url: str | None = Field(default=None, description="Default: the first bus instance.")
    stream: str = "vigil:results:out"
    timeout_s: Annotated[float, Field(gt=0)] = 5.0
    maxlen: Annotated[int, Field(ge=1)] = 100_000


class EventOptions(Strict):
    """What turns results into change events (:class:`pipeline.results.sinks.events.EventDetector`)."""

    watch: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict, description=(
        "class or scene category -> min score: a class by name or any synonym (Egyptian_cat, scooter), by "
        "index (518_crane), or a scene category (people)"))
    hysteresis: Annotated[int, Field(ge=1, description="Consecutive results before a change.")] = 3


class EventsSinkConfig(_SinkBase, EventOptions):
    """Emit only changes: a camera's top label or scene changes, or a watched label appears."""

    type: Literal["events"]
    path: str | None = Field(default=None, description="Write events as JSON lines here ...")
    url: Annotated[str | None, Field(pattern=r"^https?://", description="... and/or POST them here.")] = None
    timeout_s: Annotated[float, Field(gt=0)] = 5.0

    @model_validator(mode="after")
    def _has_output(self) -> EventsSinkConfig:
        if not self.path and not self.url:
            raise ValueError("an events sink needs path (JSON lines) and/or url (webhook)")
        return self


class MqttTlsConfig(Strict):
    """TLS to the broker: the CA that signed its certificate, and a client certificate if it wants one."""

    ca_file: str | None = Field(default=None, description="CA certificate (PEM); default: the system's CAs.")
    cert_file: str | None = Field(default=None, description="Client certificate (PEM), with key_file.")
    key_file: str | None = Field(default=None, description="Client private key (PEM).")

    @model_validator(mode="after")
    def _cert_with_key(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together (a client certificate needs its key)")
        return self


class MqttSinkConfig(_SinkBase, EventOptions):
    """Results, current labels, events and Home Assistant discovery on an MQTT broker (paho-mqtt)."""

    type: Literal["mqtt"]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535, description="Default 1883 (8883 is usual with tls).")] = 1883
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="Write ${VAR}: it is never logged or shown.")
    tls: MqttTlsConfig | None = None
    client_id: Annotated[str | None, Field(min_length=1, max_length=64, description=(
        "Default: vigil-<sink name>."))] = None
    qos: Literal[0, 1, 2] = 1
    topic_prefix: str = Field(default="vigil", description=(
        "Topics are <prefix>/<camera>/result, /label, /scene, /events, /state, /watch/<key>; "
        "<prefix>/availability."))
    retain: bool = Field(default=True, description="Retain the state topics (label, scene, state, watch).")
    results: bool = Field(default=True, description="Publish every result record on <prefix>/<camera>/result.")
    rate_limit_hz: Annotated[float | None, Field(gt=0, description=(
        "At most this many result messages per camera per second (the others are not published there; "
        "labels, scenes and events still follow every result)."))] = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    timeout_s: Annotated[float, Field(gt=0, description=(
        "How long a batch waits for the broker's acknowledgements before the write is retried."))] = 10.0
    discovery: bool = Field(default=True, description="Publish Home Assistant MQTT discovery configs.")
    discovery_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "homeassistant"

    @field_validator("topic_prefix")
    @classmethod
    def _plain_topic(cls, prefix: str) -> str:
        if not prefix or any(c in prefix for c in "#+ \t\n") or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError("must be a plain topic such as vigil or site/vigil: no #, + or spaces, and no / "
                             "at either end")
        return prefix


class PluginSinkConfig(_SinkBase):
    """A sink from another package: ``factory`` is ``module:callable`` taking (config, options)."""

    type: Literal["plugin"]
    factory: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    options: dict[str, Any] = Field(default_factory=dict)


SinkConfig = Annotated[
    JsonlSinkConfig | WebhookSinkConfig | StdoutSinkConfig | RedisSinkConfig | EventsSinkConfig | MqttSinkConfig
    | PluginSinkConfig,
    Field(discriminator="type"),
]




def _types_of(union: Any) -> tuple[str, ...]:
    """The ``type`` literals of a discriminated union's members (``Annotated[A | B, Field(...)]``)."""
    members = get_args(get_args(union)[0])
    return tuple(str(tag) for member in members for tag in get_args(member.model_fields["type"].annotation))


#: Every sink ``type``, read from :data:`SinkConfig`: a sink added to the union is known wherever these are
#: (e.g. to the loader, which drops the tag pydantic puts in an error's location so the error gets its line).
SINK_TYPES = _types_of(SinkConfig)


def sink_name(sink: SinkConfig, index: int) -> str:
    """A sink's stable name: its consumer group on the results stream is ``vigil-sink-<name>``."""
    return sink.name or f"{sink.type}-{index}"
