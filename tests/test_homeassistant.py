"""Home Assistant entities: every discovery payload validates against the platform's schema
as Home Assistant's MQTT integration defines it, and a region removed from the config has
its entities removed (an empty retained config) - with a real daemon and broker.

The schemas below transcribe, per platform, the keys Home Assistant's voluptuous schemas
accept and require (homeassistant/components/mqtt/schemas.py and the platform docs at
home-assistant.io/integrations/<platform>.mqtt): MQTT_ENTITY_DEVICE_INFO_SCHEMA (an
identifier or a connection; configuration_url an http(s) link), MQTT_ORIGIN_INFO_SCHEMA
(name required; sw_version, support_url), the common entity keys (name, unique_id,
device, availability, icon, entity_category, json_attributes_*, object_id,
enabled_by_default), sensor (state_class measurement / total / total_increasing; never a
"config" entity), binary_sensor (device_class problem / occupancy), event (event_types
required; the value_template must give JSON with event_type), image (image_topic or
url_topic, content_type), button (command_topic required, payload_press) and switch
(command_topic required; state_on / state_off, compared with the rendered state, default
to payload_on / payload_off). Our own rules on top: every entity has a name, and no two
share one."""

from __future__ import annotations

import json

import jsonschema
import pytest

from device.messages import ModelInfo, OutboxStatus, StatusPayload
from device.mqtt.discovery import Labels, discovery_configs
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"

AVAILABILITY = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["topic"], "additionalProperties": False,
    "properties": {"topic": {"type": "string"}, "payload_available": {"type": "string"},
                   "payload_not_available": {"type": "string"},
                   "value_template": {"type": "string"}}}}
# MQTT_ENTITY_DEVICE_INFO_SCHEMA: at least one of identifiers / connections
DEVICE = {"type": "object", "anyOf": [{"required": ["identifiers"]},
                                      {"required": ["connections"]}],
          "properties": {"identifiers": {"type": "array", "items": {"type": "string"}},
                         "connections": {"type": "array"},
                         "name": {"type": "string"}, "manufacturer": {"type": "string"},
                         "model": {"type": "string"}, "sw_version": {"type": "string"},
                         "hw_version": {"type": "string"}, "serial_number": {"type": "string"},
                         "suggested_area": {"type": "string"}, "via_device": {"type": "string"},
                         "configuration_url": {"type": "string",
                                               "pattern": "^(https?://|homeassistant://)"}},
          "additionalProperties": False}
# MQTT_ORIGIN_INFO_SCHEMA: name required
ORIGIN = {"type": "object", "required": ["name"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"},
                         "support_url": {"type": "string", "pattern": "^https?://"}}}
COMMON = {"name": {"type": ["string", "null"]}, "unique_id": {"type": "string"},
          "device": DEVICE, "origin": ORIGIN, "availability": AVAILABILITY,
          "icon": {"type": "string", "pattern": "^mdi:"},
          "entity_category": {"enum": ["config", "diagnostic"]},
          "json_attributes_topic": {"type": "string"},
          "json_attributes_template": {"type": "string"}, "object_id": {"type": "string"},
          "enabled_by_default": {"type": "boolean"}, "qos": {"enum": [0, 1, 2]}}
RO = {**COMMON, "state_topic": {"type": "string"}, "value_template": {"type": "string"}}
# a sensor or binary_sensor may not be a "config" entity (validate_sensor_entity_category)
READ_ONLY_CATEGORY = {"entity_category": {"enum": ["diagnostic"]}}


def platform(required: list[str], extra: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": {**extra},
            "required": ["unique_id", "device", "origin", "availability", "name", *required]}


