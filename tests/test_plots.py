"""Figure contents: hull segments equal the computed extremes, the −c markers, maps, curves."""

from __future__ import annotations

import io
import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from dictopt.data.sources import as_source
from dictopt.plots.curves import training_curves, wide_curves
from dictopt.plots.figure import to_png
from dictopt.plots.hull import hull_plot, pair_data, pair_verdict
from dictopt.plots.maps import c5_margins, condition_bars, cooccurrence_scatter, violation_map
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError
from tests._plots_world import planted


@pytest.fixture(scope="module")
def world():
    return planted()


def pixels(fig) -> np.ndarray:  # noqa: ANN001
    return mpimg.imread(io.BytesIO(to_png(fig)))


def brute(codes: np.ndarray, i: int, j: int, tau: float = 0.0) -> dict[str, float]:
    off_j, off_i = codes[:, j] <= tau, codes[:, i] <= tau
    return {"lo_i": codes[off_j, i].min(), "hi_i": codes[off_j, i].max(),
            "lo_j": codes[off_i, j].min(), "hi_j": codes[off_i, j].max(),
            "mean_i": codes[:, i].mean(), "mean_j": codes[:, j].mean(),
            "coactive": int(((codes[:, i] > tau) & (codes[:, j] > tau)).sum())}


@pytest.mark.parametrize("chunk", [37, 600])
def test_pair_data_streamed_equals_brute_force(world, chunk):
    D, x, codes, _ = world
    pairs = [(1, 0), (2, 3), (0, 2)]
    src = as_source(x, chunk_size=chunk)
    pds = pair_data(D, src, pairs, codes=codes, sample=100, seed=1)
    for pd, (i, j) in zip(pds, pairs, strict=True):
        ref = brute(codes, i, j)
        for name, value in ref.items():
            assert getattr(pd, name) == pytest.approx(value, rel=1e-12, abs=1e-15), name
        # the kept extreme points are data points attaining the extremes
        assert pd.extremes[1, 0] == pytest.approx(ref["hi_i"]) and pd.extremes[1, 1] == 0
        assert pd.sample.shape == (100, 2)
        rows = {tuple(r) for r in codes[:, [i, j]].round(12)}
        assert all(tuple(r) in rows for r in pd.sample.round(12))


def test_reservoir_keeps_every_point_when_small(world):
    D, x, codes, _ = world
    (pd,) = pair_data(D, as_source(x, chunk_size=50), [(0, 1)], codes=codes, sample=10_000)
    assert pd.sample.shape == (len(x), 2)
    assert sorted(pd.sample[:, 0]) == pytest.approx(sorted(codes[:, 0]))


def test_hull_plot_artists_match_extremes_and_marker(world):
    D, x, codes, report = world
    (pd,) = pair_data(D, x, [(1, 0)], codes=codes)
    fig = hull_plot(pd, report)
    ax = fig.axes[0]
    lines = {ln.get_gid(): ln for ln in ax.get_lines()}
    ref = brute(codes, 1, 0)
    c = float(D.atoms[1] @ D.atoms[0])
    seg_i = lines["hull_i"]
    np.testing.assert_allclose(seg_i.get_xdata(), [ref["lo_i"] / ref["mean_i"] - 1,
                                                   ref["hi_i"] / ref["mean_i"] - 1])
    np.testing.assert_allclose(seg_i.get_ydata(), [-1, -1])
    seg_j = lines["hull_j"]
    np.testing.assert_allclose(seg_j.get_ydata(), [ref["lo_j"] / ref["mean_j"] - 1,
                                                   ref["hi_j"] / ref["mean_j"] - 1])
    np.testing.assert_allclose(seg_j.get_xdata(), [-1, -1])
    np.testing.assert_allclose(lines["c_marker_i"].get_xydata(), [[-c, -1]])
    np.testing.assert_allclose(lines["c_marker_j"].get_xydata(), [[-1, -c]])
    # (1|0) is a strict hierarchy: H_10 = 0, so −c lies right of the degenerate segment [−1, −1]
    assert lines["c_marker_i"].get_color() == "tab:red"
    title = fig.get_suptitle()  # the verdict heads the figure, above the axes
    assert "(1|0) upper violated" in title and "certified decrease" in title
    dec = max(v.model_decrease for v in report.violations
              if v.condition == "C5" and {v.i, v.j} == {0, 1})
    assert f"{dec:.3g}" in title
    assert pixels(fig)[..., :3].std() > 0.05


