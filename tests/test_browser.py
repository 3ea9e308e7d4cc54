"""The web page in a real browser: Debian's chromium + chromium-driver, headless, driven by
selenium, against a real daemon running the flagship bundle on the demo's banknote photos
(and a bird, which the flagship has never seen).

It loads the live view and sees frames change and the verdicts (accepted, empty, unknown)
shown apart, uploads photos and reads the answer, labels a captured frame past the guards
(a confident model contradicted, a new class), and checks every page at a phone's width
(420 px) and a desktop's (1280 px) for horizontal overflow. Screenshots of each page go to
the test's folder, or to $SCREENSHOTS (e.g. `SCREENSHOTS=docs pytest
tests/test_browser.py` refreshes the README's figures).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from device.tools.demo import free_port, photo_replay, wait_port

from .conftest import ROOT, SHARED, Broker, DaemonProcess, need_shared, write_config
from .webutil import get_json, http, wait_until

PHOTOS = ROOT / "demo" / "banknotes-vnd"
BIRD = SHARED / "images" / "coral" / "bird.bmp"  # the flagship: out of distribution
UNTAUGHT = SHARED / "datasets" / "banknotes-other" / "vnd-phone" / "2000_vnd" / "2k3.jpg"
FLAGSHIP = ROOT / "compiled_models" / "banknotes-vnd"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PHONE, DESKTOP = (420, 900), (1280, 1120)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A daemon with its web page; yields (base URL, state folder, screenshot folder, [the
    broker]) (a test may swap the broker for a restarted one)."""
    need_shared(BIRD, UNTAUGHT)
    work = tmp_path_factory.mktemp("browser")
    photos = work / "photos"
    photos.mkdir()
    for p in [*PHOTOS.glob("*.jpg"), BIRD]:
        shutil.copy(p, photos / p.name)
    photo_replay(work / "replay", photos, frames_per_photo=6, gap=3)
    brokers = [Broker(work)]
    port = free_port()
    cfg = write_config(work / "d.toml",
                       camera={"type": "replay", "source": str(work / "replay"), "fps": 5},
                       model={"path": str(FLAGSHIP), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": brokers[0].port, "device_id": "vend-7",
                             "status_interval": 1.0},
                       decision={"mode": "event"}, web={"enabled": True, "port": port},
                       capture={"keep_doubtful": True, "doubtful_interval": 4.0})
    daemon = DaemonProcess(cfg)
    try:
        wait_port(port, 60)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: get_json(url + "/api/live")["seq"], 30, "a first frame")
        shots = Path(os.environ.get("SCREENSHOTS") or work / "shots")
        shots.mkdir(parents=True, exist_ok=True)
        yield url, work / "state", shots, brokers
    finally:
        daemon.stop()
        brokers[-1].stop()


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.fail("chromium and chromium-driver are needed: `make test` installs them "
                    "(make test-tools)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def viewport(driver, size: tuple[int, int], mobile: bool) -> None:
    """Emulate a screen: a phone applies the page's <meta name="viewport">, as a phone does."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})


def overflow(driver) -> dict:
    """How wide the page is against the window, and the widest elements past its edge."""
    return driver.execute_script("""
        const w = window.innerWidth, out = [];
        for (const el of document.querySelectorAll('body *')) {
          const r = el.getBoundingClientRect();
          if (r.right > w + 0.5 && r.width > 0) out.push(el.tagName + (el.id ? '#' + el.id : '')
                                                        + ' ' + Math.round(r.right));
        }
        return {scroll: document.documentElement.scrollWidth, inner: w, past: out.slice(0, 8)};""")


def text_of(driver, css: str) -> str:
    """The text an element shows ('' when absent), read in one step: the live page
    replaces its parts every 0.5 s, so a found element may be gone a moment later."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : ''",
        css)


def attr_of(driver, css: str, name: str) -> str:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return e ? e.getAttribute(arguments[1]) || '' : ''", css, name)


def stream_digest(driver) -> str:
    """A hash of the pixels the <img> of the MJPEG stream shows right now."""
    data = driver.execute_script("""
        const img = document.getElementById('stream');
        if (!img.naturalWidth) return '';
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0);
        return c.toDataURL('image/png');""")
    return hashlib.sha256(data.encode()).hexdigest() if data else ""


