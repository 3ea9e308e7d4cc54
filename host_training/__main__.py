"""`coral-train`: train a bundle from an image folder, evaluate it, make demo data, see the
fleet."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from device.errors import run_command

log = logging.getLogger("host_training")


def quiet_tensorflow() -> None:
    """Keep TensorFlow's own chatter (C++ INFO/WARNING lines such as node_def_util and
    oneDNN notices, absl and deprecation warnings) off the user's terminal: set before
    TensorFlow's first import, which reads them once. TF_CPP_MIN_LOG_LEVEL=0 brings it back."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    for module in ("tensorflow", "keras", "tf_keras", "absl", "h5py", "google.protobuf"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
        logging.getLogger(module.split(".")[0]).setLevel(logging.ERROR)
    try:
        import absl.logging  # TensorFlow's; installed with it

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


quiet_tensorflow()  # before any command imports TensorFlow

from host_training.cli import (  # noqa: E402  (after quiet_tensorflow, on purpose)
    check_edgetpu,
    demo_data,
    evaluate,
    fleet,
    inspect,
    negative_set,
    retune,
    train,
)
from host_training.cli import compile as compile_cmd  # noqa: E402

# the subcommands, in --help's order: each module adds its parser and runs its job
COMMANDS = (train, inspect, check_edgetpu, compile_cmd, evaluate, retune, negative_set,
            demo_data, fleet)


def build_parser() -> argparse.ArgumentParser:
    """The `coral-train` parser: one subparser per module in COMMANDS."""
    p = argparse.ArgumentParser(prog="coral-train", description=(
        "Train an Edge TPU image classifier from a folder of images (one subfolder per "
        "class) and write a model bundle the device daemon loads."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(args.func, args, log)


if __name__ == "__main__":
    sys.exit(main())
