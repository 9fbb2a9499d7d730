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
    offset = np.array(res["dlib_mean_offset"])
    assert offset.shape == (68, 2) and np.all(offset[:17, 0] > 0) and np.all(offset[17:] == 0)
