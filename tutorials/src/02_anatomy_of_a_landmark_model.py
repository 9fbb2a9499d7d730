# %% [markdown]
# # 2. Anatomy of a landmark model
#
# The shipped student is the landmark model of the ICME 2024 low-power entry: a **MobileViT-v2 ×0.5**
# backbone and the **AAM heatmap head** of ADNet/STAR, 51 inner iBUG points, 1.14 M parameters,
# trained on the synthetic faces (its manifest says how, and how well). This notebook runs it on
# one face with `lmref.trace()` recording every op, and looks at what flows through it:
#
# 1. feature maps stage by stage, and inside one attention layer;
# 2. the head's three outputs — heatmaps, point maps, edge maps — the fixed **E2P** transform and
#    the **fused heatmap**;
# 3. **soft-argmax** and its coordinate convention, back to image pixels;
#
# and then the same for the shipped **Lite-HRNet Plus**: the channel attention weights of its SCAF
# fusion and the contributions of its multi-resolution (MR) head.

# %%
import os
import sys

try:
    import lmref
except ImportError:                         # run from tutorials/ without `pip install -e .`
    sys.path.insert(0, os.path.abspath(".."))
    import lmref

import matplotlib.pyplot as plt
import numpy as np

from lmref import landmarks, metrics, ops
from lmref.data import synthetic, transforms
from lmref.detect import Landmarker, resolve_model

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
plt.rcParams["figure.dpi"] = 72        # figure size on screen and in the saved notebook
np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %% [markdown]
# ## 1. One face, one traced forward pass
#
# A test face from the synthetic generator (exact ground truth, so we can check the answer).
# `Landmarker` does what an application does — crop the face box to the model's input size and
# normalise the pixels as the weights' manifest says — and we run the model ourselves inside
# `lmref.trace()`.

# %%
lm = Landmarker(None, detector=None)               # the default shipped model
model = lm.model
print(os.path.basename(resolve_model(None)), "-", model.arch, model.manifest["layout"])
print({k: model.manifest["input"][k] for k in ("size", "color", "mean", "std")})
training = model.manifest["training"]
print(f"trained by {training['recipe']}: {training['config']['epochs']} epochs on "
      f"{training['data']['faces']} synthetic faces, test NME {training['test']['nme']:.3f}")
layout = landmarks.get(model.manifest["layout"])

sample = synthetic.generate(seed=7, index=3, split="test")
gt68 = sample.landmarks                                               # [68, 2] image pixels
x, faces = lm.prepare(sample.image, boxes=[transforms.landmark_box(gt68)])   # x: [1, 3, S, S]
face = faces[0]

with lmref.trace() as t:
    out = model(x.astype(np.float32))
print(f"{len(t)} traced ops; outputs: " + ", ".join(f"{k} {list(v.shape)}" for k, v in out.items()))
print("\n".join(t.table().splitlines()[:6]), "\n ...")

# how well it did on this face: crop pixels -> photo pixels, against the 51 inner ground-truth points
gt51 = gt68[list(landmarks.INNER51_FROM_IBUG68)]
pred = transforms.apply_affine(out["landmarks"][0], transforms.invert_affine(face.matrix))
err = np.linalg.norm(pred - gt51, axis=-1)                            # [51] pixels of the photo
print(f"NME on this face {metrics.nme(pred[None], gt51[None], layout)[0]:.3f}; "
      f"point errors {np.median(err):.1f} px median, {err.max():.1f} px max")

# %% [markdown]
# Every record is named by the state-dict path of the weights that produced it — the same names
# the weights file, the torch model and a golden bundle (notebook 4) use.
#
# ## 2. Feature maps, stage by stage
#
# MobileViT-v2 halves the resolution five times: a stem and five stages, the last three of which
# end in a MobileViT-v2 block (local conv, unfold to patches, separable self-attention, fold back).
# Below, each stage's output (its last traced op) as the mean absolute activation over channels,
# and the single channel with the largest variance:

# %%
stage_names = ["backbone.stem:silu"] + [
    [r.name for r in t if r.name.startswith(f"backbone.stages.{s}.")][-1] for s in range(5)]
