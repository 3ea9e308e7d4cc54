"""The MQTT side: client factory, publisher, outbox, event sender, commands, discovery."""