SCHEMAS = {
    "sensor": platform(["state_topic"], {
        **RO, **READ_ONLY_CATEGORY, "unit_of_measurement": {"type": "string"},
        "device_class": {"type": "string"},
        "state_class": {"enum": ["measurement", "total", "total_increasing"]},
        "expire_after": {"type": "integer"}, "force_update": {"type": "boolean"},
        "suggested_display_precision": {"type": "integer"}}),
    "binary_sensor": platform(["state_topic"], {
        **RO, **READ_ONLY_CATEGORY, "payload_on": {"type": "string"},
        "payload_off": {"type": "string"},
        "device_class": {"enum": ["occupancy", "presence", "motion", "problem"]},
        "off_delay": {"type": "integer"}, "expire_after": {"type": "integer"}}),
    "event": platform(["state_topic", "event_types"], {
        **RO, "event_types": {"type": "array", "minItems": 1, "uniqueItems": True,
                              "items": {"type": "string"}},
        "device_class": {"enum": ["button", "doorbell", "motion"]}}),
    "image": {**platform([], {**COMMON, "image_topic": {"type": "string"},
                              "url_topic": {"type": "string"},
                              "content_type": {"type": "string"},
                              "image_encoding": {"enum": ["b64"]}}),
              "oneOf": [{"required": ["image_topic"]}, {"required": ["url_topic"]}]},
    "button": platform(["command_topic"], {
        **COMMON, "command_topic": {"type": "string"}, "payload_press": {"type": "string"},
        "retain": {"type": "boolean"}, "command_template": {"type": "string"},
        "device_class": {"enum": ["identify", "restart", "update"]}}),
    # MQTT switch: command_topic required; with a state_topic it shows the device's state
    # (not optimistic); the rendered state is compared with state_on / state_off, which
    # default to payload_on / payload_off
    "switch": platform(["command_topic", "state_topic", "state_on", "state_off"], {
        **RO, "command_topic": {"type": "string"}, "command_template": {"type": "string"},
        "payload_on": {"type": "string"}, "payload_off": {"type": "string"},
        "state_on": {"type": "string"}, "state_off": {"type": "string"},
        "optimistic": {"const": False}, "retain": {"type": "boolean"},
        "device_class": {"enum": ["outlet", "switch"]}}),
}


def render(template: str, value_json: dict) -> str:
    """A template as Home Assistant renders it (Jinja2; `value_json` the payload)."""
    jinja2 = pytest.importorskip("jinja2", reason="jinja2 (dev extra) renders HA templates")
    return jinja2.Environment().from_string(template).render(value_json=value_json).strip()


def status() -> StatusPayload:
    return StatusPayload(
        ts=1.0, state="running", device_id="vend-9", software="0.1",
        model=ModelInfo(name="demo-notes", version="1", sha256="0" * 64), backend="cpu",
        runtime="ai_edge_litert", camera="replay", fps=1.0, uptime_s=1.0, frames=1,
        results_published=0, dropped_frames=0, errors={}, last_error="", events=0,
        reconnects=0, outbox=OutboxStatus(pending=0, bytes=0, fill=0.0, dropped=0,
                                          warning=""))


LABELS = Labels(("background", "note_10", "note_20", "note_5", "fake_50", "other"),
                background=frozenset({"background"}), refused=frozenset({"fake_50"}),
                unknown=frozenset({"other"}))
NODE = "coral_classifier_vend_9"


def validate_all(configs: dict) -> None:
    for topic, payload in configs.items():
        jsonschema.validate(payload, SCHEMAS[topic.split("/")[1]])
        assert payload["availability"][0]["topic"] == "coral-classifier/vend-9/availability"
        if payload.get("state_class"):  # a numeric state class needs a number
            sample = {"fps": 9.5, "counts": {"note_5": 2, "unknown": 1, "refused:fake_50": 1}}
            float(render(payload["value_template"], sample))
    names = [p["name"] for p in configs.values()]
    assert len(names) == len(set(names)), sorted(names)


