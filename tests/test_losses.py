"""torch_impl.losses vs their NumPy twins in lmref.losses, vs a line-by-line port of upstream STAR's
STARLoss_v2, and vs hand-computed values.

Tolerances: float64 the conftest default (rtol 1e-10); float32 rtol 1e-5 for the STAR loss (worst
seen over 300 random heatmaps: 6.5e-7 between torch and NumPy float32, both vs float64) and the
conftest default (rtol 1e-4, atol 1e-5) for the elementwise losses.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import lmref.losses as L
from tests.conftest import assert_close
from torch_impl import losses as TL

DTYPES = {np.float64: torch.float64, np.float32: torch.float32}
STAR_F32 = dict(rtol=1e-5, atol=0)


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def random_star_case(seed, B, N, h, w, dtype):
    """Generic (anisotropic, well-conditioned) positive heatmaps and landmarks in [-1, 1]."""
    rng = np.random.default_rng(seed)
    H = (rng.random((B, N, h, w)) ** 2).astype(dtype)
    y = rng.uniform(-1, 1, (B, N, 2)).astype(dtype)
    return H, y


def upstream_star_v2(heatmap, gt, w=1.0, dist="smoothl1", eps=1e-5, rows=True, clamp=None):
    """STAR:lib/loss/starLoss_v2.py restated op for op (covariance by bmm, torch.linalg.eigh on the
    CPU, directions as ROWS of the eigenvector matrix) so our STARLoss can be checked against it.
    rows=False takes columns; clamp applies the maintainer's eigenvalue clamp after eigh.
    One deviation: the grid is built in the heatmap's dtype (upstream: float32, then cast)."""
    bs, n, h, wd = heatmap.shape
    heatmap = heatmap / torch.clamp(heatmap.sum([2, 3]), min=1e-6).view(bs, n, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=heatmap.dtype) / (h - 1) * 2 - 1,
                            torch.arange(wd, dtype=heatmap.dtype) / (wd - 1) * 2 - 1, indexing="ij")
    means = torch.stack([(xx * heatmap).sum([2, 3]), (yy * heatmap).sum([2, 3])], -1)
    xv = (xx - means[..., 0, None, None]).reshape(bs * n, 1, h * wd)
    yv = (yy - means[..., 1, None, None]).reshape(bs * n, 1, h * wd)
    vec = torch.cat([xv, yv], 1)                                        # [bs*n, 2, hw]
    htp = heatmap.reshape(bs * n, 1, h * wd).expand(-1, 2, -1)
    cov = torch.bmm(htp * vec, vec.transpose(1, 2)).view(bs, n, 2, 2)
    v1 = heatmap.sum([2, 3]) + eps
    v2 = heatmap.pow(2).sum([2, 3]) + eps
    cov = cov / (v1 - v2 / v1)[..., None, None]
    evalues, evectors = torch.linalg.eigh(cov.view(bs * n, 2, 2).cpu())
    evalues, evectors = evalues.view(bs, n, 2), evectors.view(bs, n, 2, 2)
    if clamp is not None:
        evalues = torch.clamp(evalues, min=clamp[0], max=clamp[1])
    normal = evectors[:, :, 0] if rows else evectors[..., 0]
    tangent = evectors[:, :, 1] if rows else evectors[..., 1]
    err = gt - means
    e = torch.stack([(normal * err).sum(-1), (tangent * err).sum(-1)], -1)   # [bs, n, 2]
    if dist == "smoothl1":
        d2 = e.pow(2)
        d = torch.where(d2 < 1e-4, 0.5 / 0.01 * d2, d2.clamp(min=1e-6).sqrt() - 0.005)
    elif dist == "l1":
        d = e.abs()
    else:
        d = e.pow(2)
    loss = (d / torch.sqrt(evalues + eps)).sum(-1) + w * evalues.abs().sum(-1)
    return loss.mean()


# --------------------------------------------------------------------------- STAR: twins

@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 2), N=st.integers(1, 3),
       h=st.integers(2, 7), w=st.integers(2, 7), dist=st.sampled_from(L.STAR_DISTANCES),
       weight=st.sampled_from([0.0, 1.0, 0.3]), clamp=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_star_loss_twin(seed, B, N, h, w, dist, weight, clamp, dtype):
    H, y = random_star_case(seed, B, N, h, w, dtype)
    clamp = L.EIG_CLAMP if clamp else None
    ours = TL.star_loss(t(H), t(y), w=weight, dist=dist, eig_clamp=clamp)
    ref = L.star_loss(H, y, w=weight, dist=dist, eig_clamp=clamp)
    assert_close(ref, ours, **(STAR_F32 if dtype is np.float32 else {}))


