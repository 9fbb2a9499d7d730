"""Training data: the ICME 2024 / STAR augmentation on NumPy arrays, and datasets for the trainer.

The augmentation is STAR's (``STAR:lib/dataset/augmentation.py``), which the ICME 2024 entry uses
unchanged (paper 000, section 3.1): crop the face to 256 x 256, then random horizontal flip,
rotation, scale and crop shift (one affine warp), then random occlusion, blur, gamma, noise and
grayscale on the crop. Defaults are STAR's: flip 0.5; rotation ~ N(0, 18 deg); scale ~ N(1, 0.1);
shift ~ N(0, 0.05) x crop size per axis; occlusion 0.4; blur 0.3; gamma 0.2; noise 0.2; gray 0.2.

Geometry is one 2x3 affine ``M`` (image -> crop) that includes the flip, so the landmarks are
transformed by exactly the map the pixels are warped with; a flip also renumbers the landmarks
with the layout's flip permutation. Differences from STAR, on purpose: the box blur has an odd
kernel (STAR's even kernels shift the image by half a pixel against its labels); rotation and
scale draws are clipped at 3 sigma; the occluding rectangle's fill and the noise come from the
sample's seeded generator (STAR uses os.urandom); the crop is the landmark box x ``margin``
(STAR reads a precomputed face box).

    aug = AugmentConfig()
    p = sample_augment(np.random.default_rng(0), aug)
    crop, pts, M, occ = augment(image, landmarks, layout, p, aug)

Datasets: ``make_splits(cfg)`` builds (train, val, test) for ``torch_impl.train`` from the synthetic
benchmark (``lmref.data.synthetic``; the training pool is split 10:1 into train / val) or from a 300W
directory; ``dataset.sample(i, seed)`` gives one crop (augmented from ``seed``, or not when seed is
None) and ``collate`` stacks samples into a batch of tensors with the model's layout and, for the
AAM task, STAR's point and edge map targets (``lmref.data.targets``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from lmref import landmarks as lm_layouts
from lmref.data import targets as tg
from lmref.data import transforms as tf

__all__ = ["AugmentConfig", "AugmentParams", "sample_augment", "augment_matrix", "augment",
           "apply_texture", "convert_layout", "LandmarkDataset", "make_splits", "collate",
           "describe", "input_spec"]


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

@dataclass
class AugmentConfig:
    size: int = 256                 # crop side
    margin: float = 1.25            # crop side = margin x the landmark box's larger side
    flip_rate: float = 0.5
    rot_sigma: float = 18.0         # degrees
    scale_sigma: float = 0.1
    shift_sigma: float = 0.05       # fraction of the crop size
    occ_rate: float = 0.4
    blur_rate: float = 0.3
    gamma_rate: float = 0.2
    noise_rate: float = 0.2
    gray_rate: float = 0.2


@dataclass
class AugmentParams:
    """One draw of the augmentation (all fields explicit, so a test can set them)."""
    flip: bool = False
    angle: float = 0.0                      # degrees, counter-clockwise as displayed
    scale: float = 1.0
    shift: tuple = (0.0, 0.0)               # crop pixels
    occlusion: tuple | None = None          # (x0, y0, x1, y1) crop pixels, inclusive, filled black
    blur: int = 0                           # box-blur kernel (odd), 0: none
    gamma: float | None = None
    noise: tuple | None = None              # (alpha, seed of the noise image)
    gray: bool = False


def sample_augment(rng, cfg=AugmentConfig()):
    """Draw AugmentParams with STAR's rates and spreads (see the module docstring)."""
    S = cfg.size
    p = AugmentParams()
    p.flip = bool(rng.random() < cfg.flip_rate)
    p.angle = float(np.clip(rng.normal(0, cfg.rot_sigma), -3 * cfg.rot_sigma, 3 * cfg.rot_sigma))
    p.scale = float(np.clip(rng.normal(1.0, cfg.scale_sigma), 1 - 3 * cfg.scale_sigma, 1 + 3 * cfg.scale_sigma))
    p.shift = tuple(float(v) for v in rng.normal(0, cfg.shift_sigma, 2) * S)
    if rng.random() < cfg.occ_rate:
        rh = 0.2 + 0.6 * rng.random()                       # STAR add_occ
        rw = rh - 0.2 + 0.4 * rng.random()
        cx, cy = int((S - 1) * rng.random()), int((S - 1) * rng.random())
        dh, dw = int(S / 2 * rh), int(S / 2 * rw)
        p.occlusion = (max(0, cx - dw // 2), max(0, cy - dh // 2), min(S - 1, cx + dw // 2), min(S - 1, cy + dh // 2))
    if rng.random() < cfg.blur_rate:
        k = int(S * 0.05 * rng.random())                    # STAR: (H + W) / 2 x 0.05 x U(0, 1)
        p.blur = (k | 1) if k > 1 else 0                    # odd: no half-pixel shift
    if rng.random() < cfg.gamma_rate:
        p.gamma = float(0.25 + 0.75 * rng.random() if rng.random() < 0.5 else 1.0 + 3.0 * rng.random())
    if rng.random() < cfg.noise_rate:
        p.noise = (float(0.5 * rng.random()), int(rng.integers(2 ** 31)))
    p.gray = bool(rng.random() < cfg.gray_rate)
    return p


def augment_matrix(box, params, cfg=AugmentConfig()):
    """Image -> crop affine: crop the square box x margin, turn by params.angle, scale by
    params.scale about the crop centre, shift, then mirror the crop if params.flip. -> 2x3"""
    M = tf.crop_matrix(box, cfg.size, cfg.margin, params.angle, params.scale, params.shift)
    if params.flip:
        M = tf.compose_affine(tf.flip_matrix(cfg.size), M)
    return M


def apply_texture(image, params):
    """Occlusion, blur, gamma, noise, gray on a crop (STAR's RandomTexture order). The crop is uint8,
    or any dtype with values in [0, 255] (the result keeps the dtype). None of these move a pixel,
    so the landmarks are unchanged."""
    img = np.array(image, copy=True)
    if params.occlusion is not None:
        x0, y0, x1, y1 = params.occlusion
        img[y0:y1 + 1, x0:x1 + 1] = 0
    if params.blur > 1:
        img = cv2.blur(img, (params.blur, params.blur))
    if params.gamma is not None:
        img = (((np.maximum(img, 0) / 255.0) ** params.gamma) * 255).astype(img.dtype)
    if params.noise is not None:
        alpha, seed = params.noise
        noise = np.random.default_rng(seed).integers(0, 256, img.shape, dtype=np.uint8)
        img = ((1 - alpha) * img + alpha * noise).astype(img.dtype)
    if params.gray and img.ndim == 3 and img.shape[2] == 3:
        img = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    return img


def augment(image, landmarks, layout, params, cfg=AugmentConfig(), box=None):
    """Crop + augment one face.

    image [H, W, C]; landmarks [N, 2] image pixels in ``layout``; box: the face box to crop
    (default: the landmark box). -> (crop uint8 [S, S, C], landmarks [N, 2] crop pixels,
    M 2x3 image -> crop, occluded [N] bool: inside the occluding rectangle)"""
    lay = lm_layouts.get(layout)
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (lay.num_points, 2):
        raise ValueError(f"landmarks: expected [{lay.num_points}, 2] for layout {lay.name}, got {pts.shape}")
    box = tf.landmark_box(pts) if box is None else box
    M = augment_matrix(box, params, cfg)
    if params.flip:
        # warp without the mirror, then mirror the pixels: exactly x -> (S - 1) - x, which is the
        # flip in M (a mirrored warp would round OpenCV's 1/32-pixel sample positions differently)
        F = tf.flip_matrix(cfg.size)
        crop = np.ascontiguousarray(tf.warp_image(image, tf.compose_affine(F, M), cfg.size)[:, ::-1])
    else:
        crop = tf.warp_image(image, M, cfg.size)
    out = tf.apply_affine(pts, M)
    if params.flip:
        out = out[list(lay.flip)]
    crop = apply_texture(crop, params)
    occ = np.zeros(len(out), bool)
    if params.occlusion is not None:
        x0, y0, x1, y1 = params.occlusion
        occ = (out[:, 0] >= x0 - 0.5) & (out[:, 0] <= x1 + 0.5) & (out[:, 1] >= y0 - 0.5) & (out[:, 1] <= y1 + 0.5)
    return crop, out, M, occ


def convert_layout(points, src, dst):
    """Landmarks from layout src to dst: identity, or iBUG 68 -> inner 51 (drop the jaw).
    points [..., N_src, 2] -> [..., N_dst, 2]"""
    s, d = lm_layouts.get(src).name, lm_layouts.get(dst).name
    if s == d:
        return points
    if (s, d) == ("ibug68", "inner51"):
        return points[..., list(lm_layouts.INNER51_FROM_IBUG68), :]
    raise ValueError(f"cannot convert landmarks from layout {s} to {d} (only ibug68 -> inner51)")


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

class LandmarkDataset(torch.utils.data.Dataset):
    """Faces -> crops for a model.

    records   a sequence whose items have ``landmarks`` [N, 2] and an ``image`` (or ``load_image()``),
              optionally ``box`` and ``occluded`` (lmref.data synthetic Samples / SyntheticSplit,
              lmref.data.readers Annotations)
    indices   which records (default all)
    layout    the records' layout; channels: 3 (RGB) or 1 (gray); mean, std: per channel, on [0, 1]
    seed      base seed of the augmentation when the dataset is indexed directly (__getitem__ uses
              seed (seed, epoch, i) in train mode, none in eval mode)
    """

    def __init__(self, records, indices=None, layout="ibug68", augment_cfg=None, train=True,
                 channels=3, mean=0.5, std=0.5, seed=0, use_box=False, name=""):
        self.records = records
        self.indices = np.arange(len(records)) if indices is None else np.asarray(indices, np.int64)
        self.layout = lm_layouts.get(layout)
        self.cfg = augment_cfg or AugmentConfig()
        self.train = train
        if channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        self.channels = channels
        self.mean = np.broadcast_to(np.asarray(mean, np.float32), (channels,)).copy()
        self.std = np.broadcast_to(np.asarray(std, np.float32), (channels,)).copy()
        self.seed, self.epoch = seed, 0
        self.use_box = use_box
        self.name = name

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def _record(self, i):
        r = self.records[int(self.indices[i])]
        img = r.image if getattr(r, "image", None) is not None else r.load_image()
        return r, np.asarray(img)

    def sample(self, i, seed=None):
        """Crop i (augmented with a generator seeded by ``seed``; not augmented when None).
        -> dict: image float32 [C, S, S] normalised, landmarks float32 [N, 2] crop pixels (the
        records' layout), occluded bool [N], matrix float64 [2, 3] image -> crop, index, layout"""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)}")
        r, img = self._record(i)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        params = AugmentParams() if seed is None else sample_augment(np.random.default_rng(seed), self.cfg)
        box = getattr(r, "box", None) if self.use_box else None
        crop, pts, M, occ_rect = augment(img, r.landmarks, self.layout, params, self.cfg, box)
        occ = getattr(r, "occluded", None)
        occ = np.zeros(len(pts), bool) if occ is None else np.asarray(occ, bool)
        if params.flip:
            occ = occ[list(self.layout.flip)]
        occ = occ | occ_rect
        x = crop.astype(np.float32) / 255.0
        if self.channels == 1:
            x = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
        x = (x - self.mean) / self.std
        return {"image": np.ascontiguousarray(x.transpose(2, 0, 1)), "landmarks": pts.astype(np.float32),
                "occluded": occ, "matrix": M, "index": int(i), "layout": self.layout.name}

    def __getitem__(self, i):
        seed = None
        if self.train:
            seed = int(np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1)[0])
        return self.sample(i, seed)


