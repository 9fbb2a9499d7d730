# %% [markdown]
# # 5. Your own data
#
# Evaluate a landmark model on your own annotated faces, then train one on them. The only thing
# `lmref` needs is a folder in the **300W layout**: every image (`.jpg`, `.png`, `.bmp`) has a
# `.pts` file of the same name beside it holding 68 iBUG points,
#
# ```
# version: 1
# n_points:  68
# {
# 123.500 204.250
# ...            (68 lines of "x y", 1-based pixel coordinates, as the iBUG tools wrote them)
# }
# ```
#
# Subfolders are searched too, so the 300W release (`afw/`, `helen/trainset/`, `ibug/`, `lfpw/...`)
# works as it is. WFLW annotation files and COFW exports have readers as well
# (`lmref.data.readers`).
#
# This notebook makes two such folders from the synthetic generator so that it runs anywhere;
# **point `TRAIN_DIR` and `TEST_DIR` at your own folders** and everything below works the same.
# `LMREF_TUTORIAL_SMALL=1` uses a handful of faces (the test suite does).

# %%
import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import lmref
except ImportError:                         # run from tutorials/ without `pip install -e .`
    sys.path.insert(0, os.path.abspath(".."))
    import lmref

import matplotlib.pyplot as plt
import numpy as np

from lmref import landmarks, metrics
from lmref.cli import eval_summary, evaluate
from lmref.data import readers, synthetic, transforms
from lmref.detect import Landmarker

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
plt.rcParams["figure.dpi"] = 72        # figure size on screen and in the saved notebook
HERE = os.getcwd()
N_TRAIN, N_TEST, EPOCHS = (24, 12, 1) if SMALL else (440, 120, 8)
work = Path(tempfile.mkdtemp(prefix="lmref_tutorial5_"))
os.chdir(work)                      # a scratch directory: the folders below are relative to it
TRAIN_DIR, TEST_DIR = Path("my_faces_train"), Path("my_faces_test")   # <- your folders here

# %% [markdown]
# ## 1. A folder in 300W format
#
# (Skip this cell when you have your own.) `readers.write_pts` writes the 1-based `.pts` files;
# the images are JPEGs, as in 300W. A different generator seed from the one the shipped models
# were trained with, so these faces are new to them.

# %%
def write_folder(folder, n, seed):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = synthetic.generate(seed=seed, index=i, size=256, split="test")
        readers.write_image(folder / f"face_{i:04d}.jpg", s.image)
        readers.write_pts(folder / f"face_{i:04d}.pts", s.landmarks)


write_folder(TRAIN_DIR, N_TRAIN, seed=101)
write_folder(TEST_DIR, N_TEST, seed=202)
print(sorted(os.listdir(TEST_DIR))[:6], "...")
print(open(TEST_DIR / "face_0000.pts").read()[:120], "...")

# %% [markdown]
# ## 2. Read it
#
# `readers.read_300w_dir` returns one `Annotation` per image that has a `.pts`: the landmarks as
# float64 `[68, 2]` in **0-based** pixel-centre coordinates (it subtracts the 1), and the image
# path (pixels are read on demand).

# %%
faces = readers.read_300w_dir(TEST_DIR)
print(len(faces), "annotated faces;", faces[0].path, faces[0].landmarks.shape)
layout68 = landmarks.get("ibug68")

fig, axes = plt.subplots(1, 6, figsize=(13, 2.5))
for ax, a in zip(axes, faces):
    ax.imshow(a.load_image())
    ax.plot(a.landmarks[:, 0], a.landmarks[:, 1], ".", ms=2.5, color="lime")
    box = transforms.landmark_box(a.landmarks)                            # the box the models crop around
    ax.add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, ec="yellow", lw=1))
    ax.axis("off")