def test_verdict_from_data_agrees_with_report(world):
    D, x, codes, report = world
    for i, j in [(1, 0), (2, 3), (0, 3)]:
        (pd,) = pair_data(D, x, [(i, j)], codes=codes, sample=0)
        from_data = pair_verdict(pd, rel=1e-6)
        from_report = pair_verdict(pd, report)
        assert from_data.violated == from_report.violated, (i, j)


def test_pair_data_bad_input(world):
    D, x, codes, _ = world
    with pytest.raises(DictoptInputError, match="distinct atoms"):
        pair_data(D, x, [(1, 1)], codes=codes)
    with pytest.raises(DictoptInputError, match="width"):
        pair_data(D, x[:, :3], [(0, 1)], codes=codes)


def test_violation_map_cells_are_margins(world):
    _, _, _, report = world
    fig = violation_map(report, top=10)
    (im,) = [a for a in fig.axes[0].get_images() if a.get_gid() == "violation_map"]
    atoms = fig.dictopt_atoms
    M = np.asarray(im.get_array())
    margins = c5_margins(report)
    assert margins
    for (i, j), m in margins.items():
        assert M[atoms.index(i), atoms.index(j)] == pytest.approx(m)
        v = next(v for v in report.violations if (v.i, v.j) == (i, j) and v.condition == "C5")
        if v.detail["side"] == "upper":
            mean = report.atoms[i]["mean_code"]
            assert m == pytest.approx(((1 - v.detail["cos"]) * mean - v.detail["H"]) / mean)
    marks = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "mark"]
    assert "H" in marks
    assert pixels(fig)[..., :3].std() > 0.05


def test_cooccurrence_and_bars(world):
    D, x, codes, report = world
    pds = pair_data(D, x, [(1, 0), (2, 3)], codes=codes, sample=0)
    fig = cooccurrence_scatter(pds, report)
    coll = {c.get_gid(): c for c in fig.axes[0].collections}
    hier = coll["pairs:hierarchy"].get_offsets()
    c10 = float(D.atoms[1] @ D.atoms[0])
    np.testing.assert_allclose(hier, [[c10, 1.0]])  # S_1 ⊆ S_0: co-occurrence 1
    fig = condition_bars(report, top=4)
    bars = [p for ax in fig.axes for p in ax.patches]
    assert len(bars) == 4 * 4
    assert pixels(fig)[..., :3].std() > 0.05


def test_wide_and_training_curves():
    sweep = {"l_inf": 0.5, "n": 10, "lam": 0.1, "n_rays": 4, "rows": [
        {"K": k, "losses": [0.5 + 1 / k, 0.52 + 1 / k], "best": 0.5 + 1 / k,
         "median": 0.51 + 1 / k, "ray_ownership": min(1.0, k / 4), "split_counts": [1, k // 2],
         "c5_violations": 4 - k // 2, "limit_init_loss": 0.5 if k >= 4 else None}
        for k in (1, 2, 4)]}
    fig = wide_curves(sweep)
    lines = {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines()}
    np.testing.assert_allclose(lines["best"].get_ydata(), [1.5, 1.0, 0.75])
    assert lines["L_inf"].get_ydata()[0] == 0.5
    np.testing.assert_allclose(lines["limit_init"].get_xydata(), [[4, 0.5]])
    with pytest.raises(DictoptInputError, match="sweep"):
        wide_curves({"rows": []})
    fig = training_curves([3.0, 2.0, 1.5])
    (ln,) = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "train:loss"]
    np.testing.assert_allclose(ln.get_ydata(), [3.0, 2.0, 1.5])
    assert pixels(fig)[..., :3].std() > 0.05


class _Relu:
    architecture = "test_relu_columns"

    def __init__(self, W, b, with_columns: bool) -> None:  # noqa: ANN001
        self.W, self.b = W, b
        if with_columns:
            self.encode_columns = lambda x, idx: torch.relu(x @ self.W[:, idx] + self.b[idx])

    def encode(self, x):  # noqa: ANN001, ANN201
        return torch.relu(x @ self.W + self.b)


def test_encode_columns_fast_path_equals_full_encode(world):
    D, x, _, _ = world
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D.d, D.K, generator=g, dtype=torch.float64)
    b = torch.full((D.K,), -0.3, dtype=torch.float64)
    scale = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    pairs = [(1, 0), (3, 2)]
    out = []
    for fast in (True, False):
        Dk = Dictionary(atoms=D.atoms, bias=D.bias, lam=D.lam, code_scale=scale,
                        encoder=_Relu(W, b, fast))
        out.append(pair_data(Dk, as_source(x, chunk_size=100), pairs, sample=50, seed=3))
    for fast_pd, full_pd in zip(*out, strict=True):
        for name in ("mean_i", "mean_j", "lo_i", "hi_i", "lo_j", "hi_j", "coactive"):
            assert getattr(fast_pd, name) == pytest.approx(getattr(full_pd, name), rel=1e-12)
        np.testing.assert_allclose(fast_pd.sample, full_pd.sample)


