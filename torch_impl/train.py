"""Train a landmark model from a config file -- one readable loop for every system of the project.

    python -m torch_impl.train configs/icme_student.toml                     # train
    python -m torch_impl.train configs/icme_student.toml epochs=2 seed=1      # key=value overrides
    python -m torch_impl.train configs/icme_student.toml resume=true         # continue after a kill
    torchrun --nproc_per_node 2 -m torch_impl.train configs/stud5.toml        # DistributedDataParallel
    python -m torch_impl.distill_train configs/icme_student_kd.toml distill.teacher=runs/teacher/best.safetensors

The defaults are the ICME 2024 recipe (paper 000, section 3.1): AdamW, lr 2e-4 for the backbone and
1e-3 for the head, batch 16, the training pool split 10:1 into train / val, the lowest-val-NME
checkpoint kept and exported to the lmref weights format at the end.

Tasks (what the model outputs and how it is trained; ``task=""`` picks it from the architecture):
* "aam"        backbone + AAM head (``aam``): STAR loss on the fused heatmaps + AWing on point and edge
               maps (:class:`torch_impl.losses.AAMLoss`); coordinates from the head's soft-argmax.
* "heatmap"    Lite-HRNet (``litehrnet``): heatmap MSE or BCE-with-logits against Gaussian targets
               (``torch_impl.heatmap_losses``; heatmap pixel u is input pixel u W/w, mmpose's rule);
               decoded by ``torch_impl.models.litehrnet.decode`` (argmax + quarter pixel by default).
* "regression" Stud5 / ResNet: coordinate MSE on (x, y) normalised to [-1, 1].

Distillation (``[distill]`` section, kind "lkd" / "rbd" / "ckd"): see :class:`Trainee`.

Determinism and resuming.  Everything random is a pure function of the seed and a position:
the model's initial weights (``seed``; a fine-tune's come from ``init``), the order of epoch e (``epoch_order(seed, e, n)``), the
augmentation of sample i in epoch e (``sample_seed(seed, e, i)``), and the torch RNG of global step s
(dropout, drop-path; ``step_seed(seed, s, rank)``).  A checkpoint holds the model, the optimizer,
the epoch, the step within it, the best NME and the history, so a run killed anywhere and resumed
ends with the same weights, bit for bit, as one that was never interrupted (tests/test_train.py).

Multi-process (``WORLD_SIZE`` > 1, as torchrun sets it): gloo on CPU, nccl on CUDA; every rank takes
an equal contiguous shard of every global batch (``batch_size`` must divide by the world size), DDP
averages the gradients, so the update is that of the global batch; BatchNorm statistics are rank 0's
(DDP broadcasts buffers).  Only rank 0 writes files.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import tomllib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lmref import landmarks as lm_layouts
from lmref import metrics

from . import losses
from .distill import CKD, ConvRegressor, KDLoss, ckd_loss, rbd_loss
from .export import export, load_checkpoint
from .heatmap_losses import HeatmapLoss, gaussian_targets
from .models import build

__all__ = [
    "TrainConfig", "DistillConfig", "load_config", "apply_overrides", "config_to_dict", "config_from_dict",
    "epoch_order", "sample_seed", "step_seed", "lr_factor", "param_groups", "Trainee",
    "predict_pixels", "evaluate", "save_checkpoint",
    "load_teacher", "train", "main",
]

TASKS = ("aam", "heatmap", "regression")
DEFAULT_TASK = {"aam": "aam", "litehrnet": "heatmap", "stud5": "regression", "resnet": "regression"}
HEAD_PREFIXES = ("head.", "fc.", "keypoint_head.")       # parameters trained at lr_head
DISTILL_KINDS = ("", "lkd", "rbd", "ckd")
DECODERS = ("argmax", "soft_argmax", "soft_argmax_softmax")


# ============================================================================================ config

@dataclass
class DistillConfig:
    """kind      "" (none), "lkd" (ICME 2024 L_KD: backbone features + fused heatmaps, AAM models),
                "rbd" (response-based, regression), "ckd" (two-phase convolutional KD, regression)
    teacher      lmref weights file (.safetensors) or a checkpoint written by this trainer (.pt)
    feat_weight, heat_weight   L_KD = feat_weight MSE(A(F_S), F_T) + heat_weight MSE(H_S, H_T), added
                to the student's own loss
    rbd_lambda   lambda of L_RBD = ||y - P_S||^2 + lambda ||P_T - P_S||^2 (means of squares)
    ckd_phase1_epochs   epochs of CKD phase 1 (conv layers + regressor on L_CKD); the remaining epochs
                are phase 2 (the FC on the labels, conv layers frozen).  0: half of ``epochs``.
    ckd_phase_schedules   False: one lr schedule over the whole run (phase 2 gets its decaying tail);
                True: each phase runs the schedule over its own epochs (phase 2 "retrains" the FC from the
                full lr; the report names no schedule)
    ckd_kernel   kernel size of the temporary conv regressor R"""
    kind: str = ""
    teacher: str = ""
    feat_weight: float = 1.0
    heat_weight: float = 1.0
    rbd_lambda: float = 1.0
    ckd_phase1_epochs: int = 0
    ckd_phase_schedules: bool = False
    ckd_kernel: int = 1


@dataclass
class TrainConfig:
    # ---- model
    arch: str = "aam"                       # a key of lmref.models.MODULES
    model: dict = field(default_factory=dict)   # the model's Config fields (missing ones: defaults)
    task: str = ""                          # "aam" | "heatmap" | "regression"; "": from the arch
    # ---- data (the synthetic benchmark, torch_impl.data)
    data: dict = field(default_factory=dict)    # keyword arguments of the dataset builder
    input_size: int = 256                   # square crop side fed to the model
    num_train: int = 1100                   # training pool, split 10:1 into train / val
    val_ratio: float = 1 / 11               # 10:1
    num_test: int = 200
    augment: bool = True
    # ---- heatmap task
    heatmap_loss: str = "mse"               # "mse" (mmpose JointsMSELoss) or "bce" (with logits)
    heatmap_sigma: float = 2.0              # Gaussian sigma of the targets, in heatmap pixels (mmpose: 2)
    heatmap_unbiased: bool = True           # centre at the sub-pixel landmark (DARK), not the rounded pixel
    # ---- AAM task (STAR's loss: STAR on the fused heatmaps + AWing on the point and edge maps)
    aam_weights: tuple = (1.0, 10.0, 10.0)  # (STAR, AWing point, AWing edge): STAR's compute_loss weights
    decode: str = "argmax"                  # torch_impl.models.litehrnet.decode: "argmax" (+ quarter
                                            # pixel), "soft_argmax", "soft_argmax_softmax"
    # ---- optimisation (ICME 2024 recipe)
    optimizer: str = "adamw"                # "adamw" or "adam"
    lr_backbone: float = 2e-4
    lr_head: float = 1e-3
    weight_decay: float = 0.01              # torch's AdamW default (the paper gives none)
    batch_size: int = 16
    epochs: int = 10
    epoch_steps: int = 0                    # steps per epoch: 0 the whole training split; else the first
                                            # epoch_steps batches of each epoch's shuffle (a budget below
                                            # a full pass; each epoch still draws from the whole split)
    lr_schedule: str = "constant"           # "constant", "cosine" (to 1% at the end) or "multistep"
    lr_milestones: tuple = ()               # epochs where "multistep" multiplies the lr by lr_gamma
    lr_gamma: float = 0.1
    warmup_steps: int = 0                   # linear warm-up from 0
    grad_clip: float = 0.0                  # max gradient norm; 0: off
    # ---- run
    seed: int = 0
    init: str = ""                          # start from these weights (an lmref .safetensors file or a
                                            # checkpoint of this trainer, of the same model) instead of the
                                            # seed's random ones: a fine-tune; the seed still draws the data
    out_dir: str = "runs/default"
    name: str = ""                          # exported file name stem; "": the out_dir's name
    device: str = "auto"                    # "auto" (CUDA when present), "cpu", "cuda"
    num_threads: int = 0                    # torch CPU threads; 0: torch's default
    num_workers: int = 0                    # DataLoader worker processes
    checkpoint_every: int = 0               # also checkpoint every N steps (0: only every epoch)
    compact_checkpoints: bool = False       # round the state to its storage precision at every checkpoint
                                            # (see compact_state_): a third of float32's size, exact resume
    max_steps: int = 0                      # stop after this many global steps (0: run to the end)
    max_minutes: float = 0.0                # stop at the first checkpoint after this much wall time, as if
                                            # killed there (0: run to the end); a resume continues exactly
    resume: bool = False                    # continue from out_dir/last.pt if it exists
    export: bool = True                     # export the best checkpoint with its test NME at the end
    progress: bool = True                   # tqdm progress bar on rank 0 (epoch lines are always printed)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self):
        if isinstance(self.distill, dict):
            self.distill = DistillConfig(**self.distill)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        self.aam_weights = tuple(float(w) for w in self.aam_weights)
        if not self.task:
            if self.arch not in DEFAULT_TASK:
                raise ValueError(f"task: no default task for arch {self.arch!r}; set one of {TASKS}")
            self.task = DEFAULT_TASK[self.arch]
        checks = [
            (self.task in TASKS, f"task: expected one of {TASKS}, got {self.task!r}"),
            (self.heatmap_loss in ("mse", "bce"), f"heatmap_loss: expected 'mse' or 'bce', got {self.heatmap_loss!r}"),
            (self.decode in DECODERS, f"decode: expected one of {DECODERS}, got {self.decode!r}"),
            (self.optimizer in ("adamw", "adam"), f"optimizer: expected 'adamw' or 'adam', got {self.optimizer!r}"),
            (self.lr_schedule in ("constant", "cosine", "multistep"),
             f"lr_schedule: expected 'constant', 'cosine' or 'multistep', got {self.lr_schedule!r}"),
            (self.batch_size >= 1 and self.epochs >= 1, "batch_size and epochs must be >= 1"),
            (self.epoch_steps >= 0, f"epoch_steps: expected 0 (a full pass) or more, got {self.epoch_steps}"),
            (0 < self.val_ratio < 1, f"val_ratio: expected a fraction in (0, 1), got {self.val_ratio}"),
            (self.distill.kind in DISTILL_KINDS, f"distill.kind: expected one of {DISTILL_KINDS}, got {self.distill.kind!r}"),
            (not self.distill.kind or self.distill.teacher, "distill.teacher: give the teacher's weights file or checkpoint"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.distill.kind == "lkd" and self.task != "aam":
            raise ValueError("distill.kind 'lkd' distils AAM heatmaps: it needs task 'aam'")
        if self.distill.kind in ("rbd", "ckd") and self.task != "regression":
            raise ValueError(f"distill.kind {self.distill.kind!r} needs task 'regression'")


def config_to_dict(cfg: TrainConfig) -> dict:
    """Plain JSON-able dict (tuples -> lists), the form stored in checkpoints and manifests."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(d: dict) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
    return TrainConfig(**d)


