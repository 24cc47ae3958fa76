"""The MQTT sink: results, current labels, events and Home Assistant discovery on a broker (paho-mqtt).

What goes where is :mod:`pipeline.results.sinks.mqtt_topics`. Delivery keeps the contract of the other
sinks (at-least-once): :meth:`MqttSink.write` returns only when the broker acknowledged every message
of the batch (QoS 1 or 2), so the sink runner acknowledges the records on Redis only then. While the
broker is away, paho keeps the batch's messages and sends them again when it reconnects (with backoff,
``backoff_base_s`` to ``backoff_cap_s``); the write fails after ``timeout_s`` and the runner retries the
same batch, which waits on the same messages instead of publishing them twice. Records behind it
wait in Redis (bounded by the results stream's ``maxlen``), and each failed write is counted
(``vigil_sink_failed_writes_total``). With QoS 0 nothing is acknowledged: a message is only sent.

On every (re)connection the sink says ``online`` on the availability topic and publishes, retained,
the discovery configs and the last state of every camera, so a broker restarted without persistence
knows them again. The password is handed to paho only; no log line, error or metric carries it.

"Retry later" vs "never": a lost connection or a missing acknowledgement is retried (above). A message
paho refuses to build (a payload over MQTT's 256 MiB limit, a topic with wildcards or too long) can never
be sent: :class:`~pipeline.core.errors.SinkRejectedError`, the batch goes to the results dead-letter as a
whole (the event logic has seen its records, so halves cannot be tried again). A broker refusing a
publish (an ACL denying the topic) cannot be observed: on MQTT 3.1.1, which the sink speaks, mosquitto
and most brokers acknowledge a denied publish like any other and drop it.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from pipeline.core.config import MqttSinkConfig, MqttTlsConfig
from pipeline.core.errors import ConfigError, SinkError, SinkRejectedError
from pipeline.results.camera_event import CameraEvent
from pipeline.results.record import ResultRecord
from pipeline.results.sinks.base import SinkContext
from pipeline.results.sinks.events import EventDetector
from pipeline.results.sinks.mqtt_topics import OFFLINE, ONLINE, Message, Topics

log = logging.getLogger(__name__)


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails: paho (2.2) drops such a socket unclosed at each retry."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise

_BatchKey = tuple[int, str, str, str]


@dataclass(frozen=True)
class _Sent:
    message: Message
    mid: int
    after: int  # the acknowledgement count when it was published
    queued: bool  # paho holds it (QoS 1/2 always; QoS 0 only if it went out)


class MqttSink:
    """One broker connection for one ``type: mqtt`` sink; open with ``with``."""

    def __init__(self, cfg: MqttSinkConfig, ctx: SinkContext) -> None:
        self.cfg, self.name = cfg, ctx.name
        self._cameras = set(ctx.stream_ids)  # announced to Home Assistant; a camera added at runtime joins them
        self.where = f"{'mqtts' if cfg.tls else 'mqtt'}://{cfg.host}:{cfg.port}"  # never the credentials
        self.topics = Topics(cfg, ctx.classifiers, ctx.zones)
        self.detector = EventDetector(cfg.hysteresis, cfg.watch, ctx.classifiers)
        self._store = ctx.state_store
        self._client: mqtt.Client | None = None
        self._lock = threading.Condition()
        # Message id -> the number of the acknowledgement that came for it (paho reuses ids after 65535
        # messages; an acknowledgement counts for a message only if it came after the message was sent).
        self._acks: dict[int, int] = {}
        self._ack_count = 0
        self._connected = False
        self._why = "not connected yet"
        self._closing = False
        self._refused = False  # the broker's last answer was a refusal (bad credentials, client id)
        self._states: dict[str, Message] = {}  # topic -> newest acknowledged state, said again on reconnect
        self._batch: tuple[_BatchKey, list[_Sent]] | None = None  # the batch being delivered
        self._last_result_ts: dict[str, float] = {}

    # -- connection --------------------------------------------------------------------------------

    def __enter__(self) -> MqttSink:
        cfg = self.cfg
        self.detector.states.restore(self._store.load())
        for key, st in self.detector.states.current().items():  # said again when the broker is connected
            if st.state is not None:
                m = self.topics.classifier_state(*key, st)
                self._states[m.topic] = m
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id or f"vigil-{self.name}",
                             protocol=mqtt.MQTTv311)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls is not None:
            client.tls_set_context(self._tls_context(cfg.tls))
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(1, round(cfg.backoff_base_s)),
                                   max_delay=max(1, round(cfg.backoff_cap_s)))
        client.max_inflight_messages_set(100)
        client.on_connect, client.on_disconnect, client.on_publish = self._on_connect, self._on_disconnect, \
            self._on_publish
        client.on_connect_fail = self._on_connect_fail
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()  # paho's thread: connects, reconnects with backoff, sends and receives acks
        self._client = client
        log.info("sink %s: connecting to MQTT broker %s as %s", self.name, self.where, cfg.username or "anonymous")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        if self._connected:  # a clean goodbye: the last will is only for a sink that died
            try:
                client.publish(self.topics.availability, OFFLINE, qos=1, retain=True).wait_for_publish(2.0)
            except (RuntimeError, ValueError) as exc:  # lost the connection meanwhile: the last will says it
                log.info("sink %s: could not say offline to %s: %s", self.name, self.where, exc)
        client.disconnect()
        client.loop_stop()

    def _tls_context(self, tls: MqttTlsConfig) -> ssl.SSLContext:
        """Verify the broker's certificate and name (the system's CAs unless ``ca_file``)."""
        try:
            context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.cert_file is not None:
                context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"sink {self.name}: cannot use the TLS files for {self.where}: {exc}") from exc
        context.sslsocket_class = _ClosingSSLSocket
        return context

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:  # the disconnection that follows must not hide why
            with self._lock:
                self._why, self._refused = f"the broker refused the connection: {reason}", True
            log.warning("sink %s: %s: %s", self.name, self.where, self._why)
            return
        with self._lock:
            states, cameras = list(self._states.values()), tuple(sorted(self._cameras))
        for m in [Message(self.topics.availability, ONLINE, True), *self.topics.discovery(cameras), *states]:
            client.publish(m.topic, m.payload, qos=max(1, self.cfg.qos), retain=m.retain)
        with self._lock:
            self._connected, self._why, self._refused = True, "", False
        log.info("sink %s: connected to MQTT broker %s", self.name, self.where)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        with self._lock:
            self._why = "cannot connect: broker down or wrong port" + (
                ", or TLS verification failed (is tls.ca_file the CA of its certificate?)" if self.cfg.tls else "")

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._lock:
            was_connected, self._connected = self._connected, False
            if not self._refused:
                self._why = f"disconnected ({reason})"
        if was_connected and not self._closing:
            log.warning("sink %s: MQTT broker %s %s; reconnecting with backoff", self.name, self.where, self._why)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        with self._lock:
            self._ack_count += 1
            self._acks[mid] = self._ack_count
            self._lock.notify_all()

    # -- writes ------------------------------------------------------------------------------------

    def write(self, records: list[ResultRecord]) -> None:
        if records:
            key = (len(records), records[0].stream, records[0].frame_id, records[-1].frame_id)
            self._deliver(key, lambda: self._result_messages(records))
            self._store.save(self.detector.states.dirty())

    def write_camera_events(self, events: list[CameraEvent]) -> None:
        """Health and state changes of the cameras: on each camera's events topic, and its state topic."""
        if events:
            key = (len(events), events[0].stream, type(events[-1]).__name__, f"{events[-1].at:.6f}")
            self._deliver(key, lambda: [m for e in events for m in (*self._announce(e.stream),
                                                                    *self._event_messages([e.as_dict()]))])

    def _result_messages(self, records: list[ResultRecord]) -> list[Message]:
        out = []
        for r in records:
            out += self._announce(r.stream)
            if self.cfg.results and self._result_due(r):
                out.append(self.topics.result(r.as_dict()))
            out += self._event_messages(self.detector.feed(r))
        return out

    def _announce(self, stream_id: str) -> list[Message]:
        """The discovery configs of a camera the sink hears of for the first time (added at runtime)."""
        with self._lock:
            if stream_id in self._cameras:
                return []
            self._cameras.add(stream_id)
        return self.topics.discovery((stream_id,))

    def _event_messages(self, events: list[dict[str, Any]]) -> list[Message]:
        out = []
        for event in events:
            out.append(self.topics.event(event))
            state = self.topics.state_of(event)
            if state is not None:
                out.append(state)
        return out

    def _result_due(self, r: ResultRecord) -> bool:
        if self.cfg.rate_limit_hz is None:
            return True
        last = self._last_result_ts.get(r.stream)
        if last is not None and 0 <= r.capture_ts - last < 1.0 / self.cfg.rate_limit_hz:
            return False
        self._last_result_ts[r.stream] = r.capture_ts
        return True

    def _deliver(self, key: _BatchKey, build: Callable[[], list[Message]]) -> None:
        """Publish the batch's messages once (built once: the events logic sees each record once), then wait
        for the broker's acknowledgements; raise SinkError after ``timeout_s`` (the runner retries)."""
        if self._client is None:
            raise SinkError(f"sink {self.name}: MQTT sink is not open")
        if self._batch is None or self._batch[0] != key:
            self._batch = (key, [self._publish(m) for m in build()])
        else:  # the same batch again: QoS 0 messages that found no connection are sent again
            self._batch = (key, [s if s.queued else self._publish(s.message) for s in self._batch[1]])
        sent = self._batch[1]
        if self.cfg.qos > 0 and not self._await(sent):
            with self._lock:
                why = self._why or "no acknowledgement"
            raise SinkError(f"MQTT broker {self.where}: batch not acknowledged within {self.cfg.timeout_s:g} s "
                            f"({why}); its messages are sent again when the broker is back")
        if self.cfg.qos == 0 and not all(s.queued for s in sent):
            raise SinkError(f"MQTT broker {self.where} is not connected ({self._why}); QoS 0 batch not sent")
        with self._lock:  # the broker has these now; a reconnection says them again (it may have lost them)
            self._states.update((s.message.topic, s.message) for s in sent if s.message.retain)
        self._batch = None

    def _publish(self, m: Message) -> _Sent:
        assert self._client is not None
        with self._lock:
            after = self._ack_count
        # Not under our lock: paho calls on_publish holding its own, which publish() takes too.
        try:
            info = self._client.publish(m.topic, m.payload, qos=self.cfg.qos, retain=m.retain)
        except ValueError as exc:  # a payload or topic MQTT cannot carry: no retry will change it
            why = f"MQTT cannot carry a message to {m.topic[:200]!r} ({len(m.payload)} bytes): {exc}"
            self._batch = None
            raise SinkRejectedError(f"sink {self.name}: {why}", why, split=False) from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise SinkError(f"MQTT client queue for {self.where} is full")
        # QoS 1/2 messages are kept by paho and sent again on reconnect even when there is no connection now.
        return _Sent(m, info.mid, after, info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or self.cfg.qos > 0)

    def _await(self, sent: list[_Sent]) -> bool:
        """Whether the broker acknowledged every message of ``sent`` within ``timeout_s``."""
        deadline = time.monotonic() + self.cfg.timeout_s

        def done(s: _Sent) -> bool:  # an acknowledgement of this id that came after the message was sent
            return self._acks.get(s.mid, -1) > s.after

        with self._lock:
            while not all(done(s) for s in sent):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
            for s in sent:
                self._acks.pop(s.mid, None)
        return True
