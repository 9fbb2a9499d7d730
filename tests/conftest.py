"""Shared test settings.

Hypothesis profiles: ``ci`` (default: few examples so the suite stays fast on 2 cores) and ``slow``
(many examples), chosen with ``pytest --slow`` or ``HYPOTHESIS_PROFILE=slow``. Tests marked
``@pytest.mark.slow`` run only with ``--slow``.

Every run draws new hypothesis examples, from one seed printed at the top of the run
("hypothesis seed N"): a property test explores a little more of its space each time instead of
re-running the same 12 examples. A failure replays with that seed:

    LMREF_HYPOTHESIS_SEED=N python -m pytest tests/test_ops_conv.py

(``pytest --hypothesis-seed=N`` works too; a failing example is also printed and kept in the local
example database, which re-tries it first on the next run). ``LMREF_HYPOTHESIS_EXAMPLES=K`` sets the
number of examples per property test; ``LMREF_HYPOTHESIS_DERANDOMIZE=1`` brings back fixed examples
(each test's own, the same on every run). Why per-run seeds rather than more fixed examples:
``benchmarks/results/property_exploration.md``.
"""
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

SEED_ENV = "LMREF_HYPOTHESIS_SEED"
CI_EXAMPLES = 12


def _env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


settings.register_profile(
    "ci", max_examples=_env_int("LMREF_HYPOTHESIS_EXAMPLES", CI_EXAMPLES), deadline=None, print_blob=True,
    derandomize=os.environ.get("LMREF_HYPOTHESIS_DERANDOMIZE", "") not in ("", "0"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "slow", max_examples=300, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="run slow tests and many hypothesis examples")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    slow = config.getoption("--slow") or os.environ.get("HYPOTHESIS_PROFILE") == "slow"
    settings.load_profile("slow" if slow else "ci")
    if config.getoption("hypothesis_seed", None) is None:      # the hypothesis plugin reads it after this hook
        config.option.hypothesis_seed = str(_env_int(SEED_ENV, random.SystemRandom().randrange(2 ** 32)))


def _seed_line(config):
    if settings.default.derandomize:
        return f"hypothesis: fixed examples per test ({settings.default.max_examples} each)"
    seed = config.getoption("hypothesis_seed", None)
    return (f"hypothesis seed {seed} ({settings.default.max_examples} examples per property test); "
            f"replay: {SEED_ENV}={seed} python -m pytest ...")


def pytest_sessionstart(session):
    """The seed line first, also under -q (which hides pytest's report header)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(_seed_line(session.config))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if exitstatus == pytest.ExitCode.TESTS_FAILED:
        terminalreporter.write_line(_seed_line(config))


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


@pytest.fixture(autouse=True, scope="module")
def op_tests_run_the_definitions(request):
    """tests/test_ops_*.py check the plain definitions of lmref.ops against torch, with the fast layer
    off; tests/test_fast_layer.py checks the fast layer against the definitions."""
    if not request.module.__name__.startswith("test_ops_"):
        yield
        return
    from lmref import fast
    with fast.off():
        yield


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