def _parse_value(text):
    """A CLI value: a TOML literal (1, 2e-4, true, "x", [1, 2], {a = 1}) or else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(d: dict, overrides) -> dict:
    """Apply ``key=value`` strings to a config dict; dotted keys reach into sections
    (``distill.kind=rbd``, ``model.backbone_config.width_multiplier=0.75``)."""
    d = json.loads(json.dumps(d))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        *path, last = key.strip().split(".")
        node = d
        for p in path:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[last] = _parse_value(value.strip())
    return d


def load_config(path=None, overrides=()) -> TrainConfig:
    """TrainConfig from a TOML (tomllib) or YAML (pyyaml) file plus ``key=value`` overrides."""
    d = {}
    if path:
        if path.endswith((".yaml", ".yml")):
            import yaml
            with open(path) as f:
                d = yaml.safe_load(f) or {}
        elif path.endswith(".toml"):
            with open(path, "rb") as f:
                d = tomllib.load(f)
        else:
            raise ValueError(f"config {path!r}: expected a .toml, .yaml or .yml file")
    return config_from_dict(apply_overrides(d, overrides))


# ============================================================================ determinism helpers

def _seed32(*parts):
    """A 32-bit seed that is a pure function of the integers ``parts`` (NumPy's SeedSequence hash)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def epoch_order(seed, epoch, n):
    """The order in which epoch ``epoch`` visits the n training samples."""
    return np.random.default_rng(_seed32(seed, 1, epoch)).permutation(n)


def sample_seed(seed, epoch, index):
    """Seed of sample ``index``'s augmentation in epoch ``epoch``."""
    return _seed32(seed, 2, epoch, index)


def step_seed(seed, step, rank=0):
    """Seed of the torch RNG (dropout, drop-path) for global step ``step`` on ``rank``."""
    return _seed32(seed, 3, step, rank)


def lr_factor(cfg: TrainConfig, step, steps_per_epoch):
    """Learning-rate multiplier at global step ``step``: warm-up, then the schedule (over the whole run,
    or with CKD's ``ckd_phase_schedules`` over each phase's own steps)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.distill.kind == "ckd" and cfg.distill.ckd_phase_schedules:
        p1 = ckd_phase1_epochs(cfg) * steps_per_epoch
        step, total = (step, p1) if step < p1 else (step - p1, total - p1)
    f = 1.0
    if cfg.lr_schedule == "cosine":
        f = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
    elif cfg.lr_schedule == "multistep":
        f = cfg.lr_gamma ** sum(step >= m * steps_per_epoch for m in cfg.lr_milestones)
    if cfg.warmup_steps and step < cfg.warmup_steps:
        f *= (step + 1) / cfg.warmup_steps
    return f


# ================================================================================ model and tasks

def model_layout(cfg: TrainConfig):
    """The landmark layout the model predicts: the AAM config's layout, else by the point count."""
    if cfg.arch == "aam":
        from lmref.models.aam_head import Config as AAMConfig
        return lm_layouts.get(AAMConfig(**cfg.model).layout)
    if cfg.task == "regression":
        n = int(cfg.model.get("num_outputs", 136)) // 2
    else:
        n = int(cfg.model.get("num_points", 98))
    return lm_layouts.for_num_points(n)


def param_groups(model: nn.Module, cfg: TrainConfig, extra=()):
    """Two AdamW groups: the head (keys starting with head. / fc. / keypoint_head.) at lr_head, the
    rest (the backbone) at lr_backbone; ``extra`` parameters (KD adapters, regressors) join the head
    group.  Only parameters that require grad."""
    head, backbone = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (head if name.startswith(HEAD_PREFIXES) else backbone).append(p)
    head += [p for p in extra if p.requires_grad]
    groups = [{"name": "backbone", "params": backbone, "lr": cfg.lr_backbone, "base_lr": cfg.lr_backbone},
              {"name": "head", "params": head, "lr": cfg.lr_head, "base_lr": cfg.lr_head}]
    return [g for g in groups if g["params"]]


def make_optimizer(groups, cfg: TrainConfig):
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    wd = cfg.weight_decay if cfg.optimizer == "adamw" else 0.0
    return opt(groups, weight_decay=wd)


def normalize_points(points, H, W):
    """Input pixels -> [-1, 1], x_n = (2x + 1)/W - 1 (STAR's labels; ``lmref.data.targets``)."""
    size = torch.tensor([W, H], dtype=points.dtype, device=points.device)
    return (2 * points + 1) / size - 1


def denormalize_points(coords, H, W):
    size = torch.tensor([W, H], dtype=coords.dtype, device=coords.device)
    return ((coords + 1) * size - 1) / 2


def predict_pixels(out, cfg: TrainConfig, H, W):
    """The model's landmarks [B, N, 2] in input pixels, whatever its task."""
    if cfg.task == "aam":
        return out["landmarks"]
    if cfg.task == "heatmap":
        from .models.litehrnet import decode
        return decode(out, cfg.decode, (H, W))[0]
    return denormalize_points(out.reshape(out.shape[0], -1, 2), H, W)


def task_loss(out, batch, cfg: TrainConfig, aam_loss=None):
    """The supervised loss of the task on one batch -> (loss, {part: float tensor})."""
    pts = batch["landmarks"]                                           # [B, N, 2] input pixels
    H, W = batch["image"].shape[2:]
    if cfg.task == "aam":
        loss, parts = aam_loss(out["fusion_heatmaps"], out["pointmaps"], out["edgemaps"],
                               normalize_points(pts, H, W).clamp(-1, 1),
                               batch["pointmaps"], batch["edgemaps"])
        return loss, parts
    if cfg.task == "heatmap":
        target, weight = gaussian_targets(pts, tuple(out.shape[2:]), (H, W), cfg.heatmap_sigma,
                                          unbiased=cfg.heatmap_unbiased)
        return HeatmapLoss(cfg.heatmap_loss)(out, target, weight), {}
    target = normalize_points(pts, H, W).reshape(pts.shape[0], -1)     # [B, 2N]
    return losses.coord_mse(out, target), {}


class Trainee(nn.Module):
    """What the optimizer trains: the model plus the train-only distillation parts, with the whole
    loss computed in ``forward`` (so one DistributedDataParallel wrapper syncs every gradient).

    kind ""     the task loss alone
    kind "lkd"  task loss + L_KD(student features, teacher features, student fused heatmaps, teacher's)
                with a train-only 1x1 adapter (paper 000 eq. 3, :class:`torch_impl.distill.KDLoss`)
    kind "rbd"  L_RBD = MSE(P_S, y) + lambda MSE(P_S, P_T)                  (paper 002 eq. 2)
    kind "ckd"  phase 1: L_CKD = MSE(R(F_S(x)), F_T(x)); phase 2: MSE of the FC's output on frozen
                conv features                                            (paper 002 eq. 3, fig. 4)
    The teacher is not a sub-module: its outputs come in through ``forward(batch, teacher_out)``."""

    def __init__(self, model, cfg: TrainConfig, teacher=None):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.kind = cfg.distill.kind
        self.aam_loss = losses.AAMLoss(weights=cfg.aam_weights) if cfg.task == "aam" else None
        self.kd = None
        self.ckd = None
        if self.kind == "lkd":
            from lmref.models.aam_head import num_features
            self.kd = KDLoss(num_features(model.cfg), num_features(teacher.cfg),
                             cfg.distill.feat_weight, cfg.distill.heat_weight)
        if self.kind == "ckd":
            self.regressor = ConvRegressor(model.num_features, teacher.num_features, cfg.distill.ckd_kernel)
            self.ckd = CKD(model, teacher, self.regressor)             # phase bookkeeping only
        self.phase = None

    def extra_parameters(self):
        parts = [m for m in (self.kd, getattr(self, "regressor", None)) if m is not None]
        return [p for m in parts for p in m.parameters()]

    def set_phase(self, phase):
        """CKD only: switch phase (requires_grad and train/eval modes, see torch_impl.distill.CKD)."""
        self.phase = phase
        self.ckd.set_phase(phase)

    def train(self, mode=True):
        super().train(mode)
        if mode and self.ckd is not None and self.phase is not None:
            self.ckd.set_phase(self.phase)                             # phase 2 keeps the convs in eval
        return self

    def forward(self, batch, teacher_out=None):
        x = batch["image"]
        if self.kind == "ckd":
            if self.phase == 1:
                return ckd_loss(self.regressor(self.model.forward_features(x)), teacher_out), {}, None
            with torch.no_grad():
                f = self.model.forward_features(x)                     # frozen conv layers
            out = self.model.forward_head(f)
            return task_loss(out, batch, self.cfg)[0], {}, out
        out = self.model(x)
        loss, parts = task_loss(out, batch, self.cfg, self.aam_loss)
        if self.kind == "lkd":
            kd, kd_parts = self.kd(out["features"], teacher_out["features"],
                                   out["fusion_heatmaps"], teacher_out["fusion_heatmaps"])
            loss = loss + kd
            parts = {**parts, "kd_feat": kd_parts["feat"], "kd_heat": kd_parts["heat"]}
        elif self.kind == "rbd":
            target = normalize_points(batch["landmarks"], *x.shape[2:]).reshape(x.shape[0], -1)
            loss = rbd_loss(out, teacher_out, target, self.cfg.distill.rbd_lambda)
        return loss, parts, out


@torch.no_grad()
def teacher_outputs(teacher, batch, kind, phase=None):
    """What the distillation loss needs from the (frozen, eval-mode) teacher for this batch."""
    if teacher is None or kind == "" or (kind == "ckd" and phase == 2):
        return None
    x = batch["image"]
    if kind == "ckd":
        return teacher.forward_features(x)
    out = teacher(x)
    if kind == "lkd":
        return {"features": out["features"], "fusion_heatmaps": out["fusion_heatmaps"]}
    return out


def load_teacher(path, device="cpu"):
    """A frozen, eval-mode teacher from an lmref weights file (architecture and config read from its
    manifest) or from a checkpoint of this trainer (``best.pt`` / ``last.pt``: its stored config)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from lmref import weights
        tensors, manifest = weights.load(path)
        model = build(manifest["architecture"], manifest["config"])
        state = {k: torch.from_numpy(np.ascontiguousarray(v)).float() for k, v in tensors.items()}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(f"{path}: weights do not fit {manifest['architecture']}: missing {missing[:5]}, "
                             f"unexpected {list(result.unexpected_keys)[:5]}")
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
            raise ValueError(f"{path}: not a checkpoint of torch_impl.train (no 'config' and 'model')")
        tcfg = config_from_dict(ckpt["config"])
        model = build(tcfg.arch, tcfg.model)
        load_checkpoint(model, path)
    model = model.to(device).eval()
    model.requires_grad_(False)
    return model


# ============================================================================================ data

def make_datasets(cfg: TrainConfig):
    """(train, val, test) datasets of the synthetic benchmark; see torch_impl.data."""
    from . import data
    return data.make_splits(cfg)


def _batches_of(indices, size):
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def load_batch(dataset, indices, seeds, cfg: TrainConfig, device, layout):
    """Samples ``indices`` (augmented with ``seeds``; None: no augmentation) -> a batch dict of tensors
    on ``device``: image [B, C, H, W], landmarks [B, N, 2] input pixels in the model's layout, and for
    the AAM task the point / edge map targets (torch_impl.data.collate)."""
    from . import data
    seeds = [None] * len(indices) if seeds is None else seeds
    batch = data.collate([dataset.sample(int(i), None if s is None else int(s)) for i, s in zip(indices, seeds)],
                         layout=layout, aam_targets=cfg.task == "aam")
    return _to(batch, device)


def _to(batch, device):
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


class _SeededSamples(torch.utils.data.Dataset):
    """Map-style view for DataLoader workers: item (index, seed) -> dataset.sample(index, seed)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        return self.dataset.sample(*item)


def train_batches(dataset, cfg: TrainConfig, epoch, start, steps, rank, world, device, layout):
    """Yield (k, batch) for the global batches k = start .. steps-1 of ``epoch``: this rank's shard
    of each, every sample augmented from ``sample_seed(seed, epoch, index)``.  With ``num_workers``
    the samples are made by DataLoader workers; the batches are the same either way."""
    from . import data
    B, b = cfg.batch_size, cfg.batch_size // world
    order = epoch_order(cfg.seed, epoch, len(dataset))
    plan = []
    for k in range(start, steps):
        idx = order[k * B:(k + 1) * B][rank * b:(rank + 1) * b]       # this rank's shard of batch k
        plan.append([(int(i), sample_seed(cfg.seed, epoch, i) if cfg.augment else None) for i in idx])
    if cfg.num_workers == 0:
        for k, items in zip(range(start, steps), plan):
            yield k, load_batch(dataset, [i for i, _ in items], [s for _, s in items], cfg, device, layout)
        return
    collate = lambda samples: data.collate(samples, layout=layout, aam_targets=cfg.task == "aam")  # noqa: E731
    loader = torch.utils.data.DataLoader(_SeededSamples(dataset), batch_sampler=plan, collate_fn=collate,
                                         num_workers=cfg.num_workers)
    for k, batch in zip(range(start, steps), loader):
        yield k, _to(batch, device)


# ====================================================================================== evaluation

@torch.no_grad()
def evaluate(model, dataset, cfg: TrainConfig, device, layout, indices=None, batch_size=None):
    """Run ``model`` (eval mode, no augmentation) over ``dataset`` (or the given indices).
    Returns {"pred", "gt": [M, N, 2] input pixels (float64 NumPy), "nme": [M] per-image NME}."""
    was_training = model.training
    model.eval()
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    preds, gts = [], []
    for chunk in _batches_of(indices, batch_size or max(cfg.batch_size, 32)):
        batch = load_batch(dataset, chunk, None, cfg, device, layout)
        H, W = batch["image"].shape[2:]
        preds.append(predict_pixels(model(batch["image"]), cfg, H, W).double().cpu().numpy())
        gts.append(batch["landmarks"].double().cpu().numpy())
    model.train(was_training)
    if not preds:
        return {"pred": np.zeros((0, layout.num_points, 2)), "gt": np.zeros((0, layout.num_points, 2)),
                "nme": np.zeros(0)}
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    return {"pred": pred, "gt": gt, "nme": metrics.nme(pred, gt, layout)}


def summarize(ev):
    """Mean NME, FR@0.1 / AUC@0.1 and the coordinate MSE (input pixels^2, per coordinate)."""
    fr, auc = metrics.fr_auc(ev["nme"], 0.1)
    return {"nme": float(ev["nme"].mean()), "fr_0.1": fr, "auc_0.1": auc,
            "mse_px": float(((ev["pred"] - ev["gt"]) ** 2).mean()), "count": int(len(ev["nme"]))}


# ===================================================================================== checkpoints

def save_checkpoint(obj, path):
    """Atomic save: write a temporary file in the same directory, then os.replace it into place, so
    a kill at any moment leaves either the old or the new checkpoint, never half of one."""
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _extra_state(trainee):
    return {k: v for k, v in trainee.state_dict().items() if not k.startswith("model.")}


MOMENTS = ("exp_avg", "exp_avg_sq")                                   # Adam / AdamW per-parameter state


@torch.no_grad()
def compact_state_(trainee, opt):
    """Round, in place, the training state to what a compact checkpoint stores: every floating tensor of
    the trainee (weights, BatchNorm statistics, KD adapters) to float16 and the optimizer's moments to
    bfloat16 (float16 would flush Adam's second moments, ~1e-12, to zero).  It runs at every checkpoint
    of a ``compact_checkpoints`` run, killed or not, so a resumed run continues from exactly the state an
    uninterrupted one holds.  The rounding (relative 5e-4 on weights) is far below one Adam step."""
    for t in trainee.state_dict().values():
        if t.is_floating_point():
            t.copy_(t.half())
    for state in opt.state.values():
        for k in MOMENTS:
            if k in state:
                state[k].copy_(state[k].bfloat16())


def compact_copy(state_dict, dtype=torch.float16):
    """A state dict with its floating tensors cast to ``dtype`` (what goes on disk)."""
    return {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in state_dict.items()}


def compact_optimizer(sd):
    """An optimizer state dict with its moments in bfloat16 (``load_state_dict`` casts them back)."""
    state = {i: {k: (v.bfloat16() if k in MOMENTS else v) for k, v in s.items()} for i, s in sd["state"].items()}
    return {**sd, "state": state}


# ===================================================================================== distributed

def setup_distributed(cfg: TrainConfig):
    """(rank, world_size, device, initialised_here) from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {cfg.device!r}")
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    here = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
        here = True
    if world > 1 and cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the world size {world}")
    return rank, world, device, here


def _all_sum(values, world, device):
    """Sum a list of floats over ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


def _sync_buffers(module, world):
    """Give every rank rank 0's buffers (BatchNorm statistics); DDP only does it at each forward."""
    if world > 1:
        for b in module.buffers():
            dist.broadcast(b, 0)


# ======================================================================================= training

def ckd_phase1_epochs(cfg: TrainConfig):
    return cfg.distill.ckd_phase1_epochs or max(1, cfg.epochs // 2)


def ckd_phase(cfg: TrainConfig, epoch):
    """CKD phase (1 or 2) of an epoch; None for the other kinds."""
    if cfg.distill.kind != "ckd":
        return None
    return 1 if epoch < ckd_phase1_epochs(cfg) else 2


def _wrap(trainee, world, device):
    if world == 1:
        return trainee
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(trainee, device_ids=[device.index] if device.type == "cuda" else None)


def _progress(iterable, enabled, **kw):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, dynamic_ncols=True, leave=False, **kw)


def train(cfg: TrainConfig):
    """Train (or resume) as ``cfg`` says; returns a summary dict: history, best_val_nme, best_epoch,
    test (rank 0: metrics of the best checkpoint on the test split), weights (the exported file),
    model (the trained nn.Module: the best checkpoint on rank 0, the final weights elsewhere).
    With ``max_steps`` the run stops after that many steps as if killed (the last step checkpoint is
    what a resume finds) and the summary has ``"stopped": True``."""
    rank, world, device, pg_here = setup_distributed(cfg)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg, rank, world, device)
    finally:
        torch.set_num_threads(threads)                                 # a caller's setting is restored
        if pg_here:
            dist.destroy_process_group()


