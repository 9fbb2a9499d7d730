"""lmref.detect: image reading and conversion, the Haar face detector (on the shipped example and on
synthetic faces), the Landmarker's geometry (box -> crop -> decode -> image pixels) checked with a
probe model that finds coloured dots, batching, and bad input."""
import json
import os

import cv2
import numpy as np
import pytest

from lmref import models, viz, weights
from lmref.data import synthetic, transforms
from lmref.detect import (ASSETS_DIR, DetectError, Face, HaarDetector, Landmarker, decode, read_image,
                          to_rgb8)

EXAMPLE = os.path.join(ASSETS_DIR, "example.jpg")


def _iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------

def test_to_rgb8_conversions():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb8(rgb), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb[:, :, ::-1], "BGR"), rgb)
    gray = rgb[:, :, 0]
    for g in (gray, gray[:, :, None]):
        out = to_rgb8(g)
        assert out.shape == (20, 30, 3) and all(np.array_equal(out[:, :, c], gray) for c in range(3))
    np.testing.assert_array_equal(to_rgb8(rgb.astype(np.uint16) * 257), rgb)      # 16 bit: v / 257
    np.testing.assert_array_equal(to_rgb8(rgb / 255.0), rgb)                     # float in [0, 1]
    rgba = np.concatenate([rgb, np.zeros((20, 30, 1), np.uint8)], axis=2)
    rgba[:10, :, 3] = 255
    out = to_rgb8(rgba)
    np.testing.assert_array_equal(out[:10], rgb[:10])                             # opaque: the colour
    assert np.all(out[10:] == 255)                                                # transparent: white
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((20, 30, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb8(bgra, "BGR"), rgb)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((1, 1, 3), np.uint8), "1x1 pixels, too small"),
    (np.zeros((20, 20, 2), np.uint8), "expected"),
    (np.zeros((20, 20, 3), np.int32), "dtype int32"),
    (np.full((20, 20), 2.0), r"\[0, 1\]"),
    (np.full((20, 20), np.nan), "NaN"),
])
def test_to_rgb8_rejects(bad, match):
    with pytest.raises(DetectError, match=match):
        to_rgb8(bad)


def test_read_image_files(tmp_path):
    rng = np.random.default_rng(1)
    img16 = (rng.integers(0, 256, (24, 32), dtype=np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "g16.png"), img16)
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out[:, :, 1], img16 // 257)
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    cv2.imwrite(str(tmp_path / "c.png"), rgba)                  # written as BGRA
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), rgba[:, :, 2::-1])
    img = read_image(EXAMPLE)
    assert img.shape == (480, 480, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("make, match", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("hello, not an image"), "not an image"),
    (lambda p: cv2.imwrite(str(p), np.zeros((1, 1, 3), np.uint8)), "too small"),
])
def test_read_image_bad_files(tmp_path, make, match):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(DetectError, match=match):
        read_image(path)


# ---------------------------------------------------------------------------------------------
# Haar detector
# ---------------------------------------------------------------------------------------------

def test_haar_finds_the_example_face_and_calibrates_its_box():
    img = read_image(EXAMPLE)
    with open(os.path.join(ASSETS_DIR, "example_landmarks.json")) as f:
        gt = np.array(json.load(f)["landmarks"])
    det = HaarDetector()
    raw, boxes = det.raw(img), det(img)
    assert len(boxes) == 1
    gt_box = transforms.landmark_box(gt)
    assert _iou(boxes[0], gt_box) > 0.6 and _iou(boxes[0], gt_box) > _iou(raw[0], gt_box)
    s = raw[0, 2] - raw[0, 0]                       # the calibration: shifted down, 0.877 of the side
    np.testing.assert_allclose(boxes[0, 2] - boxes[0, 0], 0.877 * s)
    np.testing.assert_allclose((boxes[0, 1] + boxes[0, 3]) / 2, (raw[0, 1] + raw[0, 3]) / 2 + 0.165 * s)
    assert HaarDetector()(np.full((120, 160, 3), 128, np.uint8)).shape == (0, 4)


def test_haar_on_synthetic_test_faces():
    """The detector on the synthetic generator's near-frontal test faces: it finds some (the
    generator's faces are less photographic than the cascade expects; see the report) and where it
    finds one, the calibrated box matches the landmark box."""
    det = HaarDetector()
    found, ious = 0, []
    for i in range(24):
        s = synthetic.generate(seed=0, index=i, split="test")
        if abs(s.pose[0]) > 25:
            continue
        boxes = det(s.image)
        gt_box = transforms.landmark_box(s.landmarks)
        best = max((_iou(b, gt_box) for b in boxes), default=0.0)
        if best > 0.3:
            found += 1
            ious.append(best)
    assert found >= 6
    assert np.median(ious) > 0.6


# ---------------------------------------------------------------------------------------------
# geometry with the probe model
# ---------------------------------------------------------------------------------------------

DOTS = np.array([[70.3, 60.6], [118.7, 75.2], [95.1, 112.8]])       # red, green, blue (x, y)


