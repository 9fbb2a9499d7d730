"""lmref.ops.shuffle against torch: pixel_shuffle, pixel_unshuffle, channel_shuffle (exact copies)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

from lmref.ops import channel_shuffle, pixel_shuffle, pixel_unshuffle
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)


def exact(got, expected):
    assert_close(got, expected, rtol=0, atol=0)


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), DTYPES, SEEDS)
def test_pixel_shuffle_and_unshuffle_match_torch(B, C, r, H, W, dtype, seed):
    x = np.random.default_rng(seed).standard_normal((B, C * r * r, H, W)).astype(dtype)
    y = pixel_shuffle(x, r)
    exact(y, F.pixel_shuffle(torch.from_numpy(x), r))
    exact(pixel_unshuffle(y, r), F.pixel_unshuffle(torch.from_numpy(y), r))
    exact(pixel_unshuffle(y, r), x)


@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), DTYPES, SEEDS)
def test_channel_shuffle_matches_torch(B, g, per_group, H, W, dtype, seed):
    x = np.random.default_rng(seed).standard_normal((B, g * per_group, H, W)).astype(dtype)
    exact(channel_shuffle(x, g), F.channel_shuffle(torch.from_numpy(x), g))


def test_index_formulas_by_hand():
    x = np.arange(8, dtype=np.float64).reshape(1, 8, 1, 1)           # C = 2 * 2*2, r = 2
    y = pixel_shuffle(x, 2)
    assert y.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(y[0, 1], [[4, 5], [6, 7]])         # out[c=1, i, j] = x[4 + 2i + j]
    z = channel_shuffle(np.arange(6, dtype=np.float64).reshape(1, 6, 1, 1), 2)
    np.testing.assert_array_equal(z[0, :, 0, 0], [0, 3, 1, 4, 2, 5])


def test_traced():
    x = np.zeros((1, 4, 2, 2), np.float32)
    with trace() as t:
        channel_shuffle(pixel_unshuffle(pixel_shuffle(x, 2), 2), 2)
    assert [r.op for r in t] == ["pixel_shuffle", "pixel_unshuffle", "channel_shuffle"]


@pytest.mark.parametrize("call, err, match", [
    (lambda x: pixel_shuffle(x, 2), ValueError, "divisible"),            # 6 channels, r*r = 4
    (lambda x: pixel_unshuffle(x, 2), ValueError, "divisible"),          # 5x4 map
    (lambda x: channel_shuffle(x, 4), ValueError, "divisible"),
    (lambda x: pixel_shuffle(x, 0), ValueError, "upscale_factor"),
    (lambda x: pixel_shuffle(x, 2.0), TypeError, "upscale_factor"),
    (lambda x: channel_shuffle(x, True), TypeError, "groups"),
    (lambda x: channel_shuffle(x[0], 2), ValueError, "rank"),
    (lambda x: pixel_unshuffle(x.astype(np.int32), 1), TypeError, "float32 or float64"),
])
def test_bad_arguments_raise(call, err, match):
    with pytest.raises(err, match=match):
        call(np.zeros((1, 6, 5, 4)))
