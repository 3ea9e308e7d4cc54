"""The frame pipeline's parts: buffers, the buffer pool, the results thread, stage times,
the infer/rank split, and `make bench` end to end on the small demo model."""

import json
import threading
import time

import numpy as np
import pytest

from device.bundle import load_bundle
from device.cameras.base import Frame
from device.daemon.pipeline import BufferPool, CaptureThread, FrameBuffer, ResultThread, StageTimes
from device.inference import Postprocess, create_classifier

from .conftest import ROOT, run_cli, wait_until

DEMO = ROOT / "compiled_models" / "demo-notes"


def test_pool_reuses_buffers_and_forgets_old_sizes():
    pool = BufferPool(keep=2)
    a = pool.take((4, 4, 3))
    pool.give(a[..., ::-1])  # a channel-swapped view gives back the buffer under it
    assert pool.take((4, 4, 3)) is a and pool.allocated == 1
    pool.give(a)
    b = pool.take((8, 8, 3))  # a reload changed the size: the old buffer is dropped
    assert b is not a and b.shape == (8, 8, 3) and not pool.free
    for _ in range(5):
        pool.give(np.empty((8, 8, 3), np.uint8))
    assert len(pool.free) == 2  # bounded


def test_drop_oldest_hands_the_dropped_frame_back():
    dropped = []
    buf = FrameBuffer(size=2, drop_oldest=True, on_drop=dropped.append)
    for i in range(5):
        buf.put(i)
    assert dropped == [0, 1, 2] and buf.dropped == 3
    assert [buf.get(0.1), buf.get(0.1), buf.get(0.01)] == [3, 4, None]


class CountingSource:
    """A live-like source of distinct 640x480 frames."""

    live = True
    name = "counting"

    def __init__(self, n):
        self.n = n
        self.seq = 0
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(4)]

    def read(self):
        if self.seq >= self.n:
            return None
        self.seq += 1
        return Frame(self.images[self.seq % 4], time.time(), self.seq, 0.0)

    def close(self):
        pass


def test_capture_thread_resizes_into_pooled_buffers_without_allocating():
    """Steady state: the pool stays at the handful of buffers in flight however many
    frames pass, and each frame is the resize of its own image."""
    clf = create_classifier(load_bundle(DEMO), "cpu", num_threads=1)
    pool = BufferPool()
    buf = FrameBuffer(size=2, drop_oldest=True, on_drop=pool.give_frame)
    stop = threading.Event()
    source = CountingSource(300)
    cap = CaptureThread(source, buf, stop, prepare=clf.prepare,
                        shape=lambda: (clf.height, clf.width, 3), pool=pool)
    cap.start()
    seen = checked = 0
    while True:
        item = buf.get(2.0)
        assert item is not None, "the capture thread stalled"
        if not isinstance(item, Frame):
            break
        seen += 1
        if seen % 50 == 0:  # the pooled result is the right resize of this frame
            assert np.array_equal(item.prepared, clf.prepare(item.image))
            checked += 1
        pool.give(item.prepared)
    cap.join(5)
    assert seen + buf.dropped == 300 and checked >= 1
    assert pool.allocated <= 5, f"{pool.allocated} buffers for {seen} frames"
    # one buffer per halving (640x480 -> 320x240 -> 160x120 for the 96 px model), reused
    assert set(cap.scratch) == {(240, 320, 3), (120, 160, 3)}


def test_result_thread_keeps_order_survives_errors_and_drains_on_stop(caplog):
    got = []

    def handle(item):
        if item == 3:
            raise ValueError("bad result")
        got.append(item)

    rt = ResultThread(handle, size=8)
    for i in range(12):  # before start: the 4 oldest are dropped (counted)
        rt.put(i)
    rt.start()
    rt.stop()
    assert not rt.is_alive()
    assert rt.dropped == 4 and got == [4, 5, 6, 7, 8, 9, 10, 11]
    rt2 = ResultThread(handle, size=8)
    rt2.start()
    for i in range(6):
        rt2.put(i)
    rt2.stop()
    assert got[8:] == [0, 1, 2, 4, 5]  # 3 raised, was logged, and the stream went on
    assert "handling a result failed" in caplog.text