@given(seed=st.integers(0, 2**31 - 1), h=st.integers(2, 6), w=st.integers(2, 6))
def test_star_moments_and_eigh_twins(seed, h, w):
    H, _ = random_star_case(seed, 2, 2, h, w, np.float64)
    mu, cov = TL.heatmap_moments(t(H))
    mu_ref, cov_ref = L.heatmap_moments(H)
    assert_close(mu_ref, mu)
    assert_close(cov_ref, cov)
    ev, V = TL.eigh2x2(cov)
    ev_ref, V_ref = L.eigh2x2(cov_ref)
    assert_close(ev_ref, ev)
    assert_close(V_ref, V, atol=1e-12)


def test_star_mean_is_the_decoded_landmark():
    """The STAR loss supervises exactly what the decoder reads: mu == soft_argmax(method="star")."""
    from lmref.ops import soft_argmax
    H, _ = random_star_case(4, 2, 3, 5, 8, np.float64)
    mu, _ = L.heatmap_moments(H)
    assert_close(mu, soft_argmax(H, method="star"), atol=1e-14)


# --------------------------------------------------------------------------- STAR: vs upstream

@pytest.mark.parametrize("dist", L.STAR_DISTANCES)
def test_star_loss_equals_upstream_port(dist):
    """Values and heatmap gradients: rows_quirk=True without clamp is upstream exactly; the default
    (columns, closed-form eigh, clamp) equals upstream-with-columns-and-clamp on generic heatmaps."""
    H, y = random_star_case(7, 2, 4, 6, 5, np.float64)
    for kwargs, port_kwargs in (({"rows_quirk": True, "eig_clamp": None}, {"rows": True}),
                                ({}, {"rows": False, "clamp": L.EIG_CLAMP})):
        Ha, Hb = t(H).requires_grad_(True), t(H).requires_grad_(True)
        ours = TL.star_loss(Ha, t(y), dist=dist, **kwargs)
        port = upstream_star_v2(Hb, t(y), dist=dist, **port_kwargs)
        ours.backward()
        port.backward()
        assert_close(ours.detach().numpy(), port)
        assert_close(Ha.grad.numpy(), Hb.grad, rtol=1e-9, atol=1e-12)


def test_star_loss_gradcheck():
    H, y = random_star_case(3, 1, 2, 4, 5, np.float64)
    Ht = t(H).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: TL.star_loss(x, t(y)), (Ht,))


def test_eigh2x2_matches_lapack():
    """Closed form vs torch.linalg.eigh on PSD, NSD and indefinite matrices: same eigenvalues, the
    same eigenvector (up to sign) in each column."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(300, 2, 2, generator=g, dtype=torch.float64)
    S = torch.cat([A @ A.mT, -(A @ A.mT), A + A.mT])
    ev, V = TL.eigh2x2(S)
    ev_ref, V_ref = torch.linalg.eigh(S)
    assert_close(ev.numpy(), ev_ref, atol=1e-12)
    dots = (V * V_ref).sum(-2).abs()                                    # |<column k, column k>|
    assert_close(dots.numpy(), torch.ones_like(dots))
    assert_close((V @ torch.diag_embed(ev) @ V.mT).numpy(), S, atol=1e-12)


def test_eigh_rows_versus_columns():
    """The check behind rows_quirk: LAPACK's eigenvector matrix of a 2x2 matrix is symmetric (rows ==
    columns) for positive semi-definite input -- every STAR covariance of a heatmap with mass >= 1e-6
    -- but not for negative definite input."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(2000, 2, 2, generator=g, dtype=torch.float64)
    for S, symmetric in ((A @ A.mT, True), (-(A @ A.mT), False)):
        V = torch.linalg.eigh(S).eigenvectors
        asym = (V - V.mT).abs().amax((-1, -2))
        assert bool((asym < 1e-12).all()) == symmetric
        if not symmetric:
            assert bool((asym > 1e-3).float().mean() > 0.99)


