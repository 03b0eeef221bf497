"""Use case: the project's HTML report — every round measured, in plots a person can read.

``reports/index.html`` with PNG plots beside it:

- ``dice_per_round.png``: Dice per class per round (evaluation on held-out human labels; the
  model's validation Dice where a round has no evaluation);
- ``sources_per_round.png``: cases by the most trusted source of their labels, per round;
- ``uncertainty_vs_dice.png``: per evaluated case, mean voxel entropy vs mean Dice;
- ``overlay_<case>.png``: the top-ranked cases of the last round — image, predicted label outline
  and entropy on the slice with the most uncertainty;
- the newest training run's live preview (`write_training_preview`: one validation slice,
  reference and predicted outlines, rewritten after every epoch as
  ``reports/training_model-<id>.png``, which the server's report route serves too), linked from
  wherever the report is written.

Plots use matplotlib's object API (``Figure``; no pyplot state, no display needed).
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloop.io.atomic import atomic_file
from segloop.store import Project, RoundRecord

__all__ = ["outline_panel", "training_preview_path", "write_report", "write_training_preview"]

_SOURCE_COLOURS = {
    "original": "#1b7837",
    "revised": "#5aae61",
    "sparse": "#2166ac",
    "draft": "#92c5de",
    "pseudo": "#f4a582",
    "unlabeled": "#cccccc",
}


def _save(figure: Any, path: Path) -> None:
    with atomic_file(path, overwrite=True) as temporary:
        figure.savefig(temporary, format="png", dpi=100, bbox_inches="tight")


def _round_dice(record: RoundRecord) -> dict[str, float]:
    """Dice per class of a round: held-out evaluation, else the model's validation Dice."""
    evaluation = record.summary.get("evaluation") or {}
    per_class = {k: v["dice"] for k, v in evaluation.items() if k != "mean" and v.get("dice") is not None}
    return per_class or dict(record.summary.get("validation_dice_per_class") or {})


def plot_dice_per_round(rounds: Sequence[RoundRecord], path: Path) -> None:
    """Line plot: Dice of each class (and their mean) against the round number."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    numbers = [r.number for r in rounds]
    per_round = [_round_dice(r) for r in rounds]
    for name in sorted({name for scores in per_round for name in scores}):
        axes.plot(numbers, [s.get(name, np.nan) for s in per_round], marker="o", label=name, alpha=0.8)
    means = [np.mean(list(s.values())) if s else np.nan for s in per_round]
    axes.plot(numbers, means, marker="s", color="black", linewidth=2.5, label="mean")
    axes.set(xlabel="round", ylabel="Dice", ylim=(0, 1), xticks=numbers, title="Dice per class per round")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right", ncol=2)
    _save(figure, path)


def plot_sources_per_round(rounds: Sequence[RoundRecord], path: Path) -> None:
    """Stacked bars: cases by label source at the end of each round."""
    from matplotlib.figure import Figure

    from segloop.loop.rounds import SOURCES_BY_TRUST

    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    numbers = [r.number for r in rounds]
    bottom = np.zeros(len(rounds))
    for source in (*SOURCES_BY_TRUST, "unlabeled"):
        counts = np.array([r.summary.get("cases_by_source", {}).get(source, 0) for r in rounds], float)
        if counts.any():
            axes.bar(numbers, counts, bottom=bottom, label=source, color=_SOURCE_COLOURS[source])
            bottom += counts
    axes.set(xlabel="round", ylabel="cases", xticks=numbers, title="Cases by label source per round")
    axes.legend(fontsize=8)
    _save(figure, path)


def plot_uncertainty_vs_dice(project: Project, rounds: Sequence[RoundRecord], path: Path) -> int:
    """Scatter of evaluated cases: mean entropy (x) vs mean Dice over classes (y), per round.

    Returns:
        The number of points drawn.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    points = 0
    numbers = {r.number for r in rounds}
    by_round: dict[int, list[tuple[float, float]]] = {}
    for record in project.list_evaluations():
        dice = [v["dice"] for v in record.metrics["per_class"].values() if v.get("dice") is not None]
        if record.round in numbers and dice:
            by_round.setdefault(record.round, []).append(
                (record.metrics["mean_entropy"], float(np.mean(dice)))
            )
    for number, values in sorted(by_round.items()):
        x, y = zip(*values, strict=True)
        axes.scatter(x, y, label=f"round {number}", alpha=0.8)
        points += len(values)
    axes.set(xlabel="mean voxel entropy (0..1)", ylabel="mean Dice", ylim=(0, 1))
    axes.set_title("Uncertainty vs Dice on held-out cases")
    axes.grid(alpha=0.3)
    if by_round:
        axes.legend(fontsize=8)
    _save(figure, path)
    return points


