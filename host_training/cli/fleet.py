"""`coral-train fleet`: every device on the broker, from its retained topics."""

from __future__ import annotations

import argparse
import logging

from host_training.fleet.broker import CONFIG_HELP


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `fleet` and its options on the subcommand table."""
    f = sub.add_parser("fleet", help="every device on the broker: online/offline, model, "
                                     "backend, fps, last event, errors (from retained topics)")
    f.add_argument("--broker", default="", help="host:port (default: the config's broker, "
                                                "else localhost:1883)")
    f.add_argument("--config", default=None, help=CONFIG_HELP)
    f.add_argument("--prefix", default="", help="topic prefix (default: coral-classifier)")
    f.add_argument("--settle", type=float, default=1.0,
                   help="seconds without a new retained message before printing")
    f.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    f.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    """Print the table (or JSON); exit 6 when the broker cannot be reached or refuses us.
    A person's command: problems as one "error: ..." line, like coral-classifier's."""
    from device.errors import TerminalFormatter
    from host_training.fleet.broker import load_mqtt

    for handler in logging.getLogger().handlers:
        handler.setFormatter(TerminalFormatter())
    from host_training.fleet.view import run as view

    print(view(a.broker, load_mqtt(a.config), a.prefix, a.json, a.settle))
    return 0
