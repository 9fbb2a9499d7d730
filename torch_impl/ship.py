"""Measure a weights file in lmref on its own test split, and store it as float16 for shipping.

    python -m torch_impl.ship measure lmref/assets/models/stud5.safetensors
    python -m torch_impl.ship half lmref/assets/models/stud5.safetensors    # float32 -> float16 file

``measure`` runs the lmref model (NumPy, float32) over the synthetic test split named in the file's
manifest (``training.config``), cropped exactly as the trainer evaluates, and prints the test NME
next to the one the manifest states. ``half`` rewrites the file with float16 tensors (half the size;
``lmref.weights.load_model`` casts them back to float32), re-measures it with lmref and writes that
measurement into the manifest as ``training.test``, keeping the float32 one as
``training.test_float32_weights``. ``tests/test_shipped.py`` uses :func:`measure`.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np

from lmref import metrics, weights
from lmref.landmarks import get as get_layout
from lmref.ops import normalized_to_pixels

__all__ = ["landmarks_in_pixels", "measure", "half", "main"]


def landmarks_in_pixels(out, cfg, H, W):
    """An lmref model's output -> landmarks [B, N, 2] in input pixels: the NumPy side of
    ``train.predict_pixels`` (same decoder, same [-1, 1] -> pixel rule)."""
    if cfg.task == "aam":
        return out["landmarks"]
    if cfg.task == "heatmap":
        from lmref.models.litehrnet import decode
        return decode(out, cfg.decode, (H, W))[0]
    return normalized_to_pixels(out.reshape(out.shape[0], -1, 2), W, H)     # regression: [-1, 1]


def measure(path, batch=50):
    """Per-face test NMEs [M], predictions and ground truth [M, N, 2] of the lmref model in ``path``
    on the test split its manifest was measured on."""
    from . import train
    model = weights.load_model(path, dtype=np.float32)
    training = model.manifest["training"]
    cfg = train.config_from_dict({**training["config"], "num_train": 2})   # only the test split matters
    _, _, test = train.make_datasets(cfg)
    layout = get_layout(model.manifest["layout"])
    preds, gts = [], []
    for start in range(0, len(test), batch):
        b = train.load_batch(test, list(range(start, min(start + batch, len(test)))), None, cfg, "cpu", layout)
        x = b["image"].numpy().astype(np.float32)
        preds.append(landmarks_in_pixels(model(x), cfg, x.shape[2], x.shape[3]))
        gts.append(b["landmarks"].double().numpy())
    pred, gt = np.concatenate(preds).astype(np.float64), np.concatenate(gts)
    return metrics.nme(pred, gt, layout), pred, gt


def half(path):
    """Rewrite ``path`` with float16 tensors and the lmref re-measurement in its manifest."""
    tensors, manifest = weights.load(path)
    if any(a.dtype != np.float32 for a in tensors.values()):
        raise ValueError(f"{path}: expected float32 tensors")
    t16 = {k: a.astype(np.float16) for k, a in tensors.items()}
    overflow = [k for k, a in t16.items() if not np.all(np.isfinite(a))]
    if overflow:
        raise ValueError(f"{path}: float16 overflows in {overflow[:5]}")
    man = copy.deepcopy(manifest)
    tmp = path + ".half.tmp"
    weights.save(tmp, t16, man)
    try:
        nme, pred, gt = measure(tmp)
    finally:
        os.remove(tmp)
    training = man["training"]
    fr, auc = metrics.fr_auc(nme, 0.1)
    training["test_float32_weights"] = dict(training["test"])
    training["test"] = {**training["test"], "nme": float(nme.mean()), "fr_0.1": fr, "auc_0.1": auc,
                        "mse_px": float(((pred - gt) ** 2).mean()), "count": int(len(nme))}
    training["note_float16"] = ("weights stored as float16 to halve the file; lmref casts them to float32 at "
                                "load. 'test' was re-measured with lmref on these weights; "
                                "'test_float32_weights' is torch_impl's measurement before the cast.")
    weights.save(path, t16, man)
    return training["test_float32_weights"]["nme"], training["test"]["nme"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m torch_impl.ship", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("measure", "half"))
    ap.add_argument("weights")
    args = ap.parse_args(argv)
    if args.command == "measure":
        nme, _, _ = measure(args.weights)
        stated = weights.load_model(args.weights).manifest["training"]["test"]["nme"]
        print(f"{args.weights}: lmref test NME {nme.mean():.6f} on {len(nme)} faces (manifest: {stated:.6f})")
    else:
        before, after = half(args.weights)
        print(f"{args.weights}: float16, test NME {before:.6f} (float32) -> {after:.6f} (lmref, float16 weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