def _display_window(image: np.ndarray, project: Project) -> tuple[float, float]:
    """Grey-value range to show: the project's CT window, else the 1st-99th percentile."""
    window = project.config.defaults.get("window")
    if project.config.modality == "CT":
        width, level = (float(v) for v in window) if window else (400.0, 40.0)
        return level - width / 2, level + width / 2
    low, high = np.percentile(image, [1, 99])
    return float(low), float(max(high, low + 1e-6))


def plot_case_overlay(project: Project, case_id: str, path: Path) -> bool:
    """Image, predicted label outline and entropy of a case's newest prediction on its most uncertain slice.

    Returns:
        False when the case has no prediction (nothing drawn).
    """
    from matplotlib.figure import Figure

    from segloop.loop.tools import read_case_image

    predictions = project.list_predictions(case_id)
    if not predictions:
        return False
    prediction = predictions[-1]
    entropy = project.read_prediction(case_id, prediction.model_id).entropy.astype(np.float32)
    labels = project.read_labels(project.get_label_version(prediction.label_version_id))
    volume = read_case_image(project, project.get_case(case_id))
    image = np.asarray(volume.array, dtype=np.float32)
    axis = int(np.argmax(volume.spacing)) if image.shape[2] > 1 else 2  # across the thickest slices
    index = int(np.argmax(entropy.sum(axis=tuple(a for a in range(3) if a != axis))))

    def plane(volume: np.ndarray) -> np.ndarray:
        return np.take(volume, index, axis=axis).T  # rows: second in-plane axis

    low, high = _display_window(image, project)
    figure = Figure(figsize=(9, 4.5))
    left, right = figure.subplots(1, 2)
    for axes in (left, right):
        axes.imshow(plane(image), cmap="gray", vmin=low, vmax=high, origin="lower")
        axes.set_axis_off()
    slice_labels = plane(labels)
    n_classes = len(project.config.schema.classes)
    if slice_labels.max() > 0:
        left.contour(
            slice_labels, levels=np.arange(n_classes) + 0.5, cmap="tab10", linewidths=1.0, origin="lower"
        )
    shown = right.imshow(plane(entropy), cmap="magma", vmin=0, vmax=1, alpha=0.6, origin="lower")
    figure.colorbar(shown, ax=right, fraction=0.046, label="entropy")
    left.set_title(f"{case_id}: predicted labels (model {prediction.model_id}), slice {index} of axis {axis}")
    right.set_title("voxel entropy")
    _save(figure, path)
    return True


def training_preview_path(project: Project, model_id: int) -> Path:
    """Where a training run's live preview PNG lies: ``<project>/reports/training_model-<id>.png``."""
    return project.root / "reports" / f"training_model-{model_id}.png"


