"""Landmark accuracy metrics as the benchmarks compute them: NME, CED, FR and AUC.

* NME per image (STAR ``lib/metric/nme.py``, PIPNet ``compute_nme``):
      NME = (1/N) sum_k ||p_hat_k - p_k||_2 / d_norm,
  with d_norm measured on the ground truth. The dataset NME is the mean over images.
* CED(x) = fraction of images with NME <= x, sampled at x = 0, step, 2 step, ... as
  ``np.arange(0, thr + step, step)`` (STAR ``lib/metric/fr_and_auc.py``, PIPNet
  ``compute_fr_and_auc``). FR@thr = 1 - CED(last sample); AUC@thr = Simpson integral of CED / thr.

* The mean-shape baseline (``mean_shape_prediction``): the average face, placed in each face's
  landmark box, predicted for every face. A model that does not beat it has not learned the faces.

Float artefact kept on purpose (architectures.md §6.2): for thr = 0.05, step = 1e-4 the arange has
502 samples and ends at 0.0501, so "FR@0.05" is really the failure rate at 0.0501, as in STAR's
300W numbers, and AUC@0.05 (integral up to 0.0501, divided by 0.05) can reach 1.002. For thr = 0.1
it has 1001 samples ending at 0.1.

The Simpson rule is SciPy's ``scipy.integrate.simpson`` (SciPy >= 1.11: for an even number of
samples the last interval gets Cartwright's correction), re-implemented here so lmref does not need
SciPy. STAR and PIPNet called the older ``simps``, whose default for an even count averaged two
Simpson/trapezoid splits; with thr = 0.1 (odd count) both agree exactly.
"""
from __future__ import annotations

import numpy as np

from . import landmarks

__all__ = ["nme", "ced", "fr_auc", "simpson", "norm_distance", "mean_shape", "mean_shape_prediction"]


def _as_points(a, name):
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
    if a.ndim != 3 or a.shape[-1] != 2:
        raise ValueError(f"{name}: expected shape [B, N, 2] (x, y), got {a.shape}; add a batch axis for one face")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def _mean_point(gt, idx):
    """gt [B, N, 2], an index or a tuple of indices -> [B, 2] (their mean)."""
    idx = list(np.atleast_1d(idx))
    return gt[:, idx, :].mean(axis=1)


def norm_distance(gt, layout=None, norm=None, boxes=None):
    """d_norm per image from the ground truth gt [B, N, 2] -> [B].

    norm: "ocular" / "pupil" (or any key of ``layout.norm_indices``): distance between the two
          index groups of the layout (iBUG 68: outer eye corners 36, 45 / eye centres);
          "bbox": sqrt(w * h) of the face box; "diagonal": sqrt(w^2 + h^2) of the face box.
          The face box is ``boxes`` [B, 4] (x0, y0, x1, y1) if given, else the ground-truth
          landmarks' bounding box.
          A number or an array [B]: use these distances as they are (1.0: error in pixels).
          None: the layout's ``default_norm``.
    layout: a name, a Layout, or None to pick one by the number of points."""
    gt = _as_points(gt, "gt")
    B, N, _ = gt.shape
    if norm is not None and not isinstance(norm, str):
        d = np.broadcast_to(np.asarray(norm, dtype=np.float64), (B,)).copy()
    elif norm in ("bbox", "diagonal"):
        if boxes is None:
            lo, hi = gt.min(axis=1), gt.max(axis=1)                    # [B, 2] each
        else:
            boxes = np.asarray(boxes, dtype=np.float64)
            if boxes.shape != (B, 4):
                raise ValueError(f"boxes: expected shape [{B}, 4] (x0, y0, x1, y1), got {boxes.shape}")
            lo, hi = boxes[:, :2], boxes[:, 2:]
        w, h = (hi - lo).T                                            # [B] each
        if np.any(w < 0) or np.any(h < 0):
            raise ValueError("boxes: need x1 >= x0 and y1 >= y0")
        d = np.sqrt(w * h) if norm == "bbox" else np.sqrt(w * w + h * h)
    else:
        lay = landmarks.get(layout) if layout is not None else landmarks.for_num_points(N)
        if lay.num_points != N:
            raise ValueError(f"layout {lay.name} has {lay.num_points} points, gt has {N}")
        key = lay.default_norm if norm is None else norm
        if key not in lay.norm_indices:
            raise ValueError(f"norm {key!r} unknown for layout {lay.name}; use one of "
                             f"{sorted(lay.norm_indices)}, 'bbox', 'diagonal' or a number")
        a, b = lay.norm_indices[key]
        d = np.linalg.norm(_mean_point(gt, a) - _mean_point(gt, b), axis=-1)   # [B]
    bad = np.flatnonzero(~(np.isfinite(d) & (d > 0)))
    if bad.size:
        raise ValueError(f"normalising distance is zero or invalid for image(s) {bad.tolist()[:10]}")
    return d


