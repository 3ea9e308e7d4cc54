"""The running daemon: lifecycle, frame pipeline, inference worker, sinks, stats, metrics."""