def collate(samples, layout=None, aam_targets=False):
    """Stack samples into a batch: image [B, C, S, S], landmarks [B, N, 2] (converted to ``layout``),
    occluded [B, N], matrix [B, 2, 3] (float64), index [B]; with aam_targets also STAR's pointmaps
    [B, N, S/4, S/4] and edgemaps [B, E, S/4, S/4]. -> dict of tensors"""
    if not samples:
        raise ValueError("collate: no samples")
    src = samples[0]["layout"]
    dst = lm_layouts.get(layout) if layout is not None else lm_layouts.get(src)
    pts = convert_layout(np.stack([s["landmarks"] for s in samples]), src, dst)
    occ = convert_layout(np.stack([s["occluded"] for s in samples])[..., None].repeat(2, -1), src, dst)[..., 0]
    batch = {"image": torch.from_numpy(np.stack([s["image"] for s in samples])),
             "landmarks": torch.from_numpy(np.ascontiguousarray(pts, np.float32)),
             "occluded": torch.from_numpy(np.ascontiguousarray(occ)),
             "matrix": torch.from_numpy(np.stack([s["matrix"] for s in samples])),
             "index": torch.tensor([s["index"] for s in samples])}
    if aam_targets:
        size = samples[0]["image"].shape[-1]
        batch["pointmaps"] = torch.from_numpy(np.stack([tg.point_heatmaps(p, size) for p in pts]))
        batch["edgemaps"] = torch.from_numpy(np.stack([tg.edge_maps(p, dst, size) for p in pts]))
    return batch


