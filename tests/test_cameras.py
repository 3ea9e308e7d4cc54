"""Frame sources: replay (folder and video), OpenCV errors, picamera2 with a stand-in."""

import sys
import types
import typing

import cv2
import numpy as np
import pytest

from device.cameras.base import create_frame_source
from device.cameras.picamera2 import isp_request, to_rgb
from device.config import CameraConfig
from device.errors import CameraError


def write_png(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def solid(r, g, b, h=24, w=32):
    return np.full((h, w, 3), (r, g, b), np.uint8)


def test_replay_folder_in_name_order_without_loop(tmp_path):
    write_png(tmp_path / "b.png", solid(0, 255, 0))
    write_png(tmp_path / "a.png", solid(255, 0, 0))
    (tmp_path / "c.png").write_bytes(b"corrupt")  # skipped, counted
    (tmp_path / "notes.txt").write_text("ignored")
    src = create_frame_source(CameraConfig(type="replay", source=str(tmp_path), fps=200,
                                           loop=False))
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert [f.image[0, 0].tolist() for f in frames] == [[255, 0, 0], [0, 255, 0]]  # RGB
    assert [f.seq for f in frames] == [1, 2] and src.errors == 1
    src.close()


def test_replay_loops(tmp_path):
    write_png(tmp_path / "a.png", solid(1, 2, 3))
    src = create_frame_source(CameraConfig(type="replay", source=str(tmp_path), fps=500))
    assert [src.read().seq for _ in range(5)] == [1, 2, 3, 4, 5]


def test_replay_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for v in (0, 120, 240):
        w.write(np.full((48, 64, 3), v, np.uint8))
    w.release()
    src = create_frame_source(CameraConfig(type="replay", source=str(path), fps=500, loop=False))
    means = []
    while (f := src.read()) is not None:
        means.append(float(f.image.mean()))
    assert len(means) == 3 and means[0] < means[1] < means[2]


def test_replay_errors(tmp_path):
    with pytest.raises(CameraError, match="does not exist"):
        create_frame_source(CameraConfig(type="replay", source=str(tmp_path / "x")))
    with pytest.raises(CameraError, match="holds no images"):
        create_frame_source(CameraConfig(type="replay", source=str(tmp_path)))
    (tmp_path / "bad.png").write_bytes(b"nope")
    src = create_frame_source(CameraConfig(type="replay", source=str(tmp_path)))
    with pytest.raises(CameraError, match="no file is a readable image"):
        src.read()


def test_opencv_missing_device_is_clear():
    with pytest.raises(CameraError, match="cannot open camera"):
        create_frame_source(CameraConfig(type="opencv", source="97"))


def test_to_rgb_swaps_picamera2_rgb888():
    bgr_in_memory = np.array([[[10, 20, 30]]], np.uint8)  # picamera2 "RGB888" = B,G,R
    assert to_rgb(bgr_in_memory, "RGB888").tolist() == [[[30, 20, 10]]]
    assert to_rgb(bgr_in_memory, "BGR888").tolist() == [[[10, 20, 30]]]
    assert to_rgb(np.zeros((1, 1, 4), np.uint8), "XBGR8888").shape == (1, 1, 3)


class FakePicamera2:
    """Stands in for picamera2.Picamera2 with its documented methods."""

    instances: typing.ClassVar[list] = []
    sensor = (0, 0, 4056, 3040)  # an HQ camera's IMX477

    def __init__(self, camera_num=0):
        self.camera_controls = {"ScalerCrop": ((0, 0, 64, 64), self.sensor, self.sensor)}
        self.camera_num = camera_num
        self.calls = []
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, buffer_count=4, controls=None, **kw):
        self.calls.append(("create", main, controls))
        return {"main": dict(main), "buffer_count": buffer_count, "controls": controls}

    def align_configuration(self, config):
        self.calls.append(("align",))

    def configure(self, config):
        self.config = config

    def start(self):
        self.calls.append(("start",))

    def capture_array(self, name="main"):
        w, h = self.config["main"]["size"]
        arr = np.zeros((h, w, 3), np.uint8)
        arr[..., 0] = 200  # picamera2 "RGB888": first byte is blue
        return arr

    def stop(self):
        self.calls.append(("stop",))

    def close(self):
        self.calls.append(("close",))


@pytest.fixture
def fake_picamera2(monkeypatch):
    mod = types.ModuleType("picamera2")
    mod.Picamera2 = FakePicamera2
    FakePicamera2.instances.clear()
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    return FakePicamera2


def test_isp_request_keeps_the_models_framing():
    hq, v3 = (0, 0, 4056, 3040), (16, 8, 4608, 2592)
    # center_crop: the centred square of the sensor, scaled by the ISP straight to size
    assert isp_request((224, 224), hq, "center_crop") == ((224, 224), (508, 0, 3040, 3040))
    assert isp_request((224, 224), v3, "center_crop") == ((224, 224), (1024, 8, 2592, 2592))
    # stretch: the whole sensor at its own aspect, smallest 32-aligned size covering it
    assert isp_request((224, 224), hq, "stretch") == ((320, 240), hq)
    (w, h), crop = isp_request((224, 224), v3, "letterbox")
    assert crop == v3 and w % 32 == 0 and h % 2 == 0 and w >= 224 and h >= 224
    assert abs(w / h - 4608 / 2592) < 0.01


def test_picamera2_asks_isp_for_the_framing_and_swaps(fake_picamera2):
    cfg = CameraConfig(type="picamera2", source="1", fps=15, pixel_format="RGB888")
    src = create_frame_source(cfg, model_size=(224, 224), resize_policy="center_crop")
    cam = fake_picamera2.instances[0]
    assert cam.camera_num == 1
    create = cam.calls[0]
    assert create[1] == {"size": (224, 224), "format": "RGB888"}
    assert create[2] == {"FrameRate": 15.0, "ScalerCrop": (508, 0, 3040, 3040)}
    frame = src.read()
    assert frame.image.shape == (224, 224, 3)
    assert frame.image[0, 0].tolist() == [0, 0, 200]  # blue moved to the last channel
    src.close()
    assert cam.calls[-2:] == [("stop",), ("close",)]


def test_picamera2_stretch_model_gets_the_whole_field_of_view(fake_picamera2):
    src = create_frame_source(CameraConfig(type="picamera2"), model_size=(224, 224))
    create = fake_picamera2.instances[0].calls[0]
    assert create[1]["size"] == (320, 240) and create[2]["ScalerCrop"] == (0, 0, 4056, 3040)
    assert src.read().image.shape == (240, 320, 3)  # the CPU finishes: 320x240 -> 224


def test_picamera2_without_isp_resize_uses_capture_size(fake_picamera2):
    cfg = CameraConfig(type="picamera2", width=640, height=480, isp_resize=False)
    src = create_frame_source(cfg, model_size=(224, 224))
    assert src.read().image.shape == (480, 640, 3)


def test_picamera2_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    with pytest.raises(CameraError, match="system-site-packages"):
        create_frame_source(CameraConfig(type="picamera2"))
