"""Errors the user can act on; the CLI prints their message, never a traceback."""

import logging
from collections.abc import Callable


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


class BrokerError(CoralError):
    """The MQTT broker cannot be reached or refuses us (`coral-train fleet`, deploy and rollout; the
    daemon itself keeps reconnecting instead)."""

    exit_code = 6


class TerminalFormatter(logging.Formatter):
    """For a person at a terminal: the message alone ("error: ..." for problems), one line,
    no time or logger name; the traceback only at DEBUG."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            text = f"error: {text}"
        elif record.levelno >= logging.WARNING:
            text = f"warning: {text}"
        if record.exc_info and logging.getLogger().isEnabledFor(logging.DEBUG):
            text += "\n" + self.formatException(record.exc_info)
        return text


def run_command(func: Callable[..., int], args, log: logging.Logger) -> int:
    """Run a CLI command: a CoralError becomes its message and exit code, Ctrl-C 130."""
    try:
        return func(args)
    except CoralError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
