"""Training: image folder -> MobileNetV2 -> int8 TFLite bundle, and its evaluation."""
