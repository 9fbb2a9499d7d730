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
#
# Stages are numbered from 0, as in the weights (`backbone.stages.0` ... `backbone.stages.4`) and
# in notebook 1. Every NME is printed next to the mean-shape baseline of notebook 0 (the average
# face placed in the same box): a model is only as good as its margin over that.

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
from IPython.display import Markdown, display

from lmref import landmarks, metrics, ops, viz
from lmref.data import synthetic, transforms
from lmref.detect import Landmarker, resolve_model

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
plt.rcParams.update(viz.NOTEBOOK_RC)   # figure and text sizes readable on HiDPI screens
np.set_printoptions(precision=4, suppress=True, linewidth=110)


def say(text):
    """Show Markdown written from computed numbers (so the text cannot disagree with them)."""
    display(Markdown(text))


# the shipped models' test faces (16 with LMREF_TUTORIAL_SMALL=1): only their landmarks are used,
# for the mean-shape baseline
test = synthetic.load_split("test", n=16 if SMALL else 500, size=64 if SMALL else 128)
INNER = list(landmarks.INNER51_FROM_IBUG68)
base68 = metrics.nme(metrics.mean_shape_prediction(test.landmarks), test.landmarks, "ibug68")   # leave-one-out
base51 = metrics.nme(metrics.mean_shape_prediction(test.landmarks)[:, INNER], test.landmarks[:, INNER], "inner51")

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
gt51 = gt68[INNER]
pred = transforms.apply_affine(out["landmarks"][0], transforms.invert_affine(face.matrix))
err = np.linalg.norm(pred - gt51, axis=-1)                            # [51] pixels of the photo
nme_face = metrics.nme(pred[None], gt51[None], layout)[0]
mean_face = metrics.mean_shape_prediction(gt68[None], test.landmarks)[0, INNER]   # the average face in this box
say(f"Trained by `{training['recipe']}` for {training['config']['epochs']} epochs on {training['data']['faces']} "
    f"synthetic faces. **On this face: NME {nme_face:.3f}** (point errors {np.median(err):.1f} px median, "
    f"{err.max():.1f} px max); the mean shape in the same box scores "
    f"{metrics.nme(mean_face[None], gt51[None], layout)[0]:.3f}. **On the {training['test']['count']} test faces: "
    f"NME {training['test']['nme']:.3f}** (manifest), the mean shape {base51.mean():.3f} on the same 51 points.")

# %% [markdown]
# Every record is named by the state-dict path of the weights that produced it — the same names
# the weights file, the torch model and a golden bundle (notebook 4) use.
#
# ## 2. Feature maps, stage by stage
#
# MobileViT-v2 has a stem and five stages, `stages.0` to `stages.4`; the last three end in a
# MobileViT-v2 block (local conv, unfold to patches, separable self-attention, fold back). Below,
# each stage's output (its last traced op): the mean absolute activation over channels, and the single
# channel with the largest variance. Each map is divided by its own maximum (absolute value) so that
# one colour scale fits all of them; the shapes in the titles give the resolution.

# %%
stage_names = ["backbone.stem:silu"] + [
    [r.name for r in t if r.name.startswith(f"backbone.stages.{s}.")][-1] for s in range(5)]
fig, axes = plt.subplots(2, 7, figsize=(10.5, 3.9), layout="constrained")
viz.show(axes[0, 0], face.crop, "input crop")
axes[1, 0].axis("off")
for k, name in enumerate(stage_names, start=1):
    a = t[name].output[0]                                             # [C, h, w]
    mag = np.abs(a).mean(0)
    short = "stem" if k == 1 else f"stages.{k - 2}"
    top = viz.show(axes[0, k], mag / mag.max(), f"{short}\n{a.shape[1]}x{a.shape[2]}", cmap="viridis", vmin=0, vmax=1)
    c = int(a.reshape(len(a), -1).var(1).argmax())
    bottom = viz.show(axes[1, k], a[c] / np.abs(a[c]).max(), f"channel {c}", cmap="coolwarm", vmin=-1, vmax=1)
axes[0, 1].set_ylabel("mean |x| over C")
axes[1, 1].set_ylabel("most variable channel")
viz.colorbar(axes[0, -1], top, label="/ its max")
viz.colorbar(axes[1, -1], bottom, label="/ its max |x|")
plt.show()
sizes = [t[n].output.shape[2] for n in stage_names]
say("Map sides: " + ", ".join(f"{'stem' if i == 0 else f'stages.{i - 1}'} {s}" for i, s in enumerate(sizes))
    + f" (input {x.shape[-1]}). The last one is not {x.shape[-1]}/32 = {x.shape[-1] / 32:g}: section 3 shows why.")