def _outline(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``labels``' shape, bool: class voxels (1..n_classes-1) with a 4-neighbour of another value."""
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = (
        (centre != padded[:-2, 1:-1])
        | (centre != padded[2:, 1:-1])
        | (centre != padded[1:-1, :-2])
        | (centre != padded[1:-1, 2:])
    )
    return edge & (labels > 0) & (labels < n_classes)


def outline_panel(
    image: np.ndarray,
    labels: np.ndarray,
    colours: np.ndarray,
    window: tuple[float, float],
) -> np.ndarray:
    """An RGB picture of a slice with its labels' outlines in class colours; *ignore* shown dimmed.

    Args:
        image: ``(H, W)`` image values.
        labels: ``(H, W)`` class values; ``len(colours)`` is the ignore value.
        colours: ``(n_classes, 3)`` uint8, one row per value (row 0, background, unused).
        window: the grey-value range shown from black to white.

    Returns:
        ``(W, H, 3)`` uint8, rows the second in-plane axis from the top down (as
        `plot_case_overlay` shows a slice, origin at the bottom).

    Examples:
        >>> square, red = np.pad(np.ones((2, 2), int), 1), np.array([[0, 0, 0], [255, 0, 0]])
        >>> panel = outline_panel(np.zeros((4, 4)), square, red, (0.0, 1.0))
        >>> panel.shape, panel[1, 1].tolist(), panel[0, 0].tolist()
        ((4, 4, 3), [255, 0, 0], [0, 0, 0])
    """
    low, high = window
    grey = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    n_classes = len(colours)
    rgb[labels == n_classes] *= 0.5  # ignore: nothing to learn or score there
    edge = _outline(labels, n_classes)
    rgb[edge] = colours[labels[edge]]
    return np.flipud(np.transpose(rgb.astype(np.uint8), (1, 0, 2)))


def write_training_preview(
    project: Project, model_id: int, preview: Any, *, window: Sequence[float] | None = None
) -> Path:
    """Write (atomically replace) a training run's live preview PNG (`training_preview_path`).

    Reference and predicted outlines on one validation slice, side by side, titled with the
    epoch and its validation Dice: a picture of two small panels, no extra prediction (about a
    tenth of a second).

    Args:
        project: the open project (its schema's colours, its CT window).
        model_id: the training run's model.
        preview: a `segloop.engine.train.PreviewSlice`.
        window: the run's CT window ``(width, level)`` in stored units (what the network saw);
            None: the project's (`_display_window`).

    Returns:
        The PNG's path.
    """
    from matplotlib.figure import Figure

    schema = project.config.schema
    colours = np.array([(0, 0, 0), *(c.color for c in schema.classes)], dtype=np.uint8)
    shown = (
        _display_window(preview.image, project)
        if window is None or project.config.modality != "CT"
        else (window[1] - window[0] / 2, window[1] + window[0] / 2)
    )
    figure = Figure(figsize=(8, 4.3))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.03)
    dice = "-" if preview.val_dice is None else f"{preview.val_dice:.3f}"
    titles = (
        f"{preview.case_id} slice {preview.index} of axis {preview.axis}: reference",
        f"epoch {preview.epoch + 1}: prediction (val. Dice {dice})",
    )
    for axes, labels, title in zip(
        figure.subplots(1, 2), (preview.reference, preview.prediction), titles, strict=True
    ):
        axes.imshow(outline_panel(preview.image, np.asarray(labels), colours, shown), interpolation="nearest")
        axes.set_title(title, fontsize=9)
        axes.set_axis_off()
    path = training_preview_path(project, model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as temporary:
        figure.savefig(temporary, format="png", dpi=80)
    return path


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _preview_section(project: Project, out: Path) -> list[str]:
    """The newest training run's live preview, linked relative to the report (none: no section)."""
    for model in reversed(project.list_models()):
        path = training_preview_path(project, model.id)
        if path.is_file():
            link = html.escape(Path(os.path.relpath(path, out)).as_posix())
            return [
                f"<h2>Training preview: model {model.id} ({html.escape(model.status)})</h2>",
                f'<img src="{link}" alt="validation slice of model {model.id}">',
            ]
    return []


def write_report(project: Project, out_dir: Path | None = None) -> Path:
    """Write ``index.html`` and its PNG plots (default folder: ``<project>/reports``).

    Returns:
        The path of ``index.html``.
    """
    out = Path(out_dir) if out_dir is not None else project.root / "reports"
    out.mkdir(parents=True, exist_ok=True)
    rounds = [r for r in project.list_rounds() if r.status == "done"]
    sections = [f"<h1>segloop report: {html.escape(project.config.name)}</h1>"]
    if not rounds:
        sections.append("<p>No finished round yet: run <code>segloop round</code>.</p>")
    else:
        plot_dice_per_round(rounds, out / "dice_per_round.png")
        plot_sources_per_round(rounds, out / "sources_per_round.png")
        points = plot_uncertainty_vs_dice(project, rounds, out / "uncertainty_vs_dice.png")
        rows = []
        for r in rounds:
            evaluation = r.summary.get("evaluation") or {}
            mean = evaluation.get("mean", {})
            sources = r.summary.get("cases_by_source", {})
            rows.append(
                [
                    r.number,
                    r.summary.get("mode"),
                    r.summary.get("model"),
                    ", ".join(f"{s} {n}" for s, n in sources.items() if n),
                    _fmt(r.summary.get("validation_dice")),
                    _fmt(mean.get("dice")),
                    _fmt(mean.get("hd95_mm")),
                    _fmt(mean.get("surface_dice")),
                    ", ".join(r.summary.get("queue", [])),
                ]
            )
        header = [
            "round",
            "mode",
            "model",
            "cases by source",
            "val. Dice",
            "eval. Dice",
            "HD95 mm",
            "surface Dice",
            "next to correct",
        ]
        sections += [
            "<h2>Rounds</h2>",
            _table(header, rows),
            '<h2>Dice per class per round</h2><img src="dice_per_round.png" alt="Dice per class per round">',
            '<h2>Labelled cases by source</h2><img src="sources_per_round.png" alt="cases by source">',
            f"<h2>Uncertainty vs Dice ({points} evaluated cases)</h2>"
            '<img src="uncertainty_vs_dice.png" alt="uncertainty vs Dice">',
        ]
        overlays = []
        for case_id in rounds[-1].summary.get("queue", [])[:3]:
            name = f"overlay_{case_id}.png"
            if plot_case_overlay(project, case_id, out / name):
                overlays.append(
                    f'<h3>{html.escape(case_id)}</h3><img src="{name}" alt="{html.escape(case_id)}">'
                )
        if overlays:
            sections += [f"<h2>Top-ranked cases of round {rounds[-1].number}</h2>", *overlays]
    sections += _preview_section(project, out)
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:90%}"
        "img{max-width:100%}"
    )
    document = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>segloop report</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    index = out / "index.html"
    with atomic_file(index, overwrite=True) as temporary:
        temporary.write_text(document, encoding="utf-8")
    return index