def test_rows_quirk_changes_only_tiny_mass_heatmaps():
    H, y = random_star_case(11, 2, 3, 6, 6, np.float64)
    base = TL.star_loss(t(H), t(y))
    assert_close(TL.star_loss(t(H), t(y), rows_quirk=True).numpy(), base)
    tiny = H * 1e-9 / H.sum((2, 3), keepdims=True)                      # mass 1e-9 < 1e-6: Sigma < 0
    _, cov = L.heatmap_moments(tiny)
    assert (np.linalg.eigvalsh(cov) < 0).all()
    cols = TL.star_loss(t(tiny), t(y))
    rows = TL.star_loss(t(tiny), t(y), rows_quirk=True)
    assert abs(rows.item() - cols.item()) > 1e-3 * abs(cols.item())
    assert_close(L.star_loss(tiny, y, rows_quirk=True), rows)          # NumPy's LAPACK: same rows
    assert_close(L.star_loss(tiny, y), cols)


def _peaked_cases(dtype):
    zero = np.zeros((1, 2, 5, 5), dtype)
    onehot = np.zeros((1, 2, 5, 5), dtype)
    onehot[0, 0, 2, 3] = 1.0
    onehot[0, 1, 0, 0] = 0.7
    yy, xx = np.mgrid[0:7, 0:7]
    gauss = np.exp(-((yy - 3) ** 2 + (xx - 3) ** 2) / (2 * 0.6 ** 2))[None, None].astype(dtype)
    gauss = np.concatenate([gauss, gauss], 1)                           # isotropic up to rounding
    tiny = np.random.default_rng(0).random((1, 2, 5, 5)).astype(dtype) * dtype(1e-9)
    return {"zero": zero, "onehot": onehot, "isotropic": gauss, "tiny_mass": tiny}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", ["zero", "onehot", "isotropic", "tiny_mass"])
def test_star_gradient_finite_on_degenerate_heatmaps(case, dtype):
    H = _peaked_cases(dtype)[case]
    y = np.array([[[0.3, -0.2], [-0.6, 0.1]]], dtype)
    Ht = t(H).requires_grad_(True)
    loss = TL.star_loss(Ht, t(y))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(Ht.grad).all()
    assert Ht.grad.abs().sum() > 0
    assert_close(L.star_loss(H, y), loss.detach(), **(STAR_F32 if dtype is np.float32 else {}))


def test_star_loss_hand_case():
    """3x3 grid X, Y in {-1, 0, 1}; half the mass at (x, y) = (-1, 0), half at (1, 0): mu = (0, 0),
    Sigma = diag(1/den, 0), den = V1 - V2/V1 with V1 = 1 + 1e-5, V2 = 0.5 + 1e-5.  Normal = y axis
    (lambda_1 = 0, clamped to 1e-6), tangent = x axis.  Landmark (0.5, 0.2): e_n = 0.2, e_t = 0.5,
    both past STAR's smooth-L1 knee (0.01), d = |e| - 0.005."""
    H = np.zeros((1, 1, 3, 3))
    H[0, 0, 1, 0] = H[0, 0, 1, 2] = 0.5
    y = np.array([[[0.5, 0.2]]])
    v1, v2 = 1 + 1e-5, 0.5 + 1e-5
    lam2 = 1 / (v1 - v2 / v1)
    expected = (0.195 / math.sqrt(1e-6 + 1e-5) + 0.495 / math.sqrt(lam2 + 1e-5) + (1e-6 + lam2))
    assert_close(TL.star_loss(t(H), t(y)).numpy(), np.float64(expected))
    assert_close(L.star_loss(H, y), np.float64(expected))
    # without the clamp lambda_1 = 0 exactly
    expected0 = 0.195 / math.sqrt(1e-5) + 0.495 / math.sqrt(lam2 + 1e-5) + lam2
    assert_close(TL.star_loss(t(H), t(y), eig_clamp=None).numpy(), np.float64(expected0))


def test_star_smooth_l1_hand_values():
    x = torch.tensor([[0.003, 0.004], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64)
    # |x| = 0.005 (quadratic: 0.005^2 / 0.02), 0.5 (linear: 0.5 - 0.005), 0
    assert_close(TL.star_smooth_l1(x).numpy(), np.array([0.00125, 0.495, 0.0]))
    assert_close(L.star_smooth_l1(x.numpy()), np.array([0.00125, 0.495, 0.0]))


def test_star_bad_input():
    H = torch.rand(1, 2, 4, 4)
    with pytest.raises(ValueError, match="landmarks"):
        TL.star_loss(H, torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="dist"):
        TL.STARLoss(dist="wing")
    with pytest.raises(ValueError, match="h, w >= 2"):
        TL.star_loss(torch.rand(1, 1, 1, 4), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="heatmaps"):
        L.star_loss(np.zeros((2, 4, 4)), np.zeros((1, 2, 2)))
    with pytest.raises(TypeError, match="landmarks"):
        L.star_loss(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 2), np.float32))


