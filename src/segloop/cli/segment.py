"""`segloop segment PROJECT CASE TOOL ...`: the labeling tools, each storing new label versions.

Each command parses its options, reads its input files (`segloop.loop.tools`' ``read_*``
adapters), builds a request, calls `segloop.loop.tools.run` and prints what was stored. The
input files' paths and SHA-256 are recorded with the versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from segloop.cli.common import current_user
from segloop.errors import InvalidInputError
from segloop.segment.presets import THRESHOLD_PRESETS_HU

if TYPE_CHECKING:
    from segloop.loop.tools import ToolRequest

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
        raise InvalidInputError(msg)
    return values


def _file(path: Path) -> dict[str, str]:
    """A tool input file's provenance: its resolved path and SHA-256."""
    from segloop.loop.imports import file_params

    return file_params(path)


@app.callback()
def select_case(
    context: typer.Context,
    project: Annotated[Path, typer.Argument(help="Project folder.", show_default=False)],
    case: Annotated[str, typer.Argument(help="Case id.", show_default=False)],
) -> None:
    """Pick the project and case the tool works on."""
    from segloop.store import Project

    context.obj = (Project.open(project), case)


def _run(context: typer.Context, request: ToolRequest, provenance: dict | None = None) -> None:
    """Run the tool and print the versions it stored."""
    from segloop.cli.output import console
    from segloop.loop.tools import run

    project, case = context.obj
    result = run(project, case, request, author=current_user(), provenance=provenance)
    for version in result.versions:
        voxels = sum(version.voxel_counts.get(name, 0) for name in version.classes)
        parent = f", parent {version.parent_id}" if version.parent_id else ""
        console.print(
            f"stored label version {version.id}: {version.source}, {', '.join(version.classes)},"
            f" {voxels} voxels, tool {version.tool}{parent}"
        )


@app.command()
def threshold(
    context: typer.Context,
    class_name: ClassOption,
    value_range: Annotated[str | None, typer.Option("--range", help="LOW,HIGH (inclusive).")] = None,
    preset: Annotated[
        str | None, typer.Option(help=f"{', '.join(THRESHOLD_PRESETS_HU)} (HU ranges).")
    ] = None,
    otsu: Annotated[bool, typer.Option("--otsu", help="Keep voxels above Otsu's threshold.")] = False,
    keep_largest: Annotated[bool, typer.Option("--keep-largest", help="Keep the largest island.")] = False,
    min_size: Annotated[int, typer.Option(help="Remove islands smaller than this (voxels).")] = 0,
    seed: Annotated[
        list[str] | None, typer.Option(help="Keep the island under voxel I,J,K (repeatable).")
    ] = None,
) -> None:
    """Threshold the image into one class, then clean its islands."""
    from segloop.loop.tools import Threshold

    if sum([value_range is not None, preset is not None, otsu]) != 1:
        raise InvalidInputError("give exactly one of --range LOW,HIGH, --preset NAME or --otsu")
    low_high = _numbers(value_range, 2, "--range") if value_range is not None else None
    request = Threshold(
        class_name,
        value_range=(low_high[0], low_high[1]) if low_high else None,
        preset=preset,
        otsu=otsu,
        keep_largest=keep_largest,
        min_size_voxels=min_size,
        seeds=tuple(tuple(int(v) for v in _numbers(text, 3, "--seed")) for text in seed or []),  # type: ignore[misc]
    )
    _run(context, request)


@app.command()
def grow(
    context: typer.Context,
    seeds: Annotated[Path, typer.Option(help="Scribbles: 1..N classes, N+1 (or segment 'background').")],
) -> None:
    """Grow multi-class scribbles into a full label map (Slicer's Grow from seeds)."""
    from segloop.loop.tools import Grow, read_seeds

    project, case = context.obj
    _run(context, Grow(read_seeds(project, case, seeds)), {"seeds": _file(seeds)})


@app.command("fast-marching")
def fast_marching(
    context: typer.Context,
    seeds: Annotated[Path, typer.Option(help="Seed mask (any non-zero voxel).")],
    class_name: ClassOption,
    volume_fraction: Annotated[float, typer.Option(help="Target size as a fraction of the image.")] = 0.05,
) -> None:
    """Grow one class from seeds by fast marching until it fills a volume fraction."""
    from segloop.loop.tools import FastMarching, read_class_slices

    project, case = context.obj
    mask = read_class_slices(project, case, seeds)
    _run(context, FastMarching(class_name, mask, volume_fraction), {"seeds": _file(seeds)})


@app.command()
def interpolate(
    context: typer.Context,
    class_name: ClassOption,
    slices: Annotated[Path, typer.Option(help="Label file with the class drawn on a few slices.")],
    axis: Annotated[str, typer.Option(help="axial, coronal, sagittal or a voxel axis 0-2.")] = "axial",
    smooth: Annotated[float, typer.Option(help="Smoothing of the result (mm).")] = 0.0,
) -> None:
    """Fill between slices drawn on a few slices (Slicer's Fill between slices)."""
    from segloop.loop.tools import Interpolate, read_class_slices

    project, case = context.obj
    mask = read_class_slices(project, case, slices, class_name)
    plane: str | int = int(axis) if axis.isdigit() else axis
    _run(context, Interpolate(class_name, mask, plane, smooth), {"slices": _file(slices)})


@app.command()
def contours(
    context: typer.Context,
    polygons: Annotated[Path, typer.Option(help="JSON polygon document (see segloop.segment.contours).")],
    class_name: Annotated[str | None, typer.Option("--class", help="Only this class.")] = None,
    fill_between: Annotated[
        bool, typer.Option("--fill-between", help="Also fill between the slices.")
    ] = False,
    smooth: Annotated[float, typer.Option(help="Smoothing of the filled result (mm).")] = 0.0,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Rebuild the classes between the edited slices on top of the current label (revised).",
        ),
    ] = False,
) -> None:
    """Polygons drawn on slices → masks on those slices (optionally filled between them)."""
    from segloop.loop.tools import Contours, read_polygon_document

    request = Contours(read_polygon_document(polygons), class_name, fill_between, smooth, replace)
    _run(context, request, {"polygons": _file(polygons)})


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
    from segloop.loop.tools import Postprocess

    _run(context, Postprocess(close_mm, open_mm, fill_holes, largest, version))


@app.command()
def mesh(
    context: typer.Context,
    class_name: ClassOption,
    stl: Annotated[Path, typer.Option("--stl", help="Closed surface: .stl, .obj or .ply (Slicer's LPS).")],
) -> None:
    """Voxelise a closed surface mesh into one class."""
    from segloop.io.mesh import read_mesh
    from segloop.loop.tools import Mesh

    surface = read_mesh(stl)
    _run(context, Mesh(class_name, surface.vertices, surface.faces), {"mesh": _file(stl)})
