"""NumPy twins of the training losses in ``torch_impl.losses`` and ``torch_impl.distill``.

Forward values only, for inspection (what does the STAR loss see in this heatmap? how large is the
distillation term?) and as the reference the torch losses are tested against
(``tests/test_losses.py``, ``tests/test_distill.py``).  Same names, same arguments, same formulas,
same order of operations; every function computes in the dtype of its inputs (float32 or float64).
The formulas and their sources are documented on the torch side; the lines below say what each one
computes.

Heatmaps are [B, N, h, w]; landmarks [B, N, 2] as (x, y) in STAR's [-1, 1] convention on the grid
X_j = 2j/(w-1) - 1, Y_i = 2i/(h-1) - 1.
"""
import numpy as np

from . import ops
from .ops._check import check_array, check_same_dtype

__all__ = [
    "EIG_CLAMP", "ISOTROPIC_RTOL", "STAR_DISTANCES",
    "star_grid", "heatmap_moments", "eigh2x2", "star_smooth_l1", "star_loss",
    "awing_weight_map", "awing_loss", "heatmap_mse", "heatmap_bce",
    "coord_mse", "coord_l1", "coord_smooth_l1", "aam_stack_factors", "aam_loss",
    "kd_loss", "rbd_loss", "ckd_loss",
]

EIG_CLAMP = (1e-6, 1e2)   # the STAR maintainer's eigenvalue clamp (ZhenglinZhou/STAR#37)
ISOTROPIC_RTOL = 1e-4     # (l2 - l1) / (l2 + l1) <= this: isotropic, axes as eigenvectors
STAR_DISTANCES = ("smoothl1", "l1", "l2")


def _pair(a, b, name_a, name_b):
    check_array(a, name_a)
    check_array(b, name_b)
    check_same_dtype((name_a, a), (name_b, b))
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: shape {b.shape} differs from {name_a}'s {a.shape}")
    return a.dtype.type


# --------------------------------------------------------------------------- STAR loss (v2)

def star_grid(h, w, dtype=np.float64):
    """X_j = 2j/(w-1) - 1 ([w]) and Y_i = 2i/(h-1) - 1 ([h])."""
    if h < 2 or w < 2:
        raise ValueError(f"heatmaps: STAR's grid needs h, w >= 2, got {h}x{w}")
    dt = np.dtype(dtype).type
    xs = np.arange(w, dtype=dt) / dt(w - 1) * dt(2) - dt(1)
    ys = np.arange(h, dtype=dt) / dt(h - 1) * dt(2) - dt(1)
    return xs, ys


def heatmap_moments(heatmaps, eps=1e-5):
    """Mean mu [B, N, 2] (x, y) and unbiased weighted covariance Sigma [B, N, 2, 2] of each
    sum-normalised heatmap (P = H / max(sum H, 1e-6)); Sigma is divided by V1 - V2/V1 with
    V1 = sum P + eps, V2 = sum P^2 + eps."""
    check_array(heatmaps, "heatmaps", ndim=4)
    B, N, h, w = heatmaps.shape
    dt = heatmaps.dtype.type
    xs, ys = star_grid(h, w, dt)
    ys = ys[:, None]                                                   # [h, 1]
    mass = np.maximum(heatmaps.sum((2, 3)), dt(1e-6))                  # [B, N]
    P = heatmaps / mass[..., None, None]                               # [B, N, h, w]
    mx = (P * xs).sum((2, 3))                                          # [B, N]
    my = (P * ys).sum((2, 3))
    dx = xs - mx[..., None, None]                                      # [B, N, 1, w]
    dy = ys - my[..., None, None]                                      # [B, N, h, 1]
    sxx = (P * dx * dx).sum((2, 3))
    sxy = (P * dx * dy).sum((2, 3))
    syy = (P * dy * dy).sum((2, 3))
    v1 = P.sum((2, 3)) + dt(eps)
    v2 = (P * P).sum((2, 3)) + dt(eps)
    den = v1 - v2 / v1
    cov = np.stack([np.stack([sxx, sxy], -1), np.stack([sxy, syy], -1)], -2)   # [B, N, 2, 2]
    return np.stack([mx, my], -1), cov / den[..., None, None]


