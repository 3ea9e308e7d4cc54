"""Pull updates end to end (issue 14): a real daemon, a real mosquitto, cmd/update fetching
from a local HTTP server (host_training.fleet.serve), and the device's own switch, self-test in
the inference worker, confirmation and rollback. Devices require signed envelopes (issue
22: signing is on by default); `publish` signs what the tests send."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from host_training.fleet.serve import BundleServer, pack, public_key_b64, signed_request

from .conftest import Recorder, lock_held, wait_until, write_config
from .test_deploy import DEMO, variant


@pytest.fixture
def server():
    s = BundleServer("127.0.0.1", 0)
    yield s
    s.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("good", "other"):
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        (d / f"{name}.pem").write_bytes(pem)
        out[name] = d / f"{name}.pem"
    return out


def start_device(tmp_path, broker, daemon_factory, device_id, key=None, env=None,
                 prepare=None, **update):
    """A daemon on v0 (the demo bundle). key: the private key it trusts (its public half
    goes to update.public_key); None with allow_unsigned=True is the explicit opt-out.
    prepare(models) runs before the daemon starts."""
    root = tmp_path / "device"
    (root / "models").mkdir(parents=True)
    shutil.copytree(DEMO, root / "models" / "v0")
    (root / "models" / "current").symlink_to("v0")
    if prepare is not None:
        prepare(root / "models")
    from device.tools.synthetic import write_sequence

    write_sequence(tmp_path / "replay", ["note_5", "note_10"], gap=2, frames_per_object=3)
    if key is not None:
        update = {"public_key": public_key_b64(key), **update}
    cfg = write_config(
        tmp_path / "dev.toml",
        camera={"type": "replay", "source": str(tmp_path / "replay"), "fps": 20, "loop": True},
        model={"path": str(root / "models" / "current"), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": device_id,
              "status_interval": 0.5},
        update={"allowed_schemes": ["http", "file"], **update})
    rec = Recorder(broker.port, f"coral-classifier/{device_id}/#")
    d = daemon_factory(cfg, env)
    rec.wait_for(lambda r: len(r.on("/result")) >= 3, 60, "results from v0")
    return {"root": root, "models": root / "models", "rec": rec, "daemon": d,
            "port": broker.port, "id": device_id, "key": key}


@pytest.fixture
def device(tmp_path, broker, daemon_factory, keys):
    dev = start_device(tmp_path, broker, daemon_factory, "upd-1", key=keys["good"])
    yield dev
    dev["rec"].close()


def sign_for(dev, payload: dict, key=None) -> dict:
    """{url, sha256, version, size?, id} as a signed {envelope, signature, id} for dev.
    size defaults to the file's own when url is a path."""
    fields = {k: v for k, v in payload.items() if k != "id"}
    if not fields.get("size") and str(fields.get("url", "")).startswith("/"):
        fields["size"] = Path(fields["url"]).stat().st_size
    return signed_request(key or dev["key"], **{"size": 1, **fields}, devices=[dev["id"]],
                          request_id=payload.get("id", ""))


def publish(dev, payload: dict, raw: bool = False) -> None:
    """Send cmd/update; signed for dev (when it trusts a key) unless raw."""
    import paho.mqtt.client as mqtt

    if not raw and dev.get("key") is not None and "url" in payload:
        payload = sign_for(dev, payload)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", dev["port"])
    c.loop_start()
    c.publish(f"coral-classifier/{dev['id']}/cmd/update", json.dumps(payload), qos=1) \
        .wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def final_reply(dev, rid: str, timeout: float = 90) -> dict:
    rec = dev["rec"]

    def done(r):
        return [x for x in r.json_on("/cmd/update/reply") if x.get("id") == rid and
                (x.get("state") in ("done", "failed", "rolled_back") or not x.get("ok"))]

    rec.wait_for(done, timeout, f"the final reply to {rid}")
    return done(rec)[-1]


def served(dev) -> str:
    return dev["rec"].json_on("/status")[-1]["model"]["sha256"]


def links(dev) -> dict[str, str]:
    m = dev["models"]
    return {n: os.readlink(m / n) if (m / n).is_symlink() else "" for n in ("current",
                                                                          "previous")}


def still_classifying(dev) -> None:
    n = len(dev["rec"].on("/result"))
    dev["rec"].wait_for(lambda r: len(r.on("/result")) > n + 3, 10, "results keep flowing")
    assert dev["daemon"].proc.poll() is None


def leftovers(dev) -> list[str]:
    return [p.name for p in dev["models"].iterdir()
            if p.name.endswith((".partial", ".part")) or p.name == ".deploy-pending"]