def test_stage_times_window():
    st = StageTimes(size=8)
    for i in range(20):
        st.add(*(float(i),) * len(StageTimes.STAGES))
    assert st.percentiles(q=(50,), since=16)["inference"]["p50"] == pytest.approx(17.5)
    # asking for more than the ring holds gives what it holds: the last 8
    assert st.percentiles(q=(50,), since=0)["capture"]["p50"] == pytest.approx(15.5)
    assert st.percentiles(since=20) == {}


def test_infer_then_rank_equals_classify():
    clf = create_classifier(load_bundle(DEMO), "cpu", num_threads=1)
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(2))
    inf = clf.infer(a)
    raw = inf.raw.copy()
    clf.infer(b)  # the interpreter's output changes; the Inference kept its own copy
    assert np.array_equal(inf.raw, raw)
    assert inf.classify().top_k == clf.classify(a).top_k
    assert inf.inference_ms > 0


def test_postprocess_is_pure():
    post = Postprocess(("a", "b", "c"), 1 / 256, 0, 2, 0.1)
    top = post(np.array([[10, 200, 40]], np.uint8))
    assert [(c.label, round(c.score, 4)) for c in top] == [("b", 0.7812), ("c", 0.1562)]
    assert post(np.array([[1, 2, 3]], np.uint8)) == ()  # all below min_score


def test_bench_prints_table_and_json(tmp_path):
    """`make bench` on the small demo model, one short round per configuration."""
    out = tmp_path / "bench.json"
    proc = run_cli("--model", str(DEMO), "--rounds", "1", "--seconds", "1",
                   "--invokes", "30", "--num-threads", "1", "--camera-fps", "60",
                   "--json", str(out), module="device.tools.bench", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "raw invoke" in proc.stdout and "x raw" in proc.stdout
    s = json.loads(out.read_text())
    assert s["model"] == "demo-notes" and s["frames"] == "640x480" and s["peak_rss_mb"] > 0
    (run,) = s["runs"]
    assert run["num_threads"] == 1 and run["pipeline"]["frames"] > 10
    assert 0 < run["fps_ratio"] < 3 and run["raw_invoke"]["fps"] > 0
    for stage in ("capture", "preprocess", "inference", "postprocess", "publish", "latency"):
        v = run["pipeline"]["stages_ms"][stage]
        assert 0 <= v["p50"] <= v["p95"] <= v["p99"], stage
    lat = run["latency_ms_at_camera_fps"]
    assert lat["camera_fps"] == 60 and lat["p50"] > 0
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == s  # the JSON line printed


def test_overloaded_live_camera_drops_oldest_and_latency_stays_bounded(tmp_path, broker):
    """A live camera faster than inference: frames are dropped (counted in status), never
    queued, so frame-to-publish latency stays a few frames long."""
    from device.config import parse_config
    from device.daemon.lifecycle import Daemon
    from device.tools.benchdata import make_frames

    flagship = ROOT / "compiled_models" / "banknotes-vnd"  # ~3 ms per invoke here
    make_frames(tmp_path / "frames", 6, 640, 480)
    cfg = parse_config({
        "camera": {"type": "replay", "source": str(tmp_path / "frames"), "fps": 1000},
        "model": {"path": str(flagship), "backend": "cpu", "num_threads": 1},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "device_id": "overload"},
        "state": {"dir": str(tmp_path / "state")},
    })
    d = Daemon(cfg)
    d.setup()
    d.source.live = True  # deliver like a camera: drop-oldest
    t = threading.Thread(target=d.run)
    t.start()
    # a camera faster than the classifier: frames are dropped, not queued
    wait_until(lambda: d.stats.frames > 50 and d.status().dropped_frames > 0, 60,
               "50 frames classified with some dropped")
    status = d.status()
    d.request_stop()
    t.join(30)
    assert d.stats.frames > 50 and status.dropped_frames > 0
    lat = d.times.percentiles()["latency"]
    inference = d.times.percentiles()["inference"]
    # two buffered frames + the one in flight, not a growing queue
    assert lat["p95"] < 10 * inference["p50"] + 20, (lat, inference)
