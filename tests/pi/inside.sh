#!/usr/bin/env bash
# Runs inside the emulated Bookworm arm64 root (tests/pi/run.sh): install as install-device
# does, classify the golden images, run the daemon against the host's loopback broker,
# run doctor. Any failed expectation exits non-zero.
set -euo pipefail
PORT=$1
SRC=/work/src
PREFIX=/opt/coral-classifier
say() { printf '\n== test-pi (arm64): %s\n' "$*"; }

say "$(uname -m), $(python3 --version), system numpy $(python3 -c 'import numpy; print(numpy.__version__)')"
say "install-device (DESTDIR=/stage: same venv flags and constraints, no users/systemd)"
rm -rf /stage
DESTDIR=/stage PREFIX=$PREFIX SYSTEMCTL=true PYTHON=/usr/bin/python3 \
    bash "$SRC/systemd/install-device.sh" install
VENV=/stage$PREFIX/venv
"$VENV/bin/python" - <<'EOF'
import numpy, cv2, sys
print(f"venv: numpy {numpy.__version__} from {numpy.__file__}, opencv {cv2.__version__}")
assert numpy.__version__.startswith("1."), "numpy 2 in the venv would break picamera2"
import importlib.util
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow must not be installed"
EOF

say "classify --backend cpu: the flagship bundle's golden images"
BUNDLE=$SRC/compiled_models/banknotes-vnd
"$VENV/bin/python" - "$BUNDLE" "$VENV/bin/coral-classifier" <<'EOF'
import json, subprocess, sys
bundle, exe = sys.argv[1], sys.argv[2]
golden = json.load(open(f"{bundle}/manifest.json"))["golden"]
files = [f"{bundle}/{g['file']}" for g in golden]
r = subprocess.run([exe, "classify", "--backend", "cpu", "--json", "--model", bundle, *files],
                   capture_output=True, text=True)
print(r.stderr[-2000:], file=sys.stderr)
assert r.returncode == 0, r.returncode
got = [json.loads(line) for line in r.stdout.splitlines()]
for g, out in zip(golden, got):
    print(f"  {g['file']:22s} expected {g['label']:12s} got {out['label']:12s} "
          f"{out['score']:.3f}  {out['latency_ms']['inference']:.0f} ms  "
          f"accepted={out.get('accepted')}")
    assert out["label"] == g["label"], (g, out["label"])
print(f"  {len(got)}/{len(golden)} golden images as expected on arm64")
EOF

say "the daemon: replay camera -> model -> MQTT on 127.0.0.1:$PORT"
mkdir -p /work/replay
cp "$BUNDLE"/golden/*.jpg /work/replay/
cat >/work/daemon.toml <<EOF
[camera]
type = "replay"
source = "/work/replay"
fps = 4
loop = true
[model]
path = "$BUNDLE"
backend = "cpu"
num_threads = 2
[mqtt]
host = "127.0.0.1"
port = $PORT
device_id = "pi-emulated"
status_interval = 2.0
[state]
dir = "/work/state"
EOF
"$VENV/bin/python" - "$PORT" "$VENV/bin/coral-classifier" <<'EOF'
import json, signal, subprocess, sys, threading, time
import paho.mqtt.client as mqtt
port, exe = int(sys.argv[1]), sys.argv[2]
got, cond = [], threading.Condition()
def on_message(c, u, m):
    with cond:
        got.append((m.topic.split("/", 2)[2], m.payload))
        cond.notify_all()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
c.on_message = on_message
c.connect("127.0.0.1", port)
c.subscribe("coral-classifier/pi-emulated/#", qos=1)
c.loop_start()
d = subprocess.Popen([exe, "run", "--config", "/work/daemon.toml"], stderr=subprocess.PIPE,
                     text=True)
def have(topic, n=1):
    return sum(t == topic for t, _ in got) >= n
deadline = time.monotonic() + 300
with cond:
    while not (have("result", 6) and have("status") and have("availability")):
        assert d.poll() is None, d.stderr.read()[-3000:]
        assert time.monotonic() < deadline, sorted({t for t, _ in got})
        cond.wait(1)
d.send_signal(signal.SIGTERM)
assert d.wait(60) == 0
with cond:
    while [p for t, p in got if t == "availability"][-1:] != [b"stopped"]:
        assert time.monotonic() < deadline
        cond.wait(1)
for topic, payload in got:
    if topic == "result":
        r = json.loads(payload)
        print(f"  result  #{r['seq']:<3d} {r['label']:12s} {r['score']:.3f} "
              f"{r['latency_ms']['inference']:.0f} ms on {r['backend']}")
    elif topic == "status":
        s = json.loads(payload)
        print(f"  status  {s['state']} model={s['model']['name']} v{s['model']['version']} "
              f"frames={s['frames']} fps={s['fps']} worker_restarts={s['worker_restarts']}")
    elif topic == "availability":
        print(f"  availability {payload.decode()}")
EOF

say "doctor"
"$VENV/bin/coral-classifier" doctor --config /work/daemon.toml || true
"$VENV/bin/coral-classifier" doctor --json --config /work/daemon.toml | "$VENV/bin/python" -c '
import json, sys
checks = {c["name"]: c for c in json.load(sys.stdin)["checks"]}
assert checks["python"]["status"] == "ok" and checks["numpy"]["status"] == "ok", checks
assert checks["broker"]["status"] == "ok", checks["broker"]
assert checks["model"]["status"] == "ok", checks.get("model")
print("  doctor: python, numpy, broker and model checks ok on arm64")
'
