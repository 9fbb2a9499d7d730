"""torch_impl.data: the STAR / ICME 2024 augmentation moves landmarks exactly with the pixels;
datasets and batches for the trainer."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from lmref import landmarks as lm
from lmref.data import readers, transforms as tf
from torch_impl import data as D

LAY = lm.get("ibug68")


def _face_points(rng, n=68, lo=60.0, hi=140.0):
    return rng.uniform(lo, hi, (n, 2))


def _blobs(points, shape, sigma):
    """One Gaussian blob per landmark, each in its own channel, peak 255: [H, W, N] float32."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    d2 = (xx[..., None] - points[:, 0]) ** 2 + (yy[..., None] - points[:, 1]) ** 2
    return (255.0 * np.exp(-d2 / (2 * sigma ** 2))).astype(np.float32)


def _centroids(img):
    H, W, _ = img.shape
    yy, xx = np.mgrid[0:H, 0:W]
    m = img.sum((0, 1))
    return np.stack([(img * xx[..., None]).sum((0, 1)) / m, (img * yy[..., None]).sum((0, 1)) / m], -1)


params_st = st.builds(
    D.AugmentParams,
    flip=st.booleans(), angle=st.floats(-50, 50), scale=st.floats(0.8, 1.2),
    shift=st.tuples(st.floats(-8, 8), st.floats(-8, 8)),
    blur=st.sampled_from([0, 3, 5]), gamma=st.one_of(st.none(), st.floats(0.5, 2.0)))


@given(params=params_st, seed=st.integers(0, 2 ** 31))
def test_draw_then_augment_equals_augment_then_draw(params, seed):
    """Landmarks drawn as blobs and pushed through the augmentation land where the augmented
    landmarks are (the flip renumbers them with the layout's permutation)."""
    cfg = D.AugmentConfig(size=96, margin=1.6)
    pts = _face_points(np.random.default_rng(seed))
    img = _blobs(pts, (200, 200), sigma=3.0)
    crop, out, M, occ = D.augment(img, pts, LAY, params, cfg)
    assert crop.shape == (96, 96, 68) and not occ.any()
    # drawing first: blob of old point j is channel j of the crop; it belongs to new point k with
    # j = flip[k] when flipped
    src = np.array(LAY.flip) if params.flip else np.arange(68)
    ch = crop[..., src]
    inside = np.all((out > 12) & (out < 96 - 13), axis=1)
    assert inside.sum() > 20
    np.testing.assert_allclose(_centroids(ch)[inside], out[inside], atol=0.08)
    if params.blur == 0 and params.gamma is None:
        # drawing second: blobs at the augmented points, scaled like the warp, give the same image
        s = np.sqrt(abs(np.linalg.det(M[:, :2])))
        drawn = _blobs(out, (96, 96), sigma=3.0 * s)
        np.testing.assert_allclose(ch[..., inside], drawn[..., inside], atol=0.04 * 255)


def test_flip_mirrors_crop_and_renumbers():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    pts = _face_points(rng)
    base = D.AugmentParams(angle=12.0, scale=1.1, shift=(3.0, -2.0))
    flipped = D.AugmentParams(flip=True, angle=12.0, scale=1.1, shift=(3.0, -2.0))
    c0, p0, M0, _ = D.augment(img, pts, LAY, base)
    c1, p1, M1, _ = D.augment(img, pts, LAY, flipped)
    assert np.array_equal(c1, c0[:, ::-1])
    np.testing.assert_allclose(p1, LAY.mirror(p0, 256), atol=1e-9)
    # flipping twice is the identity, on points and pixels
    np.testing.assert_allclose(LAY.mirror(p1, 256), p0, atol=1e-9)
    assert np.array_equal(c1[:, ::-1], c0)
    # the matrix maps image points to crop points before the renumbering
    np.testing.assert_allclose(tf.apply_affine(pts, M1)[list(LAY.flip)], p1, atol=1e-9)


def test_texture_ops_keep_the_image_size_and_flag_the_occluded_points():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)
    pts = _face_points(rng, lo=30, hi=120)
    p = D.AugmentParams(occlusion=(0, 0, 127, 255), blur=5, gamma=0.5, noise=(0.3, 7), gray=True)
    crop, out, M, occ = D.augment(img, pts, LAY, p)
    assert crop.dtype == np.uint8 and crop.shape == (256, 256, 3)
    assert np.array_equal(crop[..., 0], crop[..., 1])                 # gray
    np.testing.assert_array_equal(occ, out[:, 0] <= 127.5)
    bare = D.augment(img, pts, LAY, D.AugmentParams(occlusion=(0, 0, 127, 255)))[0]
    assert (bare[:, :128] == 0).all()                                   # STAR fills with black