def nme(pred, gt, layout=None, norm=None, boxes=None):
    """Normalised mean error per image.

    pred, gt: [B, N, 2] (x, y) in the same units (pixels or normalised)
    layout, norm, boxes: see ``norm_distance``; norm=None uses the layout's default
    (iBUG 68 / WFLW / inner 51: inter-ocular; COFW: inter-pupil, as STAR).
    -> [B] float64; the dataset NME is its mean."""
    pred, gt = _as_points(pred, "pred"), _as_points(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    d = norm_distance(gt, layout, norm, boxes)                        # [B]
    err = np.linalg.norm(pred - gt, axis=-1)                          # [B, N] point-to-point
    return err.mean(axis=1) / d                                       # [B]


def _check_nmes(nmes):
    nmes = np.asarray(nmes, dtype=np.float64).reshape(-1)
    if nmes.size == 0:
        raise ValueError("nmes: empty")
    if not np.all(np.isfinite(nmes)) or np.any(nmes < 0):
        raise ValueError("nmes: expected finite non-negative values")
    return nmes


def _check_thr(thr, step):
    if not (np.isfinite(thr) and np.isfinite(step) and thr > 0 and 0 < step <= thr):
        raise ValueError(f"need 0 < step <= thr, got thr={thr}, step={step}")


def ced(nmes, thr=0.1, step=1e-4):
    """Cumulative error distribution: x = np.arange(0, thr + step, step), y = fraction of images with
    NME <= x (an NME equal to a sample counts as a success).
    nmes: [B] -> (x [S], y [S])"""
    nmes = _check_nmes(nmes)
    _check_thr(thr, step)
    xs = np.arange(0, thr + step, step)                                   # [S], as STAR / PIPNet
    ys = np.searchsorted(np.sort(nmes), xs, side="right") / nmes.size    # count(nme <= x) / B
    return xs, ys


def fr_auc(nmes, thr=0.1, step=1e-4):
    """Failure rate and area under the CED curve, as STAR / PIPNet compute them (not rounded).
    FR = 1 - CED(x_last); AUC = Simpson integral of CED over the samples / thr.
    nmes: [B] -> (fr, auc) floats"""
    xs, ys = ced(nmes, thr, step)
    fr = 1.0 - ys[-1]
    auc = simpson(ys, xs) / thr
    return float(fr), float(auc)


def simpson(y, x):
    """Composite Simpson integral of samples y at strictly increasing x (1-D), with the same result
    as ``scipy.integrate.simpson(y, x=x)`` (SciPy >= 1.11).

    Each pair of intervals (h0, h1) over the samples (y0, y1, y2) contributes the integral of the
    parabola through them:
        (h0 + h1)/6 * [(2 - h1/h0) y0 + (h0 + h1)^2/(h0 h1) y1 + (2 - h0/h1) y2].
    Odd sample count: pairs cover everything. Even count: pairs cover all but the last interval,
    which gets Cartwright's correction  alpha y_{n-1} + beta y_{n-2} - eta y_{n-3}  (the parabola
    through the last three samples integrated over the last interval). Two samples: trapezoid."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"simpson: need 1-D y and x of the same length, got {y.shape} and {x.shape}")
    n = y.size
    if n < 2:
        raise ValueError("simpson: need at least 2 samples")
    h = np.diff(x)                                                    # [n-1] interval widths
    if not np.all(h > 0):
        raise ValueError("simpson: x must be strictly increasing")
    if n == 2:
        return float(0.5 * h[0] * (y[0] + y[1]))
    m = n - 1 if n % 2 == 1 else n - 2          # pairs cover samples 0..m (m even)
    h0, h1 = h[0:m:2], h[1:m:2]                 # [m/2] the two widths of each pair
    y0, y1, y2 = y[0:m - 1:2], y[1:m:2], y[2:m + 1:2]
    hs = h0 + h1
    total = np.sum(hs / 6.0 * (y0 * (2.0 - h1 / h0) + y1 * (hs * hs / (h0 * h1)) + y2 * (2.0 - h0 / h1)))
    if n % 2 == 0:                              # last interval, Cartwright's correction
        a, b = h[-2], h[-1]
        alpha = (2 * b * b + 3 * a * b) / (6 * (a + b))
        beta = (b * b + 3 * a * b) / (6 * a)
        eta = b ** 3 / (6 * a * (a + b))
        total += alpha * y[-1] + beta * y[-2] - eta * y[-3]
    return float(total)


def _box_frame(points):
    """points [B, N, 2] -> centres [B, 2] and sides [B] of their square landmark boxes (the box every
    crop in lmref is cut around: ``transforms.crop_matrix(landmark_box(points), ...)``)."""
    lo, hi = points.min(axis=1), points.max(axis=1)                   # [B, 2] each
    side = (hi - lo).max(axis=-1)                                     # [B] longer side of the box
    if not np.all(side > 0):
        raise ValueError("points: a face whose landmarks all coincide has no box")
    return 0.5 * (lo + hi), side


def mean_shape(points):
    """The average face: landmarks [B, N, 2] -> [N, 2] in landmark-box units (box centre at 0,
    longer box side = 1), so faces of any size and position average into one shape."""
    pts = _as_points(points, "points")
    c, s = _box_frame(pts)
    return ((pts - c[:, None]) / s[:, None, None]).mean(axis=0)       # [B, N, 2] -> [N, 2]


def mean_shape_prediction(points, train=None):
    """The mean-shape baseline for faces ``points`` [B, N, 2]: the average face placed in each face's
    own landmark box (the box a model is given too) -> [B, N, 2]. The average is over ``train``
    [M, N, 2] (the training faces) or, with ``train=None``, over the *other* faces of ``points``
    (leave-one-out: no face helps predict itself). ``nme(mean_shape_prediction(gt), gt)`` is the
    NME a model must beat to have learned anything."""
    pts = _as_points(points, "points")
    c, s = _box_frame(pts)
    if train is not None:
        shape = mean_shape(train)                                     # [N, 2]
        if shape.shape != pts.shape[1:]:
            raise ValueError(f"train has {len(shape)} points per face, points has {pts.shape[1]}")
    else:
        if len(pts) < 2:
            raise ValueError("points: leave-one-out needs at least 2 faces (or pass train)")
        unit = (pts - c[:, None]) / s[:, None, None]                  # [B, N, 2] box units
        shape = (unit.sum(axis=0) - unit) / (len(pts) - 1)            # mean of the others
    return c[:, None] + shape * s[:, None, None]
