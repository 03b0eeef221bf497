"""Rendering for the CLI: rich tables (the only place that prints)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from segloop.core.geometry import spacing_from_affine
from segloop.core.volume import Volume
from segloop.loop.cases import SUMMARY_SOURCES, CaseTable, ProjectSummary
from segloop.store import CaseRecord, LabelVersionRecord, Progress, Project
from segloop.store.overview import NO_SOURCE

console = Console()

_SOURCE_STYLE = {
    "original": "green",
    "revised": "cyan",
    "sparse": "yellow",
    "draft": "magenta",
    "pseudo": "blue",
}
_WIDE_SCHEMA = 10


def _fmt_spacing(spacing: Sequence[float]) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing)


def print_schema(project: Project) -> None:
    """The label schema of a new project."""
    schema = project.config.schema
    table = Table(title=f"{project.root} ({project.config.modality})")
    for column in ("value", "class", "colour"):
        table.add_column(column)
    table.add_row("0", "background", "")
    for label in schema.classes:
        hex_colour = "#{:02x}{:02x}{:02x}".format(*label.color)
        table.add_row(str(label.index), label.name, f"[{hex_colour}]■[/] {hex_colour}")
    table.add_row(str(schema.ignore_index), "ignore", "")
    console.print(table)


def print_summary(project: Project, summary: ProjectSummary) -> None:
    """`segloop status`: classes (rows) by deciding source (columns), rounds, queue head, jobs."""
    counts = f"{_count(summary.n_cases, 'case')}, {_count(summary.n_versions, 'label version')}"
    table = Table(
        title=f"{summary.name}: {counts}",
        caption="cases by the source that decides each class (its most trusted label version)",
    )
    table.add_column("class", no_wrap=True)
    columns = [s for s in SUMMARY_SOURCES if any(row[s] for row in summary.sources.values())]
    columns = columns or [NO_SOURCE]
    for source in columns:
        table.add_column(f"[{_SOURCE_STYLE.get(source, 'dim')}]{source}[/]", justify="right")
    for name, row in summary.sources.items():
        table.add_row(name, *(str(row[s]) if row[s] else "[dim]0[/]" for s in columns))
    console.print(table)
    _print_rounds(summary.rounds, summary.n_rounds)
    if summary.queue:
        head = ", ".join(
            f"{case_id}" + (f" ({entry.score:g})" if entry.score is not None else "")
            for case_id, entry in summary.queue
        )
        strategy = summary.queue[0][1].strategy
        console.print(f"queue ({strategy}, {summary.queue_length} cases): {head}")
    _print_jobs(summary.jobs)
    console.print("[dim]per case: segloop status PROJECT --table (--cases, --class, --source, --limit)[/dim]")


def print_case_table(page: CaseTable) -> None:
    """One row per case; per shown class the deciding source (letters), or counts for many classes."""
    names = page.classes
    table = Table(title=_count(page.total, "case"))
    table.add_column("case", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("spacing (mm)")
    table.add_column("versions", justify="right")
    wide = len(names) > _WIDE_SCHEMA
    if wide:
        table.add_column("annotated classes by source")
    else:
        for name in names:
            table.add_column(name, justify="center")
    for summary in page.rows:
        row = [
            summary.case_id,
            "x".join(map(str, summary.shape)),
            _fmt_spacing(summary.spacing),
            str(summary.n_versions),
        ]
        if wide:
            counts = Counter(s for s in summary.class_sources.values() if s)
            row.append(", ".join(f"{s} {n}/{len(names)}" for s, n in counts.items()) or "-")
        else:
            row += [
                f"[{_SOURCE_STYLE[s]}]{s[0].upper()}[/]" if s else "[dim]-[/]"
                for s in (summary.class_sources[n] for n in names)
            ]
        table.add_row(*row)
    console.print(table)
    if page.total > len(page.rows):
        console.print(f"… {_count(page.total - len(page.rows), 'more case')} (--limit 0 shows all)")
    if not wide:
        console.print(
            "  "
            + "  ".join(f"[{style}]{s[0].upper()}[/] {s}" for s, style in _SOURCE_STYLE.items())
            + "  [dim]-[/] not annotated"
        )


def _count(n: int, noun: str) -> str:
    """``3 cases``, ``1 case``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt_classes(classes: Sequence[str], schema_names: Sequence[str]) -> str:
    if tuple(classes) == tuple(schema_names):
        return f"all {len(classes)}"
    return ", ".join(classes)