# %% [markdown]
# ### Inside one attention layer
#
# The trace holds the *input* of every attention op too (the output of the group norm just before
# it) and the weights are in `model.params`, so the context scores — softmax over the N patches,
# one distribution per in-patch position (notebook 1) — can be recomputed exactly. Here the first
# attention layer of `stages.2` (1/8 of the input resolution, 2×2 patches):

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
traced = t[f"{scope_}.attn:separable_self_attention"].output
gap = np.abs(y - traced).max() / np.abs(traced).max()
print(f"recomputed attention equals the traced output to float32 rounding: {gap < 1e-6} (largest difference "
      f"{gap:.1e} of the largest value)")
assert gap < 1e-6

nh = nw = int(np.sqrt(xin.shape[3]))
S = x.shape[-1]
cell = S / nw                                                         # input pixels per patch
crop_pts = transforms.apply_affine(gt51, face.matrix)                 # ground truth in crop pixels
fig, axes = plt.subplots(1, 5, figsize=(10.5, 2.5), layout="constrained")
viz.show(axes[0], face.crop, "input crop")
for k in range(4):
    im = viz.show(axes[k + 1], scores[0, k].reshape(nh, nw), f"c_s, p = {k}", cmap="magma", vmin=0,
                  vmax=scores.max(), extent=(-0.5, S - 0.5, S - 0.5, -0.5))
    axes[k + 1].scatter(*crop_pts.T, s=3, color="cyan")
fig.colorbar(im, ax=axes[1:], shrink=0.9, label=f"score (uniform: 1/{scores.shape[-1]})")
plt.show()