def live_verdict(driver, verdict: str) -> str:
    """The 'Now' card's verdict text once it shows `verdict` ('' until then)."""
    return attr_of(driver, "#now #verdict", "data-verdict") == verdict and \
        text_of(driver, "#now #verdict")


def test_live_view_shows_frames_and_verdicts(site, browser):
    url, _, shots, _ = site
    viewport(browser, DESKTOP, mobile=False)
    browser.get(url + "/")
    first = wait_until(lambda: stream_digest(browser), 20, "a frame in the live view")
    wait_until(lambda: stream_digest(browser) not in ("", first), 20, "the frame to change")
    seq = wait_until(lambda: text_of(browser, "#seq").startswith("frame #")
                     and text_of(browser, "#seq"), 10, "the frame number")
    wait_until(lambda: text_of(browser, "#seq") != seq, 10, "a newer frame number")
    assert "_vnd" in text_of(browser, "#topk")
    wait_until(lambda: "running" in text_of(browser, "#status"), 10, "the status")
    # the connection indicator: the daemon's MQTT session is up
    wait_until(lambda: attr_of(browser, "#conn", "data-state") == "connected", 10, "MQTT up")
    assert text_of(browser, "#conn") == "MQTT connected"
    assert get_json(url + "/api/live")["mqtt"]["connected"] is True
    # one vocabulary, large: a note, the empty slot between notes, and the bird
    note = wait_until(lambda: live_verdict(browser, "accepted"), 30, "an accepted note")
    assert note.startswith("✔ ACCEPTED") and " VND" in note, note
    empty = wait_until(lambda: live_verdict(browser, "empty"), 30, "the empty slot")
    assert empty.startswith("EMPTY SLOT") and "nothing in the slot" in empty, empty
    bird = wait_until(lambda: live_verdict(browser, "unknown"), 40, "the bird: unknown")
    assert bird.startswith("⚠ NOT ACCEPTED") and "best guess" in bird, bird
    assert "ACCEPTED\n" not in bird.replace("NOT ACCEPTED", "")
    colours = browser.execute_script("""return [...document.querySelectorAll('#now #verdict')]
        .map(e => getComputedStyle(e).backgroundColor)""")
    assert colours and colours[0] != "rgb(231, 246, 236)", colours  # not the accepted green
    # events: the notes accepted, the bird an unknown event that looks different
    wait_until(lambda: text_of(browser, "#events .v-accepted") and text_of(
        browser, "#events .v-unknown"), 60, "accepted and unknown events")
    assert "NOT ACCEPTED" in text_of(browser, "#events .v-unknown")
    assert "VND" in text_of(browser, "#events .v-accepted")
    time.sleep(0.5)  # let the thumbnails load
    browser.save_screenshot(str(shots / "web-live.png"))


def test_upload_verdicts(site, browser):
    from selenium.webdriver.common.by import By

    url, _, shots, _ = site
    viewport(browser, DESKTOP, mobile=False)
    browser.get(url + "/upload")

    def upload(photo: Path) -> str:
        browser.execute_script("document.getElementById('json').textContent = ''")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        wait_until(lambda: f'"image": "{photo.name}"' in text_of(browser, "#json"), 30,
                   f"the answer for {photo.name}")
        return attr_of(browser, "#answer #verdict", "data-verdict")

    assert upload(PHOTOS / "200000_vnd.jpg") == "accepted"
    assert text_of(browser, "#verdict").startswith("✔ ACCEPTED\n200,000 VND")
    # an untaught 2,000 VND note: the model's best guess is 50000_vnd, below its threshold
    assert upload(UNTAUGHT) == "unknown"
    shown = text_of(browser, "#verdict")
    answer = json.loads(text_of(browser, "#json"))
    assert answer["accepted"] is False and answer["reason"] == "below_threshold", answer
    assert shown.startswith("⚠ NOT ACCEPTED"), shown
    assert f"best guess {answer['label']} {answer['score']:.2f}" in shown, shown
    assert "200,000" not in shown and "✔" not in shown
    browser.save_screenshot(str(shots / "web-upload-refused.png"))
    assert upload(BIRD) == "unknown"
    assert "NOT ACCEPTED" in text_of(browser, "#verdict")
    assert upload(PHOTOS / "50000_vnd.jpg") == "accepted"
    browser.save_screenshot(str(shots / "web-upload.png"))


