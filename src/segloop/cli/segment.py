"""`segloop segment PROJECT CASE TOOL ...`: the labeling tools, each storing a new version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segloop.errors import SegloopError

app = typer.Typer(
    help="Label a case with a tool that needs no training; each run stores a new label version.",
    no_args_is_help=True,
)

ClassOption = Annotated[str, typer.Option("--class", help="Class name from the project's schema.")]


def _numbers(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        msg = f"{what} must be {count} comma-separated numbers; got {text!r}"
        raise SegloopError(msg)
    return values


@app.callback()
def select_case(
    context: typer.Context,
    project: Annotated[Path, typer.Argument(help="Project folder.", show_default=False)],
    case: Annotated[str, typer.Argument(help="Case id.", show_default=False)],
) -> None:
    """Pick the project and case the tool works on."""
    from segloop.store import Project

    context.obj = (Project.open(project), case)


def _report(*versions) -> None:  # type: ignore[no-untyped-def]
    from segloop.cli.output import console

    for version in versions:
        voxels = sum(version.voxel_counts.get(name, 0) for name in version.classes)
        parent = f", parent {version.parent_id}" if version.parent_id else ""
        console.print(
            f"stored label version {version.id}: {version.source}, {', '.join(version.classes)},"
            f" {voxels} voxels, tool {version.tool}{parent}"
        )


def _author() -> str:
    from segloop.cli.main import current_user

    return current_user()


@app.command()
def threshold(
    context: typer.Context,
    class_name: ClassOption,
    value_range: Annotated[str | None, typer.Option("--range", help="LOW,HIGH (inclusive).")] = None,
    preset: Annotated[str | None, typer.Option(help="lung, air, fat, soft-tissue or bone (HU).")] = None,
    otsu: Annotated[bool, typer.Option("--otsu", help="Keep voxels above Otsu's threshold.")] = False,
    keep_largest: Annotated[bool, typer.Option("--keep-largest", help="Keep the largest island.")] = False,
    min_size: Annotated[int, typer.Option(help="Remove islands smaller than this (voxels).")] = 0,
    seed: Annotated[
        list[str] | None, typer.Option(help="Keep the island under voxel I,J,K (repeatable).")
    ] = None,
) -> None:
    """Threshold the image into one class, then clean its islands."""
    from segloop.loop.tools import run_threshold
    from segloop.segment.threshold import THRESHOLD_PRESETS_HU

    project, case = context.obj
    low = high = None
    if preset is not None:
        if preset not in THRESHOLD_PRESETS_HU:
            msg = f"unknown preset {preset!r}: expected one of {', '.join(THRESHOLD_PRESETS_HU)}"
            raise SegloopError(msg)
        low, high = THRESHOLD_PRESETS_HU[preset]
    if value_range is not None:
        low, high = _numbers(value_range, 2, "--range")
    points = [[int(v) for v in _numbers(text, 3, "--seed")] for text in seed or []]
    _report(
        run_threshold(
            project,
            case,
            class_name=class_name,
            low=low,
            high=high,
            otsu=otsu,
            keep_largest=keep_largest,
            min_size_voxels=min_size,
            seed_points=points,
            author=_author(),
        )
    )


@app.command()
def grow(
    context: typer.Context,
    seeds: Annotated[Path, typer.Option(help="Scribbles: 1..N classes, N+1 (or segment 'background').")],
) -> None:
    """Grow multi-class scribbles into a full label map (Slicer's Grow from seeds)."""
    from segloop.loop.tools import run_grow

    project, case = context.obj
    _report(*run_grow(project, case, seeds_path=seeds, author=_author()))


@app.command("fast-marching")
def fast_marching(
    context: typer.Context,
    seeds: Annotated[Path, typer.Option(help="Seed mask (any non-zero voxel).")],
    class_name: ClassOption,
    volume_fraction: Annotated[float, typer.Option(help="Target size as a fraction of the image.")] = 0.05,
) -> None:
    """Grow one class from seeds by fast marching until it fills a volume fraction."""
    from segloop.loop.tools import run_fast_marching

    project, case = context.obj
    _report(
        run_fast_marching(
            project,
            case,
            seeds_path=seeds,
            class_name=class_name,
            volume_fraction=volume_fraction,
            author=_author(),
        )
    )


@app.command()
def interpolate(
    context: typer.Context,
    class_name: ClassOption,
    slices: Annotated[Path, typer.Option(help="Label file with the class drawn on a few slices.")],
    axis: Annotated[str, typer.Option(help="axial, coronal, sagittal or a voxel axis 0-2.")] = "axial",
    smooth: Annotated[float, typer.Option(help="Smoothing of the result (mm).")] = 0.0,
) -> None:
    """Fill between slices drawn on a few slices (Slicer's Fill between slices)."""
    from segloop.loop.tools import run_interpolate

    project, case = context.obj
    _report(
        *run_interpolate(
            project,
            case,
            class_name=class_name,
            slices_path=slices,
            plane=axis,
            smoothing_mm=smooth,
            author=_author(),
        )
    )


@app.command()
def contours(
    context: typer.Context,
    polygons: Annotated[Path, typer.Option(help="JSON polygon document (see segloop.segment.contours).")],
    class_name: Annotated[str | None, typer.Option("--class", help="Only this class.")] = None,
    fill_between: Annotated[
        bool, typer.Option("--fill-between", help="Also fill between the slices.")
    ] = False,
    smooth: Annotated[float, typer.Option(help="Smoothing of the filled result (mm).")] = 0.0,
) -> None:
    """Polygons drawn on slices → masks on those slices (optionally filled between them)."""
    from segloop.loop.tools import run_contours

    project, case = context.obj
    _report(
        *run_contours(
            project,
            case,
            polygons_path=polygons,
            class_name=class_name,
            fill_between=fill_between,
            smoothing_mm=smooth,
            author=_author(),
        )
    )


@app.command()
def postprocess(
    context: typer.Context,
    close_mm: Annotated[float, typer.Option(help="Closing radius (mm).")] = 0.0,
    open_mm: Annotated[float, typer.Option(help="Opening radius (mm).")] = 0.0,
    largest: Annotated[bool, typer.Option("--largest", help="Keep the largest island per class.")] = False,
    fill_holes: Annotated[bool, typer.Option("--fill-holes", help="Fill cavities per class.")] = False,
    version: Annotated[int | None, typer.Option(help="Version to process (default: the latest).")] = None,
) -> None:
    """Close → open → fill → keep the largest island per class (seed 000's order)."""
    from segloop.loop.tools import run_postprocess

    project, case = context.obj
    _report(
        run_postprocess(
            project,
            case,
            close_mm=close_mm,
            open_mm=open_mm,
            keep_largest=largest,
            fill=fill_holes,
            version_id=version,
            author=_author(),
        )
    )


@app.command()
def mesh(
    context: typer.Context,
    class_name: ClassOption,
    stl: Annotated[Path, typer.Option("--stl", help="Closed surface: .stl, .obj or .ply (Slicer's LPS).")],
) -> None:
    """Voxelise a closed surface mesh into one class."""
    from segloop.loop.tools import run_mesh

    project, case = context.obj
    _report(run_mesh(project, case, class_name=class_name, mesh_path=stl, author=_author()))
