"""The models shipped under lmref/assets/models: each loads in lmref (NumPy only) and, on the
synthetic test split it was measured on, reaches the test NME its manifest states.

The test split is rendered from its seed (cached under $LMREF_CACHE, default ~/.cache/lmref),
cropped exactly as the trainer evaluates (torch_impl.data, no augmentation), and run through the
lmref model in float32 (``torch_impl.ship.check``). numpy and OpenCV versions change some pixels of
the render, so a manifest names the render its numbers were measured on (``training.test_split``,
``training.test_remeasured``: sha256 of the split's files, numpy and OpenCV versions). On a render
the manifest names, the NME must agree to float32 rounding (``SAME_RENDER_RTOL``); on another, the
test says so in a warning and checks within ``OTHER_RENDER_RTOL``, the spread measured across
versions (torch_impl/ship.py)."""
import warnings

import numpy as np
import pytest

from lmref.detect import shipped_models
from torch_impl import ship

SHIPPED = shipped_models()


def test_at_least_one_model_is_shipped():
    assert SHIPPED, "no weights under lmref/assets/models"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_reaches_its_manifest_nme(name):
    v = ship.check(SHIPPED[name])                      # lmref, float32, this machine's render of the test split
    if not v["same_render"]:
        warnings.warn(f"{name}: {v['message']}")
    assert v["ok"], f"{name}: {v['message']}"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_manifest_names_its_test_render(name):
    from lmref.weights import load
    training = load(SHIPPED[name])[1]["training"]
    split = training.get("test_split")
    assert split and len(split["sha256"]) == 64 and {"numpy", "opencv", "n", "seed"} <= set(split), split


# ---------------------------------------------------------------------------------------------
# the comparison rule, on made-up manifests (no rendering)
# ---------------------------------------------------------------------------------------------

def render(sha, numpy="2.4.6", opencv="4.14.0"):
    return {"version": 2, "split": "test", "seed": 0, "n": 4, "size": 128, "sha256": sha * 64,
            "numpy": numpy, "opencv": opencv}


TRAINING = {"test": {"nme": 0.1, "count": 4}, "test_split": render("a", "2.2.6", "4.11.0"),
            "test_remeasured": [{"split": render("b"), "nme": 0.1002, "count": 4}]}


def test_verdict_is_exact_on_a_render_the_manifest_names():
    v = ship.verdict(TRAINING, np.full(4, 0.1 + 5e-6), render("a"))
    assert v["ok"] and v["same_render"] and v["where"] == "training.test"
    v = ship.verdict(TRAINING, np.full(4, 0.1 + 2e-5), render("a"))      # beyond float32 rounding
    assert not v["ok"] and v["same_render"]
    v = ship.verdict(TRAINING, np.full(4, 0.1002), render("b"))           # the re-measured render
    assert v["ok"] and v["where"] == "training.test_remeasured[0]"
    v = ship.verdict(TRAINING, np.full(3, 0.1), render("a"))              # a face missing
    assert not v["ok"]


def test_verdict_on_another_render_says_so_and_uses_the_measured_spread():
    v = ship.verdict(TRAINING, np.full(4, 0.1 * (1 + 0.9 * ship.OTHER_RENDER_RTOL)), render("c", "1.26.4", "4.10.0"))
    assert v["ok"] and not v["same_render"]
    for words in ("TEST SPLIT DIFFERS", "numpy 2.2.6, OpenCV 4.11.0", "numpy 1.26.4, OpenCV 4.10.0", "aaaaaaaaaaaa",
                  "cccccccccccc"):
        assert words in v["message"], (words, v["message"])
    v = ship.verdict(TRAINING, np.full(4, 0.1 * (1 + 1.1 * ship.OTHER_RENDER_RTOL)), render("c"))
    assert not v["ok"]
    v = ship.verdict({"test": {"nme": 0.1, "count": 4}}, np.full(4, 0.1), render("c"))
    assert v["ok"] and not v["same_render"] and "unrecorded render" in v["message"]


# ---------------------------------------------------------------------------------------------
# torch_impl measures the shipped weights too
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_nme_confirmed_by_torch_impl(name):
    """The stated NME measured again by torch_impl alone (``ship.check_torch``: the torch model
    rebuilt from the file, the trainer's evaluation), by the same rule as lmref's re-measurement above.
    A stated NME that lmref wrote itself (``ship half``, as for stud5) is only as right as lmref;
    this is what catches an lmref bug that such a manifest carries along."""
    v = ship.check_torch(SHIPPED[name])
    if not v["same_render"]:
        warnings.warn(f"{name}: {v['message']}")
    assert v["ok"], f"{name}: {v['message']}"
