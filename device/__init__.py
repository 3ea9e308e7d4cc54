"""coral-classifier device daemon: camera -> Edge TPU classifier -> MQTT."""

__version__ = "0.1.0"