def build_trainee(cfg: TrainConfig, device="cpu"):
    """(trainee, teacher or None) with the run's initial weights: seed, model, teacher, then the
    train-only parts (KD adapter, CKD regressor), in that order."""
    torch.manual_seed(cfg.seed)                                        # initial weights
    model = build(cfg.arch, cfg.model).to(device)
    if cfg.init:                                                       # a fine-tune: strict, so the file
        model.load_state_dict(load_teacher(cfg.init, device).state_dict())   # must be this very model
    teacher = load_teacher(cfg.distill.teacher, device) if cfg.distill.kind else None
    return Trainee(model, cfg, teacher).to(device), teacher


def _train(cfg, rank, world, device):
    main_rank = rank == 0
    out_dir = cfg.out_dir
    if main_rank:
        os.makedirs(out_dir, exist_ok=True)
    last_path, best_path = os.path.join(out_dir, "last.pt"), os.path.join(out_dir, "best.pt")

    train_ds, val_ds, test_ds = make_datasets(cfg)
    layout = model_layout(cfg)
    trainee, teacher = build_trainee(cfg, device)

    steps_per_epoch = len(train_ds) // cfg.batch_size                  # the last partial batch is dropped
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_ds)} training samples make no batch of {cfg.batch_size}")
    if cfg.epoch_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.epoch_steps)

    st = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_nme": math.inf, "best_epoch": -1,
          "history": [], "loss_sum": 0.0, "loss_count": 0}
    ckpt = None
    if cfg.resume and os.path.exists(last_path):
        ckpt = torch.load(last_path, map_location=device, weights_only=True)
        trainee.model.load_state_dict(ckpt["model"])
        st.update({k: ckpt[k] for k in st})
    phase = ckd_phase(cfg, min(st["epoch"], cfg.epochs - 1))
    if phase is not None:
        trainee.set_phase(phase)
    if ckpt is not None:
        trainee.load_state_dict({**{f"model.{k}": v for k, v in ckpt["model"].items()}, **ckpt["extra"]})
    opt = make_optimizer(param_groups(trainee.model, cfg, trainee.extra_parameters()), cfg)
    if ckpt is not None:
        if ckpt["phase"] == phase and "optimizer" in ckpt:   # (a CKD run saved at the phase switch
            opt.load_state_dict(ckpt["optimizer"])             # starts phase 2 afresh)
        elif "optimizer" not in ckpt and main_rank:
            print(f"{last_path}: no optimizer state kept: Adam restarts from zero moments here, so this "
                  f"resume is not bit-exact", flush=True)
        torch.set_rng_state(ckpt["torch_rng"].cpu())
    net = _wrap(trainee, world, device)

    def checkpoint(epoch, step_in_epoch):
        model_sd, extra, opt_sd = trainee.model.state_dict(), _extra_state(trainee), opt.state_dict()
        if cfg.compact_checkpoints:                 # every rank rounds, so DDP replicas stay equal
            compact_state_(trainee, opt)
            model_sd, extra, opt_sd = compact_copy(model_sd), compact_copy(extra), compact_optimizer(opt_sd)
        if main_rank:
            save_checkpoint({"model": model_sd, "extra": extra,
                             "optimizer": opt_sd, "config": config_to_dict(cfg),
                             "torch_rng": torch.get_rng_state(), "phase": phase,
                             **{**st, "epoch": epoch, "step_in_epoch": step_in_epoch}}, last_path)

    t_start = time.time()

    def out_of_time():
        """max_minutes: checked right after a checkpoint; every rank follows rank 0's clock."""
        late = bool(cfg.max_minutes) and time.time() - t_start > 60 * cfg.max_minutes
        return _all_sum([float(late and main_rank)], world, device)[0] > 0

    val_nme = st["history"][-1]["val_nme"] if st["history"] else float("nan")
    for epoch in range(st["epoch"], cfg.epochs):
        if ckd_phase(cfg, epoch) != phase:                             # CKD: phase 1 -> phase 2
            phase = ckd_phase(cfg, epoch)
            trainee.set_phase(phase)
            opt = make_optimizer(param_groups(trainee.model, cfg, trainee.extra_parameters()), cfg)
            del net
            net = _wrap(trainee, world, device)                        # DDP over the new trainable set
        trainee.train()
        start = st["step_in_epoch"] if epoch == st["epoch"] else 0
        if start == 0:
            st["loss_sum"], st["loss_count"] = 0.0, 0
        t0 = time.time()
        batches = train_batches(train_ds, cfg, epoch, start, steps_per_epoch, rank, world, device, layout)
        bar = _progress(batches, cfg.progress and main_rank, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                        initial=start, total=steps_per_epoch)
        for k, batch in bar:
            torch.manual_seed(step_seed(cfg.seed, st["global_step"], rank))
            f = lr_factor(cfg, st["global_step"], steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * f
            loss, parts, _ = net(batch, teacher_outputs(teacher, batch, cfg.distill.kind, phase))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {k}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
            opt.step()
            st["global_step"] += 1
            st["loss_sum"] += float(loss.item())
            st["loss_count"] += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{st['loss_sum'] / st['loss_count']:.4f}", val_nme=f"{val_nme:.4f}")
            if cfg.checkpoint_every and st["global_step"] % cfg.checkpoint_every == 0:
                checkpoint(epoch, k + 1)
                if out_of_time():
                    return {"stopped": True, "global_step": st["global_step"], "epoch": epoch, "step_in_epoch": k + 1}
            if cfg.max_steps and st["global_step"] >= cfg.max_steps:
                return {"stopped": True, "global_step": st["global_step"], "epoch": epoch, "step_in_epoch": k + 1}

        # ---- end of epoch: validation, best checkpoint, epoch checkpoint
        _sync_buffers(trainee, world)
        shard = np.arange(len(val_ds))[rank::world]
        ev = evaluate(trainee.model, val_ds, cfg, device, layout, shard)
        loss_sum, loss_count, nme_sum, nme_count = _all_sum(
            [st["loss_sum"], st["loss_count"], float(ev["nme"].sum()), len(ev["nme"])], world, device)
        val_nme = nme_sum / max(nme_count, 1)
        st["history"].append({"epoch": epoch + 1, "train_loss": loss_sum / max(loss_count, 1),
                              "val_nme": val_nme, "lr_factor": lr_factor(cfg, st["global_step"] - 1, steps_per_epoch),
                              "phase": phase, "seconds": time.time() - t0})
        selectable = phase in (None, 2)                                # CKD phase 1 has no trained FC
        if selectable and val_nme < st["best_nme"]:
            st["best_nme"], st["best_epoch"] = val_nme, epoch + 1
            if main_rank:
                best = trainee.model.state_dict()
                save_checkpoint({"model": compact_copy(best) if cfg.compact_checkpoints else best,
                                 "config": config_to_dict(cfg), "epoch": epoch + 1, "val_nme": val_nme}, best_path)
        if main_rank:
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {st['history'][-1]['train_loss']:.5f}, "
                  f"val NME {val_nme:.5f} (best {st['best_nme']:.5f} at epoch {st['best_epoch']}), "
                  f"{st['history'][-1]['seconds']:.0f} s", flush=True)
        st["step_in_epoch"] = 0
        checkpoint(epoch + 1, 0)
        if world > 1:
            dist.barrier()
        if epoch + 1 < cfg.epochs and out_of_time():
            return {"stopped": True, "global_step": st["global_step"], "epoch": epoch + 1, "step_in_epoch": 0}

    return _finish(cfg, trainee.model, test_ds, st, layout, device, main_rank, train_ds)