# where does the mass go? patches that hold a landmark vs the rest; and how many patches in effect
has_point = np.zeros((nh, nw), bool)
rc = np.clip((crop_pts // cell).astype(int), 0, nh - 1)
has_point[rc[:, 1], rc[:, 0]] = True
on_points = (scores[0] * has_point.ravel()).sum(-1)                   # [P] score mass on landmark patches
effective = np.exp(-(scores[0] * np.log(scores[0])).sum(-1))          # [P] perplexity = patches "attended"
ratio = on_points.mean() / has_point.mean()                          # 1: as much as uniform scores give them
verdict = ("about what uniform scores would give them: this layer does not single out the landmarks"
           if 0.8 < ratio < 1.25 else "more than uniform scores would give them" if ratio >= 1.25 else
           "less than uniform scores would give them: this layer looks past the landmarks")
broad = effective.min() > 0.5 * has_point.size
say(f"The {has_point.sum()} of {has_point.size} patches that hold a landmark (cyan) get "
    f"**{on_points.min():.0%}-{on_points.max():.0%}** of the score mass (depending on p) against "
    f"{has_point.mean():.0%} for uniform scores, {verdict}. The distributions are "
    f"{'broad' if broad else 'concentrated'}: in effect each p spreads over "
    f"{effective.min():.0f}-{effective.max():.0f} of the {has_point.size} patches (the exponential of the scores' "
    f"entropy) and the largest score is {scores.max() * scores.shape[-1]:.1f} times the uniform one"
    + (", so the context vector is an average over a wide region of the face rather than a few points."
       if broad else "."))

# %% [markdown]
# ## 3. The AAM head: heatmaps, point maps, edge maps, E2P, fusion
#
# The backbone's last map (256 channels) is upsampled (bilinear) to the heatmap grid at 1/4 of the
# input and three 1×1 convolutions read it:
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
fig, ax = plt.subplots(figsize=(10.5, 2.6), layout="constrained")
im = viz.show(ax, M.T.astype(bool), "E2P matrix M[p, e]: landmark p lies on boundary e", cmap="Greys",
              ticks=True, aspect="auto")
ax.set_yticks(range(layout.num_edges), layout.edge_names)
ax.set_xlabel(f"landmark p ({layout.name} layout = iBUG 17..67)")
viz.colorbar(ax, im, ticks=[0, 1]).set_ticklabels(["no", "yes"])
plt.show()
per_point = M.sum(1)                                                  # boundaries through each landmark
say(f"Every landmark of `{layout.name}` lies on **exactly {int(per_point.min())}** boundary (one dark cell per "
    f"column of M)." if per_point.min() == per_point.max() else
    f"The landmarks of `{layout.name}` lie on {int(per_point.min())} to {int(per_point.max())} boundaries.")
print("landmarks on no boundary (b_p = 1):", np.flatnonzero(b).tolist() or f"none in {layout.name}")

# %%
feat = t["backbone.stages.4.1.conv_proj.bn:batch_norm"].output        # the backbone's last map
resize = t["backbone.stages.4.1:interpolate"]                         # inside the last MobileViT-v2 block
stride32 = S // 32
say(f"At this {S}×{S} input the head reads a **{feat.shape[2]}×{feat.shape[3]}** backbone map, not the "
    f"{stride32}×{stride32} of stride 32: the last MobileViT-v2 block resizes its {resize.inputs[0][2]}×"
    f"{resize.inputs[0][3]} input to {resize.output.shape[2]}×{resize.output.shape[3]} "
    f"(`{resize.name}`) so that its 2×2 patches tile it, and does not resize back. "
    f"The head upsamples that map to the {out['heatmaps'].shape[2]}×{out['heatmaps'].shape[3]} heatmap grid.")

# %%
def to_grid(xy_px, w, h):
    """Crop pixels -> heatmap cell coordinates (STAR's convention: x_px = ((x_hat + 1) W - 1) / 2 with
    x_hat = 2 j / (w - 1) - 1 on the heatmap's cells j)."""
    x_hat = (2 * np.asarray(xy_px) + 1) / np.array([W_in, H_in]) - 1
    return (x_hat + 1) * np.array([w - 1, h - 1]) / 2


k = int(err.argmin())                                                 # the landmark it places best on this face
e = next(i for i, (name, idx, _) in enumerate(layout.edges) if k in idx)
H, P, E = out["heatmaps"][0], out["pointmaps"][0], out["edgemaps"][0]
E2P = t["head.e2p:aam_fusion/e2p"].output[0]                          # recorded inside aam_fusion
Hf = out["fusion_heatmaps"][0]
W_in = H_in = S
hh, ww = H.shape[1:]
gt_k = to_grid(crop_pts[k], ww, hh)                                   # this landmark's ground truth on the grid
panels = [(H[k], f"heatmap H ({layout.point_names[k]})"), (P[k], "point map P"),
          (E[e], f"edge map E ({layout.edge_names[e]})"), (E2P[k], "E2P(E) for this landmark"),
          (Hf[k], "fused H' = E2P(E) P H")]
fig, axes = plt.subplots(2, 3, figsize=(10.5, 6.2), layout="constrained")
viz.show(axes[0, 0], face.crop, "input crop")
axes[0, 0].scatter(*crop_pts[k], s=60, facecolors="none", edgecolors="lime", lw=1.5)
for ax, (img, title) in zip(axes.flat[1:], panels):
    viz.show(ax, img, title, cmap="viridis", cbar="value")
    viz.mark_truth(ax, gt_k)
axes[0, 1].legend(loc="lower left", fontsize=8)
plt.show()
say(f"The E2P panel equals the edge-map panel (largest difference {np.abs(E2P[k] - E[e]).max():.1e}): "
    f"`{layout.point_names[k]}` lies on one boundary only, `{layout.edge_names[e]}`, and has no bias "
    f"($b_p$ = {b[k]:g}), so $\\mathrm{{E2P}}(E)_p = E_e$. That holds for every landmark of `{layout.name}` "
    f"(previous cell); in a layout where a point sits on two boundaries, E2P would add their edge maps.")

# %%
fig, axes = plt.subplots(2, 2, figsize=(8.8, 7.2), layout="constrained")
for ax, (img, title) in zip(axes.flat, [(H.sum(0), "sum of heatmaps H"), (P.max(0), "max of point maps P"),
                                        (E.max(0), "max of edge maps E"), (Hf.sum(0), "sum of fused heatmaps H'")]):
    ax.imshow(face.crop, extent=(-0.5, ww - 0.5, hh - 0.5, -0.5))     # the crop under the heatmap grid
    viz.show(ax, img, title, cmap="inferno", alpha=0.75, cbar="value")
    ax.scatter(*to_grid(crop_pts, ww, hh).T, s=6, color="cyan", label="ground truth")
axes[0, 0].legend(loc="lower left", fontsize=8)
plt.show()

# %%
sharp = np.median(Hf.max(axis=(1, 2)) / np.maximum(Hf.sum(axis=(1, 2)), 1e-6))   # share of the mass in the top cell
say(f"What these maps say about *this* model: its heatmaps and point maps are broad blobs, the top cell of "
    f"a fused heatmap holds {sharp:.1%} of its mass (median over the landmarks). At this {S}×{S} input the head "
    f"reads a {feat.shape[2]}×{feat.shape[3]} backbone map, bilinearly upsampled to {hh}×{ww}, so no map can be "
    f"sharper than that coarse grid allows. Its landmarks are still close (NME {nme_face:.3f} on this face, "
    f"against the mean shape's {metrics.nme(mean_face[None], gt51[None], layout)[0]:.3f}), because the STAR "
    f"loss and the soft-argmax train the *centre of mass* of each fused heatmap, not its peak: a broad blob "
    f"centred in the right place is a correct answer for soft-argmax. Section 4 shows what that means for argmax.")

# %% [markdown]
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
Ssum = np.maximum(Hf.sum(axis=(1, 2)), 1e-6)                          # [N]
xy_hat = np.stack([(Hf * X[None, None, :]).sum((1, 2)) / Ssum,
                   (Hf * Y[None, :, None]).sum((1, 2)) / Ssum], -1)   # [N, 2] in [-1, 1]
print("by hand vs the traced soft_argmax:", np.abs(xy_hat - t["head.decoder:soft_argmax"].output[0]).max())

xy_px = ((xy_hat + 1) * np.array([W_in, H_in]) - 1) / 2               # crop pixels
print("crop pixels vs the model's 'landmarks' output:", np.abs(xy_px - out["landmarks"][0]).max())
# back to the photo: invert the crop's similarity transform
xy_img = transforms.apply_affine(xy_px, transforms.invert_affine(face.matrix))
print(f"NME vs the ground truth (inter-ocular): {metrics.nme(xy_img[None], gt51[None], layout)[0]:.4f} "
      f"(mean shape: {metrics.nme(mean_face[None], gt51[None], layout)[0]:.4f})")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.6), layout="constrained", gridspec_kw={"width_ratios": [1.15, 1]})
