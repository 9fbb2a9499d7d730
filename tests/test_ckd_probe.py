"""benchmarks/ckd_probe.py: the closed-form read-outs behind the CKD diagnosis (no training here)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the repository root holds benchmarks/
from benchmarks import ckd_probe  # noqa: E402


def test_ridge_fit_recovers_a_linear_map_with_bias():
    rng = np.random.default_rng(0)
    f = rng.normal(3.0, [1.0, 5.0, 0.1], (500, 3))                     # features of very different scales
    w_true, b_true = rng.normal(size=(3, 4)), rng.normal(size=4)
    w, b = ckd_probe.ridge_fit(f, f @ w_true + b_true, ridge=1e-12)
    assert np.allclose(w, w_true, atol=1e-6) and np.allclose(b, b_true, atol=1e-5)
    w_big, _ = ckd_probe.ridge_fit(f, f @ w_true + b_true, ridge=1e3)     # a large ridge shrinks the map
    assert np.abs(w_big).sum() < 0.1 * np.abs(w_true).sum()


def test_explained_is_one_for_a_linear_image_and_near_zero_for_noise():
    rng = np.random.default_rng(1)
    f_train, f_test = rng.normal(size=(400, 5)), rng.normal(size=(200, 5))
    m = rng.normal(size=(5, 7))
    assert float(ckd_probe.explained(f_train, f_train @ m, f_test, f_test @ m, 1e-9)) > 0.999999
    noise_train, noise_test = rng.normal(size=(400, 7)), rng.normal(size=(200, 7))
    r2 = float(ckd_probe.explained(f_train, noise_train, f_test, noise_test, 1e-3))
    assert -0.1 < r2 < 0.05
