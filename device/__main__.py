"""`coral-classifier` command line: run the daemon, classify images, check a config."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import ClassVar

from device import __version__
from device.errors import ConfigError, ModelError, TerminalFormatter, run_command

log = logging.getLogger("device")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for people who ship logs."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    """Under systemd, stderr goes to the journal: prefix each line with its syslog priority
    (sd-daemon's <N>) so `journalctl -p warning` works, and leave the time to journald."""

    PRIORITY: ClassVar[dict[str, int]] = {
        "DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.PRIORITY.get(record.levelname, 6)}>"
        text = f"{prefix}{record.name}: {record.getMessage()}"
        if record.exc_info:  # each traceback line gets the priority too, or journald
            # files the continuation lines as INFO and `journalctl -p err` misses them
            text += "".join(f"\n{prefix}{line}" for line in
                            self.formatException(record.exc_info).splitlines())
        return text


def _setup_logging(level: str = "INFO", fmt: str = "text", command: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM") and command == "run":
        handler.setFormatter(JournalFormatter())
    elif command != "run" or sys.stderr.isatty():
        # the CLI's commands, and the daemon run by hand: a person reads this
        handler.setFormatter(TerminalFormatter())
    else:  # the daemon's log into a file or a pipe: when and where, per line
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))


def cmd_doctor(args: argparse.Namespace) -> int:
    from device.config import load_config
    from device.tools.doctor import config_check, installed_config, report, run_checks

    path = args.config or installed_config()
    cfg = load_config(path) if path else None
    text, code = report([*config_check(args.config, path), *run_checks(cfg)], args.json)
    print(text)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    from device.config import load_config
    from device.daemon.lifecycle import Daemon

    cfg = load_config(args.config)
    logging.getLogger().setLevel(args.log_level or cfg.log.level)
    daemon = Daemon(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, daemon.request_stop)
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload(reply=False))
    try:
        daemon.setup()
    except BaseException:
        if hasattr(daemon, "slot"):
            daemon.slot.close()  # no orphaned inference worker
        raise
    if daemon.stop_event.is_set():  # stopped while loading
        daemon.shutdown()
        return 0
    return daemon.run()


def cmd_check_config(args: argparse.Namespace) -> int:
    from device.bundle import load_bundle
    from device.config import load_config
    from device.web.bindable import bind_problems

    cfg = load_config(args.config)
    path = Path(cfg.model.path)
    if not path.exists():
        raise ConfigError(f"{args.config}: model.path {str(path)!r}: no such file or folder "
                          "(a bundle folder from `make deploy`, or a .tflite file)")
    # its manifest, labels and checksums: ModelError (exit 3) naming what is wrong
    bundle = load_bundle(path, cfg.model.labels or None)
    listeners = ([("web", cfg.web.address, cfg.web.port)] if cfg.web.enabled else []) + (
        [("metrics", cfg.metrics.address, cfg.metrics.port)] if cfg.metrics.port else [])
    problems = bind_problems(listeners)
    for line in problems:
        print(f"{args.config}: {line}", file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: OK (camera={cfg.camera.type}, model={bundle.name} "
          f"{bundle.version} at {cfg.model.path}, {len(bundle.labels)} classes, "
          f"backend={cfg.model.backend}, broker={cfg.mqtt.host}:{cfg.mqtt.port})")
    return 0


def image_files(paths: list[str]) -> list[tuple[Path, str]]:
    """The images to classify: files as given, folders walked (sorted); with each, "" or
    why it cannot be read."""
    from device.images import IMAGE_SUFFIXES

    out: list[tuple[Path, str]] = []
    for name in paths:
        p = Path(name)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in IMAGE_SUFFIXES)
            out += [(f, "") for f in found] or [(p, "a folder with no image files")]
        elif not p.exists():
            out.append((p, "no such file"))
        else:
            out.append((p, ""))
    return out


