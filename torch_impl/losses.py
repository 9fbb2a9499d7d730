"""Training losses: STAR loss (v2), Adaptive Wing, heatmap MSE/BCE, coordinate losses, and the AAM
composite that STAR trains its hourglass with.  Every loss here has a NumPy twin of the same name in
:mod:`lmref.losses` (forward values only) and ``tests/test_losses.py`` checks that they agree.

Sources (read at ZhenglinZhou/STAR 9b12574; the formulas are restated, the code is ours):

* ``STAR:lib/loss/starLoss_v2.py``  STARLoss_v2, the default loss of STAR (Zhou et al., CVPR 2023)
* ``STAR:lib/loss/smoothL1Loss.py`` STAR's own smooth-L1 on a vector norm (scale 0.01)
* ``STAR:lib/loss/awingLoss.py``    Adaptive Wing loss (Wang et al., ICCV 2019) with its weight map
* ``STAR:conf/alignment.py``, ``STAR:lib/utility.py`` compute_loss: per-stack weights of the AAM loss
* mmpose 0.x ``JointsMSELoss`` (per-joint target weights), ``torch.nn.functional`` BCE losses.

Heatmaps are [B, N, h, w]; landmarks are [B, N, 2] as (x, y) in STAR's [-1, 1] convention, on the
grid X_j = 2j/(w-1) - 1, Y_i = 2i/(h-1) - 1 that the soft-argmax decoder uses.

Choices that differ from upstream (all stated where they are made):

* Eigenvalues are clamped to [1e-6, 1e2] by default before they are used, as the STAR maintainer
  advises for the NaN losses of ZhenglinZhou/STAR#37 (``eig_clamp=None`` turns this off).
* The 2x2 eigendecomposition is a closed form that runs on the tensor's device and has finite
  gradients on degenerate (isotropic or zero) covariances; upstream calls ``torch.linalg.eigh`` on
  the CPU, whose backward divides by (lambda_2 - lambda_1) and gives NaN there (also with the
  clamp: measured NaN gradients for all-zero, one-pixel and symmetric-blob heatmaps).  For
  covariances isotropic to 1e-4, whose eigenvectors are rounding noise, the image axes are used.
* Upstream takes the projection directions as ``evectors[:, :, 0]`` / ``[:, :, 1]``, i.e. the ROWS
  of the eigenvector matrix, while eigh returns eigenvectors as COLUMNS.  We use columns (the
  eigenvectors).  The two agree whenever the covariance is positive semi-definite, because LAPACK
  then returns a symmetric (reflection) eigenvector matrix -- checked on 200,000 random 2x2 matrices
  with torch 2.13 and NumPy 2.2: symmetric for every trace > 0 matrix, never for trace < 0.  The
  covariance is negative definite (rows != columns) only when a heatmap's total mass is below 1e-6,
  where STAR's normaliser clamps the sum and the "unbiased" denominator V1 - V2/V1 turns negative.
  ``rows_quirk=True`` reproduces upstream there exactly (LAPACK eigh on the CPU, rows).
* The coordinate grid is built in the heatmaps' dtype (upstream: float32, then cast).
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EIG_CLAMP", "ISOTROPIC_RTOL", "STAR_DISTANCES",
    "star_grid", "heatmap_moments", "eigh2x2", "star_smooth_l1", "star_loss", "STARLoss",
    "awing_weight_map", "awing_loss", "AWingLoss",
    "heatmap_mse", "heatmap_bce", "coord_mse", "coord_l1", "coord_smooth_l1",
    "aam_stack_factors", "AAMLoss",
]

EIG_CLAMP = (1e-6, 1e2)   # the maintainer's clamp range (ZhenglinZhou/STAR#37)
ISOTROPIC_RTOL = 1e-4     # (lambda_2 - lambda_1) / (lambda_2 + lambda_1) <= this: isotropic, see eigh2x2
STAR_DISTANCES = ("smoothl1", "l1", "l2")


def _check_heatmaps(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected [B, N, h, w], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor, got {x.dtype}")
    return x


def _check_same_shape(a, b, name_a, name_b):
    for x, n in ((a, name_a), (b, name_b)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{n}: expected a torch.Tensor, got {type(x).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: shape {tuple(b.shape)} differs from {name_a}'s {tuple(a.shape)}")


# --------------------------------------------------------------------------- STAR loss (v2)

def star_grid(h, w, dtype=torch.float32, device=None):
    """STAR's decoder grid: X_j = 2j/(w-1) - 1 (shape [w]) and Y_i = 2i/(h-1) - 1 (shape [h]);
    the first and last pixel centres sit at -1 and +1.  Built in ``dtype`` (upstream builds it in
    float32 and casts, so its float64 grid is off by float32 rounding)."""
    if h < 2 or w < 2:
        raise ValueError(f"heatmaps: STAR's grid needs h, w >= 2, got {h}x{w}")
    xs = torch.arange(w, dtype=dtype, device=device) / (w - 1) * 2 - 1
    ys = torch.arange(h, dtype=dtype, device=device) / (h - 1) * 2 - 1
    return xs, ys


def heatmap_moments(heatmaps, eps=1e-5):
    """Mean and "unbiased" weighted covariance of each heatmap, as STARLoss_v2 computes them.

    P = H / max(sum H, 1e-6)                                     (sums to 1 when the mass is >= 1e-6)
    mu = sum_u P(u) g(u)                                         g(u) = (X_j, Y_i)
    Sigma = sum_u P(u) (g(u) - mu)(g(u) - mu)^T / (V1 - V2/V1),  V1 = sum P + eps, V2 = sum P^2 + eps

    heatmaps: [B, N, h, w] -> (mu [B, N, 2] as (x, y), Sigma [B, N, 2, 2])
    """
    B, N, h, w = _check_heatmaps(heatmaps, "heatmaps").shape
    xs, ys = star_grid(h, w, heatmaps.dtype, heatmaps.device)
    ys = ys[:, None]                                                   # [h, 1]
    mass = heatmaps.sum((2, 3)).clamp(min=1e-6)                        # [B, N]
    P = heatmaps / mass[..., None, None]                               # [B, N, h, w]
    mx = (P * xs).sum((2, 3))                                          # [B, N]
    my = (P * ys).sum((2, 3))
    dx = xs - mx[..., None, None]                                      # [B, N, 1, w]
    dy = ys - my[..., None, None]                                      # [B, N, h, 1]
    sxx = (P * dx * dx).sum((2, 3))                                    # [B, N]
    sxy = (P * dx * dy).sum((2, 3))
    syy = (P * dy * dy).sum((2, 3))
    v1 = P.sum((2, 3)) + eps
    v2 = (P * P).sum((2, 3)) + eps
    den = v1 - v2 / v1                                                 # reliability-weights correction
    cov = torch.stack([torch.stack([sxx, sxy], -1), torch.stack([sxy, syy], -1)], -2)  # [B, N, 2, 2]
    return torch.stack([mx, my], -1), cov / den[..., None, None]


def eigh2x2(cov, iso_rtol=ISOTROPIC_RTOL):
    """Eigendecomposition of symmetric 2x2 matrices in closed form, with safe gradients.

    For [[a, b], [b, c]]:  m = (a + c)/2, d = (a - c)/2, r = sqrt(d^2 + b^2),
    lambda_1 = m - r <= lambda_2 = m + r; the eigenvector of lambda_2 is (cos phi, sin phi) with
    phi = atan2(b, d)/2, that of lambda_1 is (-sin phi, cos phi).

    cov: [..., 2, 2] -> (evalues [..., 2] ascending, evectors [..., 2, 2] with the eigenvectors as
    COLUMNS, like torch.linalg.eigh; the matrix is [[-sin, cos], [cos, sin]], a symmetric reflection,
    which is also what LAPACK returns for positive semi-definite input).

    Isotropic covariances: when r <= iso_rtol * |m| (equal eigenvalues up to a 1e-4 relative gap,
    e.g. a symmetric blob on a square grid, a one-pixel or an all-zero heatmap) the eigenvectors are
    not defined by the matrix -- LAPACK returns rounding noise there -- and we fix them to the image
    axes: v_1 = -(1, 0), v_2 = (0, 1) -- up to the immaterial sign LAPACK's choice for an exact
    multiple of the identity.  No gradient flows into the directions there (torch.linalg.eigh's
    backward gives inf/NaN).
    Elsewhere dphi/d(d, b) is (-b, d)/(2 r^2), bounded by 1/(2 iso_rtol |m|); dr/d(d, b) = (d, b)/r is
    bounded by 1 and is taken as 0 at r = 0.
    """
    a, b, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    m = (a + c) / 2
    d = (a - c) / 2
    r2 = d * d + b * b
    pos = r2 > 0
    r = torch.where(pos, torch.sqrt(torch.where(pos, r2, torch.ones_like(r2))), torch.zeros_like(r2))
    evalues = torch.stack([m - r, m + r], -1)                          # [..., 2]
    iso = r <= iso_rtol * m.abs()
    phi = torch.atan2(torch.where(iso, torch.zeros_like(b), b),
                      torch.where(iso, torch.ones_like(d), d)) / 2      # safe inputs: no 0/0 in backward
    cs = torch.where(iso, torch.zeros_like(phi), torch.cos(phi))      # isotropic: v_2 = (0, 1)
    sn = torch.where(iso, torch.ones_like(phi), torch.sin(phi))
    evectors = torch.stack([torch.stack([-sn, cs], -1), torch.stack([cs, sn], -1)], -2)  # [..., 2, 2]
    return evalues, evectors


def star_smooth_l1(x, scale=0.01):
    """STAR's SmoothL1Loss on the Euclidean norm of the last axis, no reduction:
    with s2 = |x|^2,  s2 / (2 scale)  if s2 < scale^2  else  sqrt(max(s2, 1e-6)) - scale/2.
    (The 1e-6 clamp keeps the unused branch's gradient finite at 0.)  x: [..., D] -> [...]"""
    s2 = (x * x).sum(-1)
    r = s2.clamp(min=1e-6).sqrt()
    return torch.where(s2 < scale * scale, 0.5 / scale * s2, r - 0.5 * scale)


def _star_distance(e, dist):
    """Per-component distance of STARLoss_v2; e: [B, N] projected errors -> [B, N]."""
    if dist == "smoothl1":
        return star_smooth_l1(e[..., None])
    if dist == "l1":
        return e.abs()
    if dist == "l2":
        return e * e
    raise ValueError(f"dist: expected one of {STAR_DISTANCES}, got {dist!r}")


def star_loss(heatmaps, landmarks, w=1.0, dist="smoothl1", eig_clamp=EIG_CLAMP, rows_quirk=False,
              eps=1e-5):
    """STAR loss, STARLoss_v2 form (Zhou et al. 2023), averaged over batch and landmarks.

    Per landmark, with (mu, Sigma) = :func:`heatmap_moments`, eigenpairs (lambda_1 <= lambda_2,
    v_1, v_2) of Sigma (clamped to ``eig_clamp`` when given) and error e = mu* - mu:

        L = d(<v_1, e>) / sqrt(lambda_1 + eps) + d(<v_2, e>) / sqrt(lambda_2 + eps)
            + w (|lambda_1| + |lambda_2|)

    v_1 is the "normal" (low-variance) direction, v_2 the "tangent"; d is STAR's smooth-L1
    (``"smoothl1"``, scale 0.01), ``"l1"`` |e| or ``"l2"`` e^2.

    heatmaps: [B, N, h, w] (non-negative: STAR feeds the fused AAM heatmaps); landmarks: [B, N, 2]
    (x, y) in [-1, 1].  Returns a 0-d tensor.

    rows_quirk=True: upstream's exact computation of the directions -- torch.linalg.eigh on the CPU
    and ROWS of its eigenvector matrix.  Differs from the default only for negative-definite Sigma
    (heatmap mass < 1e-6, see the module docstring); its gradient is NaN on degenerate Sigma.
    """
    _check_heatmaps(heatmaps, "heatmaps")
    B, N = heatmaps.shape[:2]
    if not isinstance(landmarks, torch.Tensor) or tuple(landmarks.shape) != (B, N, 2):
        raise ValueError(f"landmarks: expected shape {(B, N, 2)}, got "
                         f"{tuple(getattr(landmarks, 'shape', ()))}")
    if dist not in STAR_DISTANCES:
        raise ValueError(f"dist: expected one of {STAR_DISTANCES}, got {dist!r}")
    mu, cov = heatmap_moments(heatmaps, eps)                           # [B, N, 2], [B, N, 2, 2]
    if rows_quirk:
        evalues, evectors = torch.linalg.eigh(cov.cpu())
        evalues, evectors = evalues.to(heatmaps.device), evectors.to(heatmaps.device)
        normal, tangent = evectors[..., 0, :], evectors[..., 1, :]     # rows, as upstream indexes
    else:
        evalues, evectors = eigh2x2(cov)
        normal, tangent = evectors[..., :, 0], evectors[..., :, 1]     # columns: the eigenvectors
    if eig_clamp is not None:
        evalues = evalues.clamp(min=eig_clamp[0], max=eig_clamp[1])
    err = landmarks.to(heatmaps.dtype) - mu                            # [B, N, 2]
    e_n = (normal * err).sum(-1)                                       # [B, N]
    e_t = (tangent * err).sum(-1)
    trans = (_star_distance(e_n, dist) / torch.sqrt(evalues[..., 0] + eps)
             + _star_distance(e_t, dist) / torch.sqrt(evalues[..., 1] + eps))
    eigen = evalues.abs().sum(-1)                                      # eigenvalue restriction
    return (trans + w * eigen).mean()


class STARLoss(nn.Module):
    """:func:`star_loss` as a module; forward(heatmaps [B, N, h, w], landmarks [B, N, 2]) -> scalar."""

    def __init__(self, w=1.0, dist="smoothl1", eig_clamp=EIG_CLAMP, rows_quirk=False, eps=1e-5):
        super().__init__()
        if dist not in STAR_DISTANCES:
            raise ValueError(f"dist: expected one of {STAR_DISTANCES}, got {dist!r}")
        if eig_clamp is not None and not (0 <= eig_clamp[0] < eig_clamp[1]):
            raise ValueError(f"eig_clamp: expected (low, high) with 0 <= low < high, got {eig_clamp}")
        self.w, self.dist, self.eig_clamp, self.rows_quirk, self.eps = w, dist, eig_clamp, rows_quirk, eps

    def forward(self, heatmaps, landmarks):
        return star_loss(heatmaps, landmarks, self.w, self.dist, self.eig_clamp, self.rows_quirk, self.eps)

    def extra_repr(self):
        return f"w={self.w}, dist={self.dist!r}, eig_clamp={self.eig_clamp}, rows_quirk={self.rows_quirk}"


# --------------------------------------------------------------------------- Adaptive Wing

def awing_weight_map(target, threshold=0.2, weight=10.0, kernel_size=3):
    """AWing's weight map W = weight * [maxpool_kxk(target) >= threshold] + 1 (stride 1, 'same'
    padding, padding never wins): x11 on and around the foreground, x1 elsewhere.  [B, C, h, w] -> same."""
    dilated = F.max_pool2d(target, kernel_size, stride=1, padding=kernel_size // 2)
    return weight * torch.where(dilated < threshold, 0.0, 1.0).to(target.dtype) + 1


def awing_loss(pred, target, omega=14.0, theta=0.5, epsilon=1.0, alpha=2.1, use_weight_map=True):
    """Adaptive Wing loss, mean over all pixels (STAR's AWingLoss defaults).

    With y = target, delta = |pred - y|, p = alpha - y:
        loss = omega ln(1 + (delta/epsilon)^p)            if delta < theta
               A delta - C                                  otherwise
        A = omega p (theta/epsilon)^(p-1) / (epsilon (1 + (theta/epsilon)^p))
        C = theta A - omega ln(1 + (theta/epsilon)^p)       (continuous at delta = theta)
    times :func:`awing_weight_map` of the target when ``use_weight_map``.
    pred, target: [B, C, h, w] (target in [0, 1]) -> 0-d tensor.
    """
    _check_heatmaps(pred, "pred")
    _check_same_shape(pred, target, "pred", "target")
    delta = (pred - target).abs()
    p = alpha - target
    ratio_p = torch.pow(theta / epsilon, p)                            # (theta/epsilon)^(alpha - y)
    A = omega * (1 / (1 + ratio_p)) * p * torch.pow(theta / epsilon, p - 1) * (1 / epsilon)
    C = theta * A - omega * torch.log(1 + ratio_p)
    loss = torch.where(delta < theta, omega * torch.log(1 + torch.pow(delta / epsilon, p)), A * delta - C)
    if use_weight_map:
        loss = loss * awing_weight_map(target)
    return loss.mean()


class AWingLoss(nn.Module):
    """:func:`awing_loss` as a module; forward(pred, target) -> scalar."""

    def __init__(self, omega=14.0, theta=0.5, epsilon=1.0, alpha=2.1, use_weight_map=True):
        super().__init__()
        self.omega, self.theta, self.epsilon, self.alpha = omega, theta, epsilon, alpha
        self.use_weight_map = use_weight_map

    def forward(self, pred, target):
        return awing_loss(pred, target, self.omega, self.theta, self.epsilon, self.alpha,
                          self.use_weight_map)


# --------------------------------------------------------------------------- heatmap losses

def _joint_weight(target_weight, pred):
    """[B, N] or [B, N, 1] per-joint weights -> [B, N, 1, 1] for broadcasting over a heatmap."""
    B, N = pred.shape[:2]
    if not isinstance(target_weight, torch.Tensor) or tuple(target_weight.shape) not in ((B, N), (B, N, 1)):
        raise ValueError(f"target_weight: expected shape {(B, N)} or {(B, N, 1)}, got "
                         f"{tuple(getattr(target_weight, 'shape', ()))}")
    return target_weight.reshape(B, N, 1, 1).to(pred.dtype)


def heatmap_mse(pred, target, target_weight=None):
    """mmpose's JointsMSELoss: mean over all pixels of (w_k pred - w_k target)^2, w_k the per-joint
    weight (1 without ``target_weight``; note the weight is squared, as in mmpose).
    pred, target: [B, N, h, w]; target_weight: [B, N] or [B, N, 1] -> 0-d tensor."""
    _check_heatmaps(pred, "pred")
    _check_same_shape(pred, target, "pred", "target")
    if target_weight is None:
        return ((pred - target) ** 2).mean()
    wk = _joint_weight(target_weight, pred)
    return ((pred * wk - target * wk) ** 2).mean()


def heatmap_bce(pred, target, target_weight=None, logits=True):
    """Binary cross-entropy per pixel, times the per-joint weight, mean over all pixels.
    logits=True: pred are logits (F.binary_cross_entropy_with_logits, numerically stable);
    logits=False: pred are probabilities (F.binary_cross_entropy, logs clamped at -100 like torch).
    pred, target: [B, N, h, w], target in [0, 1]; target_weight: [B, N] or [B, N, 1] -> 0-d tensor."""
    _check_heatmaps(pred, "pred")
    _check_same_shape(pred, target, "pred", "target")
    bce = F.binary_cross_entropy_with_logits if logits else F.binary_cross_entropy
    loss = bce(pred, target, reduction="none")                         # [B, N, h, w]
    if target_weight is not None:
        loss = loss * _joint_weight(target_weight, pred)
    return loss.mean()


# --------------------------------------------------------------------------- coordinate losses

def coord_mse(pred, target):
    """mean (pred - target)^2 over all elements (F.mse_loss).  Same shapes, e.g. [B, N, 2] or [B, 2N]."""
    _check_same_shape(pred, target, "pred", "target")
    return F.mse_loss(pred, target)


def coord_l1(pred, target):
    """mean |pred - target| (F.l1_loss)."""
    _check_same_shape(pred, target, "pred", "target")
    return F.l1_loss(pred, target)


def coord_smooth_l1(pred, target, beta=1.0):
    """mean Huber-style smooth-L1 per element (F.smooth_l1_loss): 0.5 x^2/beta if |x| < beta else
    |x| - 0.5 beta, x = pred - target.  (Not STAR's vector-norm version, see star_smooth_l1.)"""
    _check_same_shape(pred, target, "pred", "target")
    return F.smooth_l1_loss(pred, target, beta=beta)


# --------------------------------------------------------------------------- AAM composite

def aam_stack_factors(nstack):
    """STAR's per-stack factors f_i = 2^i / 2^(nstack-1): 0.125, 0.25, 0.5, 1 for 4 stacks, 1 for one."""
    if nstack < 1:
        raise ValueError(f"nstack: expected >= 1, got {nstack}")
    return [2.0 ** i / 2.0 ** (nstack - 1) for i in range(nstack)]


def _as_stacks(x, name):
    stacks = list(x) if isinstance(x, (list, tuple)) else [x]
    if not stacks:
        raise ValueError(f"{name}: expected a tensor or a non-empty list of per-stack tensors")
    return stacks


class AAMLoss(nn.Module):
    """The loss STAR trains an AAM head with (``STAR:lib/utility.py`` compute_loss), per stack i:

        f_i * (1 * STAR(fused_i, landmarks) + 10 * AWing(pointmaps_i, point_targets)
                                            + 10 * AWing(edgemaps_i, edge_targets))

    summed over stacks, f_i from :func:`aam_stack_factors` (a single head: f = 1).  The STAR term reads
    the FUSED heatmaps (E2P(edges) * points * heatmaps); point and edge maps are the sigmoid outputs.

    forward(fused, pointmaps, edgemaps, landmarks, point_targets, edge_targets): each of the first
    three a tensor ([B, N, h, w], [B, N, h, w], [B, E, h, w]) or a list of them, one per stack;
    landmarks [B, N, 2] in [-1, 1]; targets [B, N, h, w] and [B, E, h, w].
    Returns (total 0-d tensor, {"star", "awing_point", "awing_edge"}: weighted sums, detached).
    """

    def __init__(self, star=None, awing=None, weights=(1.0, 10.0, 10.0), star_rows_quirk=False):
        super().__init__()
        self.star = star if star is not None else STARLoss(rows_quirk=star_rows_quirk)
        self.awing = awing if awing is not None else AWingLoss()
        if len(weights) != 3:
            raise ValueError(f"weights: expected 3 numbers (STAR, AWing point, AWing edge), got {weights}")
        self.weights = tuple(float(v) for v in weights)

    def forward(self, fused, pointmaps, edgemaps, landmarks, point_targets, edge_targets):
        fused, pointmaps, edgemaps = (_as_stacks(x, n) for x, n in
                                      ((fused, "fused"), (pointmaps, "pointmaps"), (edgemaps, "edgemaps")))
        if not len(fused) == len(pointmaps) == len(edgemaps):
            raise ValueError(f"fused/pointmaps/edgemaps: stack counts differ "
                             f"({len(fused)}, {len(pointmaps)}, {len(edgemaps)})")
        ws, wp, we = self.weights
        total, parts = 0.0, {"star": 0.0, "awing_point": 0.0, "awing_edge": 0.0}
        for f, h, p, e in zip(aam_stack_factors(len(fused)), fused, pointmaps, edgemaps):
            terms = (("star", f * ws, self.star(h, landmarks)),
                     ("awing_point", f * wp, self.awing(p, point_targets)),
                     ("awing_edge", f * we, self.awing(e, edge_targets)))
            for name, weight, value in terms:                          # STAR's summation order
                total = total + weight * value
                parts[name] = parts[name] + weight * value.detach()
        return total, parts
