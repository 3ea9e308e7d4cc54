"""Pull updates under attack (issue 22, items 1-6): hostile URLs, servers that hang up,
trickle, redirect or serve bombs, replays of old versions, a full disk. Real daemon, real
mosquitto, real HTTP(S) servers on loopback, a small tmpfs in a private mount namespace.
Most devices here opt out of signing (update.allow_unsigned) so each attack reaches the
download and unpack code it targets; the signed path is tested at the end."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import io
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from host_training.fleet.serve import BundleServer, signed_request

from .conftest import PYTHON, ROOT, Recorder, write_config
from .test_disk import can_mount_tmpfs
from .test_update import (
    DEMO,
    bundle_archive,
    final_reply,
    leftovers,
    links,
    model_sha,
    publish,
    start_device,
    still_classifying,
)

ZERO_SHA = "0" * 64


class Hostile(http.server.ThreadingHTTPServer):
    """A loopback server whose GET handler is a function of (handler, server)."""

    daemon_threads = True

    def __init__(self, get, tls: tuple[Path, Path] | None = None):
        server = self
        self.hits: list[str] = []
        self.stop = threading.Event()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    get(self, server)

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), H)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def hostile():
    servers: list[Hostile] = []

    def make(get, tls=None) -> Hostile:
        servers.append(Hostile(get, tls))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def server():
    s = BundleServer("127.0.0.1", 0)
    yield s
    s.close()


def unsigned_device(tmp_path, broker, daemon_factory, device_id, env=None, **update):
    """The explicit opt-out: unsigned {url, sha256, version} requests are accepted."""
    return start_device(tmp_path, broker, daemon_factory, device_id, env=env,
                        allow_unsigned=True, **update)


def lock_is_free(models: Path) -> bool:
    fd = os.open(models / ".deploy.lock", os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# -- 1: /dev/zero, a FIFO, an endless stream: the disk keeps its reserve ------------------
@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs mount namespaces (unshare -m) to "
                    "mount a small tmpfs; run as root or with CAP_SYS_ADMIN")
def test_1_dev_zero_fifo_and_endless_stream_cannot_fill_the_disk(tmp_path, broker, hostile):
    from device.tools.synthetic import write_sequence

    state = tmp_path / "state"  # a 24 MiB tmpfs in the daemon's namespace: models + outbox
    state.mkdir()
    write_sequence(tmp_path / "replay", ["note_5", "note_10"], gap=2, frames_per_object=3)
    reserve = 8 << 20
    cfg = write_config(
        tmp_path / "dev.toml",
        camera={"type": "replay", "source": str(tmp_path / "replay"), "fps": 20, "loop": True},
        model={"path": str(state / "models" / "current"), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "hz-1",
              "status_interval": 0.5},
        update={"allowed_schemes": ["http", "file"], "allow_unsigned": True,
                "reserve_bytes": reserve},
        state={"dir": str(state)})
    fifo = tmp_path / "fifo.tar.gz"
    os.mkfifo(fifo)

    def endless(h, srv):  # no Content-Length: zeros until the client gives up
        h.send_response(200)
        h.end_headers()
        while not srv.stop.is_set():
            h.wfile.write(b"\0" * 65536)

    stream = hostile(endless)
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        ["unshare", "-m", "sh", "-c",
         f"mount -t tmpfs -o size=24m tmpfs '{state}' && mkdir '{state}/models' && "
         f"cp -r '{DEMO}' '{state}/models/v0' && ln -s v0 '{state}/models/current' && "
         f"exec '{PYTHON}' -m device run --config '{cfg}'"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    rec = Recorder(broker.port, "coral-classifier/hz-1/#")
    inside = Path(f"/proc/{proc.pid}/root") / str(state).lstrip("/")
    dev = {"rec": rec, "port": broker.port, "id": "hz-1", "key": None,
           "daemon": type("D", (), {"proc": proc})()}
    try:
        rec.wait_for(lambda r: len(r.on("/result")) >= 3, 60, "results from v0")
        cases = [("z", "/dev/zero", "not a regular file"),
                 ("f", str(fifo), "not a regular file"),
                 ("s", f"http://127.0.0.1:{stream.port}/bundle.tar.gz", "free space")]
        for rid, url, why in cases:
            t0 = time.monotonic()
            publish(dev, {"url": url, "sha256": ZERO_SHA, "version": "9.0.0", "id": rid})
            r = final_reply(dev, rid, 60)
            assert not r["ok"] and why in r["error"], (url, r)
            assert time.monotonic() - t0 < 30, url
            free = shutil.disk_usage(inside).free
            assert free >= reserve - (2 << 20), f"{url}: {free} bytes left"
            assert not [p.name for p in (inside / "models").iterdir()
                        if p.name.endswith((".part", ".partial"))]
        assert proc.poll() is None
        still_classifying(dev)
    finally:
        rec.close()
        proc.terminate()
        proc.wait(20)
        log.close()


# -- 2: a server that hangs up half-way; leftovers of a dead update are swept at start ----
def half(h, srv):  # promises 4 MB, sends half, hangs up; every time
    h.send_response(200)
    h.send_header("Content-Length", str(4 << 20))
    h.end_headers()
    h.wfile.write(b"\0" * (2 << 20))
    h.close_connection = True


def test_2_a_server_that_hangs_up_half_way_leaves_no_part_file(tmp_path, broker,
                                                               daemon_factory, hostile):
    cut = hostile(half)
    dev = unsigned_device(tmp_path, broker, daemon_factory, "hu-1", deadline=8.0)
    try:
        url = f"http://127.0.0.1:{cut.port}/b.tar.gz"
        for rid, sha in (("h1", "1" * 64), ("h2", "2" * 64)):  # one .part per sha, before
            publish(dev, {"url": url, "sha256": sha, "version": "9.0.1", "id": rid})
            r = final_reply(dev, rid, 40)
            assert not r["ok"] and r["state"] == "failed", r
            assert leftovers(dev) == [], "a partial download was left behind"
        assert len(cut.hits) >= 2  # it did try (and resume) before giving up
        assert lock_is_free(dev["models"])
        still_classifying(dev)
    finally:
        dev["rec"].close()


def test_2_b_leftovers_of_an_update_that_died_are_swept_at_start(tmp_path, broker,
                                                                 daemon_factory):
    def leave_leftovers(models: Path) -> None:  # what an update killed mid-way leaves
        (models / ".download-0123456789abcdef.part").write_bytes(b"\0" * (1 << 20))
        (models / ".update-0123456789abcdef.partial").mkdir()
        (models / ".update-0123456789abcdef.partial" / "x.tflite").write_bytes(b"\0" * 99)

    dev = unsigned_device(tmp_path, broker, daemon_factory, "hu-2", prepare=leave_leftovers)
    try:
        dev["rec"].wait_for(lambda r: leftovers(dev) == [], 10,
                            "the leftovers of an update that died swept at start")
        assert links(dev)["current"] == "v0"
    finally:
        dev["rec"].close()


# -- 3: a trickling server fails within the deadline and frees .deploy.lock ---------------
def test_3_trickling_server_fails_within_the_deadline_and_frees_the_lock(
        tmp_path, broker, daemon_factory, hostile):
    def trickle(h, srv):  # one byte every 2 s: never a 6 s stall (update.timeout)
        h.send_response(200)
        h.send_header("Content-Length", str(1 << 20))
        h.end_headers()
        while not srv.stop.wait(2):
            h.wfile.write(b"\0")
            h.wfile.flush()

    def slow(h, srv):  # 2 kB/s: above min_rate, but 1 MB would take 8 minutes
        h.send_response(200)
        h.send_header("Content-Length", str(1 << 20))
        h.end_headers()
        while not srv.stop.wait(0.25):
            h.wfile.write(b"\0" * 512)
            h.wfile.flush()

    slow_srv, trickle_srv = hostile(slow), hostile(trickle)
    dev = unsigned_device(tmp_path, broker, daemon_factory, "tr-1", timeout=6.0,
                          min_rate=1024, deadline=15.0)
    try:
        for rid, srv, why, within in (("t1", trickle_srv, "min_rate", 14),
                                      ("t2", slow_srv, "update.deadline", 25)):
            t0 = time.monotonic()
            publish(dev, {"url": f"http://127.0.0.1:{srv.port}/b.tar.gz",
                          "sha256": ZERO_SHA, "version": "9.0.2", "id": rid})
            r = final_reply(dev, rid, 40)
            took = time.monotonic() - t0
            assert not r["ok"] and why in r["error"], r
            assert took < within, f"{rid} took {took:.0f} s"
            assert lock_is_free(dev["models"]), ".deploy.lock still held"
            assert leftovers(dev) == []
        still_classifying(dev)
    finally:
        dev["rec"].close()


# -- 4: versions only move forward (a replayed 2.0.0 after 3.0.0) ----------------------
def test_4_a_replayed_older_version_is_refused_unless_downgrade_is_explicit(
        tmp_path, broker, daemon_factory, server):
    dev = unsigned_device(tmp_path, broker, daemon_factory, "dg-1")
    try:
        b3, a3, sha3 = bundle_archive(tmp_path, "v3", "3.0.0", b"3")
        b2, a2, sha2 = bundle_archive(tmp_path, "v2", "2.0.0", b"2")
        url3 = f"http://127.0.0.1:{server.port}{server.add(a3)}"
        url2 = f"http://127.0.0.1:{server.port}{server.add(a2)}"
        publish(dev, {"url": url3, "sha256": sha3, "version": "3.0.0", "id": "d3"})
        assert final_reply(dev, "d3")["state"] == "done"
        fetched = len(server.requests)
        publish(dev, {"url": url2, "sha256": sha2, "version": "2.0.0", "id": "d2"})
        r = final_reply(dev, "d2")
        assert not r["ok"] and "older than 3.0.0" in r["error"], r
        assert len(server.requests) == fetched, "the old version was downloaded"
        assert links(dev)["current"] == f"3.0.0-{model_sha(b3)[:12]}"
        # said explicitly, a downgrade goes through
        publish(dev, {"url": url2, "sha256": sha2, "version": "2.0.0", "id": "d2b",
                      "allow_downgrade": True})
        assert final_reply(dev, "d2b")["state"] == "done"
        assert links(dev)["current"] == f"2.0.0-{model_sha(b2)[:12]}"
        still_classifying(dev)
    finally:
        dev["rec"].close()


# -- 5: nothing is fetched before the signature, nothing unpacked beyond the limits -------
def bomb(path: Path, files: int) -> None:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
        for i in range(files):
            tar.addfile(tarfile.TarInfo(f"f{i}"))


def test_5_a_a_bad_signature_fetches_nothing(tmp_path, broker, daemon_factory, server,
                                             keys):
    dev = start_device(tmp_path, broker, daemon_factory, "bm-1", key=keys["good"])
    try:
        _, archive, sha = bundle_archive(tmp_path, "sg", "9.1.0", b"5")
        url = f"http://127.0.0.1:{server.port}{server.add(archive)}"
        # the old form: a signature over the manifest inside the archive
        publish(dev, {"url": url, "sha256": sha, "version": "9.1.0", "signature": "A" * 86
                      + "==", "id": "s1"}, raw=True)
        r = final_reply(dev, "s1", 40)
        assert not r["ok"], r
        assert server.requests == [], "bytes were fetched before the signature was checked"
        # an envelope signed by another key
        forged = signed_request(keys["other"], url=url, sha256=sha, version="9.1.0",
                                size=archive.stat().st_size, devices=["bm-1"],
                                request_id="s2")
        publish(dev, forged, raw=True)
        r = final_reply(dev, "s2", 40)
        assert not r["ok"] and "bad signature" in r["error"], r
        assert server.requests == [] and leftovers(dev) == []
        assert links(dev)["current"] == "v0"
    finally:
        dev["rec"].close()


def test_5_b_an_archive_bomb_is_refused_without_unpacking_it(tmp_path, broker,
                                                             daemon_factory, server):
    dev = unsigned_device(tmp_path, broker, daemon_factory, "bm-2")
    try:
        # 150,000 empty files in a 1 MB archive with a matching sha256: refused after
        # reading max_files of them
        bomb_file = tmp_path / "bomb.tar.gz"
        bomb(bomb_file, 150_000)
        bsha = hashlib.sha256(bomb_file.read_bytes()).hexdigest()
        burl = f"http://127.0.0.1:{server.port}{server.add(bomb_file)}"
        t0 = time.monotonic()
        publish(dev, {"url": burl, "sha256": bsha, "version": "9.1.1", "id": "b1"})
        r = final_reply(dev, "b1", 90)
        took = time.monotonic() - t0
        assert not r["ok"] and "update.max_files" in r["error"], r
        assert took < 15, f"{took:.0f} s"
        assert leftovers(dev) == [] and links(dev)["current"] == "v0"
        assert "Traceback" not in dev["daemon"].output()
        still_classifying(dev)
    finally:
        dev["rec"].close()


# -- 6: redirects are re-checked; a wrong sha256 reply holds no digest -------------------
def self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = folder / "cert.pem", folder / "key.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_6_a_an_https_to_http_redirect_is_refused(tmp_path, broker, daemon_factory,
                                                  hostile, server):
    _, archive, sha = bundle_archive(tmp_path, "rd", "9.2.0", b"6")
    plain = f"http://127.0.0.1:{server.port}{server.add(archive)}"
    crt, pem = self_signed(tmp_path)

    def redirect(h, srv):
        h.send_response(302)
        h.send_header("Location", plain)
        h.send_header("Content-Length", "0")
        h.end_headers()

    tls = hostile(redirect, tls=(crt, pem))
    dev = unsigned_device(tmp_path, broker, daemon_factory, "rd-1",
                          env={"SSL_CERT_FILE": str(crt)}, allowed_schemes=["https", "file"])
    try:
        publish(dev, {"url": f"https://127.0.0.1:{tls.port}/b.tar.gz", "sha256": sha,
                      "version": "9.2.0", "id": "r1"})
        r = final_reply(dev, "r1", 40)
        assert tls.hits, "the https server was never asked"
        assert not r["ok"] and "allowed_schemes" in r["error"], r
        assert server.requests == [], "the http redirect was followed"
        assert links(dev)["current"] == "v0" and leftovers(dev) == []
    finally:
        dev["rec"].close()


def test_6_b_a_wrong_sha256_reply_holds_no_digest_of_the_file(tmp_path, broker,
                                                              daemon_factory):
    dev = unsigned_device(tmp_path, broker, daemon_factory, "rd-2")
    try:
        # a file the daemon can read (its MQTT password file, say), with a wrong sha256
        secret = tmp_path / "password_file"
        secret.write_text("hunter2\n")
        real = hashlib.sha256(secret.read_bytes()).hexdigest()
        publish(dev, {"url": str(secret), "sha256": ZERO_SHA, "version": "9.2.1", "id": "o1"})
        r = final_reply(dev, "o1", 40)
        assert not r["ok"] and "corrupt download" in r["error"], r
        dev["rec"].wait_for(lambda rr: rr.json_on("/status")[-1]["update"]["state"] ==
                            "failed", 10, "the status after the failure")
        text = json.dumps(dev["rec"].json_on("/cmd/update/reply")) + json.dumps(
            dev["rec"].json_on("/status")[-1])
        leaked = [real[i:i + 8] for i in range(len(real) - 7) if real[i:i + 8] in text]
        assert not leaked, f"the reply leaks the file's sha256: {leaked[:3]}"
        assert leftovers(dev) == []
    finally:
        dev["rec"].close()


# -- signing is on by default; envelopes bind the device, the time and the version -------
def test_signed_by_default_and_envelopes_bind_device_time_and_version(
        tmp_path, broker, daemon_factory, server, keys):
    plain = start_device(tmp_path / "a", broker, daemon_factory, "sd-0")  # no key, no opt-out
    try:
        _, archive, sha = bundle_archive(tmp_path, "p", "9.3.0", b"p")
        url = f"http://127.0.0.1:{server.port}{server.add(archive)}"
        publish(plain, {"url": url, "sha256": sha, "version": "9.3.0", "id": "p1"})
        r = final_reply(plain, "p1", 20)
        assert not r["ok"] and "allow_unsigned" in r["error"], r
        assert server.requests == []
    finally:
        plain["rec"].close()
    dev = start_device(tmp_path / "b", broker, daemon_factory, "sd-1", key=keys["good"])
    try:
        b3, a3, sha3 = bundle_archive(tmp_path, "s3", "3.0.0", b"x")
        _, a2, sha2 = bundle_archive(tmp_path, "s2", "2.0.0", b"y")
        url3 = f"http://127.0.0.1:{server.port}{server.add(a3)}"
        url2 = f"http://127.0.0.1:{server.port}{server.add(a2)}"
        f3 = {"url": url3, "sha256": sha3, "version": "3.0.0", "size": a3.stat().st_size}
        refused = [
            (signed_request(keys["good"], **f3, devices=["sd-other"], request_id="e1"),
             "not this device"),
            (signed_request(keys["good"], **f3, devices=["sd-1"], request_id="e2",
                            not_before=time.time() + 3600), "not valid before"),
            ({**json.loads(json.dumps(signed_request(keys["good"], **f3, devices=["sd-1"]))),
              "url": url2, "id": "e3"}, "only envelope, signature and id")]
        for payload, why in refused:
            publish(dev, payload, raw=True)
            r = final_reply(dev, payload["id"], 20)
            assert not r["ok"] and why in r["error"], (why, r)
        assert server.requests == []
        publish(dev, signed_request(keys["good"], **f3, devices=["sd-1"], request_id="g3"),
                raw=True)
        assert final_reply(dev, "g3")["state"] == "done"
        # the old, correctly signed 2.0.0 replayed: refused before it is fetched
        n = len(server.requests)
        publish(dev, signed_request(keys["good"], url=url2, sha256=sha2, version="2.0.0",
                                    size=a2.stat().st_size, devices=["sd-1"],
                                    request_id="g2"), raw=True)
        r = final_reply(dev, "g2")
        assert not r["ok"] and "older than 3.0.0" in r["error"], r
        assert len(server.requests) == n
        assert links(dev)["current"] == f"3.0.0-{model_sha(b3)[:12]}"
        assert links(dev)["previous"] == "v0"
    finally:
        dev["rec"].close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from host_training.fleet.keys import make_keys

    d = tmp_path_factory.mktemp("keys")
    return {"good": make_keys(d, "good")[0], "other": make_keys(d, "other")[0]}


# -- signing on by default at install: make keys, install-device, doctor -------------------
def test_make_keys_install_device_and_doctor(tmp_path):
    import stat

    from .conftest import run_cli
    from .test_install import run as install

    folder = tmp_path / "k"

    def make_keys():
        return subprocess.run(["make", "-s", "-o", ".venv/.installed", "keys",
                               f"KEYS_DIR={folder}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)

    r = make_keys()
    assert r.returncode == 0, r.stderr
    pem, pub = folder / "update.pem", folder / "update.pub"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert "BEGIN PUBLIC KEY" in pub.read_text()
    before = pem.read_bytes()
    r = make_keys()
    assert r.returncode != 0 and "never overwritten" in r.stderr, r.stderr
    assert pem.read_bytes() == before

    dest = tmp_path / "root"
    config = dest / "etc/coral-classifier/config.toml"
    r = install("install", dest)  # no key: the opt-out is written out, and said
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\nallow_unsigned = true" in config.read_text()
    assert "UPDATE_PUBLIC_KEY" in r.stdout
    doctor = run_cli("doctor", "--config", str(config))
    line = [x for x in doctor.stdout.splitlines() if "pull updates" in x]
    assert line and line[0].lstrip().startswith("!") and "allow_unsigned" in line[0], \
        doctor.stdout

    r = install("install", dest, UPDATE_PUBLIC_KEY=str(pem))
    assert r.returncode != 0 and "private key" in r.stderr, r.stdout + r.stderr
    r = install("install", dest, UPDATE_PUBLIC_KEY=str(pub))
    assert r.returncode == 0, r.stdout + r.stderr
    text = config.read_text()
    assert '\npublic_key = "/etc/coral-classifier/update.pub"' in text
    assert "\nallow_unsigned = false" in text
    assert (dest / "etc/coral-classifier/update.pub").read_bytes() == pub.read_bytes()
    # the key as the device reads it (the staging root stands in for /)
    config.write_text(text.replace('"/etc/coral-classifier/update.pub"',
                                   f'"{dest}/etc/coral-classifier/update.pub"'))
    doctor = run_cli("doctor", "--config", str(config))
    line = [x for x in doctor.stdout.splitlines() if "pull updates" in x]
    assert line and "signed updates only" in line[0], doctor.stdout
