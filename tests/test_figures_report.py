"""Figures are real, readable PNGs; the report links them all and escapes what it shows."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import Image

from ganomaly import figures
from ganomaly.report import ORACLE_NOTE, write_report

RNG_SEED = 0


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """A small synthetic test set: 40 images of 3 classes, class "1" normal."""
    rng = np.random.default_rng(RNG_SEED)
    classes = np.array(["1", "2", "10"] * 13 + ["1"])
    labels = (classes != "1").astype(int)
    scores = rng.gamma(2.0, 0.01, classes.size) + 0.03 * labels
    images = rng.random((classes.size, 1, 16, 16))
    return {"classes": classes, "labels": labels, "scores": scores, "images": images}


def _history(n_epochs: int = 5) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "l_enc": 0.1 / e,
            "l_con": 0.3 / e,
            "l_adv": 0.02 * e,
            "l_g": 15.0 / e,
            "l_d": 10.0 ** (-e),
            "d_reinits": float(e == n_epochs),
        }
        for e in range(1, n_epochs + 1)
    ]


def _load(path: Path) -> np.ndarray:
    """The PNG as an (H, W, 3) int array, after checking it is a real, non-blank figure."""
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 300 and image.height >= 250
        rgb = np.asarray(image.convert("RGB"), dtype=int)
    # A blank (or title-only) canvas is almost uniformly white: std well under 10.
    assert rgb.std() > 20, f"{path.name} looks blank"
    return rgb


def _reddish(rgb: np.ndarray) -> int:
    return int(((rgb[..., 0] - rgb[..., 2]) > 60).sum())


def _bluish(rgb: np.ndarray) -> int:
    return int(((rgb[..., 2] - rgb[..., 0]) > 60).sum())


def _all_figures(out: Path, d: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """Draw every figure kind into ``out/figures``; returns (relative path, caption) pairs."""
    threshold = float(np.quantile(d["scores"][d["labels"] == 0], 0.9))
    rgb = np.random.default_rng(1).random((3, 3, 24, 20))
    maps = np.zeros((3, 12, 10))
    maps[:, 3:6, 4:8] = 1.0
    draw: dict[str, Callable[[Path], Path]] = {
        "loss_curves": lambda p: figures.loss_curves(_history(), p),
        "restoration_grid": lambda p: figures.restoration_grid(
            d["images"][:4], np.clip(d["images"][:4] * 0.5, 0, 1), p
        ),
        "score_boxplot": lambda p: figures.score_boxplot(
            d["scores"], list(d["classes"]), {"1"}, threshold, p
        ),
        "score_histogram": lambda p: figures.score_histogram(
            d["scores"], d["labels"], threshold, p
        ),
        "roc": lambda p: figures.roc_curve_plot(d["labels"], d["scores"], p),
        "pr": lambda p: figures.pr_curve_plot(d["labels"], d["scores"], p),
        "galleries": lambda p: figures.outcome_galleries(
            d["images"], d["labels"], d["scores"] > threshold, d["scores"], p, per_outcome=4
        ),
        "localization": lambda p: figures.localization_figure(rgb, maps, maps > 0.5, p, n=3),
    }
    pairs = []
    for name, fn in draw.items():
        relative = f"figures/{name}.png"
        assert fn(out / relative) == out / relative
        pairs.append((relative, f"{name} <caption>"))
    return pairs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data: dict[str, np.ndarray]) -> Path:
    out = tmp_path_factory.mktemp("run")
    pairs = _all_figures(out, data)
    write_report(
        out,
        {"auroc": 0.912345, "best_f1_oracle": 0.5, "threshold": 0.00012345, "aupr": None},
        {"data": "digits", "protocol": "normal-class", "target_class": 1, "note": "<script>x"},
        pairs,
    )
    (out / "pairs.txt").write_text("\n".join(p for p, _ in pairs))
    return out


def test_every_figure_is_a_readable_non_blank_png(run_dir: Path) -> None:
    names = (run_dir / "pairs.txt").read_text().split("\n")
    assert len(names) == 8
    for name in names:
        _load(run_dir / name)


def test_figures_show_their_content(run_dir: Path) -> None:
    # The ROC curve is drawn in red; the box plot has blue (normal) and red (abnormal) boxes;
    # the restoration grid's |x - x_hat| row uses a heat map; the overlay uses jet (blue).
    assert _reddish(_load(run_dir / "figures/roc.png")) > 500
    boxes = _load(run_dir / "figures/score_boxplot.png")
    assert _bluish(boxes) > 500 and _reddish(boxes) > 1000
    assert _reddish(_load(run_dir / "figures/restoration_grid.png")) > 1000
    assert _bluish(_load(run_dir / "figures/localization.png")) > 1000


def test_single_class_curves_are_annotated_not_crashing(tmp_path: Path) -> None:
    scores = np.array([0.1, 0.2, 0.3])
    roc = _load(figures.roc_curve_plot(np.zeros(3, dtype=int), scores, tmp_path / "roc.png"))
    pr = _load(figures.pr_curve_plot(np.ones(3, dtype=int), scores, tmp_path / "pr.png"))
    assert _reddish(roc) == 0 and _reddish(pr) == 0  # no model curve drawn


def test_edge_inputs_still_give_figures(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    # No false alarms and no misses ("none" rows), a single epoch, no mask column.
    labels, scores = data["labels"], data["scores"]
    figures.outcome_galleries(
        data["images"], labels, labels == 1, scores, tmp_path / "g.png", per_outcome=3
    )
    _load(tmp_path / "g.png")
    _load(figures.loss_curves(_history(1), tmp_path / "one_epoch.png"))
    _load(figures.loss_curves([], tmp_path / "empty.png"))
    rgb = np.random.default_rng(2).random((2, 3, 16, 16))
    _load(figures.localization_figure(rgb, rgb[:, 0], None, tmp_path / "loc.png"))


def test_bad_image_shapes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="C in"):
        figures.restoration_grid(np.zeros((2, 2, 8, 8)), np.zeros((2, 2, 8, 8)), tmp_path / "x")
    with pytest.raises(ValueError, match="differ in shape"):
        figures.restoration_grid(np.zeros((2, 1, 8, 8)), np.zeros((3, 1, 8, 8)), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_select_outcomes_picks_typical_and_worst_examples() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    flagged = np.array([0, 0, 1, 0, 0, 1, 1, 0])
    scores = np.array([0.3, 0.1, 0.9, 0.2, 0.05, 0.8, 0.95, 0.2])
    picks = figures.select_outcomes(labels, flagged, scores, per_outcome=2)
    assert picks["true_negative"][0].tolist() == [1, 7]  # lowest normal scores: 0.1, 0.2
    assert picks["true_negative"][1] == 3
    assert picks["false_negative"][0].tolist() == [4, 3]  # the worst miss (0.05) first
    assert picks["false_positive"][0].tolist() == [2]
    assert picks["false_positive"][1] == 1
    assert picks["true_positive"][0].tolist() == [6, 5]  # highest first: 0.95, 0.8


def test_classes_sort_naturally() -> None:
    names = ["10", "good", "2", "crack_10", "1", "crack_2"]
    assert sorted(names, key=figures._natural_key) == [
        "1",
        "2",
        "10",
        "crack_2",
        "crack_10",
        "good",
    ]


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")


def test_report_links_every_figure_in_order(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    expected = (run_dir / "pairs.txt").read_text().split("\n")
    assert parser.sources == expected
    assert all((run_dir / src).is_file() for src in parser.sources)
    # Self-contained: no scripts, stylesheets or anything fetched from elsewhere.
    assert not parser.tags & {"script", "link", "iframe"}
    assert "http://" not in page and "https://" not in page


def test_report_escapes_and_formats_values(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script>x" not in page and "&lt;script&gt;x" in page
    assert "roc &lt;caption&gt;" in page and "roc <caption>" not in page
    assert "<title>GANomaly report: digits · protocol normal-class · target class 1</title>" in page
    assert ">0.9123<" in page  # 4 decimals
    assert ">0.0001234<" in page  # tiny values keep 4 significant digits instead of 0.0000
    assert ">n/a<" in page  # None
    oracle_row = next(line for line in page.splitlines() if "best_f1_oracle" in line)
    assert ORACLE_NOTE in oracle_row
    assert 'class="oracle"' in oracle_row


def test_report_replaces_previous_page(tmp_path: Path) -> None:
    first = write_report(tmp_path, {}, {}, [("figures/a.png", "a")])
    second = write_report(tmp_path, {"auroc": 0.5}, {}, [])
    assert first == second == tmp_path / "report.html"
    page = second.read_text(encoding="utf-8")
    assert "figures/a.png" not in page and ">0.5000<" in page
    assert "<title>GANomaly report</title>" in page
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left


def _text_boxes(fig: Figure) -> list[tuple[str, Bbox, Axes | None]]:
    """The extent, in pixels, of every non-empty text a draw of the figure puts on the canvas,
    with the axes it belongs to (recorded while drawing: tick labels outside the view exist
    but are not drawn)."""
    texts: list[Text] = []
    draw = Text.draw

    def record(text: Text, renderer: RendererBase) -> None:
        if text.get_visible() and text.get_text().strip():
            texts.append(text)
        draw(text, renderer)

    canvas = FigureCanvasAgg(fig)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Text, "draw", record)
        canvas.draw()
    renderer = canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer), t.axes) for t in texts]


def test_no_text_is_cut_off_or_drawn_over_another(
    tmp_path: Path, data: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Margins are fixed per figure (no layout engine), so check what they must hold: long,
    # rotated class names, large losses, every figure kind.
    drawn: list[Figure] = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or save(fig, path))
    _all_figures(tmp_path, data)
    names = np.array([f"defect_kind_{i:02d}" for i in range(13)] * 3)
    figures.score_boxplot(np.arange(39.0), names, {"defect_kind_00"}, 20.0, tmp_path / "b.png")
    # large losses; L_D within one decade
    big = [
        {**row, "l_g": 12345.0 * row["epoch"], "l_d": 1.3 + 0.02 * row["epoch"]}
        for row in _history(20)
    ]
    figures.loss_curves(big, tmp_path / "big.png")
    assert len(drawn) == 10
    for fig in drawn:
        boxes = _text_boxes(fig)
        canvas = fig.bbox
        for text, box, _ in boxes:
            inside = box.x0 >= canvas.x0 - 1 and box.x1 <= canvas.x1 + 1
            assert inside and box.y0 >= canvas.y0 - 1 and box.y1 <= canvas.y1 + 1, text
        for i, (text, box, _) in enumerate(boxes):
            for other, other_box, _ in boxes[i + 1 :]:
                assert _overlap(box, other_box) < 4, (text, other)
        # nor over another panel (a label pushed out by wide tick labels lands on its neighbour)
        for text, box, owner in boxes:
            for ax in fig.axes:
                if ax is not owner:
                    assert _overlap(box, ax.get_window_extent()) < 4, (text, ax.get_title())


def _overlap(a: Bbox, b: Bbox) -> float:
    both = Bbox.intersection(a, b)
    return 0.0 if both is None else both.width * both.height