def print_case(
    project: Project, case: CaseRecord, versions: Sequence[LabelVersionRecord], *, matched: int | None = None
) -> None:
    """A case's images and its label versions (``matched``: how many the filters kept, if more shown)."""
    spacing = spacing_from_affine(case.affine)
    console.print(
        f"[bold]{case.case_id}[/bold]  {'x'.join(map(str, case.shape))} voxels,"
        f" {_fmt_spacing(spacing)} mm, {case.dtype}"
    )
    for image in case.images:
        where = "copied" if image.copied else "in place"
        console.print(
            f"  channel {image.channel}: {image.path} ({where}, {image.size_bytes} bytes,"
            f" sha256 {image.sha256[:12]})"
        )
    table = Table(title="label versions (oldest first)")
    for column in ("id", "source", "classes", "author", "tool", "parent", "round", "created (UTC)"):
        table.add_column(column, no_wrap=column != "classes", min_width=10 if column == "classes" else None)
    for v in versions:
        table.add_row(
            str(v.id),
            f"[{_SOURCE_STYLE[v.source]}]{v.source}[/]",
            _fmt_classes(v.classes, project.config.schema.names),
            v.author,
            v.tool,
            str(v.parent_id or "-"),
            str(v.round if v.round is not None else "-"),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
    if matched is not None and matched > len(versions):
        console.print(f"… {_count(matched - len(versions), 'older version')} (--limit 0 shows all)")


def print_volume_info(path: Path, volume: Volume) -> None:
    """Grid and value range of a file."""
    array = volume.array
    console.print(f"[bold]{path}[/bold] ({volume.meta.get('format', '?')})")
    console.print(f"  shape {array.shape} {array.dtype}, spacing {_fmt_spacing(volume.spacing)} mm")
    if "voxel_size_angstrom" in volume.meta:  # MRC: the header's voxel size
        console.print(f"  voxel size {_fmt_spacing(volume.meta['voxel_size_angstrom'])} Å")
    console.print(f"  affine (RAS mm):\n{np.array2string(volume.affine, precision=4, suppress_small=True)}")
    if array.dtype.names:  # structured voxels (NIfTI RGB24): no order to take a range in
        console.print(f"  voxels of fields {', '.join(array.dtype.names)} (RGB or vector data)")
    elif array.size:
        console.print(f"  values {array.min()} .. {array.max()}")
    for segment in volume.meta.get("segments", []):
        console.print(
            f"  segment {segment['name']!r}: value {segment['label_value']}, layer {segment['layer']}"
        )


@contextmanager
def job_progress() -> Iterator[Callable[[Progress], None]]:
    """A rich progress bar fed by a job's `Progress` events.

    Training (stage ``train``) shows the epoch, loss, the last epoch's validation Dice and the best
    one, and the time left (the bar runs over elapsed + estimated seconds); other stages
    (``predict``) count their units.
    """
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as ProgressBar

    bar = ProgressBar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),
        console=console,
    )
    task = bar.add_task("starting", total=None, status="", left="")

    def on_progress(event: Progress) -> None:
        if not bar.live.is_started:  # shown from the first event: a refused command prints no bar
            bar.start()
        metrics = event.metrics
        if event.stage == "train":
            eta, elapsed = metrics.get("eta_s"), metrics.get("elapsed_s", 0.0)
            status = f"loss {metrics['loss']:.3f}" if "loss" in metrics else ""
            if metrics.get("val_dice") is not None:
                status += f"  val Dice {metrics['val_dice']:.3f}"
            if metrics.get("best_dice") is not None:
                status += f" (best {metrics['best_dice']:.3f})"
            bar.update(
                task,
                description=event.message or "training",
                total=elapsed + eta if eta is not None else None,
                completed=elapsed,
                status=status,
                left=f"left ~{eta:.0f} s" if eta is not None else "left ~?",
            )
        else:
            bar.update(
                task,
                description=event.stage,
                total=event.total,
                completed=event.done,
                status=event.message,
                left=f"{event.done}/{event.total}" if event.total is not None else "",
            )

    try:
        yield on_progress
    finally:
        if bar.live.is_started:
            bar.stop()


