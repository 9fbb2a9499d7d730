"""lmref.ops.resize.interpolate against torch.nn.functional.interpolate ("nearest", "bilinear")."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TOL, assert_close
from hypothesis import given
from hypothesis import strategies as st

from lmref.ops import interpolate
from lmref.ops.resize import linear_source_weights, nearest_opmath, nearest_source_index
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
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


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 150), st.integers(1, 150), MODES, DTYPES, SEEDS,
       st.booleans())
def test_size(H, W, oh, ow, mode_align, dtype, seed, int_size):
    mode, align = mode_align
    x = np.random.default_rng(seed).standard_normal((2, 2, H, W)).astype(dtype)
    size = oh if int_size else (oh, ow)
    check(x, size=size, mode=mode, align_corners=align)


SCALES = st.one_of(st.floats(0.2, 4.5), st.sampled_from([0.25, 0.5, 1 / 3, 2 / 3, 1.3, 1.5, 2.0, 7 / 3, 3.0, 4.0]))


@given(st.integers(1, 64), st.integers(1, 64), SCALES, SCALES, MODES, DTYPES, SEEDS,
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


# ------------------------------------------------------------------ every size pair up to 256
# An index rule can agree with torch on every small size and still differ on some large ones (in
# float64 lmref once took ``nearest_idx``'s float32 rule everywhere, while torch's generic kernel,
# used when H_out + W_out > 128, computes in float64 and picked other rows for hundreds of size pairs,
# 2 -> 164 among them). So these tests run every (input, output) size pair up to MAX_SIZE through
# torch, one small call per pair (a 1-pixel-wide input whose values are their own row indices), and
# compare torch's tables with lmref's all at once. The whole op on every pair runs with --slow.

MAX_SIZE = 256


def size_pairs(max_out=MAX_SIZE):
    """Every (n_in, n_out) with n_in <= MAX_SIZE and n_out <= max_out."""
    return [(i, o) for o in range(1, max_out + 1) for i in range(1, MAX_SIZE + 1)]


def other_width(n_out, small_output):
    """An output width for the 1-pixel-wide column that puts H_out + W_out on the chosen side of
    torch's kernel switch (<= 128: the small-output kernel, else the generic one)."""
    return 1 if small_output else max(1, 129 - n_out)


def torch_tables(pairs, tdtype, mode, small_output=False, align_corners=None):
    """torch's result on a column 0, 1, ..., n_in - 1 resized to n_out rows, for every pair: the
    source row (nearest) or the source position l0 * i0 + l1 * i1 (bilinear) of each output row."""
    columns = [torch.arange(n, dtype=tdtype).reshape(1, 1, n, 1) for n in range(MAX_SIZE + 1)]
    out = []
    for n_in, n_out in pairs:
        size = (n_out, other_width(n_out, small_output))
        y = F.interpolate(columns[n_in], size=size, mode=mode, align_corners=align_corners).numpy()
        out.append(y[0, 0, :, 0])
    return out


def mismatched_pairs(pairs, got, expected, tol=None):
    """The (n_in, n_out) pairs whose tables differ (exactly, or beyond tol = {rtol, atol})."""
    a, b = np.concatenate(got), np.concatenate(expected)
    off = a != b if tol is None else np.abs(a - b) > tol["atol"] + tol["rtol"] * np.abs(b)
    owner = np.repeat(np.arange(len(pairs)), [len(t) for t in expected])
    return sorted({pairs[k] for k in owner[off]})


