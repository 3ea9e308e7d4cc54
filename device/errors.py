"""Errors the user can act on; the CLI prints their message, never a traceback."""


class CoralError(Exception):
    """A problem with an actionable message. `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(CoralError):
    """The configuration is invalid; the message names the key and why."""

    exit_code = 2


class ModelError(CoralError):
    """A model file or bundle is missing, corrupt or does not match its manifest."""

    exit_code = 3


class BackendError(CoralError):
    """The requested inference backend is not available (no TPU, no runtime)."""

    exit_code = 4


class CameraError(CoralError):
    """The frame source cannot be opened or read."""

    exit_code = 5