def _dots_image(h=180, w=220, dots=DOTS, sigma=2.5):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3))
    for c, (x, y) in enumerate(dots):
        img[:, :, c] = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.round(255 * img).astype(np.uint8)


@pytest.fixture
def probe(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODULES, "probe", "_probe_model")

    def make(output="heatmaps", color="RGB", size=96, crop=None):
        manifest = {"format_version": 1, "architecture": "probe", "config": {"output": output}, "layout": None,
                    "input": {"size": [size, size], "channels": 3, "color": color, "mean": [0.0] * 3,
                              "std": [1.0] * 3}, "training": "a probe, not trained"}
        if crop is not None:
            manifest["crop"] = crop
        path = tmp_path / f"probe-{output}-{color}-{size}.safetensors"
        weights.save(path, {"gain": np.ones(1, np.float32)}, manifest)
        return path
    return make


@pytest.mark.parametrize("output", ["heatmaps", "dict", "regression"])
def test_landmarks_come_back_to_image_pixels(probe, output):
    img = _dots_image()
    box = [60.0, 45.0, 135.0, 125.0]
    lm = Landmarker(probe(output), detector=None)
    faces = lm(img, boxes=[box], keep_maps=True)
    f = faces[0]
    np.testing.assert_allclose(f.landmarks, DOTS, atol=0.6)
    np.testing.assert_allclose(f.matrix, transforms.crop_matrix(box, 96))           # default margin
    np.testing.assert_allclose(transforms.apply_affine(f.landmarks, f.matrix), f.crop_landmarks, atol=1e-9)
    assert f.crop.shape == (96, 96, 3)
    if output == "regression":
        assert f.confidence is None and f.maps == {}
    else:
        assert f.confidence.shape == (3,) and np.all(f.confidence > 0.8)


def test_crop_margin_and_channel_order_follow_the_manifest(probe):
    img = _dots_image()
    box = [60.0, 45.0, 135.0, 125.0]
    f = Landmarker(probe(crop={"margin": 1.6}, size=64), detector=None)(img, [box])[0]
    np.testing.assert_allclose(f.matrix, transforms.crop_matrix(box, 64, margin=1.6))
    np.testing.assert_allclose(f.landmarks, DOTS, atol=1.0)
    f = Landmarker(probe(color="BGR"), detector=None)(img, [box])[0]
    np.testing.assert_allclose(f.landmarks, DOTS[::-1], atol=0.6)   # channel 0 is now blue


def test_batching_over_faces_and_images(probe):
    lm = Landmarker(probe("dict"), detector=None, batch_size=2)
    calls = []
    model = lm.model

    class Counting:
        def __getattr__(self, k):
            return getattr(model, k)

        def __call__(self, x):
            calls.append(len(x))
            return model(x)

    lm.model = Counting()
    shifted = DOTS + [30, 10]
    imgs = [_dots_image(), _dots_image(dots=shifted), _dots_image()]
    boxes = [[[60, 45, 135, 125], [55, 40, 140, 130]], [[90, 55, 165, 135]], [[60, 45, 135, 125]]]
    many = lm.detect_many(imgs, boxes)
    assert [len(f) for f in many] == [2, 1, 1] and calls == [2, 2]
    for faces, dots in zip(many, [DOTS, shifted, DOTS]):
        for f in faces:
            np.testing.assert_allclose(f.landmarks, dots, atol=0.7)
    one = Landmarker(probe("dict"), detector=None)(imgs[1], boxes[1])
    np.testing.assert_allclose(one[0].landmarks, many[1][0].landmarks, atol=1e-12)


def test_custom_detector_and_face_json(probe):
    seen = []

    def detector(image):
        seen.append(image.shape)
        return np.array([[60.0, 45.0, 135.0, 125.0]])

    faces = Landmarker(probe(), detector=detector)(_dots_image())
    assert seen == [(180, 220, 3)] and len(faces) == 1
    doc = json.loads(json.dumps(faces[0].to_json()))
    assert doc["box"] == [60.0, 45.0, 135.0, 125.0] and len(doc["landmarks"]) == 3
    assert len(doc["confidence"]) == 3


@pytest.mark.parametrize("boxes, match", [
    ([[10, 10, 5, 40]], "x1 <= x0"),
    ([[np.nan, 10, 50, 40]], "NaN"),
    ([[300, 300, 400, 400]], "outside"),
    ([[1, 2, 3]], "expected"),
    ([], "empty list"),
])
def test_bad_boxes(probe, boxes, match):
    with pytest.raises(DetectError, match=match):
        Landmarker(probe(), detector=None)(_dots_image(), boxes)


def test_no_face_and_no_detector(probe):
    blank = np.full((120, 160, 3), 90, np.uint8)
    with pytest.raises(DetectError, match="no face found"):
        Landmarker(probe())(blank)
    with pytest.raises(DetectError, match="no detector"):
        Landmarker(probe(), detector=None)(blank)
    with pytest.raises(TypeError, match="detector"):
        Landmarker(probe(), detector=42)