def test_every_discovery_payload_fits_its_platform_schema():
    configs = discovery_configs(status(), "coral-classifier/vend-9", LABELS, "homeassistant",
                                rois=("slot_a", "slot_b"), web_url="http://vend-9:8080/")
    validate_all(configs)
    platforms = {t.split("/")[1] for t in configs}
    assert platforms == {"sensor", "binary_sensor", "event", "image", "button", "switch"}
    one = next(iter(configs.values()))
    assert one["origin"]["name"] == "coral-classifier" and one["origin"]["support_url"]
    assert one["device"]["configuration_url"] == "http://vend-9:8080/"

    def get(component: str, obj: str) -> dict:
        return configs[f"homeassistant/{component}/{NODE}/{obj}/config"]

    # the bundle's background, refused and unknown labels are no note types of their own
    assert get("event", "decision")["event_types"] == ["note_10", "note_20", "note_5",
                                                       "refused", "unknown"]
    assert "event_type" in get("event", "decision")["value_template"]
    counters = {t.split("/")[3] for t in configs if "/count_" in t}
    assert counters == {"count_note_10", "count_note_20", "count_note_5", "count_unknown",
                        "count_refused"}
    # Home Assistant renders templates with Jinja2: refused events count per class as
    # refused:<class>, and the counter sums them
    counts = {"refused:fake_50": 2, "refused:note_5": 1, "note_5": 7, "unknown": 4}
    assert render(get("sensor", "count_refused")["value_template"],
                  {"counts": counts}) == "3"
    assert get("sensor", "fps")["state_class"] == "measurement"
    # event mode: the last result comes from the event topic (`result` is stream only)
    assert get("sensor", "last_result")["state_topic"] == "coral-classifier/vend-9/event"
    assert get("binary_sensor", "problem")["device_class"] == "problem"
    switch = get("switch", "paused")
    assert switch["command_topic"] == "coral-classifier/vend-9/cmd/paused"
    assert switch["state_topic"] == "coral-classifier/vend-9/status"
    assert "paused" in switch["value_template"]
    buttons = [p for t, p in configs.items() if "/button/" in t]
    assert all(b.get("entity_category") for b in buttons)
    assert {b["command_topic"].rsplit("/", 1)[1] for b in buttons} == \
        {"reset_counts", "snapshot"}
    present = get("binary_sensor", "roi_slot_a_present")
    assert present["state_topic"] == "coral-classifier/vend-9/roi/slot_a/state"


def test_stream_mode_reads_results_and_no_web_page_means_no_link():
    configs = discovery_configs(status(), "coral-classifier/vend-9", LABELS, "homeassistant",
                                mode="stream")
    validate_all(configs)
    last = configs[f"homeassistant/sensor/{NODE}/last_result/config"]
    assert last["state_topic"] == "coral-classifier/vend-9/result"
    assert all("configuration_url" not in p["device"] for p in configs.values())


