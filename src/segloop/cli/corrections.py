"""The correction commands: `segloop next`, `segloop correct`, `segloop patches extract|merge`.

Registered in `segloop.cli.main`; each parses options, calls one `segloop.loop` function and
prints its result. Heavy modules are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segloop.cli.common import current_user, hint, split_list
from segloop.errors import ConflictError, InvalidInputError

__all__ = ["correct_command", "next_command", "patches_app"]

ProjectArg = Annotated[Path, typer.Argument(help="Project folder.", show_default=False)]
CaseArg = Annotated[str, typer.Argument(help="Case id (see `segloop status`).", show_default=False)]

patches_app = typer.Typer(
    help="Correction patches (MemBrain-seg style): extract cubes, correct them, merge them back.",
    no_args_is_help=True,
)


def _voxel(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        msg = f"a centre must be three voxel indices i,j,k; got {text!r}"
        raise InvalidInputError(msg)
    return values  # type: ignore[return-value]


def next_command(
    project: ProjectArg,
    n: Annotated[int, typer.Option("-n", "--count", help="How many cases to list.")] = 5,
    strategy: Annotated[
        str, typer.Option(help="uncertainty, gain-per-cost, random or least-recent.")
    ] = "uncertainty",
    out: Annotated[Path | None, typer.Option(help="Write the list as CSV (rank,case,score,classes).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random strategy.")] = 0,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Log the listed cases as served (least-recent).")
    ] = True,
) -> None:
    """The cases to correct next, and within each the classes that need attention most."""
    from rich.table import Table

    from segloop.cli.output import console
    from segloop.loop.ranking import rank_cases, write_priority_csv
    from segloop.store import Project

    opened = Project.open(project)
    ranked = rank_cases(opened, strategy=strategy, count=n, seed=seed, record=record, author=current_user())
    table = Table(title=f"next {len(ranked)} cases to correct ({strategy})")
    table.add_column("rank", justify="right")
    table.add_column("case", no_wrap=True)
    table.add_column("score", justify="right")
    table.add_column("classes (attention order)" if strategy == "uncertainty" else "open classes")
    table.add_column("model", justify="right")
    for row in ranked:
        score = "-" if row.score is None else f"{row.score:g}"
        model = "-" if row.model_id is None else str(row.model_id)
        classes = ", ".join(row.classes) or ("[dim]nothing flagged[/]" if row.score is not None else "-")
        table.add_row(str(row.rank), row.case_id, score, classes, model)
    console.print(table)
    if not ranked:
        console.print("no candidate case: every case is labelled by a person")
    if strategy == "uncertainty" and any(r.score is None for r in ranked):
        console.print("[yellow]cases without a stored prediction come last: run `segloop predict`[/yellow]")
    if out is not None:
        console.print(f"wrote {write_priority_csv(ranked, out)}")


def correct_command(
    project: ProjectArg,
    case: CaseArg,
    label: Annotated[
        Path | None, typer.Option(help="A whole corrected label (any format; .seg.nrrd by segment name).")
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="Classes --label annotates (default: its segments, or all).")
    ] = None,
    add: Annotated[list[Path] | None, typer.Option(help="Add mask on the case's grid (repeatable).")] = None,
    remove: Annotated[list[Path] | None, typer.Option(help="Remove mask (repeatable).")] = None,
    ignore: Annotated[list[Path] | None, typer.Option(help="Ignore mask (repeatable).")] = None,
    corrections_dir: Annotated[
        Path | None, typer.Option(help="A folder of Add*/Remove*/Ignore* masks (e.g. an export's).")
    ] = None,
    class_name: Annotated[
        str | None, typer.Option("--class", help="The class Add/Remove masks without a class name mean.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Apply even if the case changed since it was exported.")
    ] = False,
    reviewed_slices: Annotated[
        str | None,
        typer.Option(
            help="Only these slices were reviewed, e.g. 10:13 (slices 10-12) or 10:13,40; training"
            " learns the correction there only (default: the whole case)."
        ),
    ] = None,
    axis: Annotated[
        int | None, typer.Option(help="Voxel axis of --reviewed-slices (default: the case's axial one).")
    ] = None,
    reviewed_box: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this box was reviewed: i0:i1,j0:j1,k0:k1 voxels, ':' a whole axis (repeatable)."
        ),
    ] = None,
) -> None:
    """Store a person's correction of a case (or of the part they reviewed) as a revised label version."""
    from segloop.cli.output import console
    from segloop.loop import corrections as use_case
    from segloop.store import Project

    masks = bool(add or remove or ignore or corrections_dir)
    if (label is not None) == masks:
        msg = (
            "give either --label FILE or masks (--add/--remove/--ignore/--corrections-dir),"
            " not both or neither"
        )
        raise InvalidInputError(msg)
    opened = Project.open(project)
    region = use_case.reviewed_region(
        opened.get_case(case), slices=reviewed_slices, axis=axis, boxes=reviewed_box or ()
    )
    stale = "export it again and redo the correction there, or pass --force to apply it to the current label"
    if label is not None:
        labels, names, provenance = use_case.read_corrected_label(opened, case, label)
        parent = use_case.find_export_parent(opened, case, [label])
        with hint(ConflictError, stale):
            result = use_case.apply_label(
                opened, case, labels, split_list(classes) or names, parent=parent, force=force,
                author=current_user(), provenance=provenance, region=region,
            )  # fmt: skip
    else:
        found, files = use_case.read_correction_files(
            opened, case, add=add or (), remove=remove or (), ignore=ignore or (),
            corrections_dir=corrections_dir, class_name=class_name,
        )  # fmt: skip
        parent = use_case.find_export_parent(opened, case, [f.path for f in files])
        with hint(ConflictError, stale):
            result = use_case.apply(
                opened, case, found, parent=parent, force=force, author=current_user(),
                provenance={"files": [f.describe() for f in files]}, region=region,
            )  # fmt: skip
    for warning in result.warnings:
        console.print(f"[yellow]{warning}[/yellow]")
    if result.version is None:
        console.print(f"{case}: the corrections change nothing; no version stored")
    elif not result.created:
        console.print(f"{case}: already stored as version {result.version.id}; nothing added")
    else:
        version = result.version
        console.print(
            f"stored label version {version.id}: revised, {', '.join(version.classes) or 'ignore only'},"
            f" {result.changed_voxels} voxels changed, parent {version.parent_id}"
            + (f", reviewed {_shown_region(region)} only" if region else "")
        )


