"""The models shipped under lmref/assets/models: each loads in lmref (NumPy only) and, on the
synthetic test split it was measured on, reaches the test NME its manifest states.

The test split is rendered from its seed (cached under ~/.cache/lmref), cropped exactly as the
trainer evaluates (torch_impl.data, no augmentation), and run through the lmref model in float32;
the manifest's number came from torch_impl in float32, so the two agree to float32 rounding."""
import numpy as np
import pytest

from lmref import metrics
from lmref.detect import shipped_models
from lmref.landmarks import get as get_layout
from lmref.weights import load_model

SHIPPED = shipped_models()


def test_at_least_one_model_is_shipped():
    assert SHIPPED, "no weights under lmref/assets/models"


def landmarks_in_pixels(model, out, cfg, H, W):
    """The lmref model's output -> landmarks [B, N, 2] in input pixels (as torch_impl.train.predict_pixels)."""
    if cfg.task == "aam":
        return out["landmarks"]
    if cfg.task == "heatmap":
        from lmref.models.litehrnet import decode
        return decode(out, cfg.decode, (H, W))[0]
    coords = out.reshape(out.shape[0], -1, 2)                     # regression: [-1, 1], STAR's rule
    return ((coords + 1) * np.array([W, H]) - 1) / 2


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_reaches_its_manifest_nme(name):
    from torch_impl import train
    model = load_model(SHIPPED[name], dtype=np.float32)
    training = model.manifest["training"]
    stated = training["test"]["nme"]
    cfg = train.config_from_dict({**training["config"], "num_train": 2})   # only the test split matters
    _, _, test = train.make_datasets(cfg)
    layout = get_layout(model.manifest["layout"])
    preds, gts = [], []
    for start in range(0, len(test), 50):
        batch = train.load_batch(test, list(range(start, min(start + 50, len(test)))), None, cfg, "cpu", layout)
        x = batch["image"].numpy().astype(np.float32)
        preds.append(landmarks_in_pixels(model, model(x), cfg, x.shape[2], x.shape[3]))
        gts.append(batch["landmarks"].double().numpy())
    nme = metrics.nme(np.concatenate(preds).astype(np.float64), np.concatenate(gts), layout)
    assert len(nme) == training["test"]["count"]
    assert abs(nme.mean() - stated) <= 1e-4 * max(stated, 1e-3), (nme.mean(), stated)
