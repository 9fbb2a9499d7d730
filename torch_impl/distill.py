"""Knowledge-distillation losses and the two-phase convolutional distillation schedule.

* :class:`KDLoss` -- L_KD of the ICME 2024 low-power landmark entry (paper 000, section 2.3, eq. 3):
  the student's backbone features are pulled toward the teacher's, and the student's heatmaps toward
  the teacher's.  The extracted text lost the equation; from the symbols it defines (F_T, F_S the
  feature extractors, H_T, H_S the heatmap generators) we implement
      L_KD = feat_weight * MSE(F_S(x), F_T(x)) + heat_weight * MSE(H_S(F_S(x)), H_T(F_T(x)))
  with MSE = mean of squared differences (the paper's squared norm up to a constant factor).
  Where the channel counts differ (MobileViT-v2-0.5 gives 256, SwinV2 more) a 1x1 conv adapter maps
  the student's features to the teacher's width.  The adapter is TRAIN-ONLY: it lives in this loss
  module, not in the student, so it is neither exported nor used at inference; give its parameters
  to the optimizer (``KDLoss.parameters()``).  Where the spatial sizes differ the teacher's features
  are resized to the student's (bilinear, align_corners=False, no antialias) -- the paper does not
  say; its two backbones are both upsampled to the heatmap size, so normally nothing is resized.
* :func:`rbd_loss` -- response-based distillation (paper 002, eq. 2):
      L_RBD = ||y - P_S||^2 + lambda ||P_T - P_S||^2.
* :class:`ConvRegressor`, :func:`ckd_loss`, :class:`CKD` -- convolutional knowledge distillation
  (paper 002, section 3.3.2, eq. 3 and figure 4), exactly the two phases the report describes:
    phase 1: the student's FC is dropped, a temporary conv regressor R is attached to the student's
             last conv layer, and the student's conv layers together with R are trained on
             L_CKD = ||F_T(x) - R(F_S(x))||^2 (F_T = the teacher up to its last conv layer, frozen);
    phase 2: R is dropped, the FC is reattached and trained on the labels ("retrain ... to adjust the
             fully-connected layer weights"); the conv layers are not trained in this phase.
  What the report leaves open and we chose: R is one conv (1x1 by default) with bias; the losses are
  means of squared differences; phase 2 uses the report's base criterion, MSE; in phase 2 the frozen
  conv layers run in eval mode, so their BatchNorm statistics stay those learned in phase 1; the FC
  is not re-initialised (it has not been trained before phase 2).

Teacher outputs are always detached: the teacher is a fixed, already trained network.
NumPy twins: ``lmref.losses.kd_loss``, ``rbd_loss``, ``ckd_loss``.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KDLoss", "rbd_loss", "RBDLoss", "ConvRegressor", "ckd_loss", "CKD"]


def _as_maps(x, name):
    maps = list(x) if isinstance(x, (list, tuple)) else [x]
    if not maps or not all(isinstance(m, torch.Tensor) for m in maps):
        raise TypeError(f"{name}: expected a tensor or a non-empty list of tensors")
    return maps


def _check_4d(x, name):
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name}: expected a [B, C, H, W] tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")


class KDLoss(nn.Module):
    """L_KD (ICME 2024 entry): feature MSE through a train-only 1x1 adapter + heatmap MSE.

    KDLoss(student_channels, teacher_channels, feat_weight=1.0, heat_weight=1.0)
    ``adapter`` is ``nn.Conv2d(student_channels, teacher_channels, 1)`` when the counts differ, else
    None (features compared directly).

    forward(student_feat [B, C_S, h, w], teacher_feat [B, C_T, h', w'], student_maps, teacher_maps)
    where the maps are a tensor or matching lists of tensors of equal shapes (what the heatmap
    generator outputs; the paper's H(F(x)) is the heatmap the soft-argmax reads, i.e. the fused AAM
    heatmap -- pass point/edge maps as extra list entries to distil those too).
    Returns (total 0-d tensor, {"feat": ..., "heat": ...} unweighted parts, detached).
    """

    def __init__(self, student_channels, teacher_channels, feat_weight=1.0, heat_weight=1.0):
        super().__init__()
        self.student_channels, self.teacher_channels = int(student_channels), int(teacher_channels)
        self.adapter = (nn.Conv2d(self.student_channels, self.teacher_channels, 1)
                        if self.student_channels != self.teacher_channels else None)
        self.feat_weight, self.heat_weight = float(feat_weight), float(heat_weight)

    def adapt(self, student_feat):
        """A(F_S), the adapter applied to the student's features.  [B, C_S, h, w] -> [B, C_T, h, w]"""
        _check_4d(student_feat, "student_feat")
        if student_feat.shape[1] != self.student_channels:
            raise ValueError(f"student_feat: expected {self.student_channels} channels, got "
                             f"{student_feat.shape[1]}")
        return self.adapter(student_feat) if self.adapter is not None else student_feat

    def forward(self, student_feat, teacher_feat, student_maps, teacher_maps):
        feat, heat = self.terms(student_feat, teacher_feat, student_maps, teacher_maps)
        total = self.feat_weight * feat + self.heat_weight * heat
        return total, {"feat": feat.detach(), "heat": heat.detach()}

    def terms(self, student_feat, teacher_feat, student_maps, teacher_maps):
        """(feature term, heatmap term), unweighted 0-d tensors that keep their graph."""
        s = self.adapt(student_feat)                                   # [B, C_T, h, w]
        _check_4d(teacher_feat, "teacher_feat")
        t = teacher_feat.detach()
        if t.shape[:2] != s.shape[:2]:
            raise ValueError(f"teacher_feat: shape {tuple(t.shape)} does not match the adapted student "
                             f"features {tuple(s.shape)} in batch or channels")
        if t.shape[2:] != s.shape[2:]:
            t = F.interpolate(t, size=tuple(s.shape[2:]), mode="bilinear", align_corners=False)
        feat = F.mse_loss(s, t)
        smaps, tmaps = _as_maps(student_maps, "student_maps"), _as_maps(teacher_maps, "teacher_maps")
        if len(smaps) != len(tmaps):
            raise ValueError(f"student_maps/teacher_maps: {len(smaps)} vs {len(tmaps)} maps")
        heat = 0.0
        for k, (hs, ht) in enumerate(zip(smaps, tmaps)):
            if hs.shape != ht.shape:
                raise ValueError(f"teacher_maps[{k}]: shape {tuple(ht.shape)} differs from "
                                 f"student_maps[{k}]'s {tuple(hs.shape)}")
            heat = heat + F.mse_loss(hs, ht.detach())
        return feat, heat


