"""coral-classifier host training: image folder -> MobileNetV2 -> int8 TFLite bundle."""
