"""Tests for people who own the hardware: `make test-hw` on a Raspberry Pi with a Coral
(`tpu`) and a camera (`picamera`). Elsewhere each skips with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.bundle import load_bundle
from device.cameras.base import create_frame_source
from device.config import CameraConfig
from device.errors import CoralError
from device.images import decode_image
from device.inference import create_classifier

from .conftest import CORAL_IMAGES, CORAL_MODELS, need_shared

USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


def edgetpu_present() -> str:
    """'' when an Edge TPU is attached, else why not."""
    for dev in Path("/sys/bus/usb/devices").glob("*"):
        try:
            ids = ((dev / "idVendor").read_text().strip(), (dev / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in USB_IDS:
            return ""
    if list(Path("/dev").glob("apex_*")):
        return ""
    return "no Coral Edge TPU attached (USB 1a6e:089a / 18d1:9302 or /dev/apex_*)"


def camera_present() -> str:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or numpy ABI trouble
        return f"picamera2 is not importable here ({type(exc).__name__})"
    try:
        return "" if Picamera2.global_camera_info() else "no camera connected"
    except Exception as exc:
        return f"libcamera lists no camera ({exc})"


needs_tpu = pytest.mark.skipif(bool(edgetpu_present()), reason=edgetpu_present() or "ok")
needs_camera = pytest.mark.skipif(bool(camera_present()), reason=camera_present() or "ok")

TPU_MODEL = CORAL_MODELS / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
LABELS = CORAL_MODELS / "imagenet_labels.txt"


@pytest.mark.tpu
@needs_tpu
def test_delegate_loads_and_classifies_coral_images_on_the_tpu():
    need_shared(TPU_MODEL, LABELS, CORAL_IMAGES / "parrot.jpg")
    clf = create_classifier(load_bundle(TPU_MODEL, LABELS), "edgetpu")
    try:
        assert clf.backend == "edgetpu"
        best = clf.classify(decode_image(CORAL_IMAGES / "parrot.jpg")).best
        assert best is not None and "macaw" in best.label and best.score > 0.4
        times = [clf.classify(decode_image(CORAL_IMAGES / "parrot.jpg")).inference_ms
                 for _ in range(10)]
        assert np.median(times) < 20, times  # on the TPU, not a silent CPU run
    finally:
        clf.close()


@pytest.mark.tpu
@needs_tpu
def test_reload_on_the_tpu_keeps_serving():
    need_shared(TPU_MODEL, LABELS)
    bundle = load_bundle(TPU_MODEL, LABELS)
    first = create_classifier(bundle, "edgetpu")
    first.close()
    second = create_classifier(bundle, "edgetpu")  # the delegate opens again after a close
    try:
        assert second.classify(np.zeros((128, 128, 3), np.uint8)).best is not None
    finally:
        second.close()


@pytest.mark.picamera
@needs_camera
@pytest.mark.parametrize("policy", ["stretch", "center_crop", "letterbox"])
def test_picamera2_configures_and_captures_per_resize_policy(policy):
    src = create_frame_source(CameraConfig(type="picamera2", fps=10), model_size=(224, 224),
                              resize_policy=policy)
    try:
        frames = [src.read() for _ in range(5)]
        image = frames[-1].image
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        h, w = image.shape[:2]
        if policy == "center_crop":
            assert (w, h) == (224, 224)  # the ISP did the whole resize
        else:  # the whole field of view, at the sensor's aspect, covering the model
            _, _, sw, sh = src.cam.camera_properties["PixelArrayActiveAreas"][0]
            assert w >= 224 and h >= 224 and abs(w / h - sw / sh) < 0.02, (w, h, sw, sh)
        assert frames[-1].seq > frames[0].seq
    except CoralError as exc:
        pytest.fail(str(exc))
    finally:
        src.close()