def _fmt_metric(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_evaluation(records: Sequence[Any]) -> None:
    """Dice / HD95 / surface Dice per class: per case, then the mean over cases."""
    from segloop.loop.evaluation import summarize_evaluations

    if not records:
        return
    names = list(records[0].metrics["per_class"])
    table = Table(title=f"model {records[0].model_id}: Dice per class (mean row: HD95 mm, surface Dice)")
    table.add_column("case")
    for name in names:
        table.add_column(name, justify="right")
    for record in records:
        per_class = record.metrics["per_class"]
        table.add_row(record.case_id, *(_fmt_metric(per_class[n]["dice"]) for n in names))
    summary = summarize_evaluations(records)
    table.add_row(
        "[bold]mean[/bold]",
        *(
            f"{_fmt_metric(summary[n]['dice'])} ({_fmt_metric(summary[n]['hd95_mm'], 1)},"
            f" {_fmt_metric(summary[n]['surface_dice'], 2)})"
            for n in names
        ),
    )
    console.print(table)
    mean = summary["mean"]
    console.print(
        f"mean over classes: Dice {_fmt_metric(mean['dice'])}, HD95 {_fmt_metric(mean['hd95_mm'], 1)} mm,"
        f" surface Dice {_fmt_metric(mean['surface_dice'])} ({len(records)} cases)"
    )


def _print_jobs(unfinished: Sequence[Any]) -> None:
    """Jobs that are running, or were interrupted (their process died or was stopped), newest last."""
    from segloop.store import JobStatus

    for job in unfinished[-5:]:
        progress = job.progress
        where = f", at {progress.stage} {progress.done}/{progress.total or '?'}" if progress else ""
        details = ", ".join(f"{k} {v}" for k, v in job.params.items())
        console.print(
            f"[yellow]{job.kind} job {job.id} ({details}) {job.status.value}{where},"
            f" started {job.started_at:%Y-%m-%d %H:%M} by {job.author}[/yellow]"
        )
    if any(j.kind in ("train", "round") and j.status == JobStatus.INTERRUPTED for j in unfinished):
        console.print("[yellow]continue with `segloop train --resume` or `segloop round`[/yellow]")


def print_rounds(project: Project) -> None:
    """One row per round: cases by label source, model and its scores, the correction queue."""
    rounds = project.list_rounds()
    _print_rounds(rounds, len(rounds))


def _print_rounds(rounds: Sequence[Any], total: int) -> None:
    """The rounds table of ``rounds`` (the newest of ``total``)."""
    if not rounds:
        return
    shown = f"the last {len(rounds)} of {total} rounds" if total > len(rounds) else "rounds"
    table = Table(
        title=f"{shown} (cases by source: O original, R revised, S sparse, D draft, P pseudo, U unlabeled)"
    )
    for column in ("round", "status", "mode", "model", "cases", "val Dice", "eval Dice", "queue"):
        table.add_column(
            column, justify="right" if column in ("round", "model") else "left", no_wrap=column != "queue"
        )
    for record in rounds:
        summary, stages = record.summary, record.stages
        sources = summary.get("cases_by_source", {})
        evaluation = summary.get("evaluation") or {}
        table.add_row(
            str(record.number),
            record.status
            if record.status == "done"
            else f"{record.status} ({', '.join(stages) or 'started'})",
            summary.get("mode", record.mode),
            str(summary.get("model", stages.get("train", {}).get("model", "-"))),
            " ".join(f"{s[0].upper()}{n}" for s, n in sources.items() if n) or "-",
            _fmt_metric(summary.get("validation_dice")),
            _fmt_metric(evaluation.get("mean", {}).get("dice")),
            ", ".join(summary.get("queue", [])) or "-",
        )
    console.print(table)


def print_demo(result: Any) -> None:
    """The per-round table of a `segloop.loop.demo.DemoResult` and where its report is."""
    title = "SYNTHETIC data" if result.synthetic else "real data"
    table = Table(title=f"segloop demo on {title}: {len(result.rounds)} rounds, simulated annotator")
    for column in ("round", "cases by source", "test Dice", "effort (h)", "of from-scratch"):
        table.add_column(column, justify="left" if column == "cases by source" else "right")
    for item in result.rounds:
        sources = ", ".join(f"{s} {n}" for s, n in item.cases_by_source.items() if n)
        share = item.effort.seconds / result.manual.seconds if result.manual.seconds else 0.0
        table.add_row(
            str(item.round), sources, f"{item.mean_test_dice:.3f}", f"{item.effort.hours:.2f}", f"{share:.1%}"
        )
    console.print(table)
    console.print(
        f"from-scratch contouring of the same cases: {result.manual.hours:.2f} h"
        f" ({result.manual.slices_drawn} slices, {result.manual.contour_points} points)"
    )
    console.print(f"report: {result.report}")
    console.print(f"demo project: {result.project.root}")
