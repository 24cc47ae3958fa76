"""The MQTT sink against a real mosquitto broker (password, TLS, restart), loopback only."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import MqttSinkConfig, validate_config
from pipeline.core.errors import SinkError, SinkRejectedError
from pipeline.core.keys import RESULTS_KEY
from pipeline.ops.pipeline_metrics import PipelineCollector
from pipeline.ops.sink_service import SinkService
from pipeline.results.camera_event import StateEvent
from pipeline.results.sinks import SinkContext, build_sink
from tests.fixtures.mqtt import Mosquitto, Received, Subscriber
from tests.fixtures.services import wait_for
from tests.pipeline.results.sinks.records import record

PASSWORD = "Mqtt-S3cret-pw"
USER = ("vigil", PASSWORD)


def sink_config(broker: Mosquitto, **extra: Any) -> MqttSinkConfig:
    doc = {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "username": "vigil", "password": PASSWORD,
           "backoff_base_s": 0.5, "backoff_cap_s": 1, **extra}
    if broker.tls:
        doc["tls"] = {"ca_file": str(broker.ca_file)}
    return MqttSinkConfig.model_validate(doc)


def retained(broker: Mosquitto, topics: list[str]) -> dict[str, Received]:
    """What a newcomer (Home Assistant starting up) gets: the retained message of each topic."""
    sub = Subscriber(broker, topics, user=USER)
    try:
        time.sleep(1.0)
        return {m.topic: m for m in sub.messages if m.retain}
    finally:
        sub.close()


def check_discovery(configs: dict[str, Any], state_topics: set[str]) -> None:
    """The fields Home Assistant's MQTT discovery requires of a sensor and a binary sensor, and one device."""
    assert configs
    devices = set()
    for topic, cfg in configs.items():
        component = topic.split("/")[1]
        assert component in ("sensor", "binary_sensor"), topic
        assert cfg["state_topic"] in state_topics, (topic, cfg["state_topic"])
        assert cfg["unique_id"] == topic.split("/")[2] and cfg["name"]
        assert cfg["availability_topic"] == "vigil/availability" and cfg["payload_available"] == "online"
        assert cfg["device"]["identifiers"] and cfg["device"]["name"]
        if component == "binary_sensor":
            assert (cfg["payload_on"], cfg["payload_off"]) == ("ON", "OFF")
        else:
            assert cfg["value_template"].startswith("{{ value_json.")
        devices.add(tuple(cfg["device"]["identifiers"]))
    assert devices == {("vigil_cam",)}  # one device per camera


