"""The web page in a real browser: Debian's chromium + chromium-driver, headless, driven by
selenium, against a real daemon running the flagship bundle on the demo's banknote photos.

It loads the live view and sees frames change, uploads a photo and reads the answer, and
labels a captured frame and finds it in the dataset folder. Screenshots of each page go
to the test's folder, or to $SCREENSHOTS (e.g. `SCREENSHOTS=docs pytest
tests/test_browser.py` refreshes the README's figures).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from device.tools.demo import free_port, photo_replay, wait_port

from .conftest import ROOT, Broker, DaemonProcess, write_config
from .webutil import get_json, wait_until

PHOTOS = ROOT / "demo" / "banknotes-vnd"
FLAGSHIP = ROOT / "compiled_models" / "banknotes-vnd"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A daemon with its web page; yields (base URL, state folder, screenshot folder)."""
    work = tmp_path_factory.mktemp("browser")
    photo_replay(work / "replay", PHOTOS, frames_per_photo=6, gap=3)
    broker = Broker(work)
    port = free_port()
    cfg = write_config(work / "d.toml",
                       camera={"type": "replay", "source": str(work / "replay"), "fps": 5},
                       model={"path": str(FLAGSHIP), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "vend-7",
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
        yield url, work / "state", shots
    finally:
        daemon.stop()
        broker.stop()


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
                "--window-size=1280,1120", "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


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


def test_live_view_shows_frames_changing(site, browser):
    url, _, shots = site
    browser.get(url + "/")
    first = wait_until(lambda: stream_digest(browser), 20, "a frame in the live view")
    wait_until(lambda: stream_digest(browser) not in ("", first), 20, "the frame to change")
    seq = wait_until(lambda: text_of(browser, "#seq").startswith("frame #")
                     and text_of(browser, "#seq"), 10, "the frame number")
    wait_until(lambda: text_of(browser, "#seq") != seq, 10, "a newer frame number")
    assert "_vnd" in text_of(browser, "#topk")
    wait_until(lambda: "running" in text_of(browser, "#status"), 10, "the status")
    wait_until(lambda: text_of(browser, "#events").count("_vnd") >= 3, 40,
               "events with their pictures")
    time.sleep(0.5)  # let the thumbnails load
    browser.save_screenshot(str(shots / "web-live.png"))


def test_upload_a_photo_and_read_the_answer(site, browser):
    from selenium.webdriver.common.by import By

    url, _, shots = site
    browser.get(url + "/upload")
    photo = PHOTOS / "200000_vnd.jpg"
    browser.find_element(By.ID, "file").send_keys(str(photo))
    label = wait_until(lambda: text_of(browser, "#answer #label"), 30, "the answer")
    assert label == "200000_vnd"
    assert text_of(browser, "#verdict") == "accepted"
    assert '"image": "200000_vnd.jpg"' in text_of(browser, "#json")
    browser.save_screenshot(str(shots / "web-upload.png"))


def test_label_a_captured_frame(site, browser):
    from selenium.webdriver.common.by import By

    url, state, shots = site
    browser.get(url + "/label")
    browser.find_element(By.ID, "clabel").send_keys("_unlabelled")
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
    picked = tiles[0].get_attribute("data-id")
    # confirm what the model said (a person would correct it where it is wrong)
    label = tiles[0].find_element(By.CSS_SELECTOR, ".muted").text.split()[1]
    tiles[0].click()
    tiles[1].click()
    assert text_of(browser, "#nsel") == "2 selected"
    browser.find_element(By.ID, "label").send_keys(label)
    browser.save_screenshot(str(shots / "web-label.png"))
    browser.find_element(By.ID, "assign").click()
    name = picked.rsplit("/", 1)[1]
    wait_until(lambda: (state / "dataset" / label / name).is_file(), 10,
               f"the frame in dataset/{label}/")
    assert (state / "dataset" / ".model" / label / name.replace(".jpg", ".png")).is_file()
    assert not (folder / name).exists()
    wait_until(lambda: "label: 2 frame(s) done" in text_of(browser, "#msg"), 10, "the note")
