"""lmref.ops.pooling against torch.nn.functional: max_pool2d, avg_pool2d, adaptive_avg_pool2d."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import example, given
from hypothesis import strategies as st

from lmref.ops import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from lmref.ops.pooling import adaptive_bins
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def pool_cases(draw, dilation=True):
    """Random pooling arguments torch accepts: padding <= kernel // 2 and at least one output."""
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    hmin = max(1, d[0] * (k[0] - 1) + 1 - 2 * p[0])
    wmin = max(1, d[1] * (k[1] - 1) + 1 - 2 * p[1])
    H, W = draw(st.integers(hmin, hmin + 7)), draw(st.integers(wmin, wmin + 7))
    stride = draw(st.sampled_from([s, None]))
    if draw(st.booleans()):          # torch accepts ints too: pass ints when the pair is square
        k, p, d = (k[0] if k[0] == k[1] else k), (p[0] if p[0] == p[1] else p), (d[0] if d[0] == d[1] else d)
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W), kernel_size=k,
                stride=stride, padding=p, dilation=d, ceil_mode=draw(st.booleans()))


@given(pool_cases(), DTYPES, SEEDS)
def test_max_pool2d_matches_torch(c, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(c["shape"]).astype(dtype)
    kw = {k: c[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
    expected = F.max_pool2d(torch.from_numpy(x), **kw)
    assert_close(max_pool2d(x, **kw), expected, rtol=0, atol=0)       # a max selects: exact


@given(pool_cases(dilation=False), DTYPES, SEEDS, st.booleans())
# pinned: a ceil-mode window that reaches past the right padding (its divisor stops at the padding)
@example(dict(shape=(1, 2, 6, 6), kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True), np.float64, 0, True)
def test_avg_pool2d_matches_torch(c, dtype, seed, count_include_pad):
    x = np.random.default_rng(seed).standard_normal(c["shape"]).astype(dtype)
    kw = {k: c[k] for k in ("kernel_size", "stride", "padding", "ceil_mode")}
    expected = F.avg_pool2d(torch.from_numpy(x), count_include_pad=count_include_pad, **kw)
    assert_close(avg_pool2d(x, count_include_pad=count_include_pad, **kw), expected)


def test_ceil_mode_divisor_cases():
    """Windows that stick out past the right padding in ceil mode: torch's divisor counts the padding
    but not the part beyond it (count_include_pad) or only real pixels (not count_include_pad)."""
    x = np.arange(2 * 7 * 5, dtype=np.float64).reshape(1, 2, 7, 5)
    for k, s, p in [(3, 2, 1), (2, 3, 0), (4, 3, 2), (3, 3, 1), ((3, 2), (2, 3), (1, 0))]:
        for cip in (True, False):
            got = avg_pool2d(x, k, s, p, ceil_mode=True, count_include_pad=cip)
            assert_close(got, F.avg_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=True, count_include_pad=cip))
        got = max_pool2d(x, k, s, p, ceil_mode=True)
        assert_close(got, F.max_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=True), rtol=0, atol=0)


def test_max_pool2d_nan_and_inf_like_torch():
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6))
    x[0, 0, 2, 3] = np.nan
    x[0, 1, 4, 4] = -np.inf
    x[0, 1, 0, 0] = np.inf
    assert_close(max_pool2d(x, 3, 2, 1, ceil_mode=True),
                 F.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True), rtol=0, atol=0)


@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 8), st.integers(1, 8),
       st.sampled_from(["int", "pair", "none_h", "none_w"]), DTYPES, SEEDS)
def test_adaptive_avg_pool2d_matches_torch(H, W, oh, ow, kind, dtype, seed):
    x = np.random.default_rng(seed).standard_normal((2, 3, H, W)).astype(dtype)
    out = {"int": oh, "pair": (oh, ow), "none_h": (None, ow), "none_w": (oh, None)}[kind]
    assert_close(adaptive_avg_pool2d(x, out), F.adaptive_avg_pool2d(torch.from_numpy(x), out))


# Every (input, output) size pair up to 256: torch's bins come from integer arithmetic in any dtype
# (``AdaptivePooling.h``), so one float64 run of each pair on a column 0, 1, ..., n-1 (and its squares)
# reads them back exactly: a bin [s, e) has mean (s + e - 1)/2 and mean square sum(k^2)/(e - s).
MAX_SIZE = 256


def bin_moments(starts, ends):
    """Mean of k and of k^2 over each bin [s, e) of 0, 1, 2, ... (exact integers, then one division,
    as torch's sum-then-divide rounds) -> [2, n_bins]."""
    sq = lambda n: (n - 1) * n * (2 * n - 1) // 6                 # noqa: E731  sum of k^2, k < n
    count = ends - starts
    total = (starts + ends - 1) * count // 2                      # sum of k over the bin
    return np.stack([total / count, (sq(ends) - sq(starts)) / count])


