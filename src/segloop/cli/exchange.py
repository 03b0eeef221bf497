"""`segloop exchange export|import PROJECT --format F ...`: datasets of other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segloop.errors import SegloopError

app = typer.Typer(
    help="Exchange datasets with other tools: nnU-Net, COCO slices, AbdomenAtlas, MONAI Label, 2D folders.",
    no_args_is_help=True,
)

ProjectArg = Annotated[Path, typer.Argument(help="Project folder.", show_default=False)]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")]
CasesOption = Annotated[str | None, typer.Option(help="Case ids, comma separated (default: all).")]
LabelValuesOption = Annotated[
    str | None,
    typer.Option(
        help="File value -> name, e.g. 255=nucleus or 0=ignore,1=background,2=nucleus (image-folder)."
    ),
]


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()] if text else []


def _author() -> str:
    from segloop.cli.main import current_user

    return current_user()


def _window(text: str) -> tuple[float, float]:
    try:
        width, level = (float(part) for part in text.split(","))
    except ValueError:
        width = level = None  # type: ignore[assignment]
    if width is None:
        msg = f"--window must be WIDTH,LEVEL (e.g. 400,20 in HU); got {text!r}"
        raise SegloopError(msg)
    return width, level


def _check_format(fmt: str, known: tuple[str, ...], what: str) -> None:
    if fmt not in known:
        msg = f"unknown {what} format {fmt!r}: expected one of {', '.join(known)}"
        raise SegloopError(msg)


@app.command("export")
def export_command(
    project: ProjectArg,
    out: Annotated[Path, typer.Argument(help="Output folder (created).", show_default=False)],
    fmt: Annotated[
        str, typer.Option("--format", help="nnunet, coco-slices, abdomenatlas, monailabel or image-folder.")
    ],
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
    source: Annotated[
        str | None, typer.Option(help="image-folder: newest version of this source (e.g. pseudo).")
    ] = None,
    cases: CasesOption = None,
    force: ForceOption = False,
) -> None:
    """Write the project's cases and labels in another tool's layout."""
    from segloop.cli.output import console
    from segloop.exchange.values import parse_value_map
    from segloop.loop import exchange
    from segloop.store import Project

    _check_format(fmt, exchange.EXPORT_FORMATS, "export")
    opened = Project.open(project)
    case_ids = _split(cases) or None
    if fmt == "nnunet":
        report = exchange.export_nnunet(
            opened, out, dataset_id=dataset_id, name=name, case_ids=case_ids, overwrite=force
        )
        details = report.details
        console.print(
            f"wrote {report.path}: {details['training']} training cases, {details['test']} in imagesTs"
            f"{', ignore label declared' if details['ignore'] else ''}"
        )
        return
    if fmt == "coco-slices":
        report = exchange.export_coco_slices(
            opened,
            out,
            plane=axis,
            window=_window(window),
            long_side=long_side,
            all_slices=all_slices,
            split_thirds=_split(thirds),
            case_ids=case_ids,
            overwrite=force,
        )
        console.print(
            f"wrote {report.path}: {report.details['images']} images, {report.details['annotations']}"
            f" annotations from {len(report.cases)} cases in {report.seconds:.1f} s"
        )
        return
    if fmt == "image-folder":
        value_map = parse_value_map(label_values, opened.config.schema) if label_values else None
        report = exchange.export_image_folder(
            opened, out, value_map=value_map, source=source, case_ids=case_ids, overwrite=force
        )
    elif fmt == "abdomenatlas":
        report = exchange.export_abdomenatlas(opened, out, case_ids=case_ids, overwrite=force)
    else:
        report = exchange.export_monailabel(opened, out, case_ids=case_ids, overwrite=force)
    console.print(f"wrote {report.path}: {len(report.cases)} cases in {report.seconds:.1f} s")


@app.command("import")
def import_command(
    project: ProjectArg,
    paths: Annotated[
        list[Path], typer.Argument(help="Folder or file (image-folder: images).", show_default=False)
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="nnunet, nnunet-predictions, coco-results, abdomenatlas, monailabel or image-folder.",
        ),
    ],
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
    source: Annotated[
        str | None, typer.Option(help="nnunet / image-folder: source of the labels (default original).")
    ] = None,
    classes: Annotated[str | None, typer.Option(help="image-folder: classes the labels annotate.")] = None,
    copy: Annotated[bool, typer.Option("--copy", help="image-folder: copy images into the project.")] = False,
) -> None:
    """Bring another tool's dataset, predictions or results into the project (all or nothing)."""
    from segloop.cli.output import console
    from segloop.exchange.values import parse_value_map
    from segloop.loop import exchange
    from segloop.store import Project

    _check_format(fmt, exchange.IMPORT_FORMATS, "import")
    opened = Project.open(project)
    if fmt != "image-folder" and len(paths) != 1:
        msg = f"--format {fmt} imports one folder or file; got {len(paths)} paths"
        raise SegloopError(msg)
    path = paths[0]
    author = _author()
    if fmt == "nnunet":
        report = exchange.import_nnunet_dataset(opened, path, author=author, source=source or "original")
    elif fmt == "nnunet-predictions":
        report = exchange.import_nnunet_predictions(opened, path, author=author)
    elif fmt == "coco-results":
        report = exchange.import_coco_results(
            opened,
            path,
            dataset_path=dataset,
            score_threshold=score,
            close_mm=close_mm,
            open_mm=open_mm,
            keep_largest=largest,
            author=author,
        )
    elif fmt == "abdomenatlas":
        report = exchange.import_abdomenatlas(opened, path, author=author)
    elif fmt == "monailabel":
        report = exchange.import_monailabel(opened, path, author=author)
    else:
        value_map = parse_value_map(label_values, opened.config.schema) if label_values else None
        report = exchange.import_image_folder(
            opened,
            paths,
            labels_dir=labels_dir,
            value_map=value_map,
            source=source or "original",
            classes=_split(classes) or None,
            copy=copy,
            author=author,
        )
    sources = sorted({v.source for v in report.versions})
    console.print(
        f"added {len(report.added_cases)} cases and {len(report.versions)} label versions"
        f" ({', '.join(sources) or 'none'}) in {report.seconds:.1f} s"
    )
    if report.unchanged:
        console.print(f"{len(report.unchanged)} labels were already in the project: not added again")
    for note in report.notes:
        console.print(f"[yellow]{note}[/yellow]")