def test_layout_mismatch_is_an_error(probe, tmp_path, monkeypatch):
    path = probe()
    tensors, manifest = weights.load(path)
    manifest["layout"] = "ibug68"                      # says 68 points, the model gives 3
    weights.save(tmp_path / "wrong.safetensors", tensors, manifest)
    lm = Landmarker(tmp_path / "wrong.safetensors", detector=None)
    with pytest.raises(DetectError, match="gives 3 points but its manifest says layout ibug68"):
        lm(_dots_image(), [[60, 45, 135, 125]])


def test_decode_conventions():
    # regression: STAR's [-1, 1] labels back to pixels
    lm, conf, maps = decode(np.array([[-1.0, -1.0, 1.0, 0.0]]), 64, 32)
    np.testing.assert_allclose(lm[0], [[-0.5, -0.5], [63.5, 15.5]])
    assert conf is None and maps == {}
    # heatmaps: a peak at heatmap pixel (5, 2) of a 16 x 8 map over a 64 x 32 crop -> mmpose's u W/w
    hm = np.zeros((1, 1, 8, 16))
    hm[0, 0, 2, 5] = 0.9
    lm, conf, _ = decode(hm, 64, 32)
    np.testing.assert_allclose(lm[0, 0], [20.0, 8.0])
    np.testing.assert_allclose(conf, [[0.9]])
    with pytest.raises(DetectError, match="cannot decode"):
        decode(np.zeros((2, 3, 4)), 8, 8)


def test_maps_figure_needs_maps():
    f = Face(box=np.array([0, 0, 10, 10.0]), landmarks=np.zeros((3, 2)), crop=np.zeros((8, 8, 3), np.uint8),
             crop_landmarks=np.zeros((3, 2)), maps={})
    with pytest.raises(ValueError, match="no heatmaps"):
        viz.maps_figure(f)


def test_gray_regression_model(tmp_path):
    """Stud5 (grayscale, direct regression of 68 points) with small random weights: gray crops, the
    [-1, 1] regression decoded to pixels, no confidence."""
    from lmref.models import stud5
    cfg = stud5.Config(channels=(4, 4, 4, 4, 4))
    rng = np.random.default_rng(0)
    tensors = {k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in stud5.param_shapes(cfg).items()}
    for k in tensors:
        if k.endswith("running_var"):
            tensors[k] = np.abs(tensors[k]) + 0.5
    manifest = {"format_version": 1, "architecture": "stud5", "config": {"channels": [4, 4, 4, 4, 4]},
                "layout": "ibug68", "input": {"size": [64, 64], "channels": 1, "color": "GRAY", "mean": [0.5],
                                             "std": [0.25]}, "training": "random"}
    weights.save(tmp_path / "s5.safetensors", tensors, manifest)
    lm = Landmarker(tmp_path / "s5.safetensors", detector=None)
    img = read_image(EXAMPLE)
    box = [150.0, 160.0, 300.0, 310.0]
    x, faces = lm.prepare(img, [box])
    assert x.shape == (1, 1, 64, 64) and faces[0].crop.shape == (64, 64)
    rgb = transforms.warp_image(img, transforms.crop_matrix(box, 64), 64)
    np.testing.assert_array_equal(faces[0].crop, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    np.testing.assert_allclose(x[0, 0], (faces[0].crop / 255.0 - 0.5) / 0.25)
    f = lm(img, [box])[0]
    out = lm.model(x.astype(np.float32)).astype(np.float64).reshape(68, 2)
    crop_px = ((out + 1) * 64 - 1) / 2
    np.testing.assert_allclose(f.crop_landmarks, crop_px, rtol=1e-6, atol=1e-6)
    assert f.landmarks.shape == (68, 2) and f.confidence is None


def test_crop_margin_from_the_manifest():
    from lmref.detect import crop_margin
    assert crop_margin({"training": "x"}) is None
    assert crop_margin({"crop": {"margin": 1.4}, "training": {}}) == 1.4
    trained = {"training": {"config": {"data": {"margin": 1.3}}, "data": {"augment": {"margin": 1.35, "size": 64}}}}
    assert crop_margin(trained) == 1.35                       # what the dataset actually used
    assert crop_margin({"training": {"config": {"data": {"margin": 1.3}}}}) == 1.3


def test_shipped_default_model_places_the_example_landmarks():
    """End to end as `lmref detect --example` runs it: Haar box -> crop -> the default shipped model ->
    image coordinates, against the example's ground truth (drawn by the generator). The failure
    threshold of the field is NME 0.1; the shipped student (test NME 0.0345 on the synthetic split)
    measured 0.015 on this face (the earlier one, 0.098 on its split: 0.040)."""
    from lmref import landmarks as lm_layouts
    from lmref import metrics
    with open(os.path.join(ASSETS_DIR, "example_landmarks.json")) as f:
        gt = np.array(json.load(f)["landmarks"], np.float64)                    # iBUG 68
    faces = Landmarker()(EXAMPLE)
    assert len(faces) == 1
    layout = lm_layouts.get(Landmarker().model.manifest["layout"])
    if layout.name == "inner51":
        gt = gt[list(lm_layouts.INNER51_FROM_IBUG68)]
    nme = metrics.nme(faces[0].landmarks[None].astype(np.float64), gt[None], layout)[0]
    assert nme < 0.08, nme