def _finish(cfg, model, test_ds, st, layout, device, main_rank, train_ds):
    """Rank 0: reload the best checkpoint, measure it on the test split, export it, write result.json."""
    summary = {"stopped": False, "global_step": st["global_step"], "best_val_nme": st["best_nme"],
               "best_epoch": st["best_epoch"], "history": st["history"], "out_dir": cfg.out_dir, "model": model}
    if not main_rank:
        return summary
    best_path = os.path.join(cfg.out_dir, "best.pt")
    if os.path.exists(best_path):
        load_checkpoint(model, best_path)
    ev = evaluate(model, test_ds, cfg, device, layout)
    summary["test"] = summarize(ev)
    summary["test_nme_per_image"] = ev["nme"].tolist()
    if cfg.export:
        from . import data
        name = cfg.name or os.path.basename(os.path.normpath(cfg.out_dir))
        path = os.path.join(cfg.out_dir, f"{name}.safetensors")
        training = {"recipe": "torch_impl.train", "config": config_to_dict(cfg),
                    "best_epoch": st["best_epoch"], "val_nme": st["best_nme"], "test": summary["test"],
                    "test_split": data.split_record(test_ds), "data": data.describe(train_ds)}
        export(model.cpu(), path, cfg.arch, model.cfg, layout=layout.name,
               input=data.input_spec(cfg), training=training)
        model.to(device)
        summary["weights"] = path
    with open(os.path.join(cfg.out_dir, "result.json"), "w") as f:
        json.dump({k: v for k, v in summary.items() if k != "model"}, f, indent=1)
    return summary


# ============================================================================================= CLI

def main(argv=None, require_distill=False):
    ap = argparse.ArgumentParser(prog="python -m torch_impl.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="a .toml or .yaml config (omit for the defaults)")
    ap.add_argument("overrides", nargs="*", help="key=value settings, dotted for sections (distill.kind=rbd)")
    args = ap.parse_args(argv)
    if args.config and "=" in args.config:
        args.overrides.insert(0, args.config)
        args.config = None
    cfg = load_config(args.config, args.overrides)
    if require_distill and not cfg.distill.kind:
        raise SystemExit("distill: set distill.kind (lkd, rbd or ckd) and distill.teacher")
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        brief = {k: summary[k] for k in ("stopped", "global_step", "best_val_nme", "best_epoch", "test", "weights")
                 if k in summary}
        print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
