"""The models shipped under lmref/assets/models: each loads in lmref (NumPy only) and, on the
synthetic test split it was measured on, reaches the test NME its manifest states.

The test split is rendered from its seed (cached under ~/.cache/lmref), cropped exactly as the
trainer evaluates (torch_impl.data, no augmentation), and run through the lmref model in float32;
the manifest's number came from torch_impl in float32, so the two agree to float32 rounding (a file
stored as float16 by ``python -m torch_impl.ship half`` carries its lmref re-measurement instead).
The measuring code is ``torch_impl.ship.measure``."""
import pytest

from lmref.detect import shipped_models
from lmref.weights import load_model

SHIPPED = shipped_models()


def test_at_least_one_model_is_shipped():
    assert SHIPPED, "no weights under lmref/assets/models"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_reaches_its_manifest_nme(name):
    from torch_impl.ship import measure
    training = load_model(SHIPPED[name]).manifest["training"]
    nme, _, _ = measure(SHIPPED[name])                               # lmref, float32, the manifest's test split
    assert len(nme) == training["test"]["count"]
    stated = training["test"]["nme"]
    assert abs(nme.mean() - stated) <= 1e-4 * max(stated, 1e-3), (nme.mean(), stated)
