"""The Edge TPU toolchain: edgetpu_compiler's wrapper and the offline op-placement check."""
