"""Home Assistant entities: every discovery payload validates against the platform's schema
as Home Assistant's MQTT integration defines it, and a region removed from the config has
its entities removed (an empty retained config) - with a real daemon and broker.

The schemas below transcribe, per platform, the keys Home Assistant's voluptuous schemas
accept and require: MQTT_ENTITY_COMMON_SCHEMA (name, unique_id, device, availability,
icon, entity_category, json_attributes_*, object_id, enabled_by_default) and
MQTT_RO_SCHEMA / MQTT_RW_SCHEMA in homeassistant/components/mqtt/{schemas,config}.py, plus
sensor.py, binary_sensor.py (payload_on/off, device_class), event.py (event_types
required; the value_template must give JSON with event_type), image.py (image_topic or
url_topic, content_type) and button.py (command_topic required, payload_press).
"""

from __future__ import annotations

import json

import jsonschema

from device.messages import ModelInfo, OutboxStatus, StatusPayload
from device.mqtt.discovery import discovery_configs
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"

AVAILABILITY = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["topic"], "additionalProperties": False,
    "properties": {"topic": {"type": "string"}, "payload_available": {"type": "string"},
                   "payload_not_available": {"type": "string"},
                   "value_template": {"type": "string"}}}}
DEVICE = {"type": "object", "anyOf": [{"required": ["identifiers"]},
                                      {"required": ["connections"]}],
          "properties": {"identifiers": {"type": "array", "items": {"type": "string"}},
                         "name": {"type": "string"}, "manufacturer": {"type": "string"},
                         "model": {"type": "string"}, "sw_version": {"type": "string"}},
          "additionalProperties": False}
COMMON = {"name": {"type": ["string", "null"]}, "unique_id": {"type": "string"},
          "device": DEVICE, "availability": AVAILABILITY, "icon": {"type": "string"},
          "entity_category": {"enum": ["config", "diagnostic"]},
          "json_attributes_topic": {"type": "string"},
          "json_attributes_template": {"type": "string"}, "object_id": {"type": "string"},
          "enabled_by_default": {"type": "boolean"}, "qos": {"enum": [0, 1, 2]}}
RO = {**COMMON, "state_topic": {"type": "string"}, "value_template": {"type": "string"}}


def platform(required: list[str], extra: dict) -> dict:
    return {"type": "object", "required": ["unique_id", "device", "availability", *required],
            "additionalProperties": False, "properties": {**extra}}


SCHEMAS = {
    "sensor": platform(["state_topic"], {
        **RO, "unit_of_measurement": {"type": "string"}, "device_class": {"type": "string"},
        "state_class": {"enum": ["measurement", "total", "total_increasing"]},
        "expire_after": {"type": "integer"}, "force_update": {"type": "boolean"}}),
    "binary_sensor": platform(["state_topic"], {
        **RO, "payload_on": {"type": "string"}, "payload_off": {"type": "string"},
        "device_class": {"enum": ["occupancy", "presence", "motion", "problem"]},
        "off_delay": {"type": "integer"}, "expire_after": {"type": "integer"}}),
    "event": platform(["state_topic", "event_types"], {
        **RO, "event_types": {"type": "array", "minItems": 1, "items": {"type": "string"}},
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
}


def status() -> StatusPayload:
    return StatusPayload(
        ts=1.0, state="running", device_id="vend-9", software="0.1",
        model=ModelInfo(name="demo-notes", version="1", sha256="0" * 64), backend="cpu",
        runtime="ai_edge_litert", camera="replay", fps=1.0, uptime_s=1.0, frames=1,
        results_published=0, dropped_frames=0, errors={}, last_error="", events=0,
        reconnects=0, outbox=OutboxStatus(pending=0, bytes=0, fill=0.0, dropped=0,
                                          warning=""))


def test_every_discovery_payload_fits_its_platform_schema():
    labels = ("empty", "note_10", "note_20", "note_5")
    configs = discovery_configs(status(), "coral-classifier/vend-9", labels, {"empty"},
                                "homeassistant", rois=("slot_a", "slot_b"))
    platforms = {t.split("/")[1] for t in configs}
    assert platforms == {"sensor", "binary_sensor", "event", "image", "button"}
    for topic, payload in configs.items():
        jsonschema.validate(payload, SCHEMAS[topic.split("/")[1]])
        assert payload["availability"][0]["topic"] == "coral-classifier/vend-9/availability"
    event = configs["homeassistant/event/coral_classifier_vend_9/decision/config"]
    assert event["event_types"] == ["note_10", "note_20", "note_5", "unknown"]
    assert "event_type" in event["value_template"]
    present = configs["homeassistant/binary_sensor/coral_classifier_vend_9/roi_slot_a_present"
                      "/config"]
    assert present["state_topic"] == "coral-classifier/vend-9/roi/slot_a/state"
    buttons = [p for t, p in configs.items() if "/button/" in t]
    assert {b["command_topic"].rsplit("/", 1)[1] for b in buttons} == \
        {"pause", "resume", "reset_counts", "snapshot"}


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
        rec.wait_for(lambda r: any(t.endswith("/button/coral_classifier_ha_roi/snapshot/"
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