@pytest.mark.parametrize("tls", [False, True], ids=["password", "password+tls"])
def test_results_states_events_and_discovery(tls: bool, mosquitto_factory: Callable[..., Mosquitto],
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = mosquitto_factory(users={"vigil": PASSWORD}, tls=tls)
    live = Subscriber(broker, ["vigil/#"], user=USER)
    cfg = sink_config(broker, watch={"people": 0.5, "Egyptian_cat": 0.3}, hysteresis=2)
    records = ([record("cam", "cat", i=i) for i in range(4)]
               + [record("cam", "dog", i=i, scene="people") for i in range(4, 8)])
    with build_sink(cfg, SinkContext("mqtt-0", None, ("cam",))) as sink:
        assert wait_for(lambda: live.on("vigil/availability"), 10), broker.log()[-2000:]
        sink.write_camera_events([StateEvent("cam", "connecting", "opening the stream", 999.0),
                                  StateEvent("cam", "live", "receiving 640x480 frames", 999.5)])
        sink.write(records)  # returns once the broker acknowledged every message (QoS 1)
        assert [m.json()["state"] for m in live.on("vigil/cam/state")] == ["connecting", "live"]
        assert wait_for(lambda: len(live.on("vigil/cam/result")) == 8, 5)
        assert [m.json() for m in live.on("vigil/cam/result")] == [r.as_dict() for r in records]
        assert [m.json()["label"] for m in live.on("vigil/cam/label")] == ["cat", "dog"]
        events = [m.json()["event"] for m in live.on("vigil/cam/events")]
        assert events == ["state_changed", "state_changed", "label_changed", "scene_changed", "label_changed",
                          "scene_changed", "watch_appeared"]
        state = retained(broker, ["vigil/#", "homeassistant/#"])
        assert state["vigil/availability"].payload == "online"
        assert state["vigil/cam/label"].json()["label"] == "dog"
        assert state["vigil/cam/scene"].json()["scene"] == "people"
        assert state["vigil/cam/watch/people"].payload == "ON"
        assert state["vigil/cam/state"].json() == {"state": "live", "reason": "receiving 640x480 frames", "at": 999.5}
        configs = {t: m.json() for t, m in state.items() if t.startswith("homeassistant/")}
        assert set(configs) == {"homeassistant/sensor/vigil_cam_label/config",
                                "homeassistant/sensor/vigil_cam_scene/config",
                                "homeassistant/sensor/vigil_cam_state/config",
                                "homeassistant/binary_sensor/vigil_cam_watch_people/config",
                                "homeassistant/binary_sensor/vigil_cam_watch_egyptian_cat/config"}
        check_discovery(configs, {f"vigil/cam/{what}" for what in
                                  ("label", "scene", "state", "watch/people", "watch/egyptian_cat")})
    assert retained(broker, ["vigil/availability"])["vigil/availability"].payload == "offline"
    live.close()
    assert PASSWORD not in caplog.text


def test_a_wrong_password_is_reported_without_it(mosquitto_factory: Callable[..., Mosquitto],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = mosquitto_factory(users={"vigil": "the-right-one"})
    sink = build_sink(sink_config(broker, timeout_s=3), SinkContext("mqtt-0", None, ("cam",)))
    with sink, pytest.raises(SinkError) as info:
        sink.write([record("cam", "cat")])
    assert "refused the connection: Not authorized" in str(info.value)
    assert PASSWORD not in str(info.value) and PASSWORD not in caplog.text
    assert "the broker refused the connection" in caplog.text


def test_tls_without_the_brokers_ca_says_so(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory(users={"vigil": PASSWORD}, tls=True)
    cfg = sink_config(broker, timeout_s=3).model_copy(update={"tls": MqttSinkConfig.model_validate(
        {"type": "mqtt", "host": "x", "tls": {}}).tls})  # the system's CAs: they did not sign the broker's
    with build_sink(cfg, SinkContext("mqtt-0")) as sink, pytest.raises(SinkError, match="TLS verification failed"):
        sink.write([record("cam", "cat")])


def test_broker_down_for_10_s_loses_no_result(clean_redis_url: str,
                                               mosquitto_factory: Callable[..., Mosquitto]) -> None:
    """QoS 1: records wait while the broker is down and all arrive after its restart (at least once)."""
    client = redis.Redis.from_url(clean_redis_url)
    broker = mosquitto_factory(users={"vigil": PASSWORD})
    # A persistent subscriber (clean_session off): the broker keeps its messages across the restart.
    sub = Subscriber(broker, ["vigil/cam/result"], user=USER, client_id="ha-test", persistent=True)
    cfg = validate_config({"redis": {"urls": [clean_redis_url]}, "streams": [{"id": "cam", "url": "rtsp://h/x"}],
                           "sinks": [{**sink_config(broker, timeout_s=2, batch_size=10).model_dump(),
                                      "password": PASSWORD}]}, environ={})
    sent = [record("cam", "cat", i=i) for i in range(60)]
    with SinkService(cfg, consumer="test") as worker:
        for r in sent[:20]:
            client.xadd(RESULTS_KEY, r.to_fields())  # type: ignore[arg-type]
        assert wait_for(lambda: len(sub.on("vigil/cam/result")) == 20, 10)
        broker.stop()
        for r in sent[20:]:  # results keep coming while the broker is down
            client.xadd(RESULTS_KEY, r.to_fields())  # type: ignore[arg-type]
            time.sleep(0.25)
        runner = worker.runners[0]
        assert runner.delivered == 20  # nothing acknowledged on Redis that the broker did not take
        collector = PipelineCollector(BusLayout([clean_redis_url]), ["cam"], timeout_s=5, scrape_bound_s=5)
        waiting = {s.labels["state"]: s.value for m in collector.collect() for s in m.samples
                   if m.name == "vigil_pipeline_sink_queue_results" and s.labels["sink"] == "mqtt-0"}
        collector.close()
        assert waiting["backlog"] + waiting["pending"] == 40, waiting  # counted while they wait
        broker.start()
        assert wait_for(lambda: {m.json()["frame_id"] for m in sub.on("vigil/cam/result")}
                        >= {r.frame_id for r in sent}, 30), broker.log()[-2000:]
        assert wait_for(lambda: runner.delivered == 60, 10)
    sub.close()


def test_rate_limit_and_qos_0(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    """rate_limit_hz thins the result topic only (labels still follow every result); QoS 0 is sent, not acked."""
    broker = mosquitto_factory(users={"vigil": PASSWORD})
    live = Subscriber(broker, ["vigil/#"], user=USER)
    cfg = sink_config(broker, qos=0, rate_limit_hz=0.5, hysteresis=1)  # records are 1 s apart: every other one
    records = [record("cam", "cat" if i < 5 else "dog", i=i) for i in range(10)]
    with build_sink(cfg, SinkContext("mqtt-0", None, ("cam",))) as sink:
        assert wait_for(lambda: live.on("vigil/availability"), 10)
        sink.write(records)
        assert wait_for(lambda: len(live.on("vigil/cam/label")) == 2, 5)
        time.sleep(0.5)
    assert [m.json()["seq"] for m in live.on("vigil/cam/result")] == [0, 2, 4, 6, 8]
    assert [m.json()["label"] for m in live.on("vigil/cam/label")] == ["cat", "dog"]
    live.close()
    # A camera the sink did not start with (added in the console) is announced to Home Assistant too.
    with build_sink(sink_config(broker), SinkContext("mqtt-0", None, ("cam",))) as sink:
        assert wait_for(lambda: "homeassistant/sensor/vigil_cam_label/config" in retained(broker, ["homeassistant/#"]),
                        10)
        sink.write([record("late-cam", "cat")])
    assert "homeassistant/sensor/vigil_late_cam_label/config" in retained(broker, ["homeassistant/#"])


def test_a_message_mqtt_cannot_carry_is_refused_for_good(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    """A topic with a wildcard (a camera id no config check stopped) can never be published: refused for good,
    not retried; the sink goes on with the next batch. (A broker's ACL refusal is not visible on MQTT 3.1.1:
    mosquitto acknowledges the denied publish and drops it.)"""
    broker = mosquitto_factory(users={"vigil": PASSWORD})
    live = Subscriber(broker, ["vigil/#"], user=USER)
    with build_sink(sink_config(broker), SinkContext("mqtt-0", None, ("cam",))) as sink:
        assert wait_for(lambda: live.on("vigil/availability"), 10), broker.log()[-2000:]
        with pytest.raises(SinkRejectedError, match="wildcards") as err:
            sink.write([record("bad+cam", "cat")])
        assert not err.value.split and PASSWORD not in str(err.value)
        sink.write([record("cam", "cat", i=1)])  # the next batch goes out
        assert wait_for(lambda: live.on("vigil/cam/result"), 10)
    live.close()
