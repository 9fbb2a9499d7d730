"""lmref.ops.resize.interpolate against torch.nn.functional.interpolate ("nearest", "bilinear")."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

from lmref.ops import interpolate
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)
MODES = st.sampled_from([("nearest", None), ("bilinear", False), ("bilinear", True), ("bilinear", None)])
# torch warns that bilinear without align_corners defaults to False: a notice, not a difference
pytestmark = pytest.mark.filterwarnings("ignore:Default upsampling behavior")


def both(x, **kw):
    """(lmref, torch) results for the same arguments."""
    return interpolate(x, **kw), F.interpolate(torch.from_numpy(x), **kw)


def check(x, **kw):
    got, expected = both(x, **kw)
    if kw.get("mode", "nearest") == "nearest":
        assert_close(got, expected, rtol=0, atol=0)       # nearest copies values: exact
    else:
        assert_close(got, expected)


@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 20), st.integers(1, 20), MODES, DTYPES, SEEDS,
       st.booleans())
def test_size(H, W, oh, ow, mode_align, dtype, seed, int_size):
    mode, align = mode_align
    x = np.random.default_rng(seed).standard_normal((2, 2, H, W)).astype(dtype)
    size = oh if int_size else (oh, ow)
    check(x, size=size, mode=mode, align_corners=align)


SCALES = st.one_of(st.floats(0.2, 4.5), st.sampled_from([0.25, 0.5, 1 / 3, 2 / 3, 1.3, 1.5, 2.0, 7 / 3, 3.0, 4.0]))


@given(st.integers(1, 9), st.integers(1, 9), SCALES, SCALES, MODES, DTYPES, SEEDS,
       st.sampled_from([None, False, True]), st.booleans())
def test_scale_factor(H, W, sh, sw, mode_align, dtype, seed, recompute, single):
    mode, align = mode_align
    if int(H * sh) < 1 or int(W * (sh if single else sw)) < 1:
        sh, sw = max(sh, 1.0), max(sw, 1.0)
    x = np.random.default_rng(seed).standard_normal((1, 3, H, W)).astype(dtype)
    check(x, scale_factor=sh if single else (sh, sw), mode=mode, align_corners=align,
          recompute_scale_factor=recompute)


def test_nearest_index_rule_exhaustive_small_sizes():
    """The nearest rule is discrete (float32 floor of dst*scale), so check every small case exactly."""
    x = np.arange(13 * 2, dtype=np.float64).reshape(1, 1, 13, 2)
    for H in range(1, 14):
        for oh in range(1, 33):
            check(x[:, :, :H], size=(oh, 2), mode="nearest")
        for sf in (0.3, 0.7, 0.9, 1.1, 1.3, 1.9999, 2.0001, 2.5, 3.3333333, 0.25, 1 / 3, 2 / 3, 7 / 3):
            if int(H * sf) >= 1:
                check(x[:, :, :H], scale_factor=(sf, 1.0), mode="nearest")


def test_given_scale_factor_is_what_the_kernel_uses():
    """H=5, scale 1.7 -> 8 rows; torch samples at 1/1.7 per step, not 5/8 (recompute_scale_factor
    restores 5/8). The two disagree, and lmref follows each."""
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    for mode, align in (("nearest", None), ("bilinear", False)):
        by_factor = interpolate(x, scale_factor=1.7, mode=mode, align_corners=align)
        by_size = interpolate(x, size=(8, 8), mode=mode, align_corners=align)
        assert by_factor.shape == by_size.shape == (1, 1, 8, 8)
        assert not np.allclose(by_factor, by_size)
        check(x, scale_factor=1.7, mode=mode, align_corners=align)
        recomputed = interpolate(x, scale_factor=1.7, mode=mode, align_corners=align, recompute_scale_factor=True)
        np.testing.assert_array_equal(recomputed, by_size)


def test_unchanged_axis_is_copied():
    """torch leaves an axis whose size does not change untouched, even when a scale factor says 1.3."""
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 4))
    got = interpolate(x, scale_factor=1.3, mode="bilinear", align_corners=False)   # 3x4 -> 3x5
    check(x, scale_factor=1.3, mode="bilinear", align_corners=False)
    assert got.shape == (1, 2, 3, 5)
    np.testing.assert_array_equal(got[:, :, :, 0], x[:, :, :, 0])


def test_bilinear_by_hand():
    """align_corners=True on 2 -> 3 samples the midpoint; align_corners=False on 2 -> 4 gives
    source positions max((j + 0.5)/2 - 0.5, 0) = 0, 0.25, 0.75, 1."""
    x = np.array([[[[0.0, 4.0]]]])
    np.testing.assert_allclose(interpolate(x, size=(1, 3), mode="bilinear", align_corners=True)[0, 0, 0], [0, 2, 4])
    np.testing.assert_allclose(interpolate(x, size=(1, 4), mode="bilinear", align_corners=False)[0, 0, 0],
                               [0, 1, 3, 4])


def test_traced_with_attrs():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with trace() as t:
        y = interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    assert y.dtype == np.float32 and y.shape == (1, 1, 8, 8)
    assert t["interpolate"].attrs == {"scale_factor": 2, "mode": "bilinear", "align_corners": True}


@pytest.mark.parametrize("kw, err, match", [
    (dict(), ValueError, "exactly one"),
    (dict(size=4, scale_factor=2), ValueError, "exactly one"),
    (dict(size=4, mode="bicubic"), ValueError, "mode"),
    (dict(size=4, mode="nearest", align_corners=False), ValueError, "align_corners"),
    (dict(size=4, recompute_scale_factor=True), ValueError, "recompute_scale_factor"),
    (dict(size=0), ValueError, "> 0"),
    (dict(scale_factor=0.1), ValueError, "> 0"),
    (dict(scale_factor=-2.0), ValueError, "positive"),
    (dict(scale_factor=float("nan")), ValueError, "positive"),
    (dict(size=(2, 3, 4)), ValueError, "pair"),
    (dict(size=2.5), TypeError, "size"),
    (dict(scale_factor="2"), TypeError, "scale_factor"),
])
def test_bad_arguments_raise(kw, err, match):
    with pytest.raises(err, match=match):
        interpolate(np.zeros((1, 1, 5, 5)), **kw)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="rank"):
        interpolate(np.zeros((1, 5, 5)), size=4)
    with pytest.raises(TypeError, match="float32 or float64"):
        interpolate(np.zeros((1, 1, 5, 5), np.float16), size=4)