def eigh2x2(cov, iso_rtol=ISOTROPIC_RTOL):
    """Closed-form eigenpairs of symmetric 2x2 matrices [..., 2, 2]: lambda = m -/+ r with
    m = (a+c)/2, d = (a-c)/2, r = sqrt(d^2 + b^2); phi = atan2(b, d)/2; eigenvectors as columns,
    [[-sin phi, cos phi], [cos phi, sin phi]] (column 0 for lambda_1, column 1 for lambda_2).
    Isotropic matrices (r <= iso_rtol |m|), whose eigenvectors are undefined, get the image axes:
    column 0 = -(1, 0), column 1 = (0, 1)."""
    check_array(cov, "cov", min_ndim=2)
    if cov.shape[-2:] != (2, 2):
        raise ValueError(f"cov: expected [..., 2, 2], got shape {cov.shape}")
    a, b, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    m = (a + c) / 2
    d = (a - c) / 2
    r = np.sqrt(d * d + b * b)
    evalues = np.stack([m - r, m + r], -1)                             # [..., 2]
    iso = r <= iso_rtol * np.abs(m)
    phi = np.arctan2(b, d) / 2
    cs = np.where(iso, 0, np.cos(phi)).astype(cov.dtype)
    sn = np.where(iso, 1, np.sin(phi)).astype(cov.dtype)
    evectors = np.stack([np.stack([-sn, cs], -1), np.stack([cs, sn], -1)], -2)
    return evalues, evectors


def star_smooth_l1(x, scale=0.01):
    """STAR's smooth-L1 on the norm of the last axis: s2/(2 scale) if s2 < scale^2 else
    sqrt(max(s2, 1e-6)) - scale/2, s2 = |x|^2.  [..., D] -> [...]"""
    dt = x.dtype.type
    s2 = (x * x).sum(-1)
    r = np.sqrt(np.maximum(s2, dt(1e-6)))
    return np.where(s2 < dt(scale * scale), dt(0.5 / scale) * s2, r - dt(0.5 * scale))


def _star_distance(e, dist):
    if dist == "smoothl1":
        return star_smooth_l1(e[..., None])
    if dist == "l1":
        return np.abs(e)
    if dist == "l2":
        return e * e
    raise ValueError(f"dist: expected one of {STAR_DISTANCES}, got {dist!r}")


def star_loss(heatmaps, landmarks, w=1.0, dist="smoothl1", eig_clamp=EIG_CLAMP, rows_quirk=False,
              eps=1e-5):
    """STAR loss (STARLoss_v2 form), mean over batch and landmarks:
    L = d(<v1, e>)/sqrt(l1 + eps) + d(<v2, e>)/sqrt(l2 + eps) + w (|l1| + |l2|), e = mu* - mu,
    (l1 <= l2, v1, v2) the eigenpairs of the heatmap covariance, clamped to eig_clamp.
    rows_quirk=True: LAPACK eigh (np.linalg.eigh, the same convention as torch's CPU eigh) and the
    ROWS of its eigenvector matrix, as upstream STAR indexes them.
    heatmaps [B, N, h, w], landmarks [B, N, 2] -> 0-d array."""
    check_array(heatmaps, "heatmaps", ndim=4)
    check_array(landmarks, "landmarks", ndim=3)
    check_same_dtype(("heatmaps", heatmaps), ("landmarks", landmarks))
    B, N = heatmaps.shape[:2]
    if landmarks.shape != (B, N, 2):
        raise ValueError(f"landmarks: expected shape {(B, N, 2)}, got {landmarks.shape}")
    if dist not in STAR_DISTANCES:
        raise ValueError(f"dist: expected one of {STAR_DISTANCES}, got {dist!r}")
    dt = heatmaps.dtype.type
    mu, cov = heatmap_moments(heatmaps, eps)                           # [B, N, 2], [B, N, 2, 2]
    if rows_quirk:
        evalues, evectors = np.linalg.eigh(cov)
        normal, tangent = evectors[..., 0, :], evectors[..., 1, :]     # rows
    else:
        evalues, evectors = eigh2x2(cov)
        normal, tangent = evectors[..., :, 0], evectors[..., :, 1]     # columns
    if eig_clamp is not None:
        evalues = np.clip(evalues, dt(eig_clamp[0]), dt(eig_clamp[1]))
    err = landmarks - mu                                               # [B, N, 2]
    e_n = (normal * err).sum(-1)                                       # [B, N] along the normal
    e_t = (tangent * err).sum(-1)                                      # [B, N] along the tangent
    trans = (_star_distance(e_n, dist) / np.sqrt(evalues[..., 0] + dt(eps))
             + _star_distance(e_t, dist) / np.sqrt(evalues[..., 1] + dt(eps)))
    eigen = np.abs(evalues).sum(-1)                                    # eigenvalue restriction
    return np.asarray((trans + dt(w) * eigen).mean(), dtype=dt)


