"""Figures for a run directory: training curves, reconstructions, scores, errors, localization.

Every function draws one PNG at ``path`` (parent folders are created) and returns ``path``.
Images are (N, C, H, W) floats in [0, 1] with C = 1 or 3, as the data pipeline yields them
after undoing the [-1, 1] scaling; scores are raw (higher = more abnormal) and an image is
flagged when ``score > threshold``, as everywhere in ganomaly.

Figures are built with ``matplotlib.figure.Figure`` and its Agg canvas, never through
``pyplot``: importing this module selects no backend and needs no display, it leaves a
notebook user's backend alone, and there is no global figure registry to leak into (nothing
to close; a figure is freed when the function returns).

Example:
    >>> import numpy as np, pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "hist.png"
    >>> score_histogram(np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1]), 0.5, out).exists()
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ganomaly import metrics

__all__ = [
    "localization_figure",
    "loss_curves",
    "outcome_galleries",
    "pr_curve_plot",
    "restoration_grid",
    "roc_curve_plot",
    "score_boxplot",
    "score_histogram",
    "select_outcomes",
]

DPI = 110
NORMAL_COLOR = "#1f77b4"  # blue
ABNORMAL_COLOR = "#d62728"  # red
THRESHOLD_COLOR = "#222222"


def _place_grid(
    fig: Figure,
    *,
    left: float,
    right: float,
    top: float,
    bottom: float,
    wgap: float = 0.0,
    hgap: float = 0.0,
) -> None:
    """Place the figure's subplot grid with fixed margins and gaps, all in inches.

    Fixed, not ``layout="constrained"``: constrained layout measures every text on each
    draw, and on the MNIST demo it took a third of the figures' time (the seven figures,
    first draw in a fresh process: 3.7-4.5 s constrained, 2.2-2.9 s fixed). Each figure's
    margins are sized for its own labels; the few labels that depend on the data (class
    names, row counts) size their margin from their length.
    """
    width, height = fig.get_size_inches()
    spec = fig.axes[0].get_subplotspec()
    assert spec is not None  # every figure here is made by fig.subplots
    rows, cols = spec.get_gridspec().get_geometry()
    cell_width = (width - left - right - (cols - 1) * wgap) / cols
    cell_height = (height - top - bottom - (rows - 1) * hgap) / rows
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height,
        top=1 - top / height, wspace=wgap / cell_width, hspace=hgap / cell_height,
    )  # fmt: skip


def _colorbar_beside(
    fig: Figure, mappable: Any, top: Axes, bottom: Axes, share: float, label: str
) -> Any:
    """A color bar in the right margin, beside the axes from `top` to `bottom`, `share` of
    their height and centred on them; the axes keep their width (a bar that takes its
    room from one row would make that row's tiles narrower than the others')."""
    y1, y0 = top.get_position().y1, bottom.get_position().y0
    width = fig.get_size_inches()[0]
    left, height = top.get_position().x1 + 0.2 / width, share * (y1 - y0)
    bar = fig.add_axes((left, y0 + (y1 - y0 - height) / 2, 0.12 / width, height))
    return fig.colorbar(mappable, cax=bar, label=label)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    """Validate an (N, C, H, W) batch in [0, 1] with C in {1, 3}; returns float64, clipped."""
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must be (N, C, H, W) with N >= 1 and C in {{1, 3}}, got {arr.shape}"
        )
    # Clipping only guards imshow against tiny float overshoots (it warns outside [0, 1]).
    return np.clip(arr, 0.0, 1.0)


def _show_image(ax: Axes, image: np.ndarray, extent: tuple[float, float, float, float]) -> None:
    """Draw one (C, H, W) image in [0, 1]: gray for one channel, RGB for three."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0, extent=extent)
    else:
        ax.imshow(image.transpose(1, 2, 0), extent=extent)


# Blank columns between the tiles of a mosaic row.
TILE_GAP = 0.08  # of a tile's width


def _mosaic(tiles: np.ndarray, gap: int) -> np.ndarray:
    """(n, H, W) or (n, H, W, 3) tiles side by side with `gap` NaN columns between them: one
    image per row of a figure, so a grid costs one axes per row, not one per tile (matplotlib's
    layout time grows with the number of axes; 48 tiny axes took most of a run's figure time)."""
    n, h, w = tiles.shape[:3]
    mosaic = np.full((h, n * (w + gap) - gap, *tiles.shape[3:]), np.nan)
    for j in range(n):
        mosaic[:, j * (w + gap) : j * (w + gap) + w] = tiles[j]
    return mosaic