def test_the_schemas_refuse_what_home_assistant_refuses():
    configs = discovery_configs(status(), "coral-classifier/vend-9", LABELS, "homeassistant")
    sensor = configs[f"homeassistant/sensor/{NODE}/fps/config"]
    for bad in ({**sensor, "entity_category": "config"}, {**sensor, "stat_class": "x"},
                {k: v for k, v in sensor.items() if k != "state_topic"},
                {**sensor, "origin": {"sw_version": "1"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMAS["sensor"])
    switch = configs[f"homeassistant/switch/{NODE}/paused/config"]
    with pytest.raises(jsonschema.ValidationError):  # would compare "ON" with the JSON
        jsonschema.validate({k: v for k, v in switch.items() if k != "state_on"},
                            SCHEMAS["switch"])


def test_event_mode_home_assistant_sees_a_result_and_a_switch(tmp_path, broker,
                                                                daemon_factory):
    """A real daemon in event mode: the topics the entities read carry data, and the
    switch's command pauses and resumes (cmd/pause and cmd/resume still work)."""
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5", "note_10"], gap=3, frames_per_object=5, seed=5)
    cfg = write_config(tmp_path / "ha-ev.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 20,
                               "loop": True},
                       model={"path": str(DEMO), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "ha-ev",
                             "status_interval": 0.5},
                       # no background_labels here: the bundle's own ("empty") must be used
                       decision={"mode": "event"}, homeassistant={"enabled": True},
                       web={"enabled": True, "port": 0})
    rec = Recorder(broker.port, "#")
    daemon_factory(cfg)
    try:
        topic = "homeassistant/sensor/coral_classifier_ha_ev/last_result/config"
        rec.wait_for(lambda r: r.on(topic) and r.on("/take_snapshot/config"), 30,
                     "discovery")
        configs = {t: json.loads(p) for t, p, _ in rec.messages
                   if t.startswith("homeassistant/") and t.endswith("/config") and p}
        for t, p in configs.items():
            jsonschema.validate(p, SCHEMAS[t.split("/")[1]])
        last = configs[topic]
        rec.wait_for(lambda r: r.on(last["state_topic"]), 60, "an event for Last result")
        assert json.loads(rec.on(last["state_topic"])[-1])["label"]
        types = configs["homeassistant/event/coral_classifier_ha_ev/decision/config"]
        assert types["event_types"] == ["note_10", "note_20", "note_5", "refused", "unknown"]
        assert not any("count_empty" in t for t in configs)
        url = last["device"]["configuration_url"]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/"), url
        switch = configs["homeassistant/switch/coral_classifier_ha_ev/paused/config"]
        rec.client.publish(switch["command_topic"], switch["payload_on"], qos=1)
        rec.wait_for(lambda r: json.loads(r.on("/ha-ev/status")[-1])["state"] == "paused",
                     20, "paused")
        rec.client.publish(switch["command_topic"], switch["payload_off"], qos=1)
        rec.wait_for(lambda r: json.loads(r.on("/ha-ev/status")[-1])["state"] == "running",
                     20, "running again")
        rec.client.publish("coral-classifier/ha-ev/cmd/pause", "{}", qos=1)
        rec.wait_for(lambda r: json.loads(r.on("/ha-ev/status")[-1])["state"] == "paused",
                     20, "paused by cmd/pause")
    finally:
        rec.close()


def test_a_removed_region_loses_its_entities(tmp_path, broker, daemon_factory):
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5"], gap=2, frames_per_object=3, seed=3)
    rois = [{"name": "slot_a", "x": 0.0, "y": 0.0, "width": 0.5, "height": 1.0},
            {"name": "slot_b", "x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0}]

    def run(regions: list[dict], then=lambda r: True) -> Recorder:
        rec = Recorder(broker.port, "homeassistant/#")
        cfg = write_config(tmp_path / "ha.toml",
                           camera={"type": "replay", "source": str(replay), "fps": 20,
                                   "loop": True, "roi": regions},
                           model={"path": str(DEMO), "backend": "cpu"},
                           mqtt={"host": "127.0.0.1", "port": broker.port,
                                 "device_id": "ha-roi"},
                           homeassistant={"enabled": True})
        d = daemon_factory(cfg)
        # a live announcement (retain flag off), not the retained copy from before
        rec.wait_for(lambda r: any("roi_slot_a_present" in t and not retained
                                   for t, _, retained in r.messages), 30, "discovery")
        rec.wait_for(lambda r: any(t.endswith("/button/coral_classifier_ha_roi/take_snapshot/"
                                              "config") and not retained
                                   for t, _, retained in r.messages), 10, "all of it")
        rec.wait_for(then, 10, "the removals")
        d.stop()
        return rec

    first = run(rois)
    first.close()
    second = run(rois[:1], lambda r: sum(p == b"" and not retained and "ha_roi" in t
                                         for t, p, retained in r.messages) >= 2)
    try:
        assert any("roi_slot_b_present" in t and p == b"" for t, p, _ in second.messages)
        live = {t for t, p, retained in second.messages if p and not retained}
        assert any("roi_slot_a_present" in t for t in live)
        removed = {t for t, p, retained in second.messages
                   if not p and not retained and "ha_roi" in t}
        assert all("slot_b" in t for t in removed) and len(removed) == 2
        for topic, payload, _ in second.messages:
            if payload:
                jsonschema.validate(json.loads(payload), SCHEMAS[topic.split("/")[1]])
    finally:
        second.close()