plt.suptitle("your faces, their 68 points and landmark boxes", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Evaluate a model on it
#
# `lmref eval --data DIR` (or `lmref.cli.evaluate` from Python) runs a model over every face:
# crop around the face box, run, map the landmarks back to the image, then NME, failure rate and
# AUC as the benchmarks compute them. Two ways to get the face box:
#
# * `boxes="gt"`: the ground-truth landmark box — the 300W protocol, measures the landmark model alone;
# * `boxes="detector"`: OpenCV's Haar detector, as a real application would; a face it misses counts
#   as a failure.
#
# The model's points are compared with the matching ground-truth points (a 51-point model with
# iBUG points 17–67), normalised by the inter-ocular distance.

# %%
MODEL = None                     # None: the shipped default model; or a name from `lmref models`, or a .safetensors
results = {}
for boxes in ("gt", "detector"):
    results[boxes] = evaluate(MODEL, str(TEST_DIR), boxes=boxes, thr=0.1)
    print(eval_summary(results[boxes]), "\n")

# %% [markdown]
# The same from a shell:
#
# ```bash
# lmref eval --data my_faces_test --boxes gt --out eval_out/     # metrics.json, nme.csv, ced.png
# ```
#
# Where does it fail? The faces with the lowest, median and highest NME, prediction (red) over
# ground truth (green):

# %%
res = results["gt"]
lm = Landmarker(MODEL, detector=None)
by_name = {Path(a.path).stem: a for a in faces}
order = np.argsort(res["nmes"])
picks = [order[0], order[len(order) // 2], order[-1]] if len(order) >= 3 else list(order)
fig, axes = plt.subplots(1, len(picks), figsize=(4 * len(picks), 4))
for ax, k in zip(np.atleast_1d(axes), picks):
    a = by_name[Path(res["names"][k]).stem]
    img = a.load_image()
    face = lm(img, boxes=[transforms.landmark_box(a.landmarks)])[0]
    ax.imshow(img)
    ax.plot(a.landmarks[:, 0], a.landmarks[:, 1], ".", ms=3, color="lime")
    ax.plot(face.landmarks[:, 0], face.landmarks[:, 1], "x", ms=3, color="red")
    ax.set_title(f"NME {res['nmes'][k]:.3f}", fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Train on your folder
#
# `torch_impl.train` takes a folder as its data source: `data.source` is the training pool (split
# 10:1 into train / validation, the checkpoint with the lowest validation NME is kept) and
# `data.test_source` the test set. Crops, augmentation (STAR's: flip with the layout's point
# permutation, rotation, scale, shift, occlusion, blur ...) and targets are built from the
# `.pts` landmarks. From a shell:
#
# ```bash
# python -m torch_impl.train configs/stud5.toml data.source=my_faces_train data.test_source=my_faces_test
# ```
#
# Here a small Stud5 (grayscale, 68 coordinates regressed directly) trains for a few epochs at
# 64×64 — minutes on a laptop CPU, not a good model; scale `input_size`, `epochs` and the model up
# for a real one.

# %%
import contextlib
import io

import torch

from torch_impl.train import TrainConfig, train

torch.set_num_threads(1)      # small tensors: one thread is faster than a contended pool
cfg = TrainConfig(arch="stud5", model={"channels": [16, 32, 64, 128, 128], "in_chans": 1},
                  lr_backbone=1e-3, lr_head=1e-3,                       # from scratch: one learning rate for all
                  data={"source": str(TRAIN_DIR), "test_source": str(TEST_DIR)},
                  num_train=N_TRAIN, num_test=N_TEST, input_size=64, epochs=EPOCHS, batch_size=16,
                  lr_schedule="cosine", out_dir="run", name="my_stud5", progress=False, num_threads=1)
with contextlib.redirect_stdout(io.StringIO()):                        # the trainer's per-epoch lines
    summary = train(cfg)
for h in summary["history"]:
    print(f"epoch {h['epoch']:2d}: train loss {h['train_loss']:.4f}, validation NME {h['val_nme']:.4f}")
print("weights:", os.path.basename(summary["weights"]))
print(f"best validation NME {summary['best_val_nme']:.4f} at epoch {summary['best_epoch']}; "
      f"test NME {summary['test']['nme']:.4f}")

# %% [markdown]
# The exported file is an ordinary lmref weights file: the NumPy engine loads it, and
# `lmref eval` / `Landmarker` use it like a shipped model.

# %%
mine = evaluate(summary["weights"], str(TEST_DIR), boxes="gt")
print(eval_summary(mine))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.4, 1]})
ep = [h["epoch"] for h in summary["history"]]
axes[0].plot(ep, [h["val_nme"] for h in summary["history"]], "-o", ms=3, label="validation NME")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("validation NME", color="C0")
axes[0].grid(alpha=0.3)
ax2 = axes[0].twinx()
ax2.plot(ep, [h["train_loss"] for h in summary["history"]], "-", color="C1", label="train loss")
ax2.set_ylabel("train loss", color="C1")
axes[0].set_title("training on the folder", fontsize=10)
for label, r in (("shipped model", results["gt"]), ("trained here", mine)):
    x, y = metrics.ced(np.asarray(r["_curve"]), thr=0.6, step=1e-3)
    axes[1].plot(x, y, label=f"{label} (NME {r['nme']:.3f})")
axes[1].set_xlabel("NME")
axes[1].set_ylabel("fraction of faces")
axes[1].set_title("CED on the test folder (each model on its own points)", fontsize=10)
axes[1].legend(fontsize=8)
axes[1].grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %%
a = faces[0]
face = Landmarker(summary["weights"], detector=None)(a.load_image(), boxes=[transforms.landmark_box(a.landmarks)])[0]
print("first test face, first five predicted points (x, y):\n", np.round(face.landmarks[:5], 1))
os.chdir(HERE)
shutil.rmtree(work)             # the example folders, the checkpoints and the exported weights