def model_sha(bundle: Path) -> str:
    from device.bundle import load_bundle

    return load_bundle(bundle).sha256


def bundle_archive(tmp_path, name, version, tag) -> tuple[Path, Path, str]:
    b = variant(DEMO, tmp_path / name, version, tag)
    archive = tmp_path / f"{name}.tar.gz"
    return b, archive, pack(b, archive)


def test_pull_update_over_http_resumes_confirms_and_reports(tmp_path, device, server):
    from device.bundle import load_bundle

    b, archive, sha = bundle_archive(tmp_path, "new", "7.0.0", b"7")
    # the first download is cut off half way: the device resumes with a Range request
    real = server.handler.do_GET
    calls = []

    def flaky(handler):
        calls.append(1)
        if len(calls) == 1:
            size = archive.stat().st_size
            handler.send_response(200)
            handler.send_header("Content-Length", str(size))
            handler.end_headers()
            handler.wfile.write(archive.read_bytes()[: size // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        real(handler)

    server.handler.do_GET = flaky
    url = f"http://127.0.0.1:{server.port}{server.add(archive)}"
    t0 = time.monotonic()
    publish(device, {"url": url, "sha256": sha, "version": "7.0.0",
                     "size": archive.stat().st_size, "id": "u1"})
    r = final_reply(device, "u1")
    assert r["ok"] and r["state"] == "done", r
    new_sha = load_bundle(b).sha256
    assert r["model"]["sha256"] == new_sha
    assert any(rng.startswith("bytes=") and rng != "bytes=0-" for _, rng in server.requests), \
        server.requests
    states = [x["state"] for x in device["rec"].json_on("/cmd/update/reply") if x.get("id") == "u1"]
    assert states[0] == "waiting_for_lock" and "downloading" in states
    assert states.index("self_testing") < states.index("done")
    device["rec"].wait_for(lambda rr: served(device) == new_sha, 10, "status shows the model")
    status = device["rec"].json_on("/status")[-1]
    assert status["update"]["state"] == "done" and status["update"]["version"] == "7.0.0"
    assert links(device) == {"current": f"7.0.0-{new_sha[:12]}", "previous": "v0"}
    assert leftovers(device) == []
    still_classifying(device)
    assert time.monotonic() - t0 < 60


def test_corrupt_download_changes_nothing(tmp_path, device, server):
    _, archive, sha = bundle_archive(tmp_path, "c", "7.1.0", b"c")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))  # served bytes no longer match the sha256 sent
    before = served(device)
    url = f"http://127.0.0.1:{server.port}{server.add(archive)}"
    publish(device, {"url": url, "sha256": sha, "version": "7.1.0",
                     "size": archive.stat().st_size, "id": "c1"})
    r = final_reply(device, "c1")
    assert not r["ok"] and r["state"] == "failed" and "corrupt download" in r["error"], r
    assert links(device) == {"current": "v0", "previous": ""}
    assert served(device) == before and leftovers(device) == []
    still_classifying(device)


def test_failing_self_test_rolls_back(tmp_path, device, server):
    """The bundle is intact and well signed-off by its sha256s, but its golden samples
    disagree on the device: the worker's self-test refuses it, current switches back."""
    from device.bundle import write_manifest

    b = variant(DEMO, tmp_path / "st", "7.2.0", b"s")
    m = json.loads((b / "manifest.json").read_text())
    labels = [g["label"] for g in m["golden"]]
    for g, wrong in zip(m["golden"], labels[1:] + labels[:1], strict=True):
        g["label"] = wrong
    m.pop("files")
    write_manifest(b, m)
    archive = tmp_path / "st.tar.gz"
    sha = pack(b, archive)
    before = served(device)
    url = f"http://127.0.0.1:{server.port}{server.add(archive)}"
    publish(device, {"url": url, "sha256": sha, "version": "7.2.0",
                     "size": archive.stat().st_size, "id": "s1"})
    r = final_reply(device, "s1")
    assert not r["ok"] and r["state"] == "rolled_back", r
    assert "self-test failed" in r["error"]
    assert links(device) == {"current": "v0", "previous": ""}
    assert served(device) == before and leftovers(device) == []
    status = device["rec"].json_on("/status")[-1]
    assert status["update"]["state"] == "rolled_back"
    still_classifying(device)