def test_every_verdict_looks_different(site, browser):
    """The page's own renderer on the four verdicts (a refused note needs a bundle that
    refuses one, which the flagship does not): word, colour and what is shown apart."""
    url, _, _, _ = site
    viewport(browser, DESKTOP, mobile=False)
    browser.get(url + "/upload")
    shown = browser.execute_script("""
        const out = {};
        for (const [v, reason, label, score] of [
            ["accepted", "accepted", "50000_vnd", 0.97],
            ["unknown", "below_threshold", "50000_vnd", 0.58],
            ["refused", "refused", "2000_vnd", 0.95],
            ["empty", "background", "background", 0.99]]) {
          const box = document.createElement('div');
          box.innerHTML = verdictHtml({verdict: v, reason, label, score, accepted: v === 'accepted',
                                       explanation: 'why ' + v});
          document.body.appendChild(box);
          const el = box.firstChild;
          out[v] = {text: el.innerText, cls: el.className,
                    bg: getComputedStyle(el).backgroundColor,
                    word: getComputedStyle(el.querySelector('.vword')).color};
          box.remove();
        }
        return out;""")
    assert shown["accepted"]["text"].startswith("✔ ACCEPTED\n50,000 VND")
    assert shown["unknown"]["text"].startswith("⚠ NOT ACCEPTED\nwhy unknown")
    assert "best guess 50000_vnd 0.58" in shown["unknown"]["text"]
    assert shown["refused"]["text"].startswith("✖ REFUSED\nwhy refused: hand it back")
    assert "recognised as 2000_vnd 0.95" in shown["refused"]["text"]
    assert shown["empty"]["text"].startswith("EMPTY SLOT\nwhy empty")
    assert len({v["bg"] for v in shown.values()}) == 4, shown  # four colours
    assert len({v["word"] for v in shown.values()}) == 4, shown
    assert all("VND" not in shown[v]["text"] for v in ("unknown", "refused", "empty"))