# ---- readability (issue 19): legends and text boxes never cover data --------------------------


def _boxes_over_data(fig) -> list[str]:  # noqa: ANN001
    """Legends and boxed texts whose bounding box overlaps an axes' data area (the axes
    patch), from the rendered artists' window extents."""
    from matplotlib.legend import Legend

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    areas = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()
             and ax.axison]
    boxes = []
    for artist in fig.findobj():
        if isinstance(artist, Legend) or (
                hasattr(artist, "get_bbox_patch") and artist.get_bbox_patch() is not None):
            boxes.append((type(artist).__name__, artist.get_window_extent(renderer)))
    bad = []
    for name, box in boxes:
        for area in areas:
            w = min(box.x1, area.x1) - max(box.x0, area.x0)
            h = min(box.y1, area.y1) - max(box.y0, area.y0)
            if w > 1 and h > 1:  # more than a pixel of overlap
                bad.append(f"{name} {box} overlaps axes {area}")
    return bad


def _every_figure(world, tmp_path):  # noqa: ANN001, ANN202
    from dictopt.plots.cards import RowTokens, feature_cards
    from dictopt.plots.curves import one_d_plot
    from dictopt.plots.html import build_figures

    D, x, codes, report = world
    sweep = {"l_inf": 0.5, "n": 10, "lam": 0.1, "n_rays": 4, "rows": [
        {"K": k, "losses": [0.5 + 1 / k], "best": 0.5 + 1 / k, "median": 0.5 + 1 / k,
         "ray_ownership": min(1.0, k / 4), "split_counts": [1, k], "c5_violations": 4 - k,
         "limit_init_loss": 0.5 if k >= 4 else None} for k in (1, 2, 4)]}
    figs = [f.figure for f in build_figures(report, data=x, dictionary=D, codes=codes, top=3,
                                            wide=sweep) if f.figure is not None]
    rng = np.random.default_rng(0)
    figs.append(one_d_plot(np.concatenate([rng.normal(2, 1, (300, 2)),
                                           rng.normal(-2, 1, (300, 2))]), 0.3, None))
    figs.append(training_curves([3.0, 2.0, 1.5]))
    tokens = RowTokens.from_strings([f"w{n}" for n in range(len(x))])
    figs += [c.histogram for c in feature_cards(D, x, tokens, {0: "test", 1: "test"},
                                                codes="optimal")]
    return figs


def test_no_legend_or_text_box_covers_data(world, tmp_path):
    figs = _every_figure(world, tmp_path)
    assert len(figs) >= 8
    legends = 0
    for fig in figs:
        assert _boxes_over_data(fig) == []
        legends += sum(ax.get_legend() is not None for ax in fig.axes)
    assert legends >= 4  # the check looked at real legends


def test_overlap_check_catches_an_inside_legend(world):
    """The check above can fail: a legend in the default place (inside the axes) is caught."""
    D, x, codes, report = world
    (pd,) = pair_data(D, x, [(1, 0)], codes=codes)
    fig = hull_plot(pd, report)
    fig.axes[0].legend(loc="upper right")
    assert _boxes_over_data(fig)


def _labels_clipped_or_crossing(fig) -> list[str]:  # noqa: ANN001
    """Texts (tick labels, axis labels, titles, legends) that leave the figure's canvas or
    cover another axes (not a twin sharing the same box), from the rendered extents: the
    figures have no layout engine, so their set margins must hold every label."""
    from matplotlib.legend import Legend
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    bad = []
    for ax in axes:
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = 1e-9 * (hi - lo)  # labels of ticks outside the limits are not drawn
            texts += [label for tick in axis.get_major_ticks()
                      if lo - span <= tick.get_loc() <= hi + span
                      for label in (tick.label1, tick.label2) if label.get_visible()]
        texts += [leg for leg in [ax.get_legend()] if leg is not None]
        for t in texts:
            if not t.get_visible() or (isinstance(t, Text) and not t.get_text()):
                continue
            box = t.get_window_extent(renderer)
            name = t.get_text() if isinstance(t, Text) else "legend"
            if box.x0 < page.x0 - 1 or box.x1 > page.x1 + 1 or box.y0 < page.y0 - 1 \
                    or box.y1 > page.y1 + 1:
                bad.append(f"{name!r} {box} leaves the figure {page}")
            if isinstance(t, Legend):
                continue  # legends against the axes: test_no_legend_or_text_box_covers_data
            for other in axes:
                area = other.get_window_extent(renderer)
                if other is ax or np.allclose(area.bounds, ax.get_window_extent(renderer).bounds):
                    continue
                w = min(box.x1, area.x1) - max(box.x0, area.x0)
                h = min(box.y1, area.y1) - max(box.y0, area.y0)
                if w > 1 and h > 1:
                    bad.append(f"{name!r} {box} covers axes {area}")
    for t in fig.texts + ([fig._suptitle] if fig._suptitle is not None else []):
        box = t.get_window_extent(renderer)
        if t.get_text() and (box.x0 < page.x0 - 1 or box.x1 > page.x1 + 1
                             or box.y0 < page.y0 - 1 or box.y1 > page.y1 + 1):
            bad.append(f"{t.get_text()!r} {box} leaves the figure {page}")
    return bad


