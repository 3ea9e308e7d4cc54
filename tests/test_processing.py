"""Pre/post-processing: numpy in, numpy out, no model."""

import cv2
import numpy as np
import pytest

from device.processing import dequantize, halve, quantize_input, resize, top_k


def gradient(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 7)],
                    -1).astype(np.uint8)


def test_stretch_keeps_whole_frame():
    img = gradient(480, 640)
    out = resize(img, 224, 224, "stretch")
    assert out.shape == (224, 224, 3)
    # the whole frame is kept: left edge stays dark, right edge bright in channel 0
    assert out[:, 0, 0].mean() < 5 and out[:, -1, 0].mean() > 250


def test_center_crop_drops_the_sides():
    img = gradient(480, 640)
    out = resize(img, 224, 224, "center_crop")
    # a centred 480x480 region: the left edge is column 80 of 640, value ~32
    assert 25 < out[:, 0, 0].mean() < 40
    assert 215 < out[:, -1, 0].mean() < 230


def test_letterbox_pads_with_black():
    img = np.full((100, 200, 3), 200, np.uint8)
    out = resize(img, 100, 100, "letterbox")
    assert out[0, 50].tolist() == [0, 0, 0]  # top band is padding
    assert out[50, 50].tolist() == [200, 200, 200]


def test_resize_fills_out_in_place_and_identity_size():
    img = gradient(224, 224)
    buf = np.zeros((224, 224, 3), np.uint8)
    res = resize(img, 224, 224, out=buf)
    assert res is buf and np.array_equal(buf, img)
    small = np.zeros((10, 10, 3), np.uint8)
    assert resize(gradient(40, 30), 10, 10, out=small) is small and small.any()


def test_unknown_policy_names_choices():
    with pytest.raises(ValueError, match="stretch, center_crop or letterbox"):
        resize(gradient(4, 4), 2, 2, "squash")


def test_quantize_input_uint8_is_copy_int8_is_shift():
    rgb = np.array([[[0, 128, 255]]], np.uint8)
    assert quantize_input(rgb, np.uint8).tolist() == [[[0, 128, 255]]]
    assert quantize_input(rgb, np.int8).tolist() == [[[-128, 0, 127]]]
    out = np.empty((1, 1, 3), np.float32)
    assert quantize_input(rgb, np.float32, out=out) is out and out[0, 0, 2] == 255.0


def test_dequantize_uint8_and_float_passthrough():
    raw = np.array([[0, 128, 255]], np.uint8)
    assert np.allclose(dequantize(raw, 1 / 256, 0), [0, 0.5, 255 / 256])
    assert np.allclose(dequantize(np.array([10, 20], np.int8), 0.5, 10), [0, 5])
    f = np.array([0.25, 0.75], np.float32)
    assert np.array_equal(dequantize(f, 0.0, 0), f)


def test_top_k_orders_and_breaks_ties_by_id():
    scores = np.array([0.1, 0.5, 0.2, 0.5, 0.0], np.float32)
    labels = ("a", "b", "c", "d", "e")
    ranked = top_k(scores, labels, 3)
    assert [(c.id, c.label) for c in ranked] == [(1, "b"), (3, "d"), (2, "c")]
    assert [c.label for c in top_k(scores, labels, 10, min_score=0.15)] == ["b", "d", "c"]
    assert top_k(scores, labels, 0) == ()


def test_top_k_without_enough_labels_uses_ids():
    ranked = top_k(np.array([0.2, 0.8]), ("only",), 2)
    assert [c.label for c in ranked] == ["1", "only"]


def test_halve_is_one_gaussian_pyramid_step():
    img = np.full((5, 7, 3), 90, np.uint8)
    img[2, 3] = 250  # a lone bright pixel is spread out, not kept or dropped whole
    out = halve(img)
    assert out.shape == (3, 4, 3)  # odd sizes round up
    assert out[0, 0, 0] == 90 and 90 < out[1, 1, 0] < 250 and out[1, 2, 0] > 90
    assert np.array_equal(halve(img), cv2.pyrDown(img))


def test_resize_antialiases_one_pixel_stripes():
    """Banknote print is full of fine lines: a decimating resize would turn 1-pixel stripes
    into moiré; ours averages them to an even grey."""
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, ::2] = 255
    out = resize(img, 224, 224)
    assert abs(float(out.mean()) - 127.5) < 2 and float(out.std()) < 2
    naive = cv2.resize(img, (224, 224), interpolation=cv2.INTER_NEAREST)
    assert float(naive.std()) > 100  # what it would look like without


def test_resize_with_scratch_reuses_its_buffers_and_gives_the_same_pixels():
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(2))
    scratch, out = {}, np.empty((224, 224, 3), np.uint8)
    assert np.array_equal(resize(a, 224, 224, out=out, scratch=scratch), resize(a, 224, 224))
    held = {k: id(v) for k, v in scratch.items()}
    assert list(held) == [(240, 320, 3)]
    assert np.array_equal(resize(b, 224, 224, out=out, scratch=scratch), resize(b, 224, 224))
    assert {k: id(v) for k, v in scratch.items()} == held
    # exactly half the target: the halved image itself is the answer, copied out
    half = resize(a, 320, 240, scratch=scratch)
    assert np.array_equal(half, halve(a)) and half is not scratch[(240, 320, 3)]


def test_quantize_input_copies_contiguous_and_strided_frames_alike():
    rgb = np.random.default_rng(0).integers(0, 255, (224, 224, 3), np.uint8)
    tensor = np.zeros((1, 224, 224, 3), np.uint8)
    assert quantize_input(rgb, np.uint8, out=tensor[0]) is not None
    assert np.array_equal(tensor[0], rgb)
    bgr_view = rgb[..., ::-1]  # a BGR model's view: not contiguous, numpy copies it
    quantize_input(bgr_view, np.uint8, out=tensor[0])
    assert np.array_equal(tensor[0], bgr_view)
