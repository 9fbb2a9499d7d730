"""lmref.data.synthetic and its 3D face model: geometry, labels, determinism, splits, the CLI."""
import dataclasses
import hashlib
import os

import numpy as np
import pytest

from lmref import landmarks as lm
from lmref.data import face3d as f3
from lmref.data import readers, synthetic as syn

LAY = lm.get("ibug68")


def test_mean_face_anthropometry():
    """The mean 3D face has adult proportions and lies on its surface where MEAN_2D says."""
    m = f3.mean_model()
    L = m.landmarks                                                   # [68, 3] mm, face frame
    np.testing.assert_allclose(L[17:, :2], f3.MEAN_2D[17:], atol=0.05)   # inner points placed exactly
    assert 84 < np.linalg.norm(L[36] - L[45]) < 92                      # outer eye corners
    assert 135 < L[16, 0] - L[0, 0] < 155                               # face width at the top of the jaw line
    assert 115 < L[27, 1] - L[8, 1] < 130                               # nasion to chin
    assert 15 < L[30, 2] - L[33, 2] < 25                                # nose tip in front of the subnasale
    assert 25 < L[30, 2] - L[36, 2] < 40                                # ... and of the outer eye corners
    assert L[27, 2] > L[39, 2] > L[36, 2]                               # nasion, inner, outer eye corner recede
    assert L[0, 2] < -60 and L[8, 2] < 0                                # the jaw line wraps back to the ears
    mirrored = L[list(LAY.flip)] * [-1, 1, 1]
    np.testing.assert_allclose(mirrored, L, atol=0.3)                   # symmetric


def test_contour_follows_the_silhouette_on_the_far_side():
    m = f3.mean_model()
    _, _, ring0 = f3.contour_on_silhouette(m.P, m, f3.Camera(f3.rotation(0, 0, 0), 2000, 1500, 128, 128))
    xy, _, ring = f3.contour_on_silhouette(m.P, m, f3.Camera(f3.rotation(50, 0, 0), 2000, 1500, 128, 128))
    # yaw > 0 turns the face to the image right: the subject's left side (points 9..16) turns away
    assert (ring[9:17] >= ring0[9:17]).all() and (ring[12:17] > 5).all()
    assert (ring[:7] == 0).all()                                        # the near side stays anatomical
    # at moderate yaw the far cheek is the face's outline: head inside, background just outside
    cam = f3.Camera(f3.rotation(30, 0, 0), 1200, 1500, 110, 100)
    xy, _, _ = f3.contour_on_silhouette(m.P, m, cam)
    vxy, vdepth = cam.project(f3.sample_map(m.P, m.mesh_uv))
    ids, _ = f3.rasterize(vxy, vdepth, m.mesh_tris, (256, 256))
    for k in range(12, 16):
        o = (xy[k] - xy[30]) / np.linalg.norm(xy[k] - xy[30])
        inner, outer = np.round(xy[k] - 2 * o).astype(int), np.round(xy[k] + 2 * o).astype(int)
        assert ids[inner[1], inner[0]] >= 0 and ids[outer[1], outer[0]] < 0


def test_expressions_move_the_landmarks_with_the_surface():
    m = f3.mean_model()
    closed = f3.sample_map(f3.deform(m, {"lips_part": -1.0}), m.landmark_uv)
    assert abs(closed[62, 1] - closed[66, 1]) < 0.7                     # lips meet (the upper one
    assert 0 < closed[62, 2] - closed[66, 2] < 2                        # a little in front)
    opened = f3.sample_map(f3.deform(m, {"lips_part": 1.0}, jaw_deg=20), m.landmark_uv)
    assert opened[62, 1] - opened[66, 1] > 25                           # mouth open
    assert opened[8, 1] < closed[8, 1] - 15                             # the chin drops with the jaw
    np.testing.assert_allclose(opened[17:48], closed[17:48], atol=0.2)  # brows, nose, eyes stay
    shut = f3.sample_map(f3.deform(m, {"blink_R": 1.0, "blink_L": 1.0}), m.landmark_uv)
    assert abs(shut[37, 1] - shut[41, 1]) < 0.6 and abs(shut[44, 1] - shut[46, 1]) < 0.6


def test_generate_is_deterministic_and_labelled():
    a = syn.generate(seed=0, index=5, size=128)
    b = syn.generate(seed=0, index=5, size=128)
    c = syn.generate(seed=0, index=6, size=128)
    assert a.image.shape == (128, 128, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.landmarks, b.landmarks)
    assert np.array_equal(a.occluded, b.occluded) and np.array_equal(a.attributes, b.attributes)
    assert not np.array_equal(a.image, c.image)
    assert a.landmarks.shape == (68, 2) and a.occluded.dtype == bool and a.attributes.shape == (6,)
    box = a.box
    assert 0.3 * 128 < max(box[2] - box[0], box[3] - box[1]) < 0.7 * 128   # framing
    assert set(np.unique(a.attributes)) <= {0, 1}
    with pytest.raises(ValueError, match="split"):
        syn.generate(0, 0, split="nope")
    with pytest.raises(ValueError, match="size"):
        syn.generate(0, 0, size=8)


