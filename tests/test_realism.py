"""benchmarks.realism's bookkeeping (issue 16), with stand-ins for YuNet, Haar and dlib: found rates,
dlib's NME, its share per region and on the faces without any WFLW attribute."""
import numpy as np
import pytest

from benchmarks import realism
from lmref.data import synthetic


class _Stub:
    """Stands in for the three detectors: YuNet finds every face, Haar none, dlib's HOG finds the
    faces whose index is in `hog`, and its predictor moves the true jaw by `shift` pixels in x."""

    def __init__(self, samples, hog, shift):
        self.by_id = {id(s.image): (i, s) for i, s in enumerate(samples)}
        self.hog, self.shift = set(hog), shift

    def raw(self, image):
        i, s = self.by_id[id(image)]
        return np.array([s.box]), np.array([0.9])

    def boxes(self, image):
        i, s = self.by_id[id(image)]
        return np.array([s.box]) if i in self.hog else np.zeros((0, 4))

    def points(self, image, box):
        i, s = self.by_id[id(image)]
        p = s.landmarks.copy()
        p[:17, 0] += self.shift
        return p


def test_measure_rates_nme_shares_and_plain_faces():
    samples = [synthetic.generate(0, i, 64, "test") for i in range(4)]
    hog = (0, 2, 3)                                     # face 2 has no WFLW attribute, the others some
    assert [bool(s.attributes.any()) for s in samples] == [True, True, False, True]
    stub = _Stub(samples, hog=hog, shift=2.0)
    haar = type("NoHaar", (), {"raw": lambda self, image: np.zeros((0, 4))})()
    res = realism.measure(samples, stub, haar, stub)
    assert (res["n"], res["yunet_rate"], res["haar_rate"], res["dlib_hog_rate"], res["dlib_n"]) == (4, 1.0, 0.0, 0.75, 3)
    d = [np.linalg.norm(s.landmarks[36] - s.landmarks[45]) for s in samples]
    expected = [2.0 * 17 / 68 / d[i] for i in hog]                       # only the jaw is off
    assert res["dlib_nme"] == pytest.approx(np.mean(expected))
    assert res["dlib_nme_share"]["jaw"] == pytest.approx(res["dlib_nme"], abs=1e-4)
    assert all(res["dlib_nme_share"][r] == 0 for r in ("brows", "nose", "eyes", "mouth"))
    assert res["dlib_n_plain"] == 1 and res["dlib_nme_plain"] == pytest.approx(expected[1])
    frontal = abs(samples[2].pose[0]) <= realism.FRONTAL_YAW
    assert res["dlib_n_plain_frontal"] == int(frontal)
    by = res["dlib_nme_by_attribute"]
    assert list(by) == list(synthetic.ATTRIBUTES)
    for j, a in enumerate(synthetic.ATTRIBUTES):                         # each subset: the HOG faces with a
        members = [e for i, e in zip(hog, expected) if samples[i].attributes[j]]
        assert by[a]["n"] == len(members)
        assert by[a]["nme"] == (pytest.approx(np.mean(members)) if members else None)
    assert set(realism.WFLW_CASCADED["ESR"]) == {"test", *synthetic.ATTRIBUTES}
    offset = np.array(res["dlib_mean_offset"])
    assert offset.shape == (68, 2) and np.all(offset[:17, 0] > 0) and np.all(offset[17:] == 0)
    lengths = realism.offset_lengths(offset)
    assert lengths["all"] == pytest.approx(offset[:17, 0].sum() / 68, abs=1e-4) and lengths["brows"] == 0


def test_to_face_frame_undoes_a_similarity():
    """Face-frame points drawn in an image (y down) turned, scaled and moved come back exactly."""
    from lmref.data import face3d
    ref = face3d.MEAN_2D
    a, k, t = np.radians(17.0), 0.8, np.array([120.0, 95.0])
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    img = (ref * [1.0, -1.0]) @ R.T * k + t
    f = realism.to_face_frame(img, ref)
    np.testing.assert_allclose(f(img), ref, atol=1e-9)


class _LabelsOf:
    """dlib's stand-in: its HOG finds every face, its predictor answers with the face's version-4 labels."""

    def __init__(self, v3, v4):
        self.by_id = {id(a.image): b for a, b in zip(v3, v4)}

    def boxes(self, image):
        return np.array([self.by_id[id(image)].box])

    def points(self, image, box):
        return self.by_id[id(image)].landmarks


def test_convention_recovers_the_offsets_version_4_plants():
    """Version 4 moves the labels by face3d.LABEL_2D - MEAN_2D on the face; a 'dlib' that answers with the
    version-4 labels of version-3 faces is measured to have that convention, near-frontal faces only."""
    from lmref.data import face3d
    idx = (5, 6, 9, 11, 14, 3)                                # 3 is turned 60 degrees: left out
    v3 = [synthetic.generate(0, i, 64, "test", version=3) for i in idx]
    v4 = [synthetic.generate(0, i, 64, "test", version=4) for i in idx]
    res = realism.convention(v3, _LabelsOf(v3, v4))
    assert res["n"] == 5
    planted = face3d.LABEL_2D - face3d.MEAN_2D
    planted = planted - planted[17:].mean(0)
    got = np.array(res["offset"])
    err = np.abs(got - planted)                                        # mm; the faces' own shapes and
    assert err[17:].mean() < 0.2 and err[17:].max() < 1.0              # expressions blur it, and the jaw
    assert err[:17].mean() < 0.6 and err[:17].max() < 2.0              # follows the silhouette
    assert np.abs(planted).max() > 3                                   # and there was something to find


def test_proportions_are_the_named_ratios():
    """proportions: each ratio is its first pair's distance over its second's; a similarity changes none, a
    vertical stretch doubles the heights and leaves the widths; identity_spread is 0 for a single face."""
    from lmref.data import face3d as f3
    m = f3.MEAN_2D
    pts = np.stack([m, 3 * m @ np.array([[0.6, -0.8], [0.8, 0.6]]) + 7, m * [1, 2]])    # same, turned+scaled, stretched
    r = realism.proportions(pts)
    d = lambda a, b: np.linalg.norm(m[a] - m[b])  # noqa: E731
    assert r["mouth width"][0] == pytest.approx(d(48, 54) / d(36, 45))
    assert r["face height (eyes to chin)"][0] == pytest.approx(np.linalg.norm(m[8] - (m[36] + m[45]) / 2) / d(36, 45))
    for k, v in r.items():
        assert v[1] == pytest.approx(v[0]), k
    assert r["face height (eyes to chin)"][2] == pytest.approx(2 * r["face height (eyes to chin)"][0])
    assert r["mouth width"][2] == pytest.approx(r["mouth width"][0]) and r["face width (0-16)"][2] == pytest.approx(r["face width (0-16)"][0])
    assert set(realism.identity_spread(5, 1).values()) == {0.0}
