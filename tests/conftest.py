"""Shared fixtures: a real mosquitto per session, an MQTT recorder, shared/ paths."""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from device.tools.demo import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORAL_MODELS = SHARED / "models" / "coral"
CORAL_IMAGES = SHARED / "images" / "coral"
PYTHON = sys.executable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
# Whole modules that train, convert or evaluate with TensorFlow (the trainer's tests).
TRAINER_MODULES = {"test_training", "test_flagship", "test_openset"}
NO_TF = ("needs TensorFlow, a workstation dependency (a Pi's venv has the device side "
         "only): run the trainer's tests on x86-64")


def pytest_collection_modifyitems(config, items):
    """On a machine without TensorFlow (a Pi), the trainer's tests skip with the reason."""
    if HAS_TENSORFLOW:
        return
    skip = pytest.mark.skip(reason=NO_TF)
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in TRAINER_MODULES or \
                item.get_closest_marker("train"):
            item.add_marker(skip)


def need_shared(*paths: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"needs ../shared ({', '.join(str(m) for m in missing)} absent)")


class Broker:
    """A real mosquitto on a free loopback port with its own config file."""

    def __init__(self, workdir: Path, extra_conf: str = "", port: int | None = None):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            pytest.fail("mosquitto is not installed: `make test` installs it "
                        "(apt-get install mosquitto)")
        self.workdir, self.extra_conf = workdir, extra_conf
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.conf.write_text(
            # as root, mosquitto would switch to its own user, who cannot read pytest's
            # private temporary folders (passwords, certificates, persistence)
            f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n"
            + ("" if "allow_anonymous" in extra_conf else "allow_anonymous true\n")
            + ("" if "persistence" in extra_conf else "persistence false\n")
            + extra_conf)
        self.log = workdir / f"mosquitto-{self.port}.log"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=self.log.open("a"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)

    @classmethod
    def restart(cls, old: Broker) -> Broker:
        """A new mosquitto on the same port with the same config (and persistence)."""
        old.stop()
        return cls(old.workdir, old.extra_conf, old.port)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


class Recorder:
    """Subscribes to a topic filter and keeps every message (topic, payload, retain)."""

    def __init__(self, port: int, topic: str = "#", client_id: str = ""):
        """A client_id makes it a controller with a persistent session: it resubscribes
        after a broker restart and the broker keeps its QoS 1 messages meanwhile."""
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        # messages published after this returns are ours: the broker has sent its SUBACK
        assert subscribed.wait(10), "test subscriber could not subscribe on mosquitto"

    def _on_message(self, client, userdata, msg) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.cond.notify_all()

    def on(self, suffix: str) -> list[bytes]:
        with self.cond:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def json_on(self, suffix: str) -> list[dict]:
        return [json.loads(p) for p in self.on(suffix)]

    def wait_for(self, predicate, timeout: float = 30.0, what: str = ""):
        """Wait until `predicate(self)` holds; its truthy value. A predicate that indexes
        messages not there yet (IndexError, KeyError) means "not yet"; the last such error
        is in the timeout."""
        deadline = time.monotonic() + timeout
        missing = None
        with self.cond:
            while True:
                try:
                    if got := predicate(self):
                        return got
                except LookupError as exc:
                    missing = exc
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = sorted({t for t, _, _ in self.messages})
                    raise AssertionError(f"timed out waiting for {what or predicate}; "
                                         f"got topics {topics}"
                                         + (f"; last lookup error {missing!r}" if missing else ""))
                self.cond.wait(min(left, 0.2))

    def unique(self, suffix: str) -> dict[str, dict]:
        """Events by event_id, first arrival kept (a QoS 1 consumer dedupes re-deliveries)."""
        out: dict[str, dict] = {}
        for e in self.json_on(suffix):
            out.setdefault(e["event_id"], e)
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(predicate, timeout: float = 30, what: str = ""):
    """The predicate's first truthy value, polled. A lookup into data not there yet
    (KeyError, IndexError) means "not yet"; the last such error is in the timeout."""
    deadline = time.monotonic() + timeout
    missing = None
    while time.monotonic() < deadline:
        try:
            got = predicate()
        except LookupError as exc:
            got, missing = None, exc
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}"
                         + (f"; last lookup error {missing!r}" if missing else ""))


@pytest.fixture
def recorder(broker):
    r = Recorder(broker.port)
    yield r
    r.close()


def write_config(path: Path, camera: dict, model: dict, mqtt: dict, **sections: dict) -> Path:
    """A daemon config; its state (outbox, counts) lives beside it unless given."""
    def value(v) -> str:  # TOML: JSON's scalars and arrays, but inline tables differ
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    def table(name: str, d: dict) -> str:
        return f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in d.items())

    sections.setdefault("state", {"dir": str(path.parent / "state")})
    path.write_text(table("camera", camera) + table("model", model) + table("mqtt", mqtt)
                    + "".join(table(k, v) for k, v in sections.items()))
    return path


class DaemonProcess:
    """`python -m device run` as a real subprocess."""

    def __init__(self, config: Path, env: dict | None = None):
        self.log = config.with_suffix(".log")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "device", "run", "--config", str(config)], cwd=ROOT,
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})

    def output(self) -> str:
        return self.log.read_text()

    def signal(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def daemon_factory():
    started: list[DaemonProcess] = []

    def start(config: Path, env: dict | None = None) -> DaemonProcess:
        d = DaemonProcess(config, env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def run_cli(*args: str, module: str = "device", timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def lock_held(path) -> bool:
    """Someone holds an flock on path (a non-blocking try fails)."""
    import fcntl

    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