def test_sample_augment_is_seeded_and_star_like():
    cfg = D.AugmentConfig()
    a = D.sample_augment(np.random.default_rng(5), cfg)
    b = D.sample_augment(np.random.default_rng(5), cfg)
    assert a == b
    draws = [D.sample_augment(np.random.default_rng(i), cfg) for i in range(400)]
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6
    assert all(d.blur == 0 or d.blur % 2 == 1 for d in draws)           # odd kernels: no shift
    assert 12 < np.std([d.angle for d in draws]) < 24
    assert 0.3 < np.mean([d.occlusion is not None for d in draws]) < 0.5


def _records(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [readers.Annotation(landmarks=_face_points(rng), image=rng.integers(0, 255, (200, 200, 3), dtype=np.uint8),
                               occluded=rng.random(68) < 0.1) for _ in range(n)]


def test_dataset_samples_and_batches():
    recs = _records()
    ds = D.LandmarkDataset(recs, layout="ibug68", augment_cfg=D.AugmentConfig(size=64), seed=3)
    s = ds.sample(1, seed=11)
    assert s["image"].shape == (3, 64, 64) and s["image"].dtype == np.float32
    assert s["landmarks"].shape == (68, 2) and s["occluded"].shape == (68,)
    again = ds.sample(1, seed=11)
    assert all(np.array_equal(s[k], again[k]) for k in ("image", "landmarks", "occluded"))
    plain = ds.sample(1, None)                                           # no augmentation: centred crop
    box = tf.landmark_box(recs[1].landmarks)
    np.testing.assert_allclose(plain["landmarks"], tf.apply_affine(recs[1].landmarks, tf.crop_matrix(box, 64)), atol=1e-4)
    np.testing.assert_array_equal(plain["occluded"], recs[1].occluded)
    assert np.array_equal(ds[2]["image"], ds[2]["image"])                # __getitem__: seeded by (seed, epoch, i)
    e0 = ds[2]["landmarks"]
    ds.set_epoch(1)
    assert not np.allclose(ds[2]["landmarks"], e0)
    batch = D.collate([ds.sample(i, i) for i in range(4)], layout="inner51", aam_targets=True)
    assert tuple(batch["image"].shape) == (4, 3, 64, 64)
    assert tuple(batch["landmarks"].shape) == (4, 51, 2) and batch["landmarks"].dtype == torch.float32
    assert tuple(batch["pointmaps"].shape) == (4, 51, 16, 16)
    assert tuple(batch["edgemaps"].shape) == (4, 8, 16, 16)
    np.testing.assert_allclose(batch["landmarks"][0].numpy(), ds.sample(0, 0)["landmarks"][17:], atol=1e-6)
    gray = D.LandmarkDataset(recs, channels=1, mean=0.5, std=0.25)
    x = gray.sample(0, None)["image"]
    assert x.shape == (1, 256, 256) and x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6
    with pytest.raises(ValueError, match="ibug68 to wflw98"):
        D.collate([ds.sample(0)], layout="wflw98")
    with pytest.raises(ValueError, match=r"expected \[68, 2\]"):
        D.augment(recs[0].image, recs[0].landmarks[:51], LAY, D.AugmentParams())
    with pytest.raises(IndexError):
        ds.sample(99)


def test_make_splits_from_synthetic(tmp_path):
    cfg = SimpleNamespace(data={"cache_dir": str(tmp_path), "render_size": 128}, input_size=64,
                          num_train=5, val_ratio=0.2, num_test=2, seed=0, arch="stud5", model={})
    train, val, test = D.make_splits(cfg)
    assert (len(train), len(val), len(test)) == (4, 1, 2)
    s = train.sample(0, 1)
    assert s["image"].shape == (1, 64, 64)                               # Stud5 is grayscale
    spec = D.input_spec(cfg)
    assert spec == {"size": [64, 64], "channels": 1, "color": "GRAY", "mean": [0.5], "std": [0.5]}
    desc = D.describe(train)
    assert desc["faces"] == 4 and desc["synthetic"]["n"] == 5 and len(desc["synthetic"]["sha256"]) == 64
    with pytest.raises(ValueError, match="unknown keys"):
        D.make_splits(SimpleNamespace(**{**vars(cfg), "data": {"colour": 1}}))