def _channels(cfg):
    """Input channels of the model a TrainConfig describes (its Config's in_chans, else 3)."""
    from lmref import models
    try:
        mcfg = models.get(cfg.arch).Config(**cfg.model)
    except Exception:                                   # an arch without a registry entry
        return int(cfg.model.get("in_chans", 3))
    return int(getattr(mcfg, "in_chans", 3))


def input_spec(cfg):
    """The ``input`` entry of the weights manifest for models trained on these datasets."""
    c = _channels(cfg)
    d = dict(cfg.data)
    mean, std = d.get("mean", 0.5), d.get("std", 0.5)
    return {"size": [cfg.input_size, cfg.input_size], "channels": c, "color": "RGB" if c == 3 else "GRAY",
            "mean": [float(v) for v in np.broadcast_to(np.asarray(mean, float), (c,))],
            "std": [float(v) for v in np.broadcast_to(np.asarray(std, float), (c,))]}


def make_splits(cfg):
    """(train, val, test) LandmarkDatasets for a torch_impl.train TrainConfig.

    cfg.data keys (all optional): source ("synthetic" or a directory of images + .pts), test_source
    (default: the synthetic test split, or source), seed (of the synthetic data, default 0),
    render_size (synthetic image side, default 256), synthetic_version (the renderer,
    ``lmref.data.synthetic.VERSIONS``; default 2, what the experiments, the teachers and the shipped
    models were trained on: a config asks for 3 explicitly), cache_dir, workers, margin, mean, std.
    The training pool (cfg.num_train faces) is split into train / val with cfg.val_ratio (the last
    faces are the validation set); the test set has cfg.num_test faces."""
    d = dict(cfg.data)
    known = {"source", "test_source", "seed", "render_size", "synthetic_version", "cache_dir", "workers", "margin",
             "mean", "std"}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"cfg.data: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    aug = AugmentConfig(size=cfg.input_size, margin=float(d.get("margin", 1.25)))
    common = dict(augment_cfg=aug, channels=_channels(cfg), mean=d.get("mean", 0.5), std=d.get("std", 0.5),
                  seed=cfg.seed)
    source = d.get("source", "synthetic")

    def records(src, split, n):
        if src == "synthetic":
            from lmref.data import synthetic
            return synthetic.load_split(split, n=n, seed=int(d.get("seed", 0)), size=int(d.get("render_size", 256)),
                                        cache_dir=d.get("cache_dir"), workers=int(d.get("workers", 1)),
                                        version=int(d.get("synthetic_version", 2)))
        from lmref.data import readers
        recs = readers.read_300w_dir(src)
        if not recs:
            raise ValueError(f"data source {src!r}: no images with .pts files")
        return recs[:n] if n else recs

    pool = records(source, "train", cfg.num_train)
    n = len(pool)
    n_val = int(round(n * cfg.val_ratio))
    if n - n_val <= 0:
        raise ValueError(f"num_train={n} leaves no training faces after the {cfg.val_ratio:.3f} validation split")
    layout = "ibug68"
    train = LandmarkDataset(pool, np.arange(n - n_val), layout, train=True, name=f"{source}:train", **common)
    val = LandmarkDataset(pool, np.arange(n - n_val, n), layout, train=False, name=f"{source}:val", **common)
    test_src = d.get("test_source", source)
    test = LandmarkDataset(records(test_src, "test", cfg.num_test), None, layout, train=False,
                           name=f"{test_src}:test", **common)
    return train, val, test