# --------------------------------------------------------------------------- Adaptive Wing

def awing_weight_map(target, threshold=0.2, weight=10.0, kernel_size=3):
    """weight * [3x3 max-pool of target >= threshold] + 1.  [B, C, h, w] -> same."""
    check_array(target, "target", ndim=4)
    dt = target.dtype.type
    dilated = ops.max_pool2d(target, kernel_size, stride=1, padding=kernel_size // 2)
    return dt(weight) * np.where(dilated < dt(threshold), dt(0), dt(1)) + dt(1)


def awing_loss(pred, target, omega=14.0, theta=0.5, epsilon=1.0, alpha=2.1, use_weight_map=True):
    """Adaptive Wing loss, mean over pixels: omega ln(1 + (delta/epsilon)^p) if delta < theta else
    A delta - C, p = alpha - y (see torch_impl.losses.awing_loss for A and C)."""
    dt = _pair(pred, target, "pred", "target")
    check_array(pred, "pred", ndim=4)
    delta = np.abs(pred - target)
    p = dt(alpha) - target
    ratio = dt(theta / epsilon)
    ratio_p = np.power(ratio, p)
    A = dt(omega) * (dt(1) / (dt(1) + ratio_p)) * p * np.power(ratio, p - dt(1)) * dt(1 / epsilon)
    C = dt(theta) * A - dt(omega) * np.log(dt(1) + ratio_p)
    loss = np.where(delta < dt(theta), dt(omega) * np.log(dt(1) + np.power(delta / dt(epsilon), p)),
                    A * delta - C)
    if use_weight_map:
        loss = loss * awing_weight_map(target)
    return np.asarray(loss.mean(), dtype=dt)


# --------------------------------------------------------------------------- heatmap losses

def _joint_weight(target_weight, pred):
    B, N = pred.shape[:2]
    check_array(target_weight, "target_weight")
    if target_weight.shape not in ((B, N), (B, N, 1)):
        raise ValueError(f"target_weight: expected shape {(B, N)} or {(B, N, 1)}, got {target_weight.shape}")
    return target_weight.reshape(B, N, 1, 1).astype(pred.dtype)


def heatmap_mse(pred, target, target_weight=None):
    """mean (w_k pred - w_k target)^2 over all pixels (mmpose JointsMSELoss)."""
    dt = _pair(pred, target, "pred", "target")
    check_array(pred, "pred", ndim=4)
    if target_weight is None:
        return np.asarray(((pred - target) ** 2).mean(), dtype=dt)
    wk = _joint_weight(target_weight, pred)
    return np.asarray(((pred * wk - target * wk) ** 2).mean(), dtype=dt)


def heatmap_bce(pred, target, target_weight=None, logits=True):
    """Per-pixel binary cross-entropy x per-joint weight, mean.  logits: (1 - y) x - log sigmoid(x)
    with log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)); probabilities: torch's
    (y - 1) max(log1p(-p), -100) - y max(log p, -100)."""
    dt = _pair(pred, target, "pred", "target")
    check_array(pred, "pred", ndim=4)
    if logits:
        log_sigmoid = np.minimum(pred, dt(0)) - np.log1p(np.exp(-np.abs(pred)))
        loss = (dt(1) - target) * pred - log_sigmoid
    else:
        with np.errstate(divide="ignore"):                             # log(0) = -inf, then clamped
            loss = ((target - dt(1)) * np.maximum(np.log1p(-pred), dt(-100))
                    - target * np.maximum(np.log(pred), dt(-100)))
    if target_weight is not None:
        loss = loss * _joint_weight(target_weight, pred)
    return np.asarray(loss.mean(), dtype=dt)


# --------------------------------------------------------------------------- coordinate losses

def coord_mse(pred, target):
    """mean (pred - target)^2."""
    dt = _pair(pred, target, "pred", "target")
    return np.asarray(((pred - target) ** 2).mean(), dtype=dt)


def coord_l1(pred, target):
    """mean |pred - target|."""
    dt = _pair(pred, target, "pred", "target")
    return np.asarray(np.abs(pred - target).mean(), dtype=dt)


def coord_smooth_l1(pred, target, beta=1.0):
    """mean of 0.5 x^2 / beta if |x| < beta else |x| - 0.5 beta (torch's smooth_l1_loss)."""
    dt = _pair(pred, target, "pred", "target")
    x = np.abs(pred - target)
    if beta == 0:
        return np.asarray(x.mean(), dtype=dt)
    loss = np.where(x < dt(beta), dt(0.5) * x * x / dt(beta), x - dt(0.5 * beta))
    return np.asarray(loss.mean(), dtype=dt)


# --------------------------------------------------------------------------- AAM composite

def aam_stack_factors(nstack):
    """f_i = 2^i / 2^(nstack-1)."""
    if nstack < 1:
        raise ValueError(f"nstack: expected >= 1, got {nstack}")
    return [2.0 ** i / 2.0 ** (nstack - 1) for i in range(nstack)]


def _as_stacks(x, name):
    stacks = list(x) if isinstance(x, (list, tuple)) else [x]
    if not stacks:
        raise ValueError(f"{name}: expected an array or a non-empty list of per-stack arrays")
    return stacks


def aam_loss(fused, pointmaps, edgemaps, landmarks, point_targets, edge_targets,
             weights=(1.0, 10.0, 10.0), star_kwargs=None, awing_kwargs=None):
    """sum_i f_i (w0 STAR(fused_i) + w1 AWing(points_i) + w2 AWing(edges_i)); arrays or per-stack
    lists.  Returns (total, {"star", "awing_point", "awing_edge"}) like torch_impl.losses.AAMLoss."""
    fused, pointmaps, edgemaps = (_as_stacks(x, n) for x, n in
                                  ((fused, "fused"), (pointmaps, "pointmaps"), (edgemaps, "edgemaps")))
    if not len(fused) == len(pointmaps) == len(edgemaps):
        raise ValueError(f"fused/pointmaps/edgemaps: stack counts differ "
                         f"({len(fused)}, {len(pointmaps)}, {len(edgemaps)})")
    star_kwargs, awing_kwargs = star_kwargs or {}, awing_kwargs or {}
    dt = fused[0].dtype.type
    ws, wp, we = weights
    total, parts = dt(0), {"star": dt(0), "awing_point": dt(0), "awing_edge": dt(0)}
    for f, h, p, e in zip(aam_stack_factors(len(fused)), fused, pointmaps, edgemaps):
        terms = (("star", f * ws, star_loss(h, landmarks, **star_kwargs)),
                 ("awing_point", f * wp, awing_loss(p, point_targets, **awing_kwargs)),
                 ("awing_edge", f * we, awing_loss(e, edge_targets, **awing_kwargs)))
        for name, weight, value in terms:
            total = total + dt(weight) * value
            parts[name] = parts[name] + dt(weight) * value
    return np.asarray(total, dtype=dt), {k: np.asarray(v, dtype=dt) for k, v in parts.items()}


# --------------------------------------------------------------------------- distillation

def _as_maps(x, name):
    maps = list(x) if isinstance(x, (list, tuple)) else [x]
    if not maps:
        raise ValueError(f"{name}: expected an array or a non-empty list of arrays")
    return maps


def kd_loss(student_feat, teacher_feat, student_maps, teacher_maps, adapter=None,
            feat_weight=1.0, heat_weight=1.0):
    """L_KD of the ICME 2024 entry (torch_impl.distill.KDLoss):
    feat_weight * MSE(resize(A(F_S)), F_T) + heat_weight * sum_k MSE(H_S,k, H_T,k).

    adapter: None (channels equal) or {"weight": [C_T, C_S, 1, 1], "bias": [C_T]}, the train-only
    1x1 conv A; F_T is resized (bilinear, align_corners=False) to the student's spatial size when
    they differ.  student_maps / teacher_maps: an array or matching lists (e.g. fused heatmaps).
    Returns (total, {"feat", "heat"}) (the parts unweighted)."""
    check_array(student_feat, "student_feat", ndim=4)
    check_array(teacher_feat, "teacher_feat", ndim=4)
    check_same_dtype(("student_feat", student_feat), ("teacher_feat", teacher_feat))
    dt = student_feat.dtype.type
    s = student_feat
    if adapter is not None:
        s = ops.conv2d(s, adapter["weight"], adapter.get("bias"))      # [B, C_S, h, w] -> [B, C_T, h, w]
    if s.shape[:2] != teacher_feat.shape[:2]:
        raise ValueError(f"student_feat: {s.shape[1]} channels after the adapter vs the teacher's "
                         f"{teacher_feat.shape[1]} (batch {s.shape[0]} vs {teacher_feat.shape[0]})")
    t = teacher_feat
    if t.shape[2:] != s.shape[2:]:
        t = ops.interpolate(t, size=s.shape[2:], mode="bilinear", align_corners=False)
    feat = ((s - t) ** 2).mean()
    heat = dt(0)
    smaps, tmaps = _as_maps(student_maps, "student_maps"), _as_maps(teacher_maps, "teacher_maps")
    if len(smaps) != len(tmaps):
        raise ValueError(f"student_maps/teacher_maps: {len(smaps)} vs {len(tmaps)} maps")
    for k, (hs, ht) in enumerate(zip(smaps, tmaps)):
        _pair(hs, ht, f"student_maps[{k}]", f"teacher_maps[{k}]")
        heat = heat + ((hs - ht) ** 2).mean()
    total = dt(feat_weight) * feat + dt(heat_weight) * heat
    parts = {"feat": np.asarray(feat, dtype=dt), "heat": np.asarray(heat, dtype=dt)}
    return np.asarray(total, dtype=dt), parts


def rbd_loss(student_pred, teacher_pred, target, lam=1.0, reduction="mean"):
    """Response-based distillation, L = ||y - P_S||^2 + lam ||P_T - P_S||^2 (Shukla & Huang 2021,
    eq. 2).  reduction "mean": each term a mean over all elements (MSE); "norm": squared Euclidean
    norm per sample, averaged over the batch.  Arrays [B, ...] of one shape -> 0-d array."""
    dt = _pair(student_pred, target, "student_pred", "target")
    _pair(student_pred, teacher_pred, "student_pred", "teacher_pred")
    if reduction == "mean":
        return np.asarray(((target - student_pred) ** 2).mean()
                          + dt(lam) * ((teacher_pred - student_pred) ** 2).mean(), dtype=dt)
    if reduction == "norm":
        B = student_pred.shape[0]
        sq = lambda x: (x.reshape(B, -1) ** 2).sum(1).mean()           # noqa: E731
        return np.asarray(sq(target - student_pred) + dt(lam) * sq(teacher_pred - student_pred), dtype=dt)
    raise ValueError(f"reduction: expected 'mean' or 'norm', got {reduction!r}")


def ckd_loss(student_feat, teacher_feat, regressor):
    """Phase-1 loss of convolutional KD (Shukla & Huang 2021, eq. 3):
    mean (F_T - R(F_S))^2, R a conv with {"weight": [C_T, C_S, k, k], "bias": [C_T]}, 'same' padding."""
    check_array(student_feat, "student_feat", ndim=4)
    w = regressor["weight"]
    r = ops.conv2d(student_feat, w, regressor.get("bias"),
                   padding=(w.shape[2] // 2, w.shape[3] // 2))         # [B, C_S, h, w] -> [B, C_T, h, w]
    dt = _pair(r, teacher_feat, "regressor(student_feat)", "teacher_feat")
    return np.asarray(((teacher_feat - r) ** 2).mean(), dtype=dt)