def cmd_classify(args: argparse.Namespace) -> int:
    from device import messages
    from device.bundle import load_bundle
    from device.images import decode_image
    from device.inference import create_classifier
    from device.openset import fallback_point, operating_point, read_outputs
    from device.policy import judge

    if not Path(args.model).exists():
        raise ModelError(f"--model {args.model}: no such file or folder")
    bundle = load_bundle(args.model, args.labels)
    if args.backend == "edgetpu" and bundle.tpu_model is None:
        raise ModelError(f"{args.model} has no Edge TPU model (model_quant_edgetpu.tflite): "
                         "run it on the CPU with `--backend cpu`, or compile it on an x86-64 "
                         "workstation with `coral-train compile`")
    clf = create_classifier(bundle, args.backend, allow_cpu_fallback=True,
                            device=args.device, num_threads=args.num_threads, top_k=args.top_k)
    model = messages.model_info(clf.bundle)
    # "accepted": does this frame count as a vote for its label under the bundle's
    # operating point (the daemon's rule)? Older bundles have none: top-1 >= 0.7.
    point = operating_point(clf.bundle.manifest)
    if point is None:
        log.warning("%s has no decision section: no reject path for things that are none of "
                    "its classes; accepted = top-1 score >= 0.7 and not background",
                    args.model)
        point = fallback_point(clf.bundle.labels)
    failed = 0
    for seq, (path, problem) in enumerate(image_files(args.images), start=1):
        t0 = time.perf_counter()
        image = None if problem else decode_image(path)
        t1 = time.perf_counter()
        if image is None:
            log.error("%s: %s; skipped", path, problem or "not a readable image file")
            failed += 1
            continue
        c = clf.classify(image)
        verdict = judge(point, clf.bundle.labels, read_outputs(clf.interpreter))
        total = (time.perf_counter() - t0) * 1e3
        result = messages.Result(seq, time.time(), c, (t1 - t0) * 1e3, total)
        payload = messages.result_message(result, model, clf.backend).model_dump()
        ood = verdict.ood_score  # unrounded: re-deciding from it must agree with accepted
        if args.json:
            print(json.dumps({"image": str(path), **payload, "accepted": verdict.accepted,
                              "ood_score": ood, "reason": verdict.reason,
                              "verdict": verdict.verdict,
                              "explanation": verdict.explanation}), flush=True)
        else:
            ranked = ", ".join(f"{k.label} {k.score:.3f}" for k in c.top_k) or "(no class)"
            answer = "accepted" if verdict.accepted else f"rejected: {verdict.reason}"
            print(f"{path}: {ranked}  [{answer}] [{clf.backend} {c.inference_ms:.1f} ms]",
                  flush=True)
    clf.close()
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coral-classifier",
        description="Classify camera frames on a Coral Edge TPU and publish results over MQTT.",
        epilog="exit codes: 0 ok, 1 runtime failure, 2 bad configuration or arguments, "
               "3 bad model or bundle, 4 backend unavailable (no Edge TPU / runtime), "
               "5 camera failure, 6 MQTT broker unreachable or refusing, "
               "130 interrupted")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--log_level", "--log-level", dest="log_level",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None,
                   help="override the config's log level")
    p.add_argument("--log_format", "--log-format", dest="log_format", choices=["text", "json"],
                   default="text", help="json: one JSON object per log line")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the daemon (camera -> classifier -> MQTT)")
    r.add_argument("--config", required=True, help="TOML config file (see device/example.toml)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a config file; exit 2 naming a bad key")
    c.add_argument("config", help="TOML config file")
    c.set_defaults(func=cmd_check_config)

    k = sub.add_parser("classify", help="classify image files once (like pycoral's "
                                        "classify_image.py)")
    k.add_argument("--model", required=True, help="bundle folder or .tflite file")
    k.add_argument("--labels", default=None, help="labels file, for a bare .tflite")
    k.add_argument("--top_k", "--top-k", dest="top_k", type=int, default=3,
                   help="how many classes to show (default 3)")
    k.add_argument("--backend", choices=["auto", "edgetpu", "cpu"], default="auto",
                   help="auto (default) uses the Edge TPU when present, else the CPU")
    k.add_argument("--device", default="", help="Edge TPU: usb, usb:N, pci, pci:N")
    k.add_argument("--num_threads", "--num-threads", dest="num_threads", type=int, default=2,
                   help="CPU backend threads (default 2)")
    k.add_argument("--json", action="store_true",
                   help="one JSON line per image, with the fields of the MQTT result")
    k.add_argument("images", nargs="+", help="image files or folders (walked)")
    k.set_defaults(func=cmd_classify)

    d = sub.add_parser("doctor", help="check this machine's setup; say what is wrong and how "
                                      "to fix it")
    d.add_argument("--config", default=None, help="also check the broker, model and disk of "
                   "this config (default: the installed /etc/coral-classifier/config.toml)")
    d.add_argument("--json", action="store_true", help="one JSON object")
    d.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level or "INFO", args.log_format, args.command)
    return run_command(args.func, args, log)


if __name__ == "__main__":
    sys.exit(main())
