"""Pictures of landmark results: faces drawn on the image, and a figure of a face's model maps.

    img = viz.draw_faces(image, faces, layout)           # RGB uint8 [H, W, 3], a new array
    fig = viz.maps_figure(face, layout)                   # matplotlib Figure (Agg canvas)
    viz.save_png(img_or_fig, "out.png")

``faces`` are :class:`lmref.detect.Face` objects (or anything with ``box``, ``landmarks`` and
``confidence`` attributes). Drawing uses OpenCV on a copy of the image; figures use matplotlib's
object API with an Agg canvas, so no GUI backend is selected or needed.

Axes helpers for the tutorials (and any notebook): they draw on an ``ax`` the caller made, so the
notebook keeps its figure layout on the page and the repeated details live here:

    plt.rcParams.update(viz.NOTEBOOK_RC)                  # sizes readable on HiDPI screens
    im = viz.show(ax, heatmap, "heatmap", cmap="viridis", cbar="value")   # no ticks, a colorbar
    viz.landmarks_on(ax, points, layout)                  # points and the layout's boundaries
    viz.mark_truth(ax, (x, y))                            # a ground-truth marker visible on any map
    viz.annotate_cells(ax, matrix)                        # each cell's value written on it
    viz.log_ticks(ax, "x")                                # decade labels only (no overlapping labels)
    viz.legend_outside(ax)                                # legend beside the axes, over no data
    viz.ced_plot(ax, {"model": nmes}, thr=0.1)            # cumulative error distribution
"""
from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np

__all__ = ["draw_faces", "confidence_colors", "maps_figure", "ced_figure", "save_png", "MAP_KEYS",
           "NOTEBOOK_RC", "show", "colorbar", "landmarks_on", "mark_truth", "annotate_cells", "log_ticks",
           "legend_outside", "ced_plot"]

BOX_COLOR = (40, 200, 255)          # RGB
EDGE_COLOR = (255, 255, 255)
POINT_COLOR = (0, 255, 80)
# model output keys shown by maps_figure, in order, with their titles
MAP_KEYS = (("fusion_heatmaps", "fused heatmaps H' (sum over points)"),
            ("heatmaps", "heatmaps H (sum over points)"),
            ("pointmaps", "point maps P (max over points)"),
            ("edgemaps", "edge maps E (max over boundaries)"))


# matplotlib rcParams for notebook figures: 100 dpi and 10-12 pt text (13-17 px), so titles and
# labels stay readable when a HiDPI browser shows the PNG at its CSS size (72 dpi and 8 pt titles
# gave 8 px text). Figures in the tutorials are at most 10.5 inches wide, so they fit a notebook
# column without being scaled down.
NOTEBOOK_RC = {"figure.dpi": 100, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
               "figure.titlesize": 12, "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9,
               "image.interpolation": "nearest"}


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

    fig = Figure(figsize=(5.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ced_plot(ax, curves, thr=thr)
    ax.legend(loc="lower right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def ced_plot(ax, curves, thr=0.1, step=1e-4, styles=None):
    """Draw CED curves on ``ax``: curves {label: nmes [B]} -> {label: (FR, AUC)} at ``thr``.
    Each curve's legend label carries its FR and AUC; ``styles`` {label: plot kwargs} (e.g. a dashed
    baseline). The legend is left to the caller (``ax.legend`` or ``legend_outside``)."""
    from . import metrics
    scores = {}
    for label, nmes in curves.items():
        nmes = np.asarray(nmes, np.float64)
        x, y = metrics.ced(nmes, thr=thr, step=step)
        fr, auc = metrics.fr_auc(nmes, thr=thr, step=step)
        kw = {"lw": 1.6, **(styles or {}).get(label, {})}
        ax.plot(x, y, label=f"{label}: FR@{thr:g} {100 * fr:.1f}%, AUC@{thr:g} {auc:.3f}", **kw)
        scores[label] = (fr, auc)
    ax.set_xlim(0, thr)
    ax.set_ylim(0, 1)
    ax.set_xlabel("NME")
    ax.set_ylabel("fraction of images with NME <= x")
    ax.grid(alpha=0.3)
    return scores


# ---------------------------------------------------------------------------------------------
# Axes helpers for notebooks
# ---------------------------------------------------------------------------------------------

def _value_range(a, vmin, vmax):
    """vmin / vmax that never collapse: a bool map spans [0, 1], a constant map a unit interval
    around its value (imshow autoscaling a constant array maps every pixel to the lowest colour,
    so an all-True mask drawn in 'Greys' came out blank)."""
    a = np.asarray(a)
    if a.dtype == bool:
        return (0 if vmin is None else vmin), (1 if vmax is None else vmax)
    if a.ndim == 2 and a.size and vmin is None and vmax is None:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if lo == hi:
            return lo - 0.5, hi + 0.5
    return vmin, vmax


def show(ax, image, title=None, cmap=None, vmin=None, vmax=None, cbar=None, ticks=False, **kw):
    """imshow an image ([H, W, 3]) or a map ([H, W], coloured by ``cmap``) on ``ax``, without ticks
    unless ``ticks``; a bool or constant map keeps its colours (see ``_value_range``).
    cbar: None / False for none, True or a label string for a colorbar beside the axes (maps only:
    a colour that means a number gets its scale). -> the AxesImage"""
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8)
        vmin, vmax = _value_range(np.asarray(image), vmin, vmax)
    else:
        vmin, vmax = _value_range(a, vmin, vmax)
    if a.ndim == 2 and cmap is None:
        cmap = "gray"
    im = ax.imshow(a, cmap=cmap if a.ndim == 2 else None, vmin=vmin, vmax=vmax, **kw)
    if title is not None:
        ax.set_title(title)
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])
    if cbar and a.ndim == 2:
        colorbar(ax, im, label=cbar if isinstance(cbar, str) else None)
    return im