# --------------------------------------------------------------------------- AWing

@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 2), C=st.integers(1, 3), h=st.integers(1, 6),
       w=st.integers(1, 6), use_weight_map=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]))
def test_awing_twin(seed, B, C, h, w, use_weight_map, dtype):
    rng = np.random.default_rng(seed)
    target = rng.random((B, C, h, w)).astype(dtype) ** 3               # mostly small, some near 1
    pred = (target + rng.normal(0, 0.6, target.shape)).astype(dtype)   # both branches of |delta| < 0.5
    ours = TL.awing_loss(t(pred), t(target), use_weight_map=use_weight_map)
    assert_close(L.awing_loss(pred, target, use_weight_map=use_weight_map), ours)
    assert_close(L.awing_weight_map(target), TL.awing_weight_map(t(target)))


def test_awing_weight_map_definition():
    """W[i, j] = 10 * [max of target over the 3x3 window around (i, j), inside the map, >= 0.2] + 1."""
    rng = np.random.default_rng(5)
    target = (rng.random((2, 3, 6, 7)) ** 6)
    Wmap = TL.awing_weight_map(t(target)).numpy()
    ref = np.empty_like(target)
    for b, c, i, j in np.ndindex(*target.shape):
        win = target[b, c, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
        ref[b, c, i, j] = 11.0 if win.max() >= 0.2 else 1.0
    np.testing.assert_array_equal(Wmap, ref)
    assert 0 < (ref == 11).mean() < 1                                   # both values occur


def test_awing_hand_values_and_continuity():
    omega, theta, eps, alpha = 14.0, 0.5, 1.0, 2.1
    # one pixel each, no weight map: y = 0, delta = 0.3 (log branch); y = 1, delta = 0.8 (linear branch)
    y0, d0 = 0.0, 0.3
    y1, d1 = 1.0, 0.8
    p1 = alpha - y1
    A1 = omega / (1 + (theta / eps) ** p1) * p1 * (theta / eps) ** (p1 - 1) / eps
    C1 = theta * A1 - omega * math.log(1 + (theta / eps) ** p1)
    expected = [omega * math.log(1 + (d0 / eps) ** (alpha - y0)), A1 * d1 - C1]
    for (y, d), e in zip(((y0, d0), (y1, d1)), expected):
        pred = torch.full((1, 1, 1, 1), y + d, dtype=torch.float64)
        target = torch.full((1, 1, 1, 1), y, dtype=torch.float64)
        assert_close(TL.awing_loss(pred, target, use_weight_map=False).numpy(), np.float64(e))
    # continuous at delta = theta for any target value
    y = torch.linspace(0, 1, 11, dtype=torch.float64).reshape(1, 1, 1, 11)
    below = TL.awing_loss(y + theta - 1e-9, y, use_weight_map=False)
    above = TL.awing_loss(y + theta + 1e-9, y, use_weight_map=False)
    assert abs(below.item() - above.item()) < 1e-7


# --------------------------------------------------------------------------- heatmap losses

@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 3), N=st.integers(1, 4), hw=st.integers(1, 6),
       weighted=st.sampled_from([None, "2d", "3d"]), logits=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_heatmap_losses_twin(seed, B, N, hw, weighted, logits, dtype):
    rng = np.random.default_rng(seed)
    target = rng.random((B, N, hw, hw)).astype(dtype)
    pred = rng.normal(0, 2, (B, N, hw, hw)).astype(dtype)
    tw = None
    if weighted:
        tw = rng.integers(0, 2, (B, N) if weighted == "2d" else (B, N, 1)).astype(dtype)
    tw_t = None if tw is None else t(tw)
    assert_close(L.heatmap_mse(pred, target, tw), TL.heatmap_mse(t(pred), t(target), tw_t))
    if not logits:
        pred = np.clip(rng.random(pred.shape), 1e-3, 1 - 1e-3).astype(dtype)
    assert_close(L.heatmap_bce(pred, target, tw, logits=logits),
                 TL.heatmap_bce(t(pred), t(target), tw_t, logits=logits))


def test_heatmap_mse_is_mmpose_joints_mse():
    """mmpose 0.x JointsMSELoss(use_target_weight=True): per joint nn.MSELoss on (pred*w, gt*w)
    flattened over [B, h*w], summed over joints, divided by the joint count."""
    rng = np.random.default_rng(2)
    pred, gt = t(rng.random((3, 4, 5, 5))), t(rng.random((3, 4, 5, 5)))
    tw = t(rng.random((3, 4, 1)))
    ref = 0.0
    for k in range(4):
        ref += F.mse_loss(pred[:, k].reshape(3, -1) * tw[:, k], gt[:, k].reshape(3, -1) * tw[:, k])
    assert_close(TL.heatmap_mse(pred, gt, tw).numpy(), ref / 4)


