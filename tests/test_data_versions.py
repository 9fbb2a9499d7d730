"""Synthetic data versions (issue 16): version 2 stays byte for byte what the shipped models, the
experiments and the teachers were trained on; version 3 (lmref.data.photo) renders the same faces
as photographs, from a photographer's distance; splits are cached per version."""
import hashlib

import numpy as np
import pytest

from lmref.data import photo, synthetic as syn


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


# sha256 prefixes of (image, landmarks) of three 64 px version-2 samples, computed before version 3
# existed (numpy 2.x, OpenCV 4.x on x86_64)
V2_PINNED = {("train", 0): ("de42dca66c8feace", "eb6d9be712b46c81"),
             ("train", 5): ("3c48374f8e1b63f0", "87955fa4a2c7742a"),
             ("test", 3): ("c6cad9dc74440371", "7fd442280c7181e0")}


@pytest.mark.parametrize("split, index", sorted(V2_PINNED))
def test_version_2_is_unchanged(split, index):
    s = syn.generate(0, index, 64, split, version=2)
    assert (_sha(s.image), _sha(s.landmarks)) == V2_PINNED[split, index]


def test_defaults_and_versions():
    assert syn.VERSION == 3 and syn.VERSIONS == (2, 3) and syn.DEFAULT_VERSION == 2
    a, b = syn.generate(0, 3, 64, "test"), syn.generate(0, 3, 64, "test", version=2)
    assert np.array_equal(a.image, b.image)
    with pytest.raises(ValueError, match="version"):
        syn.generate(0, 0, 64, version=1)
    with pytest.raises(ValueError, match="version"):
        syn.load_split("test", n=2, version=9)


def test_version_3_same_faces_new_photographs():
    """v3 draws every v2 parameter first: the same pose, shape and framing, rendered as another
    photograph from farther away (photo.camera_distance): the same landmark box (side and centre),
    the inner points within a few pixels, and the distance is the only change to the landmarks;
    deterministic."""
    for i in (1, 4):
        v2, v3 = syn.generate(0, i, 96, "test", version=2), syn.generate(0, i, 96, "test", version=3)
        np.testing.assert_array_equal(v2.pose, v3.pose)
        side = lambda b: max(b[2] - b[0], b[3] - b[1])
        assert side(v3.box) == pytest.approx(side(v2.box))
        np.testing.assert_allclose((v3.box[:2] + v3.box[2:]) / 2, (v2.box[:2] + v2.box[2:]) / 2, atol=1e-6)
        assert photo.DISTANCE_MM[0] <= v3.info["distance"] <= photo.DISTANCE_MM[1]
        assert 0 < np.abs(v3.landmarks - v2.landmarks)[17:].max() < 3
        p = syn.sample_params(syn._rng(0, "test", i), 3)                 # v3 seen from v2's distance:
        p["distance"], p["rng"] = v2.info["distance"], syn._rng(0, "test", i)    # v2's landmarks exactly
        np.testing.assert_array_equal(syn.render(p, 96, 2, 3).landmarks, v2.landmarks)
        assert np.abs(v2.image.astype(int) - v3.image.astype(int)).mean() > 3
        assert np.array_equal(v3.image, syn.generate(0, i, 96, "test", version=3).image)
        assert v3.info["camera"]["light"] in photo.CASTS


def test_camera_distance_is_log_uniform_in_its_range():
    rng = np.random.default_rng(0)
    d = np.array([photo.camera_distance(rng) for _ in range(4000)])
    lo, hi = photo.DISTANCE_MM
    assert d.min() >= lo and d.max() <= hi
    assert np.median(d) == pytest.approx(np.sqrt(lo * hi), rel=0.05)            # log-uniform: geometric mean


def test_load_split_is_keyed_by_version(tmp_path):
    a = syn.load_split("test", n=3, seed=1, size=48, cache_dir=tmp_path, version=3)
    b = syn.load_split("test", n=3, seed=1, size=48, cache_dir=tmp_path, version=2)
    assert a.root != b.root and "v3" in a.root and "v2" in b.root
    assert a.manifest["version"] == 3 and b.manifest["version"] == 2
    np.testing.assert_array_equal(a[1].image, syn.generate(1, 1, 48, "test", version=3).image)
    np.testing.assert_array_equal(a.landmarks[1], syn.generate(1, 1, 48, "test", version=3).landmarks)
    np.testing.assert_array_equal(b.landmarks[1], syn.generate(1, 1, 48, "test", version=2).landmarks)
    assert not np.array_equal(a.landmarks, b.landmarks)                        # v3 sees the faces from farther


def test_photo_steps():
    rng = np.random.default_rng(0)
    img = np.full((32, 32, 3), 0.02, np.float32)
    face = np.zeros((32, 32), np.float32)
    face[8:24, 8:24] = 1
    out = photo.auto_exposure(rng, img, face, np.ones(3, np.float32), extreme=False)
    assert 0.06 < out[16, 16].mean() < 0.5                          # a dim face metered up toward 0.18
    gray = np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, axis=2)
    for seed in range(4):
        g, _ = photo.finish(np.random.default_rng(seed), gray, gray=True)
        assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
