"""torch_impl.distill: L_KD (ICME 2024), response-based (RBD) and two-phase convolutional (CKD)
distillation; twins in lmref.losses."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import lmref.losses as L
from tests.conftest import assert_close
from torch_impl.distill import CKD, ConvRegressor, KDLoss, RBDLoss, ckd_loss, rbd_loss
from torch_impl.models.resnet import Config as ResNetConfig, ResNet
from torch_impl.models.stud5 import Config as Stud5Config, Stud5


DT = {np.float64: torch.float64, np.float32: torch.float32}


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# --------------------------------------------------------------------------- RBD

def test_rbd_hand_value():
    y = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    ps = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    pt = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    # ||y - P_S||^2 = 5, ||P_T - P_S||^2 = 2: "norm" 5 + 0.5 * 2 = 6; "mean" 5/2 + 0.5 * 2/2 = 3
    assert_close(rbd_loss(ps, pt, y, lam=0.5, reduction="norm").numpy(), np.float64(6.0))
    assert_close(rbd_loss(ps, pt, y, lam=0.5).numpy(), np.float64(3.0))
    assert_close(L.rbd_loss(ps.numpy(), pt.numpy(), y.numpy(), lam=0.5, reduction="norm"), np.float64(6.0))
    assert_close(RBDLoss(lam=0.5)(ps, pt, y).numpy(), np.float64(3.0))


@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 4), lam=st.floats(0, 5),
       reduction=st.sampled_from(["mean", "norm"]), dtype=st.sampled_from([np.float64, np.float32]))
def test_rbd_twin_and_teacher_detached(seed, B, lam, reduction, dtype):
    rng = np.random.default_rng(seed)
    ps, pt, y = (rng.normal(0, 1, (B, 136)).astype(dtype) for _ in range(3))
    ps_t, pt_t = t(ps).requires_grad_(True), t(pt).requires_grad_(True)
    loss = rbd_loss(ps_t, pt_t, t(y), lam=lam, reduction=reduction)
    assert_close(L.rbd_loss(ps, pt, y, lam=lam, reduction=reduction), loss.detach())
    loss.backward()
    assert pt_t.grad is None and ps_t.grad is not None


def test_rbd_bad_input():
    with pytest.raises(ValueError, match="teacher_pred"):
        rbd_loss(torch.zeros(2, 4), torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        rbd_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4), reduction="sum")


# --------------------------------------------------------------------------- L_KD

def test_kd_adapter_shapes_and_gradients():
    kd = KDLoss(student_channels=6, teacher_channels=10)
    assert isinstance(kd.adapter, torch.nn.Conv2d)
    assert tuple(kd.adapter.weight.shape) == (10, 6, 1, 1) and tuple(kd.adapter.bias.shape) == (10,)
    assert KDLoss(8, 8).adapter is None                                 # equal widths: no adapter
    s = torch.randn(2, 6, 4, 4, requires_grad=True)
    tf = torch.randn(2, 10, 4, 4, requires_grad=True)
    hs = torch.rand(2, 3, 8, 8, requires_grad=True)
    ht = torch.rand(2, 3, 8, 8, requires_grad=True)
    total, parts = kd(s, tf, hs, ht)
    assert kd.adapt(s).shape == (2, 10, 4, 4)
    total.backward()
    assert s.grad is not None and hs.grad is not None and kd.adapter.weight.grad is not None
    assert tf.grad is None and ht.grad is None                          # the teacher is a fixed target
    assert_close((parts["feat"] + parts["heat"]).numpy(), total.detach())


@pytest.mark.parametrize("student_hw,teacher_hw", [((4, 4), (4, 4)), ((4, 6), (8, 5)), ((6, 6), (3, 3))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kd_twin(student_hw, teacher_hw, dtype):
    """Adapter, resizing of the teacher's features to the student's size, two heatmap pairs."""
    torch.manual_seed(0)
    kd = KDLoss(5, 7, feat_weight=0.7, heat_weight=2.0).to(DT[dtype])
    rng = np.random.default_rng(1)
    s = rng.normal(0, 1, (2, 5) + student_hw).astype(dtype)
    tf = rng.normal(0, 1, (2, 7) + teacher_hw).astype(dtype)
    hs = [rng.random((2, 3, 6, 6)).astype(dtype), rng.random((2, 2, 6, 6)).astype(dtype)]
    ht = [rng.random((2, 3, 6, 6)).astype(dtype), rng.random((2, 2, 6, 6)).astype(dtype)]
    total, parts = kd(t(s), t(tf), [t(h) for h in hs], [t(h) for h in ht])
    adapter = {"weight": kd.adapter.weight.detach().numpy(), "bias": kd.adapter.bias.detach().numpy()}
    ref_total, ref_parts = L.kd_loss(s, tf, hs, ht, adapter, feat_weight=0.7, heat_weight=2.0)
    assert_close(ref_total, total.detach())
    assert_close(ref_parts["feat"], parts["feat"])
    assert_close(ref_parts["heat"], parts["heat"])


def test_kd_bad_input():
    kd = KDLoss(4, 8)
    with pytest.raises(ValueError, match="student_feat"):
        kd(torch.zeros(1, 5, 2, 2), torch.zeros(1, 8, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="teacher_maps"):
        kd(torch.zeros(1, 4, 2, 2), torch.zeros(1, 8, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="teacher_feat"):
        kd(torch.zeros(1, 4, 2, 2), torch.zeros(1, 6, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


# --------------------------------------------------------------------------- CKD

def tiny_pair():
    torch.manual_seed(0)
    student = Stud5(Stud5Config(channels=(4, 4, 8, 8, 8), num_outputs=6))
    teacher = ResNet(ResNetConfig(layers=(1, 1, 1, 1), block="basic", stem_width=4, num_outputs=6))
    return student, teacher


def _grads(params):
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]


def test_ckd_phase_mechanics():
    student, teacher = tiny_pair()
    ckd = CKD(student, teacher)
    assert tuple(ckd.regressor.conv.weight.shape) == (teacher.num_features, student.num_features, 1, 1)
    x, y = torch.randn(3, 1, 32, 32), torch.randn(3, 6)
    bn = student.blocks[0].bn

    # phase 1: student conv layers + regressor learn L_CKD; FC and teacher untouched
    params = ckd.set_phase(1)
    assert {id(p) for p in params} == ({id(p) for p in ckd.feature_params}
                                       | {id(p) for p in ckd.regressor.parameters()})
    stats = bn.running_mean.clone()
    ckd.loss(x).backward()
    assert all(_grads(ckd.feature_params)) and all(_grads(ckd.regressor.parameters()))
    assert all(p.grad is None for p in student.fc.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not torch.equal(stats, bn.running_mean)                      # BN trains in phase 1

    # phase 2: regressor dropped, FC retrained on the labels, conv layers frozen (BN stats too)
    for p in list(student.parameters()) + list(ckd.regressor.parameters()):
        p.grad = None
    params = ckd.set_phase(2)
    assert {id(p) for p in params} == {id(p) for p in student.fc.parameters()}
    stats = bn.running_mean.clone()
    ckd.loss(x, y).backward()
    assert all(_grads(student.fc.parameters()))
    assert all(p.grad is None for p in ckd.feature_params)
    assert all(p.grad is None for p in ckd.regressor.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert torch.equal(stats, bn.running_mean)


def test_ckd_phase1_training_reduces_loss():
    student, teacher = tiny_pair()
    ckd = CKD(student, teacher)
    x = torch.randn(4, 1, 32, 32)
    opt = torch.optim.Adam(ckd.set_phase(1), lr=1e-2)
    first = ckd.loss(x).item()
    for _ in range(8):
        opt.zero_grad()
        loss = ckd.loss(x)
        loss.backward()
        opt.step()
    assert ckd.loss(x).item() < 0.7 * first


def test_ckd_loss_twin():
    torch.manual_seed(3)
    reg = ConvRegressor(4, 6, kernel_size=3).double()
    rng = np.random.default_rng(3)
    s, tf = rng.normal(0, 1, (2, 4, 3, 3)), rng.normal(0, 1, (2, 6, 3, 3))
    ours = ckd_loss(reg(t(s)), t(tf))
    w = {"weight": reg.conv.weight.detach().numpy(), "bias": reg.conv.bias.detach().numpy()}
    assert_close(L.ckd_loss(s, tf, w), ours.detach())


def test_ckd_bad_input():
    student, teacher = tiny_pair()
    ckd = CKD(student, teacher)
    with pytest.raises(RuntimeError, match="set_phase"):
        ckd.loss(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="phase"):
        ckd.set_phase(3)
    ckd.set_phase(1)
    with pytest.raises(ValueError, match="teacher_feat"):       # 48 px: Stud5 1x1 map, ResNet 2x2
        ckd.loss(torch.randn(1, 1, 48, 48))
    ckd.set_phase(2)
    with pytest.raises(ValueError, match="target"):
        ckd.loss(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="kernel_size"):
        ConvRegressor(4, 4, kernel_size=2)
