"""Pictures of landmark results: faces drawn on the image, and a figure of a face's model maps.

    img = viz.draw_faces(image, faces, layout)           # RGB uint8 [H, W, 3], a new array
    fig = viz.maps_figure(face, layout)                   # matplotlib Figure (Agg canvas)
    viz.save_png(img_or_fig, "out.png")

``faces`` are :class:`lmref.detect.Face` objects (or anything with ``box``, ``landmarks`` and
``confidence`` attributes). Drawing uses OpenCV on a copy of the image; figures use matplotlib's
object API with an Agg canvas, so no GUI backend is selected or needed.
"""
from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np

__all__ = ["draw_faces", "confidence_colors", "maps_figure", "ced_figure", "save_png", "MAP_KEYS"]

BOX_COLOR = (40, 200, 255)          # RGB
EDGE_COLOR = (255, 255, 255)
POINT_COLOR = (0, 255, 80)
# model output keys shown by maps_figure, in order, with their titles
MAP_KEYS = (("fusion_heatmaps", "fused heatmaps H' (sum over points)"),
            ("heatmaps", "heatmaps H (sum over points)"),
            ("pointmaps", "point maps P (max over points)"),
            ("edgemaps", "edge maps E (max over boundaries)"))


def confidence_colors(conf):
    """Confidence [N] in [0, 1] -> RGB uint8 [N, 3], red (0) through yellow (0.5) to green (1)."""
    c = np.clip(np.nan_to_num(np.asarray(conf, np.float64), nan=0.0), 0.0, 1.0)
    r = np.where(c < 0.5, 1.0, 2.0 * (1.0 - c))
    g = np.where(c < 0.5, 2.0 * c, 1.0)
    return (np.stack([r, g, np.zeros_like(c)], axis=-1) * 255).round().astype(np.uint8)


def _pt(p, shift=4):
    """float (x, y) -> int fixed-point point for cv2 with ``shift`` fractional bits (sub-pixel drawing)."""
    return (int(round(p[0] * (1 << shift))), int(round(p[1] * (1 << shift))))