def _show_row(ax: Axes, images: np.ndarray, gap: int, **heat: Any) -> Any:
    """Draw (n, C, H, W) images in [0, 1] as one mosaic row (gray for one channel, RGB for
    three), or, with `heat` (imshow keywords such as cmap), (n, H, W) maps on that scale;
    the gaps are white."""
    if heat:
        cmap = matplotlib.colormaps[heat.pop("cmap")].with_extremes(bad="white")
        return ax.imshow(_mosaic(images, gap), cmap=cmap, interpolation="nearest", **heat)
    if images.shape[1] == 1:
        gray = matplotlib.colormaps["gray"].with_extremes(bad="white")
        mosaic = _mosaic(images[:, 0], gap)
        return ax.imshow(mosaic, cmap=gray, vmin=0.0, vmax=1.0, interpolation="nearest")
    rgb = _mosaic(images.transpose(0, 2, 3, 1), gap)
    return ax.imshow(np.nan_to_num(rgb, nan=1.0), interpolation="nearest")


def _bare(ax: Axes) -> None:
    """Hide ticks and spines but keep the axes, so a y label can still name the row."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _empty_note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35")


# --------------------------------------------------------------------------- training


def loss_curves(history: Sequence[dict[str, float]], path: Path) -> Path:
    """Training curves: the latent loss (GANomaly's L_enc or Skip-GANomaly's L_lat), L_con,
    L_adv, L_G, L_D and discriminator re-inits per epoch.

    Args:
        history: one row per epoch with keys ``epoch, l_enc (or l_lat), l_con, l_adv, l_g,
            l_d, d_reinits`` (the ``history.csv`` columns); missing keys are drawn as gaps.
            ``d_reinits`` is drawn as given: the number of re-inits logged for that epoch.
        path: PNG to write.
    """
    skip = any("l_lat" in row for row in history)
    panels = [
        ("l_lat", "$L_{lat}$ = MSE(f(x), f($\\hat{x}$))", "loss")
        if skip
        else ("l_enc", "$L_{enc}$ = MSE(z, $\\hat{z}$)", "loss"),
        ("l_con", "$L_{con}$ = L1(x, $\\hat{x}$)", "loss"),
        (
            "l_adv",
            "$L_{adv}$ (BCE of D on $\\hat{x}$)" if skip else "$L_{adv}$ (feature matching)",
            "loss",
        ),
        ("l_g", "$L_G$ (weighted total)", "loss"),
        ("l_d", "$L_D$ (discriminator loss)", "loss"),
        ("d_reinits", "D re-initializations ($L_D$ < 1e-5)", "re-inits"),
    ]
    fig = Figure(figsize=(13, 7))
    fig.suptitle(f"{'Skip-GANomaly' if skip else 'GANomaly'} training losses per epoch")
    axes = fig.subplots(2, 3)
    _place_grid(fig, left=0.75, right=0.2, top=0.75, bottom=0.55, wgap=0.8, hgap=0.85)
    epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)], dtype=float)
    for ax, (key, title, ylabel) in zip(axes.ravel(), panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 2.5" ticks
        # Short tick labels (1e4 and up as "×10^4" over the axis), so the fixed gaps between
        # panels hold them.
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        values = np.array([row.get(key, np.nan) for row in history], dtype=float)
        if not np.isfinite(values).any():
            _empty_note(ax, "no data")
            continue
        if key == "d_reinits":
            ax.bar(epochs, values, width=0.8, color="#9467bd")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, max(float(np.nanmax(values)), 1.0) * 1.1)  # counts: never below 0
            if not np.nansum(values):
                _empty_note(ax, "none: L_D never fell below the threshold")
            continue
        # Markers keep a short run (a single epoch) visible as points.
        ax.plot(epochs, values, marker="o" if len(epochs) <= 30 else None, markersize=3)
        finite = values[np.isfinite(values)]
        if key == "l_d" and (finite > 0).all() and finite.max() >= 10 * finite.min():
            # L_D spans decades when D wins (and triggers re-inits near 1e-5). Within one
            # decade a log axis labels its minor ticks ("1.65×10^0"), too wide for the gap.
            ax.set_yscale("log")
    return _save(fig, path)


def restoration_grid(
    x: np.ndarray, x_hat: np.ndarray, path: Path, title: str = "Inputs and reconstructions"
) -> Path:
    """Three rows per image column: input x, reconstruction x̂ and |x − x̂|.

    The difference is the channel mean of |x − x̂| on a fixed 0..1 heat scale, so columns
    (and figures from different runs) are comparable.

    Args:
        x, x_hat: (n, C, H, W) in [0, 1], C in {1, 3}, same shape.
        path: PNG to write.
        title: figure title.
    """
    x = _check_images(x, "x")
    x_hat = _check_images(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat differ in shape: {x.shape} vs {x_hat.shape}")
    n, _, h, w = x.shape
    diff = np.abs(x - x_hat).mean(axis=1)  # (n, H, W)
    gap = max(1, round(TILE_GAP * w))
    fig = Figure(figsize=(1.3 * n + 1.6, 4.4))
    fig.suptitle(title)
    axes = fig.subplots(3, 1, squeeze=False)[:, 0]
    _place_grid(fig, left=0.45, right=1.2, top=0.45, bottom=0.1, hgap=0.12)
    _show_row(axes[0], x, gap)
    _show_row(axes[1], x_hat, gap)
    heat = _show_row(axes[2], diff, gap, cmap="hot", vmin=0.0, vmax=1.0)
    row_labels = ["input x", "reconstruction $\\hat{x}$", "$|x - \\hat{x}|$"]
    for ax, label in zip(axes, row_labels, strict=True):
        _bare(ax)
        ax.set_ylabel(label)
    _colorbar_beside(fig, heat, axes[2], axes[2], 1.0, "mean abs. error")
    return _save(fig, path)


# --------------------------------------------------------------------------- scores


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key under which "2" < "10" and "cut" < "cut_lead" (digit runs compare as numbers)."""
    return [
        (0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|\D+", name)
    ]


def score_boxplot(
    scores: np.ndarray,
    class_names: Sequence[str],
    normal_classes: set[str],
    threshold: float,
    path: Path,
) -> Path:
    """One box of scores per class, normal classes in blue, abnormal in red, threshold dashed.

    Args:
        scores: (N,) raw scores.
        class_names: (N,) the class of each image; boxes are in natural order ("2" < "10").
        normal_classes: the class names that count as normal.
        threshold: raw decision threshold.
        path: PNG to write.
    """
    scores = np.asarray(scores, dtype=np.float64)
    names = np.asarray([str(c) for c in class_names])
    if names.shape != scores.shape or scores.ndim != 1:
        raise ValueError("scores and class_names must be 1-D and of the same length")
    classes = sorted(set(names.tolist()), key=_natural_key)
    normal = {str(c) for c in normal_classes}
    tick_labels = [f"{c}\n({int((names == c).sum())})" for c in classes]
    rotation = 0 if len(classes) <= 12 else 60
    # Room under the axes for the tick labels (10 pt: about 0.07 in a character, 0.17 in a
    # line), turned by `rotation`, then the axis label.
    longest = max((len(line) for label in tick_labels for line in label.split("\n")), default=1)
    turn = np.radians(rotation)
    under = 0.07 * longest * np.sin(turn) + 2 * 0.17 * np.cos(turn)
    fig = Figure(figsize=(max(6.0, 0.75 * len(classes) + 2.5), 4.4 + under))
    ax = fig.subplots()
    _place_grid(fig, left=0.85, right=0.2, top=0.4, bottom=under + 0.55)
    ax.set_title("Anomaly score per class")
    ax.set_xlabel("class (number of test images)")
    ax.set_ylabel("anomaly score (higher = more abnormal)")
    if classes:
        boxes = ax.boxplot(
            [scores[names == c] for c in classes],
            patch_artist=True,
            widths=0.6,
            medianprops={"color": "black"},
            flierprops={"markersize": 2, "alpha": 0.5},
        )
        for box, c in zip(boxes["boxes"], classes, strict=True):
            box.set_facecolor(NORMAL_COLOR if c in normal else ABNORMAL_COLOR)
            box.set_alpha(0.7)
        ax.set_xticks(range(1, len(classes) + 1), tick_labels, rotation=rotation)
    else:
        _empty_note(ax, "no scores")
    ax.axhline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.2)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        handles=[
            Patch(facecolor=NORMAL_COLOR, alpha=0.7, label="normal class"),
            Patch(facecolor=ABNORMAL_COLOR, alpha=0.7, label="abnormal class"),
            Line2D(
                [], [], color=THRESHOLD_COLOR, linestyle="--", label=f"threshold {threshold:.4g}"
            ),
        ],
        loc="best",
    )
    return _save(fig, path)