hm = Hf[k]
pad_x, pad_y = 1 / (w - 1), 1 / (h - 1)
viz.show(axes[0], hm, f"fused heatmap of {layout.point_names[k]}, {h}x{w} grid", cmap="viridis",
         extent=(-1 - pad_x, 1 + pad_x, 1 + pad_y, -1 - pad_y), ticks=True, cbar="H'")
axes[0].plot(*xy_hat[k], "r+", ms=14, mew=2, label="soft-argmax")
am, _ = ops.argmax_subpixel(Hf[None, k:k + 1])
am_n = 2 * am[0, 0] / np.array([w - 1, h - 1]) - 1
axes[0].plot(*am_n, "wx", ms=9, mew=2, label="argmax (+ quarter pixel)")
viz.mark_truth(axes[0], (2 * crop_pts[k] + 1) / S - 1)                # ground truth in the same [-1, 1] frame
axes[0].set_xlabel("x̂ (pixel centres from -1 to +1)")
axes[0].set_ylabel("ŷ")
axes[0].legend(loc="lower left", fontsize=8)
viz.show(axes[1], sample.image, "back in the photo")
axes[1].plot(gt51[:, 0], gt51[:, 1], "o", ms=3, mfc="none", color="lime", label="ground truth")
axes[1].plot(xy_img[:, 0], xy_img[:, 1], ".", ms=4, color="red", label="prediction")
axes[1].plot(mean_face[:, 0], mean_face[:, 1], ".", ms=3, color="white", alpha=0.7, label="mean shape")
box = transforms.landmark_box(gt68)
axes[1].add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, ec="yellow", lw=1))
axes[1].legend(loc="lower left", fontsize=8)
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
am_img = transforms.apply_affine(am_px, transforms.invert_affine(face.matrix))
print(f"NME of the argmax landmarks {metrics.nme(am_img[None], gt51[None], layout)[0]:.3f}, "
      f"of the soft-argmax ones {nme_face:.3f}, of the mean shape {metrics.nme(mean_face[None], gt51[None], layout)[0]:.3f}")

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
# (`benchmarks/results/litehrnet.md`: the 10M model with the BCE loss), trained from scratch on the
# synthetic faces at 64×64, longer than in the experiment (`python -m torch_impl.teachers train
# litehrnet_plus`: a few passes over the 20,000-face pool, under an hour of CPU), still far from the
# paper's 210 epochs; its manifest says how it was trained and how well it did. Its heatmaps are on
# the 1/4 grid of the input.