def test_heatmap_loss_hand_values():
    pred = torch.tensor([[[[0.0, 1.0]], [[2.0, 0.0]]]], dtype=torch.float64)      # [1, 2, 1, 2]
    target = torch.tensor([[[[0.0, 0.0]], [[0.0, 1.0]]]], dtype=torch.float64)
    # squared errors 0, 1 | 4, 1 -> mean 1.5; joint weights (1, 0.5): 0, 1 | 1, 0.25 -> mean 0.5625
    assert_close(TL.heatmap_mse(pred, target).numpy(), np.float64(1.5))
    assert_close(TL.heatmap_mse(pred, target, torch.tensor([[1.0, 0.5]], dtype=torch.float64)).numpy(),
                 np.float64(0.5625))
    # logits 0 -> log 2 for any target; probability 0.5 -> log 2
    z = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    assert_close(TL.heatmap_bce(z, z + 1).numpy(), np.float64(math.log(2)))
    assert_close(TL.heatmap_bce(z + 0.5, z, logits=False).numpy(), np.float64(math.log(2)))


# --------------------------------------------------------------------------- coordinate losses

@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 3), N=st.integers(1, 5),
       beta=st.sampled_from([1.0, 0.1, 0.01]), dtype=st.sampled_from([np.float64, np.float32]))
def test_coord_losses_twin(seed, B, N, beta, dtype):
    rng = np.random.default_rng(seed)
    pred, target = (rng.normal(0, 0.5, (B, N, 2)).astype(dtype) for _ in range(2))
    assert_close(L.coord_mse(pred, target), TL.coord_mse(t(pred), t(target)))
    assert_close(L.coord_l1(pred, target), TL.coord_l1(t(pred), t(target)))
    assert_close(L.coord_smooth_l1(pred, target, beta), TL.coord_smooth_l1(t(pred), t(target), beta))


def test_coord_losses_hand_values():
    pred = torch.tensor([[0.0, 0.5, 3.0]], dtype=torch.float64)
    target = torch.zeros(1, 3, dtype=torch.float64)
    assert_close(TL.coord_mse(pred, target).numpy(), np.float64((0.25 + 9) / 3))
    assert_close(TL.coord_l1(pred, target).numpy(), np.float64(3.5 / 3))
    assert_close(TL.coord_smooth_l1(pred, target).numpy(), np.float64((0.125 + 2.5) / 3))
    with pytest.raises(ValueError, match="target"):
        TL.coord_mse(pred, torch.zeros(3))


# --------------------------------------------------------------------------- AAM composite

@pytest.mark.parametrize("nstack", [1, 4])
def test_aam_loss_twin_and_weights(nstack):
    rng = np.random.default_rng(nstack)
    B, N, E, h = 2, 5, 3, 6
    fused = [rng.random((B, N, h, h)) ** 2 for _ in range(nstack)]
    points = [rng.random((B, N, h, h)) for _ in range(nstack)]
    edges = [rng.random((B, E, h, h)) for _ in range(nstack)]
    y = rng.uniform(-1, 1, (B, N, 2))
    pt, et = rng.random((B, N, h, h)) ** 4, rng.random((B, E, h, h)) ** 4
    args = [fused, points, edges] if nstack > 1 else [fused[0], points[0], edges[0]]
    total, parts = TL.AAMLoss()(*[[t(a) for a in x] if isinstance(x, list) else t(x) for x in args],
                                t(y), t(pt), t(et))
    ref_total, ref_parts = L.aam_loss(*args, y, pt, et)
    assert_close(ref_total, total.detach())
    for k in parts:
        assert_close(ref_parts[k], parts[k])
    # the weights STAR uses: f_i (1, 10, 10) with f_i = 2^i / 2^(nstack - 1)
    f = TL.aam_stack_factors(nstack)
    assert f == ([1.0] if nstack == 1 else [0.125, 0.25, 0.5, 1.0])
    manual = sum(fi * (L.star_loss(fused[i], y) + 10 * L.awing_loss(points[i], pt)
                       + 10 * L.awing_loss(edges[i], et)) for i, fi in enumerate(f))
    assert_close(ref_total, np.float64(manual))