def rbd_loss(student_pred, teacher_pred, target, lam=1.0, reduction="mean"):
    """Response-based distillation, L = ||y - P_S||^2 + lam ||P_T - P_S||^2 (paper 002, eq. 2).

    The report does not give lam.  reduction "mean": each squared norm taken as a mean over all
    elements (the report trains with an MSE criterion); "norm": squared Euclidean norm per sample,
    averaged over the batch (eq. 2 literally).  P_T is detached.
    student_pred, teacher_pred, target: same shape, e.g. [B, 136] -> 0-d tensor."""
    for x, n in ((teacher_pred, "teacher_pred"), (target, "target")):
        if not isinstance(x, torch.Tensor) or x.shape != student_pred.shape:
            raise ValueError(f"{n}: expected shape {tuple(student_pred.shape)}, got "
                             f"{tuple(getattr(x, 'shape', ()))}")
    teacher_pred = teacher_pred.detach()
    if reduction == "mean":
        return F.mse_loss(student_pred, target) + lam * F.mse_loss(student_pred, teacher_pred)
    if reduction == "norm":
        B = student_pred.shape[0]
        sq = lambda x: (x.reshape(B, -1) ** 2).sum(1).mean()           # noqa: E731
        return sq(target - student_pred) + lam * sq(teacher_pred - student_pred)
    raise ValueError(f"reduction: expected 'mean' or 'norm', got {reduction!r}")


class RBDLoss(nn.Module):
    """:func:`rbd_loss` as a module: forward(student_pred, teacher_pred, target)."""

    def __init__(self, lam=1.0, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "norm"):
            raise ValueError(f"reduction: expected 'mean' or 'norm', got {reduction!r}")
        self.lam, self.reduction = float(lam), reduction

    def forward(self, student_pred, teacher_pred, target):
        return rbd_loss(student_pred, teacher_pred, target, self.lam, self.reduction)


class ConvRegressor(nn.Module):
    """R(.; W_R) of CKD: one conv (odd kernel, 'same' padding, bias) from the student's last conv
    width to the teacher's.  [B, C_S, h, w] -> [B, C_T, h, w].  Key: ``conv.weight``, ``conv.bias``."""

    def __init__(self, in_channels, out_channels, kernel_size=1):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected a positive odd int, got {kernel_size}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        return self.conv(x)