def draw_faces(image, faces, layout=None, show_box=True, show_edges=True, show_index=True):
    """Draw each face's box, its layout's boundaries and its landmarks on a copy of ``image``.

    image: RGB uint8 [H, W, 3] (a gray [H, W] image is drawn on as RGB); faces: see the module doc;
    layout: a ``lmref.landmarks.Layout`` (or name) to draw boundaries with; None draws points only.
    Points are coloured by confidence (red low, green high) when a face has one.
    -> RGB uint8 [H, W, 3]"""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise TypeError(f"image: expected uint8 [H, W, 3] or [H, W], got {img.dtype} {img.shape}")
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img.copy()
    if isinstance(layout, str):
        from . import landmarks
        layout = landmarks.get(layout)
    H, W = img.shape[:2]
    for k, face in enumerate(faces):
        box = np.asarray(face.box, np.float64)
        size = max(box[2] - box[0], box[3] - box[1], 1.0)
        thick = max(1, int(round(size / 150)))
        radius = max(1.0, size / 120)
        if show_box:
            cv2.rectangle(img, _pt(box[:2]), _pt(box[2:]), BOX_COLOR, thick, cv2.LINE_AA, 4)
            if show_index:
                org = (int(box[0]), max(int(box[1]) - 4 * thick, 10))
                cv2.putText(img, str(k), org, cv2.FONT_HERSHEY_SIMPLEX, max(0.4, size / 300), BOX_COLOR,
                            thick, cv2.LINE_AA)
        pts = np.asarray(face.landmarks, np.float64)
        if show_edges and layout is not None and layout.num_points == len(pts):
            for _, idx, closed in layout.edges:
                poly = np.array([_pt(pts[i]) for i in idx], np.int32)
                cv2.polylines(img, [poly], closed, EDGE_COLOR, max(1, thick // 2), cv2.LINE_AA, 4)
        conf = getattr(face, "confidence", None)
        colors = (confidence_colors(conf) if conf is not None
                  else np.tile(np.array(POINT_COLOR, np.uint8), (len(pts), 1)))
        for p, c in zip(pts, colors):
            if np.all(np.isfinite(p)) and -W <= p[0] <= 2 * W and -H <= p[1] <= 2 * H:
                cv2.circle(img, _pt(p), int(round(radius * 16)), tuple(int(v) for v in c), -1, cv2.LINE_AA, 4)
    return img


def maps_figure(face, layout=None, title=None):
    """A figure of one face's model maps: the crop the model saw with its landmarks, the summed
    heatmaps / point maps / edge maps over the crop, and each boundary's edge map.

    face: a Face with ``crop`` (RGB or gray uint8), ``crop_landmarks`` [N, 2] and ``maps``
    ({output key: [C, h, w]}, kept when the Landmarker runs with ``keep_maps=True``).
    -> matplotlib.figure.Figure (Agg canvas); raises ValueError if the model gave no maps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = getattr(face, "maps", None) or {}
    shown = [(k, t) for k, t in MAP_KEYS if k in maps]
    if not shown:
        raise ValueError("the model's outputs hold no heatmaps, point maps or edge maps to show "
                         "(a direct-regression model has none)")
    if isinstance(layout, str):
        from . import landmarks
        layout = landmarks.get(layout)
    crop = np.asarray(face.crop)
    gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    S = crop.shape[0]
    edges = maps.get("edgemaps")
    n_edge = 0 if edges is None else len(edges)
    cols = 1 + len(shown)
    rows = 1 + (0 if n_edge == 0 else int(np.ceil(n_edge / cols)))
    fig = Figure(figsize=(3.0 * cols, 3.1 * rows), dpi=90)
    FigureCanvasAgg(fig)
    ext = (-0.5, S - 0.5, S - 0.5, -0.5)           # maps stretched over the crop's pixel extent

    ax = fig.add_subplot(rows, cols, 1)
    ax.imshow(crop if crop.ndim == 3 else gray, cmap=None if crop.ndim == 3 else "gray")
    pts = np.asarray(face.crop_landmarks)
    if layout is not None and layout.num_points == len(pts):
        for _, idx, closed in layout.edges:
            line = pts[list(idx) + ([idx[0]] if closed else [])]
            ax.plot(line[:, 0], line[:, 1], "-", color="white", lw=0.6)
    ax.scatter(pts[:, 0], pts[:, 1], s=5, c="lime")
    ax.set_title("crop and landmarks", fontsize=8)
    for i, (key, text) in enumerate(shown):
        m = np.asarray(maps[key], np.float64)
        agg = m.max(axis=0) if key in ("pointmaps", "edgemaps") else m.sum(axis=0)
        ax = fig.add_subplot(rows, cols, 2 + i)
        ax.imshow(gray, cmap="gray", extent=ext)
        ax.imshow(agg, cmap="magma", alpha=0.7, extent=ext, interpolation="nearest")
        ax.set_title(text, fontsize=8)
    if n_edge:
        names = layout.edge_names if layout is not None and layout.num_edges == n_edge else \
            [f"edge {e}" for e in range(n_edge)]
        for e in range(n_edge):
            ax = fig.add_subplot(rows, cols, cols + 1 + e)
            ax.imshow(edges[e], cmap="viridis", vmin=0, vmax=max(1e-6, float(edges.max())),
                      interpolation="nearest")
            ax.set_title(f"E[{e}] {names[e]}", fontsize=8)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def ced_figure(curves, thr=0.1, title=None):
    """Cumulative error distribution plot. curves: {label: nmes [B]} (one curve per model or
    subset; a face that was not found can be given a huge NME, it then never counts as a success);
    the CED is ``lmref.metrics.ced`` up to ``thr``, the legend adds FR and AUC to each label.
    -> matplotlib Figure (Agg canvas)"""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from . import metrics
    fig = Figure(figsize=(5.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, nmes in curves.items():
        nmes = np.asarray(nmes, np.float64)
        x, y = metrics.ced(nmes, thr=thr)
        fr, auc = metrics.fr_auc(nmes, thr=thr)
        ax.plot(x, y, lw=1.6, label=f"{label}: FR {100 * fr:.1f}%, AUC {auc:.3f}")
    ax.set_xlim(0, thr)
    ax.set_ylim(0, 1)
    ax.set_xlabel("NME")
    ax.set_ylabel("fraction of images with NME <= x")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_png(obj, path):
    """Write an RGB uint8 image or a matplotlib Figure to ``path`` as PNG, via a temporary file in
    the same directory (a failed write leaves nothing at ``path``)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".lmref-", suffix=".png", dir=d)
    os.close(fd)
    try:
        if isinstance(obj, np.ndarray):
            img = obj if obj.ndim == 2 else cv2.cvtColor(obj, cv2.COLOR_RGB2BGR)
            ok, data = cv2.imencode(".png", img)
            if not ok:
                raise ValueError(f"{path}: OpenCV could not encode the image as PNG")
            with open(tmp, "wb") as f:
                f.write(data.tobytes())
        else:
            obj.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
