"""`segloop simulate PROJECT CASE slices|scribbles OUT | correct`: a person's work, from a reference.

Stand-ins for a person's strokes when trying the labeling tools (or a recipe) on data that has a
reference: the file written is what ``segloop segment CASE interpolate --slices`` or ``grow --seeds``
reads. ``correct`` plays the person correcting the case's current label (the flagged slices first,
or the whole case) and stores the ``revised`` versions, with what it cost. The reference is read,
never stored in the project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Draw what a person would (a few slices, scribbles) from a reference label, for the tools.",
    no_args_is_help=True,
)

ReferenceOption = Annotated[
    Path, typer.Option(help="Reference label file on the case's grid (schema values unless --values).")
]
ValuesOption = Annotated[
    str | None,
    typer.Option(
        "--values", help="File value -> class, e.g. 10=lung,11=lung; values not listed are background."
    ),
]
OutArg = Annotated[Path, typer.Argument(help="Label file to write (.nrrd, .nii.gz, .seg.nrrd).")]
CountOption = Annotated[int, typer.Option("--slices", help="Slices drawn, spread evenly over the classes.")]
AxisOption = Annotated[str, typer.Option(help="axial, coronal, sagittal or a voxel axis 0-2.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing file.")]


@app.callback()
def select_case(
    context: typer.Context,
    project: Annotated[Path, typer.Argument(help="Project folder.", show_default=False)],
    case: Annotated[str, typer.Argument(help="Case id.", show_default=False)],
) -> None:
    """Pick the project and case the drawing is made on."""
    from segloop.store import Project

    context.obj = (Project.open(project), case)


def _draw(context: typer.Context, kind: str, out: Path, reference: Path, values: str | None,
          force: bool, **options: object) -> None:  # fmt: skip
    """Read the reference, draw, write the drawing on the case's grid and say what it holds."""
    import numpy as np

    from segloop.cli.output import console
    from segloop.exchange.values import parse_value_map
    from segloop.io import write_volume
    from segloop.loop.labels import label_volume
    from segloop.loop.strokes import draw_from_reference, read_reference

    project, case_id = context.obj
    schema = project.config.schema
    value_map = parse_value_map(values, schema) if values is not None else None
    truth = read_reference(project, case_id, reference, value_map)
    drawing = draw_from_reference(project, case_id, truth, kind, **options)  # type: ignore[arg-type]
    volume = label_volume(project, project.get_case(case_id), drawing)
    if kind == "scribbles":  # a .seg.nrrd names the background strokes, as `segment CASE grow` reads them
        background = {"id": "background", "name": "background", "color": (128, 128, 128), "layer": 0}
        volume.meta["segments"].append({**background, "label_value": schema.ignore_index})
    written = write_volume(volume, out, overwrite=force)
    counts = np.bincount(drawing.ravel(), minlength=schema.ignore_index + 1)
    names = [*(c.name for c in schema.classes), "background"]
    shown = ", ".join(f"{name} {int(n)}" for name, n in zip(names, counts[1:], strict=True))
    console.print(f"wrote {written}: {kind} drawn from {reference} ({shown} voxels)")


@app.command()
def slices(
    context: typer.Context,
    out: OutArg,
    reference: ReferenceOption,
    values: ValuesOption = None,
    count: CountOption = 3,
    axis: AxisOption = "axial",
    force: ForceOption = False,
) -> None:
    """The reference's classes on a few slices (input of `segment CASE interpolate --slices`)."""
    _draw(context, "slices", out, reference, values, force, count=count, plane=axis)


@app.command()
def scribbles(
    context: typer.Context,
    out: OutArg,
    reference: ReferenceOption,
    values: ValuesOption = None,
    count: CountOption = 3,
    axis: AxisOption = "axial",
    force: ForceOption = False,
) -> None:
    """Strokes inside each class, a background ring around them (input of `segment CASE grow`)."""
    _draw(context, "scribbles", out, reference, values, force, count=count, plane=axis)


@app.command()
def correct(
    context: typer.Context,
    reference: ReferenceOption,
    values: ValuesOption = None,
    review: Annotated[
        str,
        typer.Option(help="flagged: the slices the ranking flags (needs a prediction); whole: every slice."),
    ] = "flagged",
) -> None:
    """Correct the case's open classes as a person would, and say what it cost (simulated seconds)."""
    from segloop.cli.output import console
    from segloop.exchange.values import parse_value_map
    from segloop.loop.simulate import simulate_review
    from segloop.loop.strokes import read_reference

    project, case_id = context.obj
    value_map = parse_value_map(values, project.config.schema) if values is not None else None
    truth = read_reference(project, case_id, reference, value_map)
    effort, region = simulate_review(project, case_id, truth, review=review)
    if region is not None and not region:
        console.print(f"{case_id}: nothing flagged, nothing reviewed")
        return
    where = "the whole case" if region is None else f"{len(region)} runs of flagged slices"
    console.print(
        f"{case_id}: reviewed {where}: {effort.slices_reviewed} class slices looked at,"
        f" {effort.slices_corrected} corrected with {effort.strokes} strokes"
        f" ({effort.voxels_changed} voxels), {effort.seconds:.0f} s of simulated work"
    )
