"""`segloop exchange export|import PROJECT --format F ...`: datasets of other tools.

The formats and the options each takes come from `segloop.loop.exchange.FORMATS`; this module
parses the command line, picks the options the chosen format takes and prints the report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from segloop.cli.common import current_user, split_list
from segloop.errors import InvalidInputError

app = typer.Typer(
    help="Exchange datasets with other tools: nnU-Net, COCO slices, AbdomenAtlas, MONAI Label, 2D folders.",
    no_args_is_help=True,
)

_FORMATS_HELP = "see `segloop exchange formats`"
ProjectArg = Annotated[Path, typer.Argument(help="Project folder.", show_default=False)]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")]
CasesOption = Annotated[str | None, typer.Option(help="Case ids, comma separated (default: all).")]
LabelValuesOption = Annotated[
    str | None,
    typer.Option(
        help="File value -> name, e.g. 255=nucleus or 0=ignore,1=background,2=nucleus (image-folder)."
    ),
]


def parse_window_option(text: str, option: str = "--window") -> tuple[float, float]:
    """``WIDTH,LEVEL`` through `segloop.core.windowing.parse_window`; `typer.BadParameter` otherwise."""
    from segloop.core.windowing import parse_window

    try:
        return parse_window(text)
    except InvalidInputError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def _with_option(option: str, parse: Callable[[str], Any], text: str) -> Any:
    """``parse(text)``; its `InvalidInputError` (one line, exit 1) names the option."""
    try:
        return parse(text)
    except InvalidInputError as error:
        raise type(error)(f"{option}: {error}") from None


def _chosen(options: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The options a format takes, by keyword name."""
    return {name: options[name] for name in names}


@app.command("formats")
def formats_command() -> None:
    """List the formats: name, export / import, description."""
    from segloop.cli.output import console
    from segloop.loop.exchange import FORMATS

    for row in FORMATS.values():
        ways = "/".join(w for w, f in (("export", row.export), ("import", row.import_)) if f is not None)
        console.print(f"{row.name:20} {ways:14} {row.description}", soft_wrap=True, highlight=False)


@app.command("export")
def export_command(
    project: ProjectArg,
    out: Annotated[Path, typer.Argument(help="Output folder (created).", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help=f"The layout ({_FORMATS_HELP}).")],
    sources: Annotated[
        str,
        typer.Option(
            help="Label sources written: human (original, revised, sparse, draft), all, or a list"
            " like original,revised,pseudo."
        ),
    ] = "human",
    dataset_id: Annotated[int, typer.Option(help="nnunet: the dataset id (1..999).")] = 501,
    name: Annotated[str | None, typer.Option(help="nnunet: dataset name (default: the project's).")] = None,
    axis: Annotated[str, typer.Option(help="coco-slices: axial, coronal or sagittal.")] = "axial",
    window: Annotated[
        str, typer.Option(help="coco-slices: CT window WIDTH,LEVEL in stored units (OpenKBP: 400,1044).")
    ] = "400,20",
    long_side: Annotated[int, typer.Option(help="coco-slices: pixels of the longer side (in mm).")] = 512,
    all_slices: Annotated[
        bool, typer.Option("--all-slices", help="coco-slices: every slice, not only labelled ones.")
    ] = False,
    thirds: Annotated[
        str | None, typer.Option(help="coco-slices: classes split into top/middle/bottom thirds.")
    ] = None,
    label_values: LabelValuesOption = None,
    cases: CasesOption = None,
    force: ForceOption = False,
) -> None:
    """Write the project's cases and labels in another tool's layout (human labels by default)."""
    from segloop.cli.output import console
    from segloop.core.provenance import parse_sources
    from segloop.core.windowing import parse_window
    from segloop.errors import ConflictError
    from segloop.exchange.values import parse_value_map
    from segloop.loop.exchange import get_format
    from segloop.store import Project

    row = get_format(fmt, "export")
    chosen_sources = _with_option("--sources", parse_sources, sources)
    opened = Project.open(project)
    options = {
        "dataset_id": dataset_id,
        "name": name,
        "plane": axis,
        "window": _with_option("--window", parse_window, window),
        "long_side": long_side,
        "all_slices": all_slices,
        "split_thirds": split_list(thirds),
        "value_map": parse_value_map(label_values, opened.config.schema) if label_values else None,
    }
    try:
        report = row.export(  # type: ignore[misc]
            opened,
            out,
            case_ids=split_list(cases) or None,
            sources=chosen_sources,
            overwrite=force,
            **_chosen(options, row.export_options),
        )
    except ConflictError as error:
        raise ConflictError(f"{error} (--force replaces it)") from error
    details = "".join(f", {value} {key}" for key, value in report.details.items())
    console.print(
        f"wrote {report.path}: {len(report.cases)} cases{details} ({sources} labels)"
        f" in {report.seconds:.1f} s"
    )