fig, axes = plt.subplots(2, 7, figsize=(15, 4.6))
axes[0, 0].imshow(face.crop)
axes[0, 0].set_title("input crop", fontsize=9)
axes[1, 0].axis("off")
for k, name in enumerate(stage_names, start=1):
    a = t[name].output[0]                                             # [C, h, w]
    axes[0, k].imshow(np.abs(a).mean(0), cmap="viridis")
    axes[0, k].set_title(f"{name.split(':')[0].replace('backbone.', '')}\n{list(a.shape)}", fontsize=8)
    c = int(a.reshape(len(a), -1).var(1).argmax())
    axes[1, k].imshow(a[c], cmap="coolwarm")
    axes[1, k].set_title(f"channel {c}", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 1].set_ylabel("mean |x| over C", fontsize=8)
axes[1, 1].set_ylabel("most variable channel", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Inside one attention layer
#
# The trace holds the *input* of every attention op too (the output of the group norm just before
# it) and the weights are in `model.params`, so the context scores — softmax over the N patches,
# one distribution per in-patch position (notebook 1) — can be recomputed exactly. Here the first
# attention layer of stage 2 (1/8 of the input resolution, 2×2 patches):

# %%
scope_ = "backbone.stages.2.1.transformer.0"
xin = t[f"{scope_}.norm1:group_norm"].output                          # [1, d, P, N]
p = model.params["backbone"]["stages"]["2"]["1"]["transformer"]["0"]["attn"]
d = xin.shape[1]
w_qkv = p["qkv_proj"]["weight"].reshape(1 + 2 * d, d)
query = np.einsum("c,bcpn->bpn", w_qkv[0], xin) + p["qkv_proj"]["bias"][0]   # I: [1, P, N]
scores = ops.softmax(query, -1)                                       # c_s over the patches
# check: the recomputed layer equals the traced op's output
y = ops.separable_self_attention(xin, p["qkv_proj"]["weight"], p["qkv_proj"]["bias"],
                                 p["out_proj"]["weight"], p["out_proj"]["bias"])
print("recomputed attention equals the traced output:",
      np.allclose(y, t[f"{scope_}.attn:separable_self_attention"].output))

nh = nw = int(np.sqrt(xin.shape[3]))
fig, axes = plt.subplots(1, 5, figsize=(13, 2.8))
axes[0].imshow(face.crop)
axes[0].set_title("input crop", fontsize=9)
for k in range(4):
    axes[k + 1].imshow(scores[0, k].reshape(nh, nw), cmap="magma")
    axes[k + 1].set_title(f"context scores, p = {k}\nmax {scores[0, k].max():.3f} (uniform {1 / scores.shape[-1]:.4f})",
                          fontsize=8)
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The AAM head: heatmaps, point maps, edge maps, E2P, fusion
#
# The backbone's output (256 channels at 1/32 of the input) is upsampled (bilinear) to the heatmap
# grid at 1/4 of the input and three 1×1 convolutions read it:
#
# * **heatmaps** H = ReLU(InstanceNorm(conv)) — one per landmark, where the landmark is;
# * **point maps** P = sigmoid(conv) — one per landmark, trained toward STAR's point targets;
# * **edge maps** E = sigmoid(conv) — one per *boundary* (eyebrows, eyes, nose, lips ...),
#   trained toward a thin line through that boundary's landmarks.
#
# The fixed **E2P** transform turns edge maps into a per-landmark map: $\mathrm{E2P}(E)_p = \sum_e
# M_{pe} E_e + b_p$, with $M_{pe} = 1$ iff landmark p lies on boundary e (and $b_p = 1$ for a landmark
# on no boundary). The fused heatmap multiplies the three: $H' = \mathrm{E2P}(E) \cdot P \cdot H$ — a
# landmark's heatmap is kept only where its point map and its boundary agree.

# %%
M, b = layout.edge_matrix()                                           # [N, E], [N]
fig, ax = plt.subplots(figsize=(12, 2.6))
ax.imshow(M.T, cmap="Greys", aspect="auto", interpolation="nearest")
ax.set_yticks(range(layout.num_edges), layout.edge_names, fontsize=8)
ax.set_xlabel("landmark p (inner 51 layout = iBUG 17..67)")
ax.set_title("E2P matrix M[p, e]: landmark p lies on boundary e", fontsize=10)
plt.tight_layout()
plt.show()
print("landmarks on no boundary (b_p = 1):", np.flatnonzero(b).tolist() or f"none in {layout.name}")

# %%
k = int(err.argmin())                                                 # the landmark it places best on this face
e = next(i for i, (name, idx, _) in enumerate(layout.edges) if k in idx)
H, P, E = out["heatmaps"][0], out["pointmaps"][0], out["edgemaps"][0]
E2P = t["head.e2p:aam_fusion/e2p"].output[0]                          # recorded inside aam_fusion
Hf = out["fusion_heatmaps"][0]
panels = [(face.crop, "input crop", None), (H[k], f"heatmap H ({layout.point_names[k]})", "viridis"),
          (P[k], "point map P", "viridis"), (E[e], f"edge map E ({layout.edge_names[e]})", "viridis"),
          (E2P[k], "E2P(E) for this landmark", "viridis"), (Hf[k], "fused H' = E2P(E) P H", "viridis")]
fig, axes = plt.subplots(1, 6, figsize=(15, 2.9))
for ax, (img, title, cmap) in zip(axes, panels):
    ax.imshow(img, cmap=cmap)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
plt.tight_layout()
plt.show()

fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
hh, ww = H.shape[1:]
for ax, (img, title) in zip(axes, [(H.sum(0), "sum of heatmaps H"), (P.max(0), "max of point maps P"),
                                   (E.max(0), "max of edge maps E"), (Hf.sum(0), "sum of fused heatmaps H'")]):
    ax.imshow(face.crop, extent=(-0.5, ww - 0.5, hh - 0.5, -0.5))     # the crop under the heatmap grid
    ax.imshow(img, cmap="inferno", alpha=0.75)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# What these maps say about *this* model: the shipped student is a small training run (its
# manifest, printed in section 1, has the recipe and the test NME), and it shows. Its heatmaps and
# point maps are broad blobs: at this 96×96 input the head reads a 3×3 backbone map, bilinearly
# upsampled to 24×24, so no map can be sharper than that grid allows. Its landmarks are still
# close (the NME on this face is printed in section 1), because the
# STAR loss and the soft-argmax train the *centre of mass* of each fused heatmap, not its peak: a
# broad blob centred in the right place is a correct answer for soft-argmax. Section 4 shows what
# that means for argmax.
#
# ## 4. Soft-argmax and the coordinate convention
#
# STAR's decoder reads a landmark position off its fused heatmap as a normalised expectation over
# a grid whose first and last pixel centres sit at −1 and +1:
#
# $$ X_j = \frac{2j}{w-1} - 1,\quad Y_i = \frac{2i}{h-1} - 1,\qquad
#    \hat x = \frac{\sum_{ij} X_j H'_{ij}}{\max(\sum_{ij} H'_{ij}, 10^{-6})},\quad
#    \hat y = \frac{\sum_{ij} Y_i H'_{ij}}{\max(\sum_{ij} H'_{ij}, 10^{-6})} $$
#
# and maps $[-1, 1]$ to input pixels with STAR's rule $x = ((\hat x + 1) W - 1) / 2$ (pixel centres
# at integers: −1 → −0.5, the left edge of pixel 0; +1 → W − 0.5). By hand, for every landmark:

# %%
h, w = Hf.shape[1:]
X = 2 * np.arange(w) / (w - 1) - 1                                    # [w]
Y = 2 * np.arange(h) / (h - 1) - 1                                    # [h]
S = np.maximum(Hf.sum(axis=(1, 2)), 1e-6)                             # [N]
xy_hat = np.stack([(Hf * X[None, None, :]).sum((1, 2)) / S,
                   (Hf * Y[None, :, None]).sum((1, 2)) / S], -1)      # [N, 2] in [-1, 1]
print("by hand vs the traced soft_argmax:", np.abs(xy_hat - t["head.decoder:soft_argmax"].output[0]).max())

W_in = H_in = x.shape[-1]
xy_px = ((xy_hat + 1) * np.array([W_in, H_in]) - 1) / 2               # crop pixels
print("crop pixels vs the model's 'landmarks' output:", np.abs(xy_px - out["landmarks"][0]).max())
# back to the photo: invert the crop's similarity transform
xy_img = transforms.apply_affine(xy_px, transforms.invert_affine(face.matrix))
print(f"NME vs the ground truth (inter-ocular): {metrics.nme(xy_img[None], gt51[None], layout)[0]:.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 1.2]})
hm = Hf[k]
axes[0].imshow(hm, cmap="viridis", extent=(-1 - 1 / (w - 1), 1 + 1 / (w - 1), 1 + 1 / (h - 1), -1 - 1 / (h - 1)))
axes[0].plot(*xy_hat[k], "r+", ms=14, mew=2, label="soft-argmax")
am, _ = ops.argmax_subpixel(Hf[None, k:k + 1])
am_n = 2 * am[0, 0] / np.array([w - 1, h - 1]) - 1
axes[0].plot(*am_n, "wx", ms=9, mew=2, label="argmax (+ quarter pixel)")
axes[0].set_xlabel("x̂ (pixel centres from -1 to +1)")
axes[0].set_ylabel("ŷ")
axes[0].set_title(f"fused heatmap of {layout.point_names[k]}, {h}x{w} grid", fontsize=9)
axes[0].legend(fontsize=8, loc="lower left")
axes[1].imshow(sample.image)
axes[1].plot(gt51[:, 0], gt51[:, 1], "o", ms=3, mfc="none", color="lime", label="ground truth")
axes[1].plot(xy_img[:, 0], xy_img[:, 1], ".", ms=4, color="red", label="prediction")
box = transforms.landmark_box(gt68)
axes[1].add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, ec="yellow", lw=1))
axes[1].legend(fontsize=8, loc="lower left")
axes[1].set_title("back in the photo", fontsize=9)
axes[1].axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# Soft-argmax is differentiable and sub-pixel, and it is an *average*: a heatmap with two bumps, or
# a long tail, pulls it between them. Argmax takes the highest peak, quantised to the heatmap grid
# (plus HRNet's quarter-pixel nudge). Put both on the same grid convention and compare — for a
# model trained through soft-argmax, the argmax of its heatmaps is not a landmark estimate until
# the heatmaps become sharp:

# %%
am_all, _ = ops.argmax_subpixel(Hf[None])                              # [1, N, 2] heatmap pixels (x, y)
am_hat = 2 * am_all[0] / np.array([w - 1, h - 1]) - 1                  # the same grid X_j = 2j/(w-1) - 1
am_px = ops.normalized_to_pixels(am_hat, W_in, H_in)                    # -> crop pixels
gap = np.linalg.norm(xy_px - am_px, axis=-1)                            # [N]
print(f"|soft-argmax - argmax| over the {len(gap)} landmarks: median {np.median(gap):.2f}, "
      f"max {gap.max():.2f} crop pixels (heatmap stride {W_in // w})")
peaky = Hf.max(axis=(1, 2)) / np.maximum(Hf.sum(axis=(1, 2)), 1e-6)     # share of the mass in the top pixel
print(f"correlation of the gap with how peaked the heatmap is: {np.corrcoef(gap, peaky)[0, 1]:+.2f}")

# %% [markdown]
# ## 5. Lite-HRNet Plus: SCAF weights and the MR head
#
# Lite-HRNet keeps four branches at 1/4, 1/8, 1/16 and 1/32 of the input resolution and repeatedly
# exchanges information between them. Lite-HRNet Plus changes two things:
#
# * **SCAF** (stepped channel attention fusion) replaces the 1×1-conv fusion: to add branch j into
#   branch i, it takes the channel-mean map of branch j, resizes it to branch i, and scales it
#   per channel by an attention vector $a_i = \sigma(\mathrm{fc}_2(\mathrm{ReLU}(\mathrm{fc}_1(\mathrm{GAP}(x_i)))))$
#   computed from the *receiving* branch;
# * the **MR head** predicts heatmaps from *every* branch with a 1×1 conv, upsamples them to the
#   1/4 grid and sums them, instead of reading the highest-resolution branch alone.
#
# The shipped `litehrnet_plus` is the best Lite-HRNet Plus of the `litehrnet` experiment
# (`benchmarks/results/litehrnet.md`): trained from scratch on the synthetic faces at 64×64 for a
# few CPU minutes, far from the paper's 210 epochs; its manifest says which size and loss won and how
# well it did. Its heatmaps are on the 1/4 grid of the input.

