"""`make demo` as a newcomer sees it: the flagship bundle on the six banknote photos shipped
in demo/banknotes-vnd, one event per note, and the web page's address printed beside the
MQTT messages, serving while the demo runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

from .conftest import ROOT, wait_until

PHOTOS = ROOT / "demo" / "banknotes-vnd"
FLAGSHIP = ROOT / "compiled_models" / "banknotes-vnd"


def test_make_demo_flagship_photos_and_web_page(tmp_path):
    assert (PHOTOS / "ATTRIBUTION.md").is_file() and "CC BY 4.0" in \
        (PHOTOS / "ATTRIBUTION.md").read_text()
    photos = sorted(p.stem for p in PHOTOS.glob("*.jpg"))
    # six known notes, an untaught 2,000 VND note and a cat (a foreign object)
    assert len(photos) == 8 and photos[-2:] == ["foreign_cat", "untaught_2000_vnd"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "device.tools.demo", "--model", str(FLAGSHIP), "--photos",
         str(PHOTOS), "--seconds", "24", "--fps", "10", "--workdir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines, live = [], None
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            m = re.match(r"web page on (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
            if line.startswith("event") and live is None:
                # the page serves while the demo runs: a frame of the replay, the event
                with urllib.request.urlopen(url + "api/live", timeout=10) as r:
                    live = json.loads(r.read())
                # the page records the event on its own thread: wait for the page itself
                events = wait_until(lambda u=url: _nonempty_events(u), 15, "the page's event")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any(line.startswith("web page on http://127.0.0.1:") for line in lines[:3]), lines
    assert live["model"]["name"] == "banknotes-vnd" and live["seq"] is not None
    assert events["events"] and events["mode"] == "event"
    got = [(line.split()[1], line.split("frames  id ")[1].split()[1])
           for line in lines if line.startswith("event")]
    # file-name order; each photo held 6 frames with an empty (grey) slot between; this
    # demo machine takes notes up to 100,000 (decision.accept): the others are refused
    notes = [(p, "REFUSED" if p in ("200000_vnd", "500000_vnd") else "ACCEPTED")
             for p in photos[:6]]
    assert got[:6] == notes, lines
    # the cat is a foreign object, not an empty slot; the untaught note is not accepted
    assert got[6:8] == [("unknown", "UNKNOWN")] * 2, lines
    cat = [line for line in lines if line.startswith("event") and "foreign_object" in line]
    assert cat, lines
    assert "availability   stopped" in lines[-2]


def _nonempty_events(url: str) -> dict | None:
    with urllib.request.urlopen(url + "api/events", timeout=10) as r:
        events = json.loads(r.read())
    return events if events["events"] else None