def ckd_loss(regressed, teacher_feat):
    """L_CKD = mean (F_T - R(F_S))^2 (paper 002, eq. 3, as a mean).  Equal shapes required: the
    student's and the teacher's last maps must have the same spatial size (Stud5 and ResNet-50 both
    have stride 32; use an input side divisible by 32)."""
    _check_4d(regressed, "regressed")
    _check_4d(teacher_feat, "teacher_feat")
    if regressed.shape != teacher_feat.shape:
        raise ValueError(f"teacher_feat: shape {tuple(teacher_feat.shape)} differs from the regressed "
                         f"student features {tuple(regressed.shape)}")
    return F.mse_loss(regressed, teacher_feat.detach())


class CKD:
    """The two-phase convolutional knowledge distillation of paper 002 (see the module docstring).

    CKD(student, teacher, regressor=None, head="fc")
      student, teacher: modules with ``forward_features(x)`` (up to the last conv layer) and
        ``forward_head(features)`` (e.g. torch_impl.models.stud5.Stud5, torch_impl.models.resnet.ResNet);
      regressor: a :class:`ConvRegressor` (default: 1x1 from ``student.num_features`` to
        ``teacher.num_features``);
      head: the student's FC, a module or its attribute name.

    set_phase(1 or 2) -> the parameters to optimise in that phase (also sets requires_grad and the
    train/eval modes); loss(x, target=None) -> that phase's loss.  Typical use:

        ckd = CKD(student, teacher)
        opt = torch.optim.Adam(ckd.set_phase(1)); ... loss = ckd.loss(x); ...      # distil convs
        opt = torch.optim.Adam(ckd.set_phase(2)); ... loss = ckd.loss(x, y); ...   # retrain the FC
    """

    def __init__(self, student, teacher, regressor=None, head="fc"):
        self.student, self.teacher = student, teacher
        self.head = getattr(student, head) if isinstance(head, str) else head
        head_ids = {id(p) for p in self.head.parameters()}
        if not head_ids or not head_ids <= {id(p) for p in student.parameters()}:
            raise ValueError("head: expected a sub-module of the student that has parameters")
        self.feature_params = [p for p in student.parameters() if id(p) not in head_ids]
        self.head_params = list(self.head.parameters())
        self.regressor = (regressor if regressor is not None else
                          ConvRegressor(student.num_features, teacher.num_features))
        teacher.eval()                                                 # frozen, trained teacher
        teacher.requires_grad_(False)
        self.phase = None

    def set_phase(self, phase):
        """Phase 1: student conv layers + regressor trainable, FC frozen (unused).
        Phase 2: FC trainable; conv layers frozen and in eval mode; regressor dropped (frozen, unused).
        Returns the list of trainable parameters."""
        if phase not in (1, 2):
            raise ValueError(f"phase: expected 1 or 2, got {phase!r}")
        self.phase = phase
        first = phase == 1
        for p in self.feature_params:
            p.requires_grad_(first)
        for p in self.head_params:
            p.requires_grad_(not first)
        self.regressor.requires_grad_(first)
        self.student.train(first)
        self.regressor.train(first)
        if not first:
            self.head.train()
        self.teacher.eval()
        return self.trainable_parameters()

    def trainable_parameters(self):
        if self.phase is None:
            raise RuntimeError("CKD: call set_phase(1) or set_phase(2) first")
        if self.phase == 1:
            return self.feature_params + list(self.regressor.parameters())
        return list(self.head_params)

    def loss(self, x, target=None):
        """Phase 1: L_CKD(R(F_S(x)), F_T(x)).  Phase 2: MSE(student(x), target)."""
        if self.phase is None:
            raise RuntimeError("CKD: call set_phase(1) or set_phase(2) first")
        if self.phase == 1:
            with torch.no_grad():
                t = self.teacher.forward_features(x)                   # [B, C_T, h, w]
            return ckd_loss(self.regressor(self.student.forward_features(x)), t)
        if target is None:
            raise ValueError("target: phase 2 trains the FC on labels; give the targets")
        with torch.no_grad():
            f = self.student.forward_features(x)                       # frozen conv layers
        pred = self.student.forward_head(f)
        if pred.shape != target.shape:
            raise ValueError(f"target: shape {tuple(target.shape)} differs from the prediction's "
                             f"{tuple(pred.shape)}")
        return F.mse_loss(pred, target)
