"""lmref.ops.padding.pad against torch.nn.functional.pad: modes constant, reflect and replicate."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

from lmref.ops import pad
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def pad_cases(draw):
    """An input of rank k+1 or k+2 padding its last k dims (k = 1..3), widths that each mode allows."""
    mode = draw(st.sampled_from(["constant", "reflect", "replicate"]))
    k = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(k + draw(st.integers(1, 2))))
    widths = []
    for n in reversed(shape[-k:]):                       # torch order: last dimension first
        for _ in range(2):
            if mode == "reflect":
                widths.append(draw(st.integers(0, n - 1)))
            elif mode == "replicate":
                widths.append(draw(st.integers(0, 3)))
            else:
                widths.append(draw(st.integers(-(n // 2), 3)))   # a negative width crops
    value = draw(st.sampled_from([None, 0.0, -2.5])) if mode == "constant" else None
    return shape, tuple(widths), mode, value


@given(pad_cases(), DTYPES, SEEDS)
def test_pad_matches_torch(case, dtype, seed):
    shape, widths, mode, value = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    kw = {} if value is None else {"value": value}
    y = pad(x, widths, mode=mode, **kw)
    assert y.flags.c_contiguous
    assert_close(y, F.pad(torch.from_numpy(x), widths, mode=mode, **kw), rtol=0, atol=0)   # copies: exact


def test_pad_by_hand_and_traced():
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(pad(x, (2, 1), mode="reflect"), [[3, 2, 1, 2, 3, 4, 3]])
    np.testing.assert_array_equal(pad(x, (2, 1), mode="replicate"), [[1, 1, 1, 2, 3, 4, 4]])
    np.testing.assert_array_equal(pad(x, (1, -2), value=9.0), [[9, 1, 2]])
    with trace() as t:
        pad(x, (1, 1))
    assert [r.op for r in t] == ["pad"]


@pytest.mark.parametrize("x_shape, widths, mode, match", [
    ((1, 4), (4, 0), "reflect", "smaller than"),
    ((1, 4), (-1, 0), "replicate", ">= 0"),
    ((4,), (1, 1), "reflect", "last 1-3 dimensions"),
    ((1, 4), (1,), "constant", "even number"),
    ((1, 4), (1, 1), "circular", "mode"),
    ((1, 4), (-3, -2), "constant", "negative size"),
])
def test_pad_bad_arguments(x_shape, widths, mode, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pad(np.ones(x_shape), widths, mode=mode)
