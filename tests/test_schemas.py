"""The payload models are the one definition of each MQTT payload; the committed JSON
Schemas in device/schemas/ are generated from them and must not drift."""

from __future__ import annotations

import pytest

from device import messages


@pytest.mark.parametrize("name", [*messages.PAYLOADS, "availability"])
def test_committed_schema_is_generated_from_the_model(name):
    committed = (messages.SCHEMA_DIR / f"{name}.schema.json").read_text()
    assert committed == messages.schema_text(name), (
        f"device/schemas/{name}.schema.json is stale: run `python -m device.messages`")


def test_a_status_missing_a_field_fails_its_schema():
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"ts": 1.0, "state": "running"}, messages.load_schema("status"))
