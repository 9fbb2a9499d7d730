import numpy as np
import pytest

import lmref
from lmref.trace import OPS, op, scope, trace


@op
def _double(x):
    return x * 2


@op
def _double_twice(x):
    return _double(_double(x))


def test_scoped_names_and_nested_ops():
    x = np.ones((2, 3))
    with trace() as t:
        with scope("block"):
            with scope(0):
                y = _double(x)
            _double_twice(y)
        _double(x)
    assert t.names() == [
        "block.0:_double",
        "block:_double_twice/_double",
        "block:_double_twice/_double#1",
        "block:_double_twice",
        "_double",
    ]
    assert t["block:_double_twice"].inputs == [[2, 3]]
    np.testing.assert_array_equal(t["block:_double_twice"].output, np.full((2, 3), 8.0))


def test_outputs_are_copies_and_untraced_calls_record_nothing():
    x = np.ones(3)
    with trace() as t:
        y = _double(x)
    y[:] = 0
    assert t["_double"].output.tolist() == [2, 2, 2]
    _double(x)
    assert len(t) == 1
    assert "_double" in OPS and lmref.trace is not None


def test_nested_trace_refused():
    with trace():
        with pytest.raises(RuntimeError):
            with trace():
                pass
