"""The one section base of the config: unknown keys rejected by name (a typo must not
silently fall back to a default), values frozen once loaded; and the MQTT topic-level rule
every section that writes a topic shares."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# MQTT topic levels we write into: letters, digits and - _ . only. No '/' (a device id
# with one would nest into another device's ACL subtree), no wildcards, no NUL, and no
# leading '$' (brokers keep $-topics for themselves and drop clients' messages there).
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_topic(name: str, value: str, levels: bool) -> None:
    parts = value.split("/") if levels else [value]
    if not all(_TOPIC_LEVEL.match(p) for p in parts):
        what = "'/'-separated levels of " if levels else ""
        raise ValueError(f"{name} {value!r} must be {what}letters, digits, '-', '_' or '.' "
                         "(1-64 each): MQTT wildcards, '$', NUL, spaces and "
                         + ("empty levels" if levels else "'/'") + " are not allowed")
