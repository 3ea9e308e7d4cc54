"""Every MQTT topic of a device, built in one place: the daemon publishes on them, the
controllers (fleet view, deploy and rollout watchers) subscribe to them.

<prefix>/<device_id>/ availability | status | result | event | counts | state |
roi/<name>/state | snapshot | cmd/<name> | cmd/<name>/reply
"""

from __future__ import annotations


class Topics:
    def __init__(self, prefix: str, device_id: str):
        self.prefix = prefix
        self.device_id = device_id
        self.base = f"{prefix}/{device_id}"
        self.availability = f"{self.base}/availability"
        self.status = f"{self.base}/status"
        self.result = f"{self.base}/result"
        self.event = f"{self.base}/event"
        self.cmd = f"{self.base}/cmd/"

    def __getitem__(self, name: str) -> str:
        return f"{self.base}/{name}"

    def command(self, name: str) -> str:
        return f"{self.cmd}{name}"

    def reply(self, name: str) -> str:
        return f"{self.cmd}{name}/reply"

    def command_of_reply(self, topic: str) -> str:
        """cmd/<name>/reply -> name ('' for another topic)."""
        if not topic.startswith(self.cmd) or not topic.endswith("/reply"):
            return ""
        return topic[len(self.cmd):].removesuffix("/reply")


def state_topic(base: str, roi: str) -> str:
    """A region's retained state topic (the scene's without regions)."""
    return f"{base}/roi/{roi}/state" if roi else f"{base}/state"


def fleet_filters(prefix: str) -> list[str]:
    """What a fleet view subscribes to: every device's availability and status."""
    return [f"{prefix}/+/availability", f"{prefix}/+/status"]


def device_and_kind(topic: str) -> tuple[str, str]:
    """<prefix>/<device_id>/<kind> -> (device_id, kind)."""
    parts = topic.split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else ("", topic)