# %%
hr = Landmarker("litehrnet_plus", detector=None)
training_hr = hr.model.manifest["training"]
run = training_hr["config"]
hr_layout = landmarks.get(hr.model.manifest["layout"])
x_hr, faces_hr = hr.prepare(sample.image, boxes=[transforms.landmark_box(gt68)])
with lmref.trace() as t_hr:
    heat = hr.model(x_hr.astype(np.float32))                            # [1, 68, S/4, S/4]
S_hr = hr.model.manifest["input"]["size"][0]
pred_hr = hr(sample.image, boxes=[transforms.landmark_box(gt68)])[0].landmarks
say(f"Shipped Lite-HRNet Plus: run `{run['name']}` ({run['heatmap_loss'].upper()} loss, {run['epochs']} epochs), "
    f"input {S_hr}×{S_hr}, heatmaps {list(heat.shape)}. **Test NME {training_hr['test']['nme']:.3f}** on the "
    f"{training_hr['test']['count']} test faces (mean shape: {base68.mean():.3f} on the same 68 points); on this face "
    f"{metrics.nme(pred_hr[None], gt68[None], 'ibug68')[0]:.3f} (mean shape "
    f"{metrics.nme(metrics.mean_shape_prediction(gt68[None], test.landmarks), gt68[None], 'ibug68')[0]:.3f}).")
scaf = [r for r in t_hr if r.op == "sigmoid" and ".fc2" in r.name]     # one attention vector per pair (i, j)
print(f"{len(t_hr)} traced ops; {len(scaf)} SCAF attention vectors, e.g. {scaf[0].name} {list(scaf[0].output.shape)}")

# %%
# The attention vectors of the last fusion module, one row per (sending j -> receiving i) pair.
last_module = scaf[-1].name.split(".fuse_layers")[0]
rows = [r for r in scaf if r.name.startswith(last_module + ".")]
pairs = [tuple(r.name.split("fuse_layers.")[1].split(".fc2")[0].split("."))[::-1] for r in rows]   # (j, i)
fig, axes = plt.subplots(len(rows), 1, figsize=(10.5, 0.42 * len(rows) + 1.3), squeeze=False, layout="constrained")
for ax, r, (j, i) in zip(axes[:, 0], rows, pairs):
    im = viz.show(ax, r.output, cmap="viridis", vmin=0, vmax=1, aspect="auto", ticks=True)
    ax.set_yticks([0], [f"{j} -> {i}"])
    ax.set_xticks([])
axes[-1, 0].set_xlabel("channel of the receiving branch i")
fig.colorbar(im, ax=axes[:, 0], shrink=0.9, label="attention weight a_i")
fig.suptitle(f"SCAF attention in {last_module.replace('backbone.', '')} (branch j -> branch i)")
plt.show()

gates = np.concatenate([r.output.ravel() for r in rows])
means = {pair: float(r.output.mean()) for pair, r in zip(pairs, rows)}
most_open, most_shut = max(means, key=means.get), min(means, key=means.get)
say(f"How to read it: a weight near 1 lets the sending branch's (resized, channel-mean) map into that "
    f"channel of the receiving branch fully, near 0 keeps it out. Here **{np.mean(gates > 0.9):.0%}** of the "
    f"{gates.size} gates are above 0.9 and **{np.mean(gates < 0.1):.0%}** below 0.1; the rest are in between "
    f"(median {np.median(gates):.2f}). The most open pair is {most_open[0]} -> {most_open[1]} "
    f"(mean {means[most_open]:.2f}), the most closed {most_shut[0]} -> {most_shut[1]} (mean {means[most_shut]:.2f}): "
    f"each receiving channel takes in what its branch's own statistics (GAP) say it needs, and that differs "
    f"from channel to channel, which a 1×1-conv fusion would have to learn as fixed weights.")

# %%
contrib = {}                                                           # MR head: branch -> its heatmaps on the 1/4 grid
for r in t_hr:
    if r.name.startswith("keypoint_head.final_layers") and r.op in ("conv2d", "interpolate"):
        contrib[r.name.split(":")[0].replace("keypoint_head.final_layers.", "branch ")] = r.output