def test_adaptive_bins_every_size_pair_up_to_256():
    columns = [torch.stack([torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64) ** 2])
               .reshape(1, 2, n, 1) for n in range(MAX_SIZE + 1)]
    bad = []
    for n_in in range(1, MAX_SIZE + 1):
        for n_out in range(1, MAX_SIZE + 1):
            expected = F.adaptive_avg_pool2d(columns[n_in], (n_out, 1)).numpy()[0, :, :, 0]
            if not np.array_equal(bin_moments(*adaptive_bins(n_in, n_out)), expected):
                bad.append((n_in, n_out))
    assert not bad, f"{len(bad)} (n_in, n_out) size pairs have other bins than torch's, e.g. {bad[:8]}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_avg_pool2d_every_size_pair_up_to_256(dtype):
    """The whole op (every fast path included) on random data, every size pair on H and on W."""
    x = np.random.default_rng(0).standard_normal((1, 2, MAX_SIZE, 3)).astype(dtype)
    for n_in in range(1, MAX_SIZE + 1):
        xs = np.ascontiguousarray(x[:, :, :n_in])
        xt = np.ascontiguousarray(xs.transpose(0, 1, 3, 2))
        for n_out in range(1, MAX_SIZE + 1):
            assert_close(adaptive_avg_pool2d(xs, (n_out, 2)), F.adaptive_avg_pool2d(torch.from_numpy(xs), (n_out, 2)))
            assert_close(adaptive_avg_pool2d(xt, (2, n_out)), F.adaptive_avg_pool2d(torch.from_numpy(xt), (2, n_out)))


def test_adaptive_avg_pool2d_overlapping_bins_by_hand():
    """H=5 -> 3 bins: [0,2), [1,4), [3,5) (torch's floor/ceil rule; bins overlap)."""
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5, 1)
    np.testing.assert_array_equal(adaptive_avg_pool2d(x, (3, 1))[0, 0, :, 0], [0.5, 2.0, 3.5])


def test_global_pooling_is_mean():
    x = np.random.default_rng(1).standard_normal((2, 4, 7, 9))
    assert_close(adaptive_avg_pool2d(x, 1), x.mean(axis=(2, 3), keepdims=True))


def test_dtype_is_kept_and_ops_are_traced():
    x = np.random.default_rng(2).standard_normal((1, 2, 8, 8)).astype(np.float32)
    with trace() as t:
        a = max_pool2d(x, 2)
        b = avg_pool2d(x, 3, stride=2, padding=1)
        c = adaptive_avg_pool2d(x, (2, 3))
    assert a.dtype == b.dtype == c.dtype == np.float32
    assert [r.op for r in t] == ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]
    assert t["avg_pool2d"].attrs == {"stride": 2, "padding": 1}
    assert t["adaptive_avg_pool2d"].output.shape == (1, 2, 2, 3)


@pytest.mark.parametrize("call, err, match", [
    (lambda x: max_pool2d(x, 3, padding=2), ValueError, "half of kernel_size"),
    (lambda x: avg_pool2d(x, 1, padding=1), ValueError, "half of kernel_size"),
    (lambda x: max_pool2d(x, 3, dilation=4, padding=1), ValueError, "too small"),
    (lambda x: avg_pool2d(x, 8), ValueError, "too small"),
    (lambda x: max_pool2d(x, 0), ValueError, "kernel_size"),
    (lambda x: max_pool2d(x, 2, stride=0), ValueError, "stride"),
    (lambda x: max_pool2d(x, 2, padding=-1), ValueError, "padding"),
    (lambda x: max_pool2d(x, 2.0), TypeError, "kernel_size"),
    (lambda x: max_pool2d(x, (2, 2, 2)), ValueError, "kernel_size"),
    (lambda x: max_pool2d(x[0], 2), ValueError, "rank"),
    (lambda x: max_pool2d(x.astype(np.int64), 2), TypeError, "float32 or float64"),
    (lambda x: avg_pool2d(list(x), 2), TypeError, "ndarray"),
    (lambda x: adaptive_avg_pool2d(x, 0), ValueError, "output_size"),
    (lambda x: adaptive_avg_pool2d(x, (1, 2, 3)), ValueError, "output_size"),
    (lambda x: adaptive_avg_pool2d(x, None), TypeError, "output_size"),
])
def test_bad_arguments_raise(call, err, match):
    x = np.zeros((1, 1, 5, 5))
    with pytest.raises(err, match=match):
        call(x)


def test_bad_arguments_also_rejected_by_torch():
    """The padding and size limits are torch's own, not stricter ones."""
    xt = torch.zeros(1, 1, 5, 5)
    with pytest.raises(RuntimeError):
        F.max_pool2d(xt, 3, padding=2)
    with pytest.raises(RuntimeError):
        F.max_pool2d(xt, 3, dilation=4, padding=1)
    with pytest.raises(RuntimeError):
        F.max_pool2d(xt, 2, dilation=3, padding=2)   # padding <= kernel//2 even when dilated
    with pytest.raises(ValueError):
        max_pool2d(np.zeros((1, 1, 5, 5)), 2, dilation=3, padding=2)