def colorbar(ax, mappable, label=None, ticks=None):
    """A colorbar beside ``ax`` as tall as it (for square images too). -> the Colorbar"""
    cb = ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03, ticks=ticks)
    if label:
        cb.set_label(label)
    return cb


def landmarks_on(ax, points, layout=None, color="lime", size=12, edges=True, edge_color="white", label=None,
                 **kw):
    """Scatter landmarks [N, 2] (x, y in the axes' data units) on ``ax``, with the layout's
    boundaries drawn as thin lines when ``layout`` (a Layout or a name) has N points. -> the scatter"""
    pts = np.asarray(points, np.float64)
    if isinstance(layout, str):
        from . import landmarks
        layout = landmarks.get(layout)
    if edges and layout is not None and layout.num_points == len(pts):
        for _, idx, closed in layout.edges:
            line = pts[list(idx) + ([idx[0]] if closed else [])]
            ax.plot(line[:, 0], line[:, 1], "-", color=edge_color, lw=0.7, alpha=0.8)
    return ax.scatter(pts[:, 0], pts[:, 1], s=size, c=color, label=label, zorder=3, **kw)


def mark_truth(ax, xy, label="ground truth", size=11):
    """Mark a ground-truth position (x, y) with a white cross ringed in black: visible on dark and
    on bright maps alike. -> the Line2D"""
    x, y = float(xy[0]), float(xy[1])
    ax.plot(x, y, "o", ms=size, mfc="none", mec="black", mew=2.6, zorder=4)
    return ax.plot(x, y, "+", ms=size, color="white", mew=1.6, label=label, zorder=5)[0]


def annotate_cells(ax, a, fmt="{:g}", im=None, color="white", fontsize=8):
    """Write each value of a 2-D array on its imshow cell (cell (r, c) at x = c, y = r). With ``im``
    (the AxesImage drawn from ``a``) each value is written black on light cells and white on dark
    ones, so it stays readable anywhere on the colormap; otherwise in ``color``."""
    a = np.asarray(a)
    for (r, c), v in np.ndenumerate(a):
        col = color
        if im is not None:
            R, G, B, _ = im.cmap(im.norm(v))
            col = "black" if 0.299 * R + 0.587 * G + 0.114 * B > 0.55 else "white"   # perceived luminance
        ax.text(c, r, fmt.format(v), ha="center", va="center", color=col, fontsize=fontsize)


def log_ticks(ax, axis="x"):
    """Label a log axis at 1, 2 and 5 times powers of ten (at powers of ten alone when two or more
    fall inside the limits), written plainly (0.002), with unlabelled minor ticks between. matplotlib
    labels every minor tick when an axis spans about a decade, and those labels collide
    ('2x10^-3 3x10^-3 4x10^-3' on top of each other). An axis too short for two labels is widened to
    the powers of ten around it."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    target, get, set_ = ((ax.xaxis, ax.get_xlim, ax.set_xlim) if axis == "x" else
                         (ax.yaxis, ax.get_ylim, ax.set_ylim))
    lo, hi = sorted(get())
    decades = np.floor(np.log10(hi)) - np.ceil(np.log10(lo)) + 1       # powers of ten inside
    subs = (1.0,) if decades >= 2 else (1.0, 2.0, 5.0)
    marks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
             for m in subs if lo <= m * 10.0 ** e <= hi]
    if len(marks) < 2:
        set_(10.0 ** np.floor(np.log10(lo)), 10.0 ** np.ceil(np.log10(hi)))
    target.set_major_locator(LogLocator(base=10.0, subs=subs, numticks=30))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_locator(LogLocator(base=10.0, subs=np.arange(2, 10), numticks=30))
    target.set_minor_formatter(NullFormatter())


def legend_outside(ax, side="right", **kw):
    """The legend outside the plotting area, so it never hides data: to the right of ``ax`` or
    (side="below") under its tick labels and x label, in up to three columns. A figure with
    ``layout="constrained"`` makes room for it. -> the Legend (None when nothing is labelled)"""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if side == "below":                        # under the tick labels and the x label, wherever they end
        below = ax.get_tightbbox(ax.figure.canvas.get_renderer()).y0          # display pixels
        y = ax.transAxes.inverted().transform((0.0, below))[1]               # -> axes fraction (< 0)
        kw.setdefault("ncol", min(3, len(handles)))
        return ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, y - 0.02), borderaxespad=0.0, **kw)
    if side != "right":
        raise ValueError(f"side: expected 'right' or 'below', got {side!r}")
    return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)


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