kk = hr_layout.point_names.index("nose_tip")
hr_crop_pts = transforms.apply_affine(gt68, faces_hr[0].matrix)
g = heat.shape[-1]
gt_kk = hr_crop_pts[kk] * g / S_hr                                     # nose tip on the 1/4 grid (the decoder's px = uv * S/g)
fig, axes = plt.subplots(1, len(contrib) + 2, figsize=(10.5, 2.6), layout="constrained")
viz.show(axes[0], faces_hr[0].crop, f"input crop ({S_hr}x{S_hr})")
lim = max(np.abs(a[0, kk]).max() for a in contrib.values())
for ax, (name, a) in zip(axes[1:], contrib.items()):
    im = viz.show(ax, a[0, kk], f"{name} (1/{4 * 2 ** int(name[-1])})", cmap="coolwarm", vmin=-lim, vmax=lim)
    viz.mark_truth(ax, gt_kk, size=8)
viz.colorbar(axes[-2], im, label="contribution")
viz.show(axes[-1], heat[0, kk], "MR head output = sum", cmap="viridis", cbar="heatmap")
viz.mark_truth(axes[-1], gt_kk, size=8)
fig.suptitle(f"MR head: each branch's heatmap for {hr_layout.point_names[kk]}, upsampled to the 1/4 grid (+: ground truth)")
plt.show()
print("sum of the branch contributions equals the output:", np.allclose(sum(contrib.values()), heat, atol=1e-5))
peak = heat[0, kk].argmax()
at_peak = {n: float(a[0, kk].flat[peak]) for n, a in contrib.items()}
print("each branch's value at the peak of the sum:", {n: round(v, 3) for n, v in at_peak.items()},
      "sum:", round(float(heat[0, kk].flat[peak]), 3))

# %%
res = {n: f"1/{4 * 2 ** int(n[-1])}" for n in contrib}
pos = sorted((n for n in contrib if at_peak[n] >= 0), key=at_peak.get, reverse=True)
neg = sorted((n for n in contrib if at_peak[n] < 0), key=at_peak.get)
top = max(contrib, key=lambda n: abs(at_peak[n]))
say(f"Which resolution carries a landmark is learned. In the shipped model the {hr_layout.point_names[kk]} peak "
    f"({float(heat[0, kk].flat[peak]):+.2f}) comes mostly from **{top}** at {res[top]} resolution "
    f"({at_peak[top]:+.2f}). "
    + ("Adding: " + ", ".join(f"{n} ({res[n]}) {at_peak[n]:+.2f}" for n in pos) + ". " if pos else "")
    + ("Subtracting: " + ", ".join(f"{n} ({res[n]}) {at_peak[n]:+.2f}" for n in neg) + ". " if neg else "")
    + f"At a {S_hr}×{S_hr} input the 1/8 grid is only "
    f"{S_hr // 8}×{S_hr // 8} cells, so the summed map is a smooth bump that the argmax decoder reads to the nearest "
    f"1/4-grid cell. The MR head lets each resolution add what it knows; the SCAF weights above decide, per "
    f"channel, how much of each other branch every branch takes in.")

# %% [markdown]
# ## Summary
#
# * `lmref.trace()` records every op of a forward pass under the state-dict name of its weights, so
#   any intermediate map can be looked at or recomputed by hand (the attention scores, the
#   soft-argmax).
# * The student's backbone ends on a very coarse map (printed in section 3) at this input size, so
#   its heatmaps are broad blobs; soft-argmax still places the landmarks well because it reads a
#   centre of mass, while argmax of the same maps is far off.
# * The AAM head multiplies heatmaps, point maps and per-landmark edge maps (E2P); in the inner-51
#   layout each landmark lies on one boundary, so E2P only copies that boundary's edge map.
# * Lite-HRNet Plus gates what each branch takes from the others per channel (SCAF) and sums the
#   heatmaps of all branches (MR head).
# * Both models beat the mean shape by a wide margin on these faces, and are still far from the
#   NME of real-photo models (notebook 0).
#
# ### Try this
#
# * Run the student on a face from the `test_pose` split (large head turns) and compare its NME
#   with the mean shape's: does the margin shrink?
# * Run the student on a 128×128 crop instead of 96×96: make it with
#   `transforms.crop_matrix(box, 128)` and `transforms.warp_image`, normalise it with
#   `lm.normalize`, and call `model` (every layer works at any size). What size is the backbone's
#   last map now, and are the heatmaps sharper?
# * Replace soft-argmax by argmax (`ops.argmax_subpixel`) for all 51 points and score both against
#   the ground truth on 20 faces.
#
# **Next:** notebook 3 trains students with and without a teacher; notebook 4 uses these traces as
# the reference for a port.
