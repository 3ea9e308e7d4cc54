"""The daemon's MQTT side, wired once: the publisher (its client id kept per install), the
event sender over the outbox, the retained counts and presence topics, and the command
runner answering on the daemon's Controls. Every part reconnects with the publisher."""

from __future__ import annotations

from dataclasses import dataclass

from device.config import Config
from device.daemon.counts import CountsTopic
from device.daemon.presence import Presence
from device.daemon.stats import Stats
from device.mqtt.commands import CommandRunner, Controls
from device.mqtt.identity import client_id
from device.mqtt.outbox import Outbox
from device.mqtt.publisher import MqttPublisher
from device.mqtt.sender import EventSender
from device.mqtt.topics import Topics


@dataclass(frozen=True)
class MqttSide:
    publisher: MqttPublisher
    topics: Topics
    sender: EventSender
    counts: CountsTopic
    commands: CommandRunner
    presence: Presence


def build_mqtt(cfg: Config, device_id: str, outbox: Outbox, controls: Controls,
               stats: Stats) -> MqttSide:
    """The parts, subscribed to each other; nothing is started yet."""
    publisher = MqttPublisher(cfg.mqtt, device_id, client_id(
        cfg.mqtt.client_id, device_id, cfg.state.resolved_dir()))
    topics = publisher.topics
    sender = EventSender(outbox, publisher.publish_qos1, publisher.connected)
    counts = CountsTopic(outbox, publisher, topics["counts"], {r.name for r in cfg.camera.roi})
    publisher.on_connected += [sender.reconnected, counts.publish]
    publisher.on_puback = sender.on_puback
    commands = CommandRunner(controls, publisher.reply,
                             lambda msg: stats.error("command", msg))
    if cfg.mqtt.commands:
        publisher.on_command = commands.submit
    presence = Presence(
        lambda topic, payload: publisher.publish(topic, payload, qos=1, retain=True),
        topics.base)
    publisher.on_connected.append(presence.republish)
    return MqttSide(publisher, topics, sender, counts, commands, presence)