@pytest.mark.parametrize("small_output", [False, True], ids=["generic_kernel", "small_output_kernel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_index_rule_every_size_pair_up_to_256(dtype, small_output):
    pairs = size_pairs(127 if small_output else MAX_SIZE)       # small outputs need n_out + 1 <= 128
    expected = torch_tables(pairs, TORCH_DTYPE[dtype], "nearest", small_output)
    got = [nearest_source_index(i, o, None, nearest_opmath(dtype, o, other_width(o, small_output)))
           for i, o in pairs]
    bad = mismatched_pairs(pairs, got, expected)
    assert not bad, f"{len(bad)} (n_in, n_out) size pairs differ from torch, e.g. {bad[:8]}"


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, pytest.param(np.float32, marks=pytest.mark.slow)])
def test_bilinear_sources_every_size_pair_up_to_256(dtype, align_corners):
    """Bilinear has one rule (both of torch's CPU kernels compute in the op's math type): every pair's
    source positions l0 * i0 + l1 * i1 from lmref's tables against torch's output on a column of row
    indices. A scale or weight computed in float32 for float64 input moves them by ~1e-8 of the size,
    far beyond float64's tolerance; float32 (with --slow) cannot see the converse within its own."""
    pairs = size_pairs()
    expected = torch_tables(pairs, TORCH_DTYPE[dtype], "bilinear", align_corners=align_corners)
    got = []
    for n_in, n_out in pairs:
        i0, i1, l0, l1 = linear_source_weights(n_in, n_out, align_corners, None, dtype)
        got.append(l0 * i0.astype(dtype) + l1 * i1.astype(dtype))
    bad = mismatched_pairs(pairs, got, expected, TOL[dtype])
    assert not bad, f"{len(bad)} (n_in, n_out) size pairs differ from torch, e.g. {bad[:8]}"


@pytest.mark.slow
@pytest.mark.parametrize("mode, align", [("nearest", None), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interpolate_every_size_pair_up_to_256(dtype, mode, align):
    """The whole op on random data for every size pair on H (and on W), both nearest kernels."""
    x = np.random.default_rng(0).standard_normal((1, 2, MAX_SIZE, 3)).astype(dtype)
    for small_output in (False, True):
        for n_in, n_out in size_pairs(127 if small_output else MAX_SIZE):
            ow = other_width(n_out, small_output)
            xs = np.ascontiguousarray(x[:, :, :n_in])
            check(xs, size=(n_out, ow), mode=mode, align_corners=align)
            check(np.ascontiguousarray(xs.transpose(0, 1, 3, 2)), size=(ow, n_out), mode=mode, align_corners=align)


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
    (dict(size=4, mode="area"), ValueError, "mode"),
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


# ---------------------------------------------------------------------------------------------
# nearest-exact and bicubic

@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 30), st.integers(1, 30), DTYPES, SEEDS, st.booleans())
def test_nearest_exact_matches_torch(H, W, oh, ow, dtype, seed, by_scale):
    x = np.random.default_rng(seed).standard_normal((1, 2, H, W)).astype(dtype)
    kw = dict(scale_factor=(oh / H, ow / W)) if by_scale else dict(size=(oh, ow))
    got, expected = both(x, mode="nearest-exact", **kw)
    assert_close(got, expected, rtol=0, atol=0)              # copies values: exact


@given(st.integers(1, 10), st.integers(1, 10), st.integers(1, 24), st.integers(1, 24), st.booleans(), DTYPES,
       SEEDS, st.booleans())
def test_bicubic_matches_torch(H, W, oh, ow, align, dtype, seed, by_scale):
    x = np.random.default_rng(seed).standard_normal((2, 2, H, W)).astype(dtype)
    kw = dict(scale_factor=(oh / H, ow / W)) if by_scale else dict(size=(oh, ow))
    got, expected = both(x, mode="bicubic", align_corners=align, **kw)
    assert_close(got, expected)


def test_bicubic_coefficients_and_border():
    """Keys' a = -0.75: the weights sum to 1, interpolate exactly at t = 0, and the border repeats."""
    from lmref.ops.resize import cubic_coefficients, cubic_source_weights
    t = np.linspace(0, 1, 11)
    c = cubic_coefficients(t)
    np.testing.assert_allclose(c.sum(axis=1), 1, atol=1e-15)
    np.testing.assert_array_equal(cubic_coefficients(np.array([0.0]))[0], [0, 1, 0, 0])
    np.testing.assert_allclose(cubic_coefficients(np.array([0.5]))[0], [-0.09375, 0.59375, 0.59375, -0.09375])
    taps, _ = cubic_source_weights(3, 6, False, None, np.float64)
    assert taps.min() == 0 and taps.max() == 2 and (taps[0] == [0, 0, 0, 1]).all()


def test_align_corners_rejected_for_nearest_exact():
    with pytest.raises(ValueError, match="align_corners"):
        interpolate(np.ones((1, 1, 2, 2)), size=4, mode="nearest-exact", align_corners=True)