def test_every_label_inside_the_figure_and_off_other_axes(world, tmp_path):
    figs = _every_figure(world, tmp_path)
    checked = 0
    for fig in figs:
        assert _labels_clipped_or_crossing(fig) == []
        checked += sum(len(ax.get_yticklabels()) for ax in fig.axes)
    assert checked > 50  # real tick labels were looked at


def test_label_check_catches_missing_margins(world):
    """The check above can fail: without the left margin the y label leaves the figure, and
    without the gap between panels the tick labels of one cover the next."""
    from dictopt.plots.figure import set_margins

    D, x, codes, report = world
    (pd,) = pair_data(D, x, [(1, 0)], codes=codes)
    fig = hull_plot(pd, report)
    set_margins(fig, left=0.0, right=3.5, bottom=0.6, top=0.5)
    assert any("leaves the figure" in b for b in _labels_clipped_or_crossing(fig))
    fig = training_curves({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.5],
                           "mse": [1000.0, 2000.0, 3000.0]})
    set_margins(fig, left=0.7, right=0.2, bottom=0.5, top=0.6, wspace=0.0, ncols=2)
    assert any("covers axes" in b for b in _labels_clipped_or_crossing(fig))


def test_one_point_and_empty_hulls_draw_visible_markers(world):
    D, x, codes, report = world
    (pd,) = pair_data(D, x, [(1, 0)], codes=codes)
    # (1|0) is a strict hierarchy: the hull of ã_1 where 0 is off is the single point −1
    fig = hull_plot(pd, report)
    seg = {ln.get_gid(): ln for ln in fig.axes[0].get_lines()}["hull_i"]
    assert np.ptp(seg.get_xdata()) == 0
    assert seg.get_marker() == "s" and seg.get_markersize() >= 10
    # an empty hull: atom j never off (all its codes positive)
    empty = pd._replace(n_off_j=0, lo_i=float("nan"), hi_i=float("nan"))
    lines = {ln.get_gid(): ln for ln in hull_plot(empty, None).axes[0].get_lines()}
    marker = lines["hull_i_empty"]
    assert marker.get_marker() == "D" and marker.get_markersize() >= 10
    assert marker.get_visible() and marker.get_markeredgewidth() >= 2
    assert lines["c_marker_i"].get_color() == "tab:red"  # −c cannot lie in an empty hull
    # the marker is drawn inside the figure (not clipped away)
    fig = marker.figure
    fig.canvas.draw()
    box = marker.get_window_extent(fig.canvas.get_renderer())
    assert box.width > 5 and box.height > 5
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and 0 <= box.y0 <= fig.bbox.height


def test_pair_data_does_not_depend_on_chunking(world):
    """Reservoir keys hash the row index, and extremes/counts merge exactly: any chunking gives
    the same PairData, sample included (means: sums in another order)."""
    D, x, codes, _ = world
    pairs = [(1, 0), (2, 3)]
    a = pair_data(D, as_source(x, chunk_size=37), pairs, codes=codes, sample=50, seed=4)
    b = pair_data(D, as_source(x, chunk_size=1000), pairs, codes=codes, sample=50, seed=4)
    for p, q in zip(a, b, strict=True):
        for name in p._fields:
            u, v = getattr(p, name), getattr(q, name)
            if isinstance(u, np.ndarray):
                np.testing.assert_array_equal(u, v, err_msg=name)
            elif isinstance(u, float) and math.isnan(u):
                assert math.isnan(v), name
            elif name in ("mean_i", "mean_j"):
                assert u == pytest.approx(v, rel=1e-14), name
            else:
                assert u == v, name
