"""Frame sources: one module per camera backend behind FrameSource, from one registry."""