@pytest.mark.parametrize("page", ["/", "/upload", "/label"])
def test_phone_and_desktop_width(site, browser, page):
    url, _, shots, _ = site
    name = {"/": "live", "/upload": "upload", "/label": "label"}[page]
    try:
        for size, mobile, tag in ((PHONE, True, "phone"), (DESKTOP, False, "desktop")):
            viewport(browser, size, mobile)
            browser.get(url + page)
            wait_until(lambda: text_of(browser, "header .dev"), 10, "the header")
            if page == "/":
                wait_until(lambda: text_of(browser, "#events"), 30, "events")
            if page == "/label":
                wait_until(lambda: text_of(browser, "#count"), 10, "the frames")
            time.sleep(0.5)  # images laid out
            got = overflow(browser)
            assert got["inner"] == size[0], got
            assert got["scroll"] <= got["inner"], f"{page} at {size[0]} px overflows: {got}"
            if mobile:  # the whole page, as a phone scrolls it
                height = browser.execute_script("return document.documentElement.scrollHeight")
                viewport(browser, (size[0], min(3000, height)), mobile)
            browser.save_screenshot(str(shots / f"web-{name}-{tag}.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_label_a_captured_frame_with_the_guards(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, state, shots, _ = site
    viewport(browser, DESKTOP, mobile=False)
    browser.get(url + "/label")
    for field, value in (("cframes", "2"), ("cevery", "0.2")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    # start while a note is in the slot (the replay holds each for 1.2 s)
    wait_until(lambda: (top := get_json(url + "/api/live")["top_k"]) and top[0]["score"] > 0.9
               and get_json(url + "/api/live")["seq"] % 9 == 4, 30, "a note in view")
    browser.find_element(By.ID, "capture").click()
    folder = state / "dataset" / "_unlabelled"
    wait_until(lambda: len(list(folder.glob("*.jpg"))) >= 2, 20, "2 captured frames")
    browser.get(url + "/label")
    tiles = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR,
                                                     ".tile[data-id^='dataset/_unlabelled/']"),
                       10, "the captured frames on the page")
    frames = {f["id"]: f for f in get_json(url + "/api/frames")["frames"]}
    picked = tiles[0].get_attribute("data-id")
    said, score = frames[picked]["top_k"][0]["label"], frames[picked]["top_k"][0]["score"]
    assert score >= 0.9 and said.endswith("_vnd"), frames[picked]
    name = picked.rsplit("/", 1)[1]
    labels = get_json(url + "/api/frames")["labels"]

    # only the model's classes are offered (and an explicit "new class…")
    choice = Select(browser.find_element(By.ID, "label"))
    offered = [o.get_attribute("value") for o in choice.options]
    assert offered == ["", *labels, "*new*"], offered

    tiles[0].click()
    assert text_of(browser, "#nsel") == "1 selected"
    # contradicting a confident model asks first; cancel leaves the frame where it was
    other = next(lb for lb in labels if lb != said and lb.endswith("_vnd"))
    choice.select_by_value(other)
    browser.find_element(By.ID, "assign").click()
    wait_until(lambda: browser.find_element(By.ID, "confirm").is_displayed(), 5, "the confirm")
    warning = text_of(browser, "#confirm-msg")
    assert f"{said} {score:.2f}" in warning and other in warning, warning
    browser.save_screenshot(str(shots / "web-label-confirm.png"))
    browser.find_element(By.ID, "confirm-no").click()
    assert not browser.find_element(By.ID, "confirm").is_displayed()
    assert (folder / name).is_file() and not (state / "dataset" / other).exists()

    # a typo as a new class: named as new, compared with the classes it looks like
    choice.select_by_value("*new*")
    typo = "1" + said  # 50000_vnd -> 150000_vnd, one key too many
    browser.find_element(By.ID, "newlabel").send_keys(typo)
    browser.find_element(By.ID, "assign").click()
    wait_until(lambda: browser.find_element(By.ID, "confirm").is_displayed(), 5, "the confirm")
    warning = text_of(browser, "#confirm-msg")
    assert "is a new class" in warning and said in warning.partition("looks like")[2], warning
    browser.find_element(By.ID, "confirm-no").click()
    assert not (state / "dataset" / typo).exists()
    # the server refuses it too, unless a new class is asked for by name
    status, _, body = http(url + "/api/frames", {"action": "label", "ids": [picked],
                                                 "label": typo})
    assert status == 400 and "not one of the model's classes" in json.loads(body)["error"]
    assert not (state / "dataset" / typo).exists() and (folder / name).is_file()

    # agreeing with the model goes straight through
    browser.get(url + "/label")
    tile = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR,
                                                    f".tile[data-id='{picked}']"), 10, "tile")
    tile[0].click()
    Select(browser.find_element(By.ID, "label")).select_by_value(said)
    browser.save_screenshot(str(shots / "web-label.png"))
    browser.find_element(By.ID, "assign").click()
    wait_until(lambda: (state / "dataset" / said / name).is_file(), 10,
               f"the frame in dataset/{said}/")
    assert (state / "dataset" / ".model" / said / name.replace(".jpg", ".png")).is_file()
    assert not (folder / name).exists()
    assert not browser.find_element(By.ID, "confirm").is_displayed()
    wait_until(lambda: "label: 1 frame(s) done" in text_of(browser, "#msg"), 10, "the note")


def test_connection_indicator_follows_the_broker(site, browser):
    url, _, shots, brokers = site
    viewport(browser, PHONE, mobile=True)
    try:
        browser.get(url + "/upload")  # any page shows it
        wait_until(lambda: attr_of(browser, "#conn", "data-state") == "connected", 10, "up")
        brokers[0].stop()
        wait_until(lambda: attr_of(browser, "#conn", "data-state") == "disconnected", 20,
                   "the indicator to say disconnected")
        assert text_of(browser, "#conn") == "MQTT disconnected"
        assert get_json(url + "/api/live")["mqtt"]["connected"] is False
        browser.save_screenshot(str(shots / "web-disconnected-phone.png"))
        brokers.append(Broker.restart(brokers[0]))
        wait_until(lambda: attr_of(browser, "#conn", "data-state") == "connected", 40,
                   "the indicator to say connected again")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