@app.command("import")
def import_command(
    project: ProjectArg,
    paths: Annotated[
        list[Path], typer.Argument(help="Folder or file (image-folder: images).", show_default=False)
    ],
    fmt: Annotated[str, typer.Option("--format", help=f"The layout ({_FORMATS_HELP}).")],
    dataset: Annotated[
        Path | None, typer.Option(help="coco-results: the exported annotations/instances.json.")
    ] = None,
    score: Annotated[float, typer.Option(help="coco-results: lowest score kept.")] = 0.3,
    close_mm: Annotated[float, typer.Option(help="coco-results: closing radius in mm (0: none).")] = 2.0,
    open_mm: Annotated[float, typer.Option(help="coco-results: opening radius in mm (0: none).")] = 2.0,
    largest: Annotated[
        bool, typer.Option("--largest/--no-largest", help="coco-results: keep each class's largest piece.")
    ] = True,
    labels_dir: Annotated[Path | None, typer.Option(help="image-folder: folder of label images.")] = None,
    label_values: LabelValuesOption = None,
    source: Annotated[str, typer.Option(help="nnunet / image-folder: source of the labels.")] = "original",
    classes: Annotated[str | None, typer.Option(help="image-folder: classes the labels annotate.")] = None,
    copy: Annotated[bool, typer.Option("--copy", help="image-folder: copy images into the project.")] = False,
) -> None:
    """Bring another tool's dataset, predictions or results into the project (all or nothing)."""
    from segloop.cli.output import console
    from segloop.exchange.values import parse_value_map
    from segloop.loop.exchange import get_format
    from segloop.store import Project

    row = get_format(fmt, "import")
    if not row.many_paths and len(paths) != 1:
        msg = f"format {fmt} imports one folder or file; got {len(paths)} paths"
        raise InvalidInputError(msg)
    opened = Project.open(project)
    options = {
        "dataset_path": dataset,
        "score_threshold": score,
        "close_mm": close_mm,
        "open_mm": open_mm,
        "keep_largest": largest,
        "labels_dir": labels_dir,
        "value_map": parse_value_map(label_values, opened.config.schema) if label_values else None,
        "source": source,
        "classes": split_list(classes) or None,
        "copy": copy,
    }
    report = row.import_(  # type: ignore[misc]
        opened,
        paths if row.many_paths else paths[0],
        author=current_user(),
        **_chosen(options, row.import_options),
    )
    sources = sorted({v.source for v in report.versions})
    console.print(
        f"added {len(report.added_cases)} cases and {len(report.versions)} label versions"
        f" ({', '.join(sources) or 'none'}) in {report.seconds:.1f} s"
    )
    if report.unchanged:
        console.print(f"{len(report.unchanged)} labels were already in the project: not added again")
    if report.unmatched_labels:
        console.print(
            f"[yellow]label files without an image: {', '.join(report.unmatched_labels[:5])}[/yellow]"
        )
    for note in report.notes:
        console.print(f"[yellow]{note}[/yellow]")