# %%
hr = Landmarker("litehrnet_plus", detector=None)
training = hr.model.manifest["training"]
run = training["config"]
print(f"shipped Lite-HRNet Plus: run {run['name']} ({run['heatmap_loss'].upper()} loss, {run['epochs']} epochs), "
      f"input {hr.model.manifest['input']['size']}, test NME {training['test']['nme']:.3f}")
hr_layout = landmarks.get(hr.model.manifest["layout"])
x_hr, faces_hr = hr.prepare(sample.image, boxes=[transforms.landmark_box(gt68)])
with lmref.trace() as t_hr:
    heat = hr.model(x_hr.astype(np.float32))                            # [1, 68, S/4, S/4]
print(f"{len(t_hr)} traced ops, heatmaps {list(heat.shape)}")
S_hr = hr.model.manifest["input"]["size"][0]
scaf = [r for r in t_hr if r.op == "sigmoid" and ".fc2" in r.name]     # one attention vector per pair (i, j)
print(f"{len(scaf)} SCAF attention vectors, e.g. {scaf[0].name} {list(scaf[0].output.shape)}")

# %%
# The attention vectors of the last fusion module, one row per (sending j -> receiving i) pair.
last_module = scaf[-1].name.split(".fuse_layers")[0]
rows = [r for r in scaf if r.name.startswith(last_module + ".")]
fig, axes = plt.subplots(len(rows), 1, figsize=(11, 0.5 * len(rows) + 1.0), squeeze=False)
for ax, r in zip(axes[:, 0], rows):
    i, j = r.name.split("fuse_layers.")[1].split(".fc2")[0].split(".")
    ax.imshow(r.output, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks([0], [f"{j} -> {i}"], fontsize=8)
    ax.set_xticks([])
axes[-1, 0].set_xlabel("channel of the receiving branch (colour: attention weight, 0 to 1)")
fig.suptitle(f"SCAF attention a_i in {last_module.replace('backbone.', '')} (branch j -> branch i)", fontsize=9)
plt.tight_layout()
plt.show()

# %%
contrib = {}                                                           # MR head: branch -> its heatmaps on the 1/4 grid
for r in t_hr:
    if r.name.startswith("keypoint_head.final_layers") and r.op in ("conv2d", "interpolate"):
        contrib[r.name.split(":")[0].replace("keypoint_head.final_layers.", "branch ")] = r.output
kk = hr_layout.point_names.index("nose_tip")
fig, axes = plt.subplots(1, len(contrib) + 2, figsize=(3 * (len(contrib) + 2), 3))
axes[0].imshow(faces_hr[0].crop)
axes[0].set_title(f"input crop ({S_hr}x{S_hr})", fontsize=8)
lim = max(np.abs(a[0, kk]).max() for a in contrib.values())
for ax, (name, a) in zip(axes[1:], contrib.items()):
    ax.imshow(a[0, kk], cmap="coolwarm", vmin=-lim, vmax=lim)              # red > 0 > blue, one scale for all
    ax.set_title(f"{name} (1/{4 * 2 ** int(name[-1])} res.)", fontsize=8)
axes[-1].imshow(heat[0, kk], cmap="viridis")
axes[-1].set_title("MR head output = sum", fontsize=8)
for ax in axes:
    ax.axis("off")
plt.suptitle(f"MR head: each branch's heatmap for {hr_layout.point_names[kk]}, upsampled to the 1/4 grid",
             fontsize=9)
plt.tight_layout()
plt.show()
print("sum of the branch contributions equals the output:", np.allclose(sum(contrib.values()), heat, atol=1e-5))
peak = heat[0, kk].argmax()
print("each branch's value at the peak of the sum:",
      {n: round(float(a[0, kk].flat[peak]), 3) for n, a in contrib.items()}, "sum:", round(float(heat[0, kk].flat[peak]), 3))

# %% [markdown]
# Which resolution carries a landmark is learned. In the shipped model (values printed above) the
# nose-tip peak comes mostly from branch 1 at 1/8 resolution; the 1/16 branch adds a broad, mostly
# negative offset that lowers the background, and the 1/4 and 1/32 branches add little. At a 64×64
# input the 1/8 grid is only 8×8 cells, so the summed map is a smooth bump that the argmax decoder
# reads to the nearest 1/4-grid pixel. The MR head lets each resolution add what it knows; the SCAF
# weights above decide, per channel, how much of each other branch every branch takes in.