SPLIT_KEYS = ("version", "split", "seed", "n", "size", "sha256", "numpy", "opencv")


def split_record(dataset):
    """Which render of a synthetic split a dataset holds -> {version, split, seed, n, size, sha256,
    numpy, opencv} from the split's cache manifest (sha256 over its image and label files; the numpy
    and OpenCV versions that rendered it), or None for data not from ``lmref.data.synthetic``.
    dataset: an ``lmref.data.synthetic.SyntheticSplit`` or a ``torch_impl.data.LandmarkDataset`` on one.
    The trainer stores it in a manifest as ``training["test_split"] = split_record(test_ds)``."""
    man = getattr(getattr(dataset, "records", dataset), "manifest", None)
    if not isinstance(man, dict) or "sha256" not in man:
        return None
    return {k: man[k] for k in SPLIT_KEYS if k in man}


def describe(ds):
    """A JSON-able description of a dataset (for the weights manifest)."""
    out = {"name": ds.name, "faces": len(ds), "layout": ds.layout.name, "augment": asdict(ds.cfg),
           "channels": ds.channels, "mean": ds.mean.tolist(), "std": ds.std.tolist()}
    man = getattr(ds.records, "manifest", None)
    if man:
        out["synthetic"] = {k: man[k] for k in ("version", "split", "seed", "n", "size", "sha256") if k in man}
    return out