def test_occluders_set_the_flags_and_the_attribute():
    rng = syn._rng(0, "train", 123)
    p = syn.sample_params(rng)
    p.update(rng=rng, occluders=["sunglasses"], pose=(0.0, 0.0, 0.0), blur=None)
    s = syn.render(p, size=128)
    assert s.occluded[36:48].mean() > 0.8                               # eyes behind dark lenses
    assert s.attributes[syn.ATTRIBUTES.index("occlusion")] == 1
    assert s.occluded[48:68].mean() < 0.5                               # the mouth is not covered
    rng = syn._rng(0, "train", 124)
    p = syn.sample_params(rng)
    p.update(rng=rng, occluders=["mask"], pose=(0.0, 0.0, 0.0), blur=None)
    s = syn.render(p, size=128)
    assert s.occluded[48:68].all() and s.occluded[[31, 33, 35]].all()   # mouth and nose under the mask
    assert not s.occluded[36:48].any()


def test_attribute_rules():
    rng = syn._rng(0, "train", 7)
    p = syn.sample_params(rng)
    p.update(rng=rng, pose=(45.0, 0.0, 0.0), occluders=[], blur=("motion", 9.0))
    s = syn.render(p, size=128)
    a = dict(zip(syn.ATTRIBUTES, s.attributes))
    assert a["pose"] == 1 and a["blur"] == 1 and a["occlusion"] == 0


def _files(d):
    return {fn: hashlib.sha256(open(os.path.join(d, fn), "rb").read()).hexdigest() for fn in sorted(os.listdir(d))}


def test_cli_writes_300w_layout_byte_identically(tmp_path, capsys):
    args = ["--n", "3", "--seed", "4", "--size", "128", "--sheet", "3"]
    assert syn.main(["--out", str(tmp_path / "a")] + args) == 0
    assert syn.main(["--out", str(tmp_path / "b")] + args) == 0
    out = capsys.readouterr().out
    assert "attribute counts: pose" in out and "images/s" in out
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa == fb                                                     # byte-identical
    assert {"000000.png", "000000.pts", "000002.pts", "meta.npz", "attributes.txt", "contact_sheet.png"} <= set(fa)
    faces = readers.read_300w_dir(tmp_path / "a")
    assert len(faces) == 3
    s = syn.generate(seed=4, index=1, size=128)
    np.testing.assert_allclose(faces[1].landmarks, s.landmarks, atol=1e-6)
    assert np.array_equal(faces[1].load_image(), s.image)
    sheet = readers.read_image(tmp_path / "a" / "contact_sheet.png")
    assert sheet.shape == (256, 6 * 256, 3)                             # 3 tiles of 2 x 128 on a 6-wide grid


def test_load_split_caches_and_subsets(tmp_path):
    a = syn.load_split("test", n=6, seed=1, size=96, cache_dir=tmp_path)
    man = a.manifest
    assert man["n"] == 6 and man["version"] == syn.DEFAULT_VERSION and len(man["sha256"]) == 64
    b = syn.load_split("test", n=6, seed=1, size=96, cache_dir=tmp_path)             # from the cache
    assert np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a[2].image, b[2].image)
    assert np.array_equal(a[2].image, syn.generate(1, 2, 96, "test").image)
    counts = a.counts()
    assert set(counts) == set(syn.ATTRIBUTES)
    for attr in ("pose", "occlusion", "make-up"):
        sub = syn.load_split(f"test_{attr.replace('-', '')}", n=6, seed=1, size=96, cache_dir=tmp_path)
        assert len(sub) == counts[attr] and all(sub.attributes[:, syn.ATTRIBUTES.index(attr)] == 1)
    # a cache that disagrees with the generator (changed without a version bump) is rebuilt
    meta = os.path.join(a.root, "meta.npz")
    with np.load(meta) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["landmarks"] = arrays["landmarks"] + 1.0
    np.savez(meta, **arrays)
    with pytest.warns(RuntimeWarning, match="stale"):
        c = syn.load_split("test", n=6, seed=1, size=96, cache_dir=tmp_path)
    assert np.array_equal(c.landmarks, b.landmarks)
    # a renderer that disagrees with itself (e.g. across worker processes) is rebuilt once, then an error,
    # never an endless loop of renders
    real = syn._generate_many

    def shifted(*args, **kw):
        return [dataclasses.replace(s, landmarks=s.landmarks + 1.0) for s in real(*args, **kw)]
    mp = pytest.MonkeyPatch()
    mp.setattr(syn, "_generate_many", shifted)
    try:
        with pytest.warns(RuntimeWarning, match="stale"), pytest.raises(RuntimeError, match="not deterministic"):
            syn.load_split("test", n=3, seed=5, size=96, cache_dir=tmp_path / "loop")
    finally:
        mp.undo()
    with pytest.raises(ValueError, match="split"):
        syn.load_split("dev", n=2, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="attribute"):
        a.subset("glasses")