def _labels_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels_arr = np.asarray(labels).astype(int)
    scores_arr = np.asarray(scores, dtype=np.float64)
    if labels_arr.shape != scores_arr.shape or scores_arr.ndim != 1:
        raise ValueError("labels and scores must be 1-D and of the same length")
    return labels_arr, scores_arr


def score_histogram(scores: np.ndarray, labels: np.ndarray, threshold: float, path: Path) -> Path:
    """Histograms of normal and abnormal scores on shared bins, with the threshold.

    Args:
        scores: (N,) raw scores.
        labels: (N,) 0 = normal, 1 = abnormal.
        threshold: raw decision threshold (the bins always include it).
        path: PNG to write.
    """
    labels, scores = _labels_scores(labels, scores)
    # Shared edges, so the two histograms are comparable bar for bar.
    span = np.append(scores, threshold)
    bins = np.histogram_bin_edges(span, bins=min(60, max(10, int(np.sqrt(span.size)) * 2)))
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    _place_grid(fig, left=0.85, right=0.2, top=0.4, bottom=0.6)
    ax.set_title("Anomaly score distribution")
    ax.set_xlabel("anomaly score (higher = more abnormal)")
    ax.set_ylabel("number of images")
    for value, name, color in ((0, "normal", NORMAL_COLOR), (1, "abnormal", ABNORMAL_COLOR)):
        subset = scores[labels == value]
        if subset.size == 0:
            continue  # e.g. validation images only, all normal: no empty legend entry
        n_flagged = int((subset > threshold).sum())
        ax.hist(
            subset,
            bins=bins.tolist(),
            color=color,
            alpha=0.55,
            label=f"{name} (n={subset.size}, {n_flagged} above threshold)",
        )
    ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", label=f"threshold {threshold:.4g}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def roc_curve_plot(labels: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """ROC curve (abnormal = positive) with AUROC in the legend and the chance diagonal.

    With a single class in ``labels`` the curve is undefined: the figure says so.
    """
    labels, scores = _labels_scores(labels, scores)
    fig = Figure(figsize=(5.5, 5.2))
    ax = fig.subplots()
    _place_grid(fig, left=0.75, right=0.2, top=0.4, bottom=0.6)
    ax.set_title("ROC curve (abnormal = positive)")
    ax.set_xlabel("false positive rate (normals flagged)")
    ax.set_ylabel("true positive rate (abnormals flagged)")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance (AUROC 0.5)")
    if np.unique(labels).size == 2:
        positive = labels.astype(bool)
        fpr, tpr = metrics.roc_curve(positive, scores)
        area = metrics.auroc(positive, scores)
        ax.plot(fpr, tpr, color=ABNORMAL_COLOR, linewidth=2, label=f"model (AUROC {area:.4f})")
        ax.legend(loc="lower right")
    else:
        _empty_note(ax, "undefined: the test labels\ncontain a single class")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pr_curve_plot(labels: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """Precision-recall curve (abnormal = positive) with average precision in the legend.

    The baseline is the prevalence of abnormal images: the precision of random flagging.
    With a single class in ``labels`` the curve is undefined: the figure says so.
    """
    labels, scores = _labels_scores(labels, scores)
    fig = Figure(figsize=(5.5, 5.2))
    ax = fig.subplots()
    _place_grid(fig, left=0.75, right=0.2, top=0.4, bottom=0.6)
    ax.set_title("Precision-recall curve (abnormal = positive)")
    ax.set_xlabel("recall (abnormals flagged)")
    ax.set_ylabel("precision (flagged that are abnormal)")
    if np.unique(labels).size == 2:
        prevalence = float(labels.mean())
        ax.axhline(
            prevalence, color="0.6", linestyle=":", label=f"chance (prevalence {prevalence:.3f})"
        )
        positive = labels.astype(bool)
        precision, recall = metrics.pr_curve(positive, scores)
        ap = metrics.average_precision(positive, scores)
        # Steps, not straight segments: AP is the area under this step function.
        ax.plot(
            recall,
            precision,
            drawstyle="steps-post",
            color=ABNORMAL_COLOR,
            linewidth=2,
            label=f"model (AP {ap:.4f})",
        )
        ax.legend(loc="lower left")
    else:
        _empty_note(ax, "undefined: the test labels\ncontain a single class")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- galleries

# (key, row title, label, flagged, show the highest scores first?)
_OUTCOMES = [
    ("true_negative", "normal → normal (true negatives): lowest scores", 0, False, False),
    (
        "false_negative",
        "abnormal → normal (missed): lowest scores, the worst misses",
        1,
        False,
        False,
    ),
    ("false_positive", "normal → abnormal (false alarms): highest scores", 0, True, True),
    ("true_positive", "abnormal → abnormal (detected): highest scores", 1, True, True),
]


def select_outcomes(
    labels: np.ndarray, is_anomaly: np.ndarray, scores: np.ndarray, per_outcome: int = 8
) -> dict[str, tuple[np.ndarray, int]]:
    """Pick the gallery examples of each outcome: ``{outcome: (indices, count)}``.

    Outcomes are ``true_negative``, ``false_negative``, ``false_positive`` and
    ``true_positive``. Correct outcomes show their most typical members (lowest scores for
    normals, highest for abnormals); errors show the most confidently wrong (the lowest-scored
    misses, the highest-scored false alarms). Ties keep the input order.

    Example:
        >>> labels, flagged = np.array([0, 1, 1]), np.array([0, 0, 1])
        >>> picks = select_outcomes(labels, flagged, np.array([0.1, 0.2, 0.9]))
        >>> picks["false_negative"][0].tolist(), picks["false_negative"][1]
        ([1], 1)
    """
    labels_arr = np.asarray(labels).astype(int)
    flagged = np.asarray(is_anomaly).astype(bool)
    scores_arr = np.asarray(scores, dtype=np.float64)
    if not labels_arr.shape == flagged.shape == scores_arr.shape or scores_arr.ndim != 1:
        raise ValueError("labels, is_anomaly and scores must be 1-D and of the same length")
    picks = {}
    for key, _, label, is_flagged, highest_first in _OUTCOMES:
        members = np.flatnonzero((labels_arr == label) & (flagged == is_flagged))
        key_scores = -scores_arr[members] if highest_first else scores_arr[members]
        ranked = members[np.argsort(key_scores, kind="stable")]
        picks[key] = (ranked[:per_outcome], int(members.size))
    return picks


def outcome_galleries(
    images: np.ndarray | Callable[[np.ndarray], np.ndarray],
    labels: np.ndarray,
    is_anomaly: np.ndarray,
    scores: np.ndarray,
    path: Path,
    per_outcome: int = 8,
) -> Path:
    """Four rows of example images, one per outcome, each tile titled with its score.

    Rows: normal → normal, abnormal → normal (missed), normal → abnormal (false alarm),
    abnormal → abnormal (detected); see :func:`select_outcomes` for which examples are shown.
    Row titles carry the outcome's count; an empty outcome shows "none".

    Args:
        images: (N, C, H, W) in [0, 1], or a function that returns those at given indices
            (so a large test set is never converted whole: only the shown tiles are).
        labels: (N,) 0 = normal, 1 = abnormal.
        is_anomaly: (N,) the model's decision (score > threshold).
        scores: (N,) raw scores.
        path: PNG to write.
        per_outcome: examples per row.
    """
    if per_outcome < 1:
        raise ValueError(f"per_outcome must be >= 1, got {per_outcome}")
    picks = select_outcomes(labels, is_anomaly, scores, per_outcome)
    if not callable(images) and len(images) != np.asarray(scores).shape[0]:
        raise ValueError("images and scores differ in length")
    shown = np.concatenate([indices for indices, _ in picks.values()])
    tiles = _check_images((images if callable(images) else images.__getitem__)(shown), "images")
    # the tiles of each outcome, in the order select_outcomes gave them
    rows = np.split(tiles, np.cumsum([indices.size for indices, _ in picks.values()])[:-1])
    row_of = dict(zip(picks, rows, strict=True))
    scores = np.asarray(scores, dtype=np.float64)
    _, _, h, w = tiles.shape
    gap = max(1, round(TILE_GAP * w))
    # At least 7.5 in wide so the row titles fit even with few tiles per row.
    fig = Figure(figsize=(max(7.5, 1.35 * per_outcome + 0.6), 7.6))
    fig.suptitle("Outcomes at the threshold (scores under the tiles)", fontweight="bold")
    axes = fig.subplots(4, 1, squeeze=False)[:, 0]
    _place_grid(fig, left=0.05, right=0.05, top=0.6, bottom=0.25, hgap=0.55)
    for ax, (key, title, label, is_flagged, _) in zip(axes, _OUTCOMES, strict=True):
        indices, count = picks[key]
        correct = label == int(is_flagged)
        ax.set_title(
            f"{title} — {count} image{'s' if count != 1 else ''}",
            fontsize=10,
            color="black" if correct else ABNORMAL_COLOR,
        )
        _bare(ax)
        # Every row spans per_outcome tiles, so tiles line up across rows.
        ax.set_xlim(-0.5, per_outcome * (w + gap) - gap - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        if indices.size == 0:
            ax.text(0.5, 0.5, "none", ha="center", va="center", color="0.35", fontsize=12,
                    transform=ax.transAxes)  # fmt: skip
            continue
        _show_row(ax, row_of[key], gap)
        ax.set_xlim(-0.5, per_outcome * (w + gap) - gap - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        for j, i in enumerate(indices):
            ax.text(j * (w + gap) + (w - 1) / 2, h + 0.5, f"{scores[i]:.4g}", ha="center",
                    va="top", fontsize=8)  # fmt: skip
    return _save(fig, path)


# --------------------------------------------------------------------------- localization


def localization_figure(
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | None,
    path: Path,
    n: int = 6,
) -> Path:
    """Per row: the image, its anomaly map over it, and the ground-truth mask if given.

    All maps share one color scale (0 to the largest value shown), so rows are comparable;
    the mask's outline is drawn on the overlay. Maps and masks may have another resolution
    than the images: they are stretched over the same extent, with no resampling code here.

    Args:
        images: (N, C, H, W) in [0, 1].
        maps: (N, h, w) anomaly maps, >= 0.
        masks: (N, h', w') 0/1 ground truth, or None (the mask column is left out).
        path: PNG to write.
        n: the first ``n`` images are shown.
    """
    images = _check_images(images, "images")
    maps_arr = np.asarray(maps, dtype=np.float64)
    if maps_arr.ndim != 3 or maps_arr.shape[0] != images.shape[0]:
        raise ValueError(f"maps must be (N, h, w) with N = {images.shape[0]}, got {maps_arr.shape}")
    masks_arr = None if masks is None else np.asarray(masks).astype(float)
    if masks_arr is not None and (masks_arr.ndim != 3 or masks_arr.shape[0] != images.shape[0]):
        raise ValueError(f"masks must be (N, h, w) with N = {images.shape[0]}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rows = min(n, images.shape[0])
    _, _, h, w = images.shape
    extent = (0.0, float(w), float(h), 0.0)
    vmax = float(maps_arr[:rows].max()) or 1.0  # an all-zero map still gets a valid scale
    columns = ["image", "anomaly map (mask outline white)", "ground-truth mask"]
    if masks_arr is None:
        columns = ["image", "anomaly map"]
    fig = Figure(figsize=(2.3 * len(columns) + 1.2, 2.3 * rows + 0.8))
    fig.suptitle("Anomaly localization")
    axes = fig.subplots(rows, len(columns), squeeze=False)
    _place_grid(fig, left=0.4, right=1.2, top=0.65, bottom=0.1, wgap=0.1, hgap=0.1)
    heat = None
    for r in range(rows):
        _show_image(axes[r, 0], images[r], extent)
        _show_image(axes[r, 1], images[r], extent)
        heat = axes[r, 1].imshow(
            maps_arr[r], cmap="jet", alpha=0.5, vmin=0.0, vmax=vmax, extent=extent
        )
        if masks_arr is not None:
            mask = masks_arr[r]
            axes[r, 2].imshow(mask, cmap="gray", vmin=0.0, vmax=1.0, extent=extent)
            if mask.max() > 0 and mask.min() < 1:  # contour needs both levels present
                my, mx = mask.shape
                xs = (np.arange(mx) + 0.5) * w / mx  # pixel centres in image coordinates
                ys = (np.arange(my) + 0.5) * h / my
                axes[r, 1].contour(xs, ys, mask, levels=[0.5], colors="white", linewidths=1.0)
        for ax in axes[r]:
            _bare(ax)
        axes[r, 0].set_ylabel(f"#{r}")
    for ax, name in zip(axes[0], columns, strict=True):
        ax.set_title(name, fontsize=10)
    assert heat is not None  # rows >= 1 was checked
    # Beside the whole grid, not between columns: the mask column stays next to the overlay.
    cbar = _colorbar_beside(fig, heat, axes[0, -1], axes[-1, -1], 0.6, "anomaly map value")
    if cbar.solids is not None:  # an opaque bar reads better than the overlay's alpha
        cbar.solids.set_alpha(1.0)
    return _save(fig, path)