def _shown_region(region: tuple) -> str:
    """``[0:4, 0:5, 10:13]`` per box: the voxel ranges a person reviewed."""
    return " + ".join(
        "[" + ", ".join(f"{o}:{o + n}" for o, n in zip(box.offset, box.size, strict=True)) + "]"
        for box in region
    )


@patches_app.command("extract")
def extract_command(
    project: ProjectArg,
    out_dir: Annotated[Path, typer.Argument(help="Output folder.", show_default=False)],
    case: Annotated[str | None, typer.Option(help="The case (needed with --center).")] = None,
    center: Annotated[
        list[str] | None, typer.Option(help="Patch centre as voxel indices i,j,k (repeatable).")
    ] = None,
    auto: Annotated[int, typer.Option(help="Centre N patches on the largest uncertain regions.")] = 0,
    size: Annotated[int, typer.Option(help="Edge length in voxels (clipped to smaller volumes).")] = 160,
    border: Annotated[int, typer.Option(help="Ignore border of the label patches, in voxels.")] = 16,
) -> None:
    """Cut image and label patches (NRRD, geometry kept) and a corrections/<patch>/ skeleton."""
    from segloop.cli.output import console
    from segloop.loop.patches import extract_patches
    from segloop.store import Project

    centers = [_voxel(text) for text in center or []]
    manifests = extract_patches(
        Project.open(project),
        out_dir,
        case_id=case,
        centers=centers,
        auto=auto,
        size=size,
        border_voxels=border,
        author=current_user(),
    )
    for manifest in manifests:
        short = [str(axis) for axis, n in enumerate(manifest["size"]) if n < size]
        whole = f" (the whole axis {', '.join(short)}: the case is shorter than {size})" if short else ""
        console.print(
            f"{manifest['patch']}: case {manifest['case']}, centre {manifest['center']},"
            f" offset {manifest['offset']}, size {manifest['size']}{whole},"
            f" label version {manifest['parent_version_id']}"
        )
    console.print(f"correct them into {Path(out_dir) / 'corrections'}/<patch>/ (see its README.txt)")


@patches_app.command("merge")
def merge_command(
    project: ProjectArg,
    corrections_dir: Annotated[Path, typer.Option(help="OUTDIR/corrections of `patches extract`.")],
    class_name: Annotated[
        str | None, typer.Option("--class", help="The class Add/Remove files without a class name mean.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Merge into cases changed since extraction (current label).")
    ] = False,
    accept_empty: Annotated[
        bool, typer.Option("--accept-empty", help="Also merge patches without corrections (reviewed as is).")
    ] = False,
) -> None:
    """Merge corrected patches back into their cases as revised label versions."""
    from segloop.cli.output import console
    from segloop.loop.patches import merge_patches
    from segloop.store import Project

    with hint(
        ConflictError,
        "extract the patch again, or pass --force to apply the corrections to the current label",
    ):
        report = merge_patches(
            Project.open(project),
            corrections_dir,
            class_name=class_name,
            force=force,
            accept_empty=accept_empty,
            author=current_user(),
        )
    for warning in report.warnings:
        console.print(f"[yellow]{warning}[/yellow]")
    for row in report.patches:
        version = f", version {row.version_id}" if row.version_id is not None else ""
        changed = f", {row.changed_voxels} voxels changed" if row.status == "merged" else ""
        console.print(f"{row.patch} ({row.case_id}): {row.status}{version}{changed}")
    console.print(f"{len(report.versions)} new revised versions")
