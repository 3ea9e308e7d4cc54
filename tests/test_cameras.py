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
    """Stands in for picamera2.Picamera2 on an HQ camera (IMX477), quirks included, as
    checked against picamera2's picamera2.py and libcamera's Raspberry Pi IPA:

    - before configure(), camera_controls["ScalerCrop"] has the IPA's placeholder maximum
      (65535, 65535, 65535, 65535); the real one (the configured mode's crop limits, also
      camera_properties["ScalerCropMaximum"]) appears only after configure();
    - camera_properties["PixelArrayActiveAreas"] is real from the start;
    - without a raw stream size, libcamera picks the sensor mode nearest the main size,
      which for a small model is the cropped 1332x990 mode;
    - ScalerCrop is clamped to the mode's crop limits;
    - frames show the ScalerCrop part of the scene, scaled to the main size (a gradient
      scene, so tests can tell which part of the sensor they see).
    """

    instances: typing.ClassVar[list] = []
    active = (0, 0, 4056, 3040)
    PLACEHOLDER = (65535, 65535, 65535, 65535)
    sensor_modes: typing.ClassVar[list] = [
        {"size": (1332, 990), "format": "SRGGB10_CSI2P", "crop_limits": (696, 528, 2664, 1980)},
        {"size": (2028, 1080), "format": "SRGGB12_CSI2P", "crop_limits": (0, 440, 4056, 2160)},
        {"size": (2028, 1520), "format": "SRGGB12_CSI2P", "crop_limits": (0, 0, 4056, 3040)},
        {"size": (4056, 3040), "format": "SRGGB12_CSI2P", "crop_limits": (0, 0, 4056, 3040)},
    ]

    def __init__(self, camera_num=0):
        self.camera_controls = {"ScalerCrop": ((0, 0, 64, 64), self.PLACEHOLDER,
                                               (0, 0, 4056, 3040))}
        self.camera_properties = {"PixelArraySize": (4056, 3040),
                                  "PixelArrayActiveAreas": [self.active]}
        self.sensor_resolution = (4056, 3040)
        self.camera_num = camera_num
        self.calls = []
        self.mode = None
        self.crop = None
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, buffer_count=4, controls=None, raw=None,
                                   **kw):
        self.calls.append(("create", main, controls, raw))
        return {"main": dict(main), "buffer_count": buffer_count, "controls": controls,
                "raw": dict(raw) if raw else None}

    def align_configuration(self, config):
        self.calls.append(("align",))

    def configure(self, config):
        raw = config.get("raw")
        if raw:
            self.mode = next(m for m in self.sensor_modes if m["size"] == raw["size"])
        else:  # nearest to the main size, as libcamera's mode selection does
            w, h = config["main"]["size"]
            self.mode = min(self.sensor_modes, key=lambda m: abs(m["size"][0] - w)
                            + abs(m["size"][1] - h))
        limits = self.mode["crop_limits"]
        self.camera_controls["ScalerCrop"] = ((0, 0, 64, 64), limits, limits)
        self.camera_properties["ScalerCropMaximum"] = limits
        self.crop = limits
        self.config = config

    def set_controls(self, controls):
        self.calls.append(("set_controls", dict(controls)))
        if "ScalerCrop" in controls:
            x, y, w, h = controls["ScalerCrop"]
            lx, ly, lw, lh = self.mode["crop_limits"]
            x0, y0 = max(x, lx), max(y, ly)
            x1, y1 = min(x + w, lx + lw), min(y + h, ly + lh)
            self.crop = (x0, y0, x1 - x0, y1 - y0)

    def start(self):
        self.calls.append(("start",))

    def capture_array(self, name="main"):
        import cv2

        w, h = self.config["main"]["size"]
        x, y, cw, ch = self.crop
        # the scene: red = sensor column / 16, green = sensor row / 12 (0..253)
        cols = ((np.arange(x, x + cw, 8) // 16).clip(0, 255)).astype(np.uint8)
        rows = ((np.arange(y, y + ch, 8) // 12).clip(0, 255)).astype(np.uint8)
        scene = np.zeros((len(rows), len(cols), 3), np.uint8)
        scene[..., 2] = cols[None, :]  # "BGR888" is R,G,B in memory; RGB888 is B,G,R
        scene[..., 1] = rows[:, None]
        out = cv2.resize(scene, (w, h), interpolation=cv2.INTER_AREA)
        if self.config["main"]["format"] == "BGR888":
            out = out[..., ::-1].copy()
        return out

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


def sees(image: np.ndarray) -> tuple[float, float, float, float]:
    """Which part of the sensor an RGB frame shows: (x0, x1, y0, y1) in sensor pixels,
    read back from the fake's gradient scene."""
    red, green = image[..., 0].astype(float), image[..., 1].astype(float)
    return (red[:, 0].mean() * 16, red[:, -1].mean() * 16,
            green[0, :].mean() * 12, green[-1, :].mean() * 12)


def test_picamera2_center_crop_model_sees_the_centred_square(fake_picamera2):
    cfg = CameraConfig(type="picamera2", source="1", fps=15, pixel_format="RGB888")
    src = create_frame_source(cfg, model_size=(224, 224), resize_policy="center_crop")
    cam = fake_picamera2.instances[0]
    assert cam.camera_num == 1
    _, main, _controls, raw = cam.calls[0]
    assert main == {"size": (224, 224), "format": "RGB888"}
    assert raw["size"] == (2028, 1520), "a full field-of-view mode is pinned"
    assert ("set_controls", {"ScalerCrop": (508, 0, 3040, 3040)}) in cam.calls
    frame = src.read()
    assert frame.image.shape == (224, 224, 3)
    x0, x1, y0, y1 = sees(frame.image)
    assert abs(x0 - 508) < 40 and abs(x1 - 3548) < 40 and y0 < 40 and y1 > 3000
    src.close()
    assert cam.calls[-2:] == [("stop",), ("close",)]


@pytest.mark.parametrize("policy", ["stretch", "letterbox"])
def test_picamera2_stretch_and_letterbox_models_see_the_whole_sensor(fake_picamera2, policy):
    src = create_frame_source(CameraConfig(type="picamera2"), model_size=(224, 224),
                              resize_policy=policy)
    cam = fake_picamera2.instances[0]
    assert cam.calls[0][1]["size"] == (320, 240)
    assert ("set_controls", {"ScalerCrop": (0, 0, 4056, 3040)}) in cam.calls
    image = src.read().image
    assert image.shape == (240, 320, 3)  # the CPU finishes: 320x240 -> 224
    x0, x1, y0, y1 = sees(image)
    assert x0 < 60 and x1 > 3990 and y0 < 60 and y1 > 2980, (x0, x1, y0, y1)


def test_the_pre_configure_placeholder_is_never_used(fake_picamera2):
    """Reading ScalerCrop's maximum before configure() gives 65535s: the old code asked
    for 224x224 with a nonsense crop, and libcamera's nearest mode was a cropped one."""
    src = create_frame_source(CameraConfig(type="picamera2"), model_size=(224, 224),
                              resize_policy="center_crop")
    cam = fake_picamera2.instances[0]
    assert cam.mode["crop_limits"] == (0, 0, 4056, 3040)
    crops = [c[1]["ScalerCrop"] for c in cam.calls if c[0] == "set_controls"]
    assert crops and all(65535 not in crop for crop in crops)
    assert src.read().image.shape == (224, 224, 3)


def test_picamera2_without_isp_resize_uses_capture_size(fake_picamera2):
    cfg = CameraConfig(type="picamera2", width=640, height=480, isp_resize=False)
    src = create_frame_source(cfg, model_size=(224, 224))
    assert src.read().image.shape == (480, 640, 3)


def test_picamera2_numpy_mismatch_gives_the_numpy_fix(monkeypatch):
    """Bookworm's simplejpeg is built against numpy 1: with numpy 2 in the venv,
    `import picamera2` raises ValueError (raspberrypi/picamera2#1088), not ImportError."""
    class Broken(types.ModuleType):
        def __getattr__(self, name):
            raise ValueError("numpy.dtype size changed, may indicate binary "
                             "incompatibility. Expected 96 from C header, got 88 from "
                             "PyObject")

    monkeypatch.setitem(sys.modules, "picamera2", Broken("picamera2"))
    with pytest.raises(CameraError, match=r"numpy<2"):
        create_frame_source(CameraConfig(type="picamera2"))


def test_picamera2_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    with pytest.raises(CameraError, match="system-site-packages"):
        create_frame_source(CameraConfig(type="picamera2"))


def test_picamera2_single_region_is_cropped_by_the_isp(fake_picamera2):
    """One [[camera.roi]]: ScalerCrop asks the ISP for the region itself (center_crop: its
    centred square), so the capture thread does not cut it out of a full frame again."""
    from device.regions import RoiConfig

    roi = RoiConfig(name="slot", x=0.5, y=0.5, width=0.5, height=0.5)
    cfg = CameraConfig(type="picamera2", roi=(roi,))
    src = create_frame_source(cfg, model_size=(224, 224), resize_policy="center_crop")
    cam = fake_picamera2.instances[0]
    assert src.roi_applied
    # the bottom-right quarter of the 4056x3040 sensor is 2028x1520 at (2028, 1520); its
    # centred square is 1520x1520 at (2282, 1520)
    assert ("set_controls", {"ScalerCrop": (2282, 1520, 1520, 1520)}) in cam.calls
    x0, x1, y0, _ = sees(src.read().image)
    assert abs(x0 - 2282) < 40 and abs(x1 - 3802) < 40 and abs(y0 - 1520) < 40