def test_signatures(tmp_path, broker, daemon_factory, server, keys):
    """The signed envelope is checked before anything is fetched (issue 22)."""
    dev = start_device(tmp_path, broker, daemon_factory, "upd-sig", key=keys["good"])
    try:
        b, archive, sha = bundle_archive(tmp_path, "sg", "7.3.0", b"g")
        url = f"http://127.0.0.1:{server.port}{server.add(archive)}"
        fields = {"url": url, "sha256": sha, "version": "7.3.0",
                  "size": archive.stat().st_size}
        # unsigned: refused at once (this device requires a signature)
        publish(dev, {**fields, "id": "n1"}, raw=True)
        dev["rec"].wait_for(lambda r: any("requires a signature" in x.get("error", "")
                                          for x in r.json_on("/cmd/update/reply")), 20)
        # signed by another key: refused at once, nothing fetched, nothing changed
        publish(dev, sign_for(dev, {**fields, "id": "b1"}, key=keys["other"]), raw=True)
        r = final_reply(dev, "b1")
        assert not r["ok"] and "bad signature" in r["error"], r
        assert links(dev)["current"] == "v0" and leftovers(dev) == []
        assert server.requests == [], "a byte was fetched before the signature was checked"
        # the right key: served
        publish(dev, {**fields, "id": "g1"})
        r = final_reply(dev, "g1")
        assert r["ok"] and r["state"] == "done", r
        assert links(dev)["current"] == f"7.3.0-{model_sha(b)[:12]}"
    finally:
        dev["rec"].close()


def test_refusals_before_any_download(tmp_path, device, server):
    """Bad requests are answered at once and never touch the store."""
    b, archive, sha = bundle_archive(tmp_path, "rf", "7.4.0", b"r")
    url = f"http://127.0.0.1:{server.port}{server.add(archive)}"
    bad = [({"url": "ftp://x/y", "sha256": sha, "version": "1"}, "https:// URL"),
           ({"url": url, "sha256": "abc", "version": "1"}, "sha256 must be"),
           ({"url": url, "sha256": sha, "version": "-rf"}, "version must be"),
           # a signature without the envelope it signs (the old manifest signature)
           ({"url": url, "sha256": sha, "version": "7.4.0", "signature": "AAAA"},
            "must come with the envelope it signs")]
    for payload, why in bad:
        publish(device, payload, raw="signature" in payload)
        device["rec"].wait_for(lambda r, w=why: any(w in x.get("error", "") for x in
                                                     r.json_on("/cmd/update/reply")), 10, why)
    # the version in the request must be the bundle's own
    publish(device, {"url": url, "sha256": sha, "version": "9.9.9",
                     "size": archive.stat().st_size, "id": "v1"})
    r = final_reply(device, "v1")
    assert not r["ok"] and "the bundle says version '7.4.0'" in r["error"], r
    # a path on the device works too (file), and the size limit holds
    publish(device, {"url": str(archive), "sha256": sha, "version": "7.4.0", "id": "f1"})
    assert final_reply(device, "f1")["state"] == "done"
    assert links(device)["current"] == f"7.4.0-{model_sha(b)[:12]}"
    assert leftovers(device) == []
    # the same bundle again: nothing to do
    publish(device, {"url": str(archive), "sha256": sha, "version": "7.4.0", "id": "f2"})
    assert "already serving" in final_reply(device, "f2").get("note", "")


def test_one_lock_for_push_and_pull_and_a_rollback_command(tmp_path, device, server):
    """While a deploy holds models/.deploy.lock (flock(1), as `make deploy` takes it) the
    update waits; {"rollback": true} then returns to the previous model the same way."""
    import subprocess

    b, archive, sha = bundle_archive(tmp_path, "lk", "7.5.0", b"l")
    name = f"7.5.0-{model_sha(b)[:12]}"  # named as `make deploy` names it
    url = f"http://127.0.0.1:{server.port}{server.add(archive)}"
    lock = device["models"] / ".deploy.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "4"])
    try:
        wait_until(lambda: lock_held(lock), 10, "flock holding the deploy's lock")
        publish(device, {"url": url, "sha256": sha, "version": "7.5.0",
                     "size": archive.stat().st_size, "id": "l1"})
        r = final_reply(device, "l1")
        assert r["ok"] and r["state"] == "done", r
        # done only once the holder let go (however slow the machine made either)
        assert holder.poll() is not None, "the update did not wait for the deploy's lock"
    finally:
        holder.wait(10)
    assert links(device) == {"current": name, "previous": "v0"}
    publish(device, {"rollback": True, "id": "b1"})
    r = final_reply(device, "b1")
    assert r["ok"] and r["state"] == "done", r
    assert links(device) == {"current": "v0", "previous": name}
    device["rec"].wait_for(lambda rr: served(device) == r["model"]["sha256"], 10)
    still_classifying(device)
