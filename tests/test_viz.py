"""lmref.viz axes helpers (the tutorials' plotting boilerplate): rendered with the Agg canvas and
checked on the pixels and the layout matplotlib produced, not on the calls made."""
import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lmref import landmarks, metrics, viz


def _fig(w=4.0, h=3.0, dpi=100, rc=None):
    with matplotlib.rc_context(rc or {}):
        fig = Figure(figsize=(w, h), dpi=dpi)
        FigureCanvasAgg(fig)
    return fig


def _pixels(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3]


def _axes_pixels(fig, ax):
    img = _pixels(fig)
    x0, y0, x1, y1 = ax.get_window_extent().extents
    H = img.shape[0]
    return img[int(H - y1) + 2:int(H - y0) - 2, int(x0) + 2:int(x1) - 2]   # inside the frame


@pytest.mark.parametrize("a", [np.ones((6, 9), bool), np.full((5, 5), 3.0)], ids=["all-true", "constant"])
def test_show_draws_a_constant_map(a):
    # imshow's autoscale maps a constant array to the lowest colour: 'Greys' drew all-True as white
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    viz.show(ax, a, cmap="Greys")
    inside = _axes_pixels(fig, ax)
    assert inside.mean() < 250, "the map rendered blank (white)"
    assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0


def test_show_bool_mask_has_two_colours():
    mask = np.eye(8, dtype=bool)
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    im = viz.show(ax, mask, cmap="Greys")
    assert im.get_clim() == (0, 1)
    inside = _axes_pixels(fig, ax)
    assert inside.min() < 30 and inside.max() > 225


def test_show_colorbar_label_and_rgb_without():
    fig = _fig()
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    viz.show(ax1, np.random.default_rng(0).random((8, 8)), "map", cmap="magma", cbar="probability")
    viz.show(ax2, np.zeros((8, 8, 3), np.uint8), "rgb", cbar="ignored")
    assert len(fig.axes) == 3                                        # one colorbar, for the map only
    cax = fig.axes[2]
    assert cax.get_ylabel() == "probability"
    assert ax1.get_title() == "map"


def test_log_ticks_labels_do_not_overlap():
    fig = _fig(6, 3)
    ax = fig.add_subplot(1, 1, 1)
    vals = np.array([3.5e-4, 5e-4, 8e-4, 1.5e-3, 2.6e-3, 4.1e-3, 6.6e-3])   # the float16 bar chart's range
    ax.barh(range(len(vals)), vals)
    ax.set_xscale("log")
    viz.log_ticks(ax, "x")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in ax.get_xticklabels(which="both")
             if t.get_visible() and t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert len(boxes) >= 2, "a log axis needs at least two labelled decades"
    boxes.sort(key=lambda b: b.x0)
    for a, b in zip(boxes, boxes[1:]):
        assert a.x1 <= b.x0, f"tick labels overlap: {a} {b}"


def test_log_ticks_widens_an_axis_too_short_for_two_labels():
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([2.2e-3, 4.5e-3], [0, 1])
    ax.set_xscale("log")
    ax.set_xlim(2.2e-3, 4.5e-3)
    viz.log_ticks(ax, "x")
    assert ax.get_xlim() == pytest.approx((1e-3, 1e-2))
    ax.set_yscale("log")
    ax.set_ylim(1e-9, 1e-2)                                           # many decades: powers of ten only
    viz.log_ticks(ax, "y")
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and 1e-9 <= t.get_position()[1] <= 1e-2]
    assert shown == [f"{10.0 ** -k:g}" for k in range(9, 1, -1)]   # 1e-09 ... 1e-05, 0.0001, 0.001, 0.01


def test_legend_outside_covers_no_data():
    fig = _fig(6, 3)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], label="a")
    ax.plot([0, 1], [1, 0], label="b")
    fig.subplots_adjust(right=0.7)
    leg = viz.legend_outside(ax)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert leg.get_window_extent(r).x0 >= ax.get_window_extent(r).x1
    assert viz.legend_outside(fig.add_subplot(2, 2, 4)) is None     # nothing labelled: no legend
    fig2 = _fig(5, 4)
    ax2 = fig2.add_subplot(1, 1, 1)
    for k in range(4):
        ax2.plot([0, 1], [k, k + 1], label=f"curve {k}")
    ax2.set_xlabel("a label under the ticks")
    fig2.subplots_adjust(bottom=0.45)
    leg = viz.legend_outside(ax2, side="below")
    fig2.canvas.draw()
    r = fig2.canvas.get_renderer()
    assert leg.get_window_extent(r).y1 <= ax2.xaxis.label.get_window_extent(r).y0
    with pytest.raises(ValueError, match="side"):
        viz.legend_outside(ax2, side="left")


def test_landmarks_on_draws_points_and_boundaries():
    lay = landmarks.get("inner51")
    pts = np.random.default_rng(1).uniform(0, 10, (lay.num_points, 2))
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    sc = viz.landmarks_on(ax, pts, lay)
    assert np.allclose(sc.get_offsets(), pts)
    assert len(ax.lines) == lay.num_edges
    ax2 = fig.add_subplot(2, 2, 4)
    viz.landmarks_on(ax2, pts[:10], lay)                             # not this layout's points: no boundaries
    assert len(ax2.lines) == 0


def test_mark_truth_at_the_point():
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.zeros((10, 10)))
    line = viz.mark_truth(ax, (3.25, 7.5))
    assert line.get_xydata().tolist() == [[3.25, 7.5]] and line.get_label() == "ground truth"


def test_annotate_cells_writes_every_value():
    a = np.arange(6).reshape(2, 3)
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    viz.annotate_cells(ax, a, fmt="{:d}")
    assert sorted((t.get_position(), t.get_text()) for t in ax.texts) == \
        sorted(((c, r), str(a[r, c])) for r in range(2) for c in range(3))
    ax2 = fig.add_subplot(2, 2, 4)
    im = ax2.imshow(a, cmap="viridis")                               # dark purple (0) to bright yellow (5)
    viz.annotate_cells(ax2, a, fmt="{:d}", im=im)
    colours = {t.get_text(): t.get_color() for t in ax2.texts}
    assert colours["0"] == "white" and colours["5"] == "black"


def test_ced_plot_scores_match_metrics():
    rng = np.random.default_rng(2)
    curves = {"model": rng.uniform(0, 0.2, 50), "mean shape": rng.uniform(0.1, 0.4, 50)}
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    scores = viz.ced_plot(ax, curves, thr=0.1, styles={"mean shape": {"ls": "--"}})
    for k, v in curves.items():
        assert scores[k] == pytest.approx(metrics.fr_auc(v, thr=0.1))
    assert [ln.get_linestyle() for ln in ax.lines] == ["-", "--"]
    assert ax.get_xlim() == (0, 0.1)


def test_notebook_rc_titles_are_readable():
    # 72 dpi with 8 pt titles gave 8 px text; NOTEBOOK_RC must give titles of at least 13 px
    heights = {}
    for name, rc in (("old", {"figure.dpi": 72, "axes.titlesize": 8}), ("notebook", viz.NOTEBOOK_RC)):
        with matplotlib.rc_context(rc):
            fig = Figure(figsize=(3, 2))
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            t = ax.set_title("Hg title")
            fig.canvas.draw()
            heights[name] = t.get_window_extent(fig.canvas.get_renderer()).height
    assert heights["old"] < 12 <= 13 <= heights["notebook"]
