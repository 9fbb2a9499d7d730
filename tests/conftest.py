"""Shared test settings.

Hypothesis profiles: ``ci`` (default; few examples so the suite stays fast on 2 cores) and ``slow``
(many examples), chosen with ``pytest --slow`` or ``HYPOTHESIS_PROFILE=slow``. Tests marked
``@pytest.mark.slow`` run only with ``--slow``.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=12, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "slow", max_examples=300, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="run slow tests and many hypothesis examples")


def pytest_configure(config):
    slow = config.getoption("--slow") or os.environ.get("HYPOTHESIS_PROFILE") == "slow"
    settings.load_profile("slow" if slow else "ci")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Torch on one thread for the tests: the shapes are small, and on two cores shared with other
    jobs torch's thread pool oversubscribes them badly (10-30x slower)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Tolerances used throughout: float64 to near machine precision, float32 to a stated tolerance.
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


def assert_close(actual, expected, dtype=None, **override):
    """Compare an lmref result with a torch result at the dtype's tolerance."""
    expected = expected.detach().cpu().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    dtype = dtype or np.asarray(actual).dtype.type
    tol = {**TOL[dtype], **override}
    assert np.asarray(actual).dtype == dtype, f"dtype {np.asarray(actual).dtype} != {dtype}"
    assert np.asarray(actual).shape == expected.shape, f"shape {np.asarray(actual).shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, **tol)
