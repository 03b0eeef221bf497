"""Entry point of the `segloop` command.

Commands parse arguments, call one `segloop.loop` function and render its result. Heavy modules
are imported inside the commands so that ``segloop --help`` starts fast and without torch.
`SegloopError` becomes a one-line ``error: ...`` on stderr and exit code 1.
"""

from __future__ import annotations

import shlex
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from segloop.cli.common import current_user, hint, split_list
from segloop.cli.exchange import app as exchange_app
from segloop.cli.segment import app as segment_app
from segloop.cli.simulate import app as simulate_app
from segloop.errors import SegloopError

app = typer.Typer(
    name="segloop",
    help="Annotation by iterative deep learning: sparse labels in, full labels out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(segment_app, name="segment")
app.add_typer(exchange_app, name="exchange")
app.add_typer(simulate_app, name="simulate")

ProjectArg = Annotated[Path, typer.Argument(help="Project folder.", show_default=False)]
CaseArg = Annotated[str, typer.Argument(help="Case id (see `segloop status`).", show_default=False)]


@app.command()
def init(
    project: ProjectArg,
    labels: Annotated[
        str | None, typer.Option(help="Class names in label-value order, comma separated.")
    ] = None,
    labels_file: Annotated[
        Path | None, typer.Option(help='Class names from a file: one per line, or JSON {"1": name, ...}.')
    ] = None,
    modality: Annotated[str, typer.Option(help="CT, MR, microscopy, EM, cryo-ET or other.")] = "CT",
    window: Annotated[
        str | None,
        typer.Option(
            help="CT window WIDTH,LEVEL in stored units for training (default 400,40 HU;"
            " e.g. 400,1064 for CT stored as HU + 1024)."
        ),
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(
            help="Left-right class pairs, e.g. RightParotid:LeftParotid,kidney_r:kidney_l (training then"
            " mirrors left-right by default, swapping them)."
        ),
    ] = None,
) -> None:
    """Create a project folder with its label schema."""
    from segloop.cli.exchange import parse_window_option
    from segloop.cli.output import print_schema
    from segloop.loop.cases import init_project, read_class_names

    if (labels is None) == (labels_file is None):
        raise typer.BadParameter("give exactly one of --labels or --labels-file")
    defaults = {"window": list(parse_window_option(window))} if window else {}
    names = split_list(labels) if labels is not None else read_class_names(labels_file)
    pairs_given = [[name.strip() for name in part.split(":")] for part in split_list(pairs)]
    if any(len(pair) != 2 for pair in pairs_given):
        raise typer.BadParameter(f"--pairs: expected A:B pairs separated by commas; got {pairs!r}")
    created = init_project(project, names, modality=modality, defaults=defaults, pairs=pairs_given)
    print_schema(created)


@app.command()
def add(
    project: ProjectArg,
    images: Annotated[list[Path], typer.Argument(help="Image files or DICOM folders.", show_default=False)],
    labels_dir: Annotated[Path | None, typer.Option(help="Folder of label files named by case id.")] = None,
    label: Annotated[Path | None, typer.Option(help="Label file of a single image.")] = None,
    source: Annotated[str, typer.Option(help="original, revised, sparse, draft or pseudo.")] = "original",
    classes: Annotated[str | None, typer.Option(help="Classes the labels annotate (default: all).")] = None,
    case_id: Annotated[str | None, typer.Option(help="Case id for a single image.")] = None,
    copy: Annotated[bool, typer.Option("--copy", help="Copy images into the project.")] = False,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Accept labels with no foreground.")
    ] = False,
    label_values: Annotated[
        str | None,
        typer.Option(help="File value -> name for labels in another convention, e.g. 255=nucleus."),
    ] = None,
    image_pattern: Annotated[
        str | None, typer.Option(help="Case ids from image names, e.g. '{case}_image' (101_image.nii.gz).")
    ] = None,
    meshes_dir: Annotated[
        Path | None, typer.Option(help="Folder of closed STL/OBJ/PLY surfaces per case and class (mm).")
    ] = None,
    mesh_pattern: Annotated[
        str, typer.Option(help="Mesh file names, {case} and {class} once each.")
    ] = "{case}_{class}_mesh.stl",
    mesh_classes: Annotated[
        str | None, typer.Option(help="Class names in mesh names -> schema, e.g. leftkidney=kidney_left.")
    ] = None,
) -> None:
    """Add images (and their labels) as new cases; all or nothing."""
    from segloop.cli.output import console
    from segloop.exchange.values import parse_value_map
    from segloop.loop.cases import import_cases
    from segloop.loop.meshes import parse_name_map
    from segloop.store import Project

    opened = Project.open(project)
    value_map = parse_value_map(label_values, opened.config.schema) if label_values else None
    report = import_cases(
        opened,
        images,
        labels_dir=labels_dir,
        label_path=label,
        source=source,
        classes=split_list(classes) or None,
        case_id=case_id,
        copy=copy,
        allow_empty=allow_empty,
        label_values=value_map,
        author=current_user(),
        image_pattern=image_pattern,
        meshes_dir=meshes_dir,
        mesh_pattern=mesh_pattern,
        mesh_classes=parse_name_map(mesh_classes),
    )
    console.print(
        f"added {len(report.added_cases)} cases ({len(report.labeled)} with {source} labels)"
        f" in {report.seconds:.1f} s"
    )
    if report.unmatched_labels:
        shown = ", ".join(report.unmatched_labels[:5])
        console.print(f"[yellow]label files with no matching image: {shown}[/yellow]")


ClassesOption = Annotated[
    str | None,
    typer.Option("--class", help="Only these classes (comma-separated names).", show_default=False),
]
LimitOption = Annotated[int, typer.Option(help="At most this many rows (0: all).", min=0)]


@app.command()
def status(
    project: ProjectArg,
    table: Annotated[bool, typer.Option("--table", help="One row per case instead of the summary.")] = False,
    cases: Annotated[
        str | None,
        typer.Option(
            help="Table of these cases (comma-separated ids or glob patterns, e.g. 'liver_*').",
            show_default=False,
        ),
    ] = None,
    classes: ClassesOption = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Table of the cases where some shown class is decided by one of these sources"
            " (original, revised, sparse, draft, pseudo, none).",
            show_default=False,
        ),
    ] = None,
    limit: LimitOption = 50,
) -> None:
    """The project in counts: per class the cases each source decides, rounds, queue, jobs.

    With --table (or --cases, --source) one row per case instead: per class the deciding source.
    --class keeps only those classes (summary rows, table columns, and what --source looks at).
    """
    from segloop.cli.output import print_case_table, print_summary
    from segloop.loop.cases import (
        list_case_table,
        parse_class_filter,
        parse_source_filter,
        summarize_project,
    )
    from segloop.store import Project
    from segloop.store.overview import CaseSelection

    opened = Project.open(project)
    shown = parse_class_filter(opened, classes)
    sources = parse_source_filter(source)
    if not (table or cases or sources):
        print_summary(opened, summarize_project(opened, classes=shown))
        return
    selection = CaseSelection(ids=tuple(split_list(cases)), classes=shown, sources=sources)
    print_case_table(list_case_table(opened, selection, limit=limit or None))


@app.command()
def show(
    project: ProjectArg,
    case: CaseArg,
    classes: ClassesOption = None,
    source: Annotated[
        str | None,
        typer.Option(help="Only versions of these sources (comma-separated).", show_default=False),
    ] = None,
    limit: LimitOption = 50,
) -> None:
    """A case's images and label versions (source, classes, author, tool, parent, time).

    --class keeps the versions annotating one of those classes, --source those of these sources;
    --limit shows the newest of them.
    """
    from segloop.cli.output import print_case
    from segloop.core.provenance import parse_source
    from segloop.loop.cases import filter_versions, parse_class_filter
    from segloop.store import Project

    opened = Project.open(project)
    record = opened.get_case(case)
    sources = [parse_source(name).value for name in split_list(source)]
    versions, matched = filter_versions(
        opened.list_label_versions(case),
        classes=parse_class_filter(opened, classes),
        sources=sources,
        limit=limit or None,
    )
    print_case(opened, record, versions, matched=matched)


@app.command()
def export(
    project: ProjectArg,
    case: CaseArg,
    out: Annotated[
        Path | None,
        typer.Argument(
            help="Output file (the suffix picks the format); with --for, a folder.", show_default=False
        ),
    ] = None,
    version: Annotated[int | None, typer.Option(help="Export this label version instead.")] = None,
    for_tool: Annotated[
        str | None,
        typer.Option("--for", help="slicer, itksnap or mitk: image, label and a corrections template."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    attention: Annotated[
        Path | None,
        typer.Option(help="Also write the case's attention map (float, on its grid) to review beside it."),
    ] = None,
    contours: Annotated[
        Path | None, typer.Option(help="Also write the label's outlines per slice (JSON polygon document).")
    ] = None,
    contour_classes: Annotated[
        str | None, typer.Option("--classes", help="--contours: these classes (default: all present).")
    ] = None,
    axis: Annotated[str, typer.Option(help="--contours: axial, coronal or sagittal slices.")] = "axial",
) -> None:
    """Write a case's effective label (original > revised > pseudo) in any supported format."""
    from segloop.cli.output import console
    from segloop.store import Project

    if out is None and attention is None and contours is None:
        raise typer.BadParameter("give OUT (the label file), --attention FILE, --contours FILE, or several")
    if contours is not None:
        from segloop.loop.tools import write_case_contours

        opened, classes = Project.open(project), split_list(contour_classes) or None
        document = write_case_contours(opened, case, contours, classes, axis, version, overwrite=force)
        counts = ", ".join(f"{name} {len(polygons)}" for name, polygons in document["classes"].items())
        console.print(f"wrote {contours} (polygons: {counts})")
        if out is None and attention is None:
            return
    if attention is not None:
        from segloop.io import write_volume
        from segloop.loop.ranking import attention_volume

        heat = attention_volume(Project.open(project), case)
        written_map = write_volume(heat, attention, overwrite=force)
        shown = ", ".join(f"{c['class']} {c['flagged_voxels']}" for c in heat.meta["classes"]) or "none"
        console.print(f"wrote {written_map} (flagged voxels: {shown})")
        if out is None:
            return
    if for_tool is not None:
        from segloop.loop.tool_exports import export_for_tool

        if version is not None:
            raise typer.BadParameter("--for exports the current label; --version cannot be combined with it")
        written = export_for_tool(Project.open(project), case, for_tool, out, overwrite=force)
        console.print(f"wrote {out}/: " + ", ".join(str(p.relative_to(out)) for p in written))
        return
    from segloop.loop.cases import export_label

    written = export_label(Project.open(project), case, out, version_id=version, overwrite=force)
    console.print(f"wrote {written}")


DimsOption = Annotated[int | None, typer.Option(help="2: slice-wise network; 3: patch-wise (default 2).")]
EpochsOption = Annotated[
    int | None, typer.Option(help="Number of epochs (default 50; --minutes may stop it earlier).")
]
MinutesOption = Annotated[
    float | None, typer.Option(help="Wall-time budget, validation included (default 10).")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
SeedOption = Annotated[int | None, typer.Option(help="Seeds weights and sampling (default 0).")]
WindowOption = Annotated[
    str | None,
    typer.Option(
        help="CT window WIDTH,LEVEL in stored units (default 400,40 HU; segloop.toml [defaults] window)."
    ),
]
ValCasesOption = Annotated[
    str | None, typer.Option(help="Validation cases, comma separated (default: a seeded 20 %).")
]
#: The pseudo-label policies (`segloop.loop.training.PSEUDO_POLICIES`, written out: building the help
#: imports no numpy; a test keeps them equal) and the one a bare ``--include-pseudo`` means (the old flag).
PSEUDO_CHOICES = ("none", "all", "confident")
BARE_INCLUDE_PSEUDO = "all"
IncludePseudoOption = Annotated[
    str | None,
    typer.Option(
        "--include-pseudo",
        help="Learn from pseudo labels (model predictions): none (default), all (also the bare"
        " --include-pseudo) or confident (the voxels whose prediction entropy < --pseudo-entropy,"
        " the rest ignored). Human labels win in each.",
    ),
]
PatchSizeOption = Annotated[
    str | None,
    typer.Option(help="Training crop in voxels, e.g. 256,256 or 96,96,96 (default: 5/8 of a slice; 64³)."),
]
BatchSizeOption = Annotated[int | None, typer.Option(help="Crops per optimiser step (default 16).")]
NetworkOption = Annotated[
    str | None,
    typer.Option(
        help="unet, dynunet or swinunetr (MONAI's SwinUNETR, pretrainable); default in 2D: dynunet from"
        " 10 minutes, unet below, or the newest model's."
    ),
]
FeaturesOption = Annotated[
    str | None,
    typer.Option(help="Channels per level, e.g. 12,24,48,96,192 (swinunetr default 48,...,768 as bundles)."),
]
DeepSupervisionOption = Annotated[
    int | None,
    typer.Option(
        help="--network dynunet: lower-resolution decoder outputs trained beside the full one"
        " (nnU-Net's deep supervision; default 2, at most levels - 2, or the newest model's; 0: off)."
    ),
]
ContextSlicesOption = Annotated[
    int | None,
    typer.Option(
        help="2D: also give the network K neighbouring slices on each side (2.5D; default 1, or the"
        " newest model's)."
    ),
]
BFloat16Option = Annotated[
    bool | None,
    typer.Option(
        "--bf16/--no-bf16",
        help="bfloat16 autocast on a CPU with native bfloat16 (AVX512-BF16 or AMX; about 1.2x the"
        " samples/s): default on; ignored on other CPUs and on a GPU.",
    ),
]
MirrorOption = Annotated[
    bool | None,
    typer.Option(
        "--mirror/--no-mirror",
        help="Flip training samples left-right, swapping the classes paired in segloop.toml"
        " (default: on when segloop.toml declares pairs).",
    ),
]

_NO_LABELS_HINT = "add labels with `segloop add --labels-dir` or `segloop segment`, or pass --include-pseudo"
_RESUME_HINT = "drop those options, or train without --resume to start a new run"


def _training_settings(
    dims: int | None,
    epochs: int | None,
    minutes: float | None,
    seed: int | None,
    window: str | None,
    val_cases: str | None,
    *,
    patch_size: str | None = None,
    batch_size: int | None = None,
    slice_axis: int | None = None,
) -> dict[str, Any]:
    """The training options as `TrainConfig` field names (None: not given on the command line)."""
    from segloop.loop.training import parse_patch_size, training_settings

    return training_settings(
        {
            "dims": dims,
            "epochs": epochs,
            "minutes": minutes,
            "seed": seed,
            "window": window,
            "val_cases": split_list(val_cases) or None,
            "patch_size": parse_patch_size(patch_size) if patch_size is not None else None,
            "batch_size": batch_size,
            "slice_axis": slice_axis,
        }
    )


def with_flag_values(args: list[str]) -> list[str]:
    """Command-line ``args`` with a bare ``--include-pseudo`` (not followed by one of `PSEUDO_CHOICES`)
    spelled ``--include-pseudo=all``: the option was a flag before it took a policy.

    Examples:
        >>> with_flag_values(["train", "p", "--include-pseudo", "--minutes", "1"])
        ['train', 'p', '--include-pseudo=all', '--minutes', '1']
        >>> with_flag_values(["train", "--include-pseudo", "confident", "p"])
        ['train', '--include-pseudo', 'confident', 'p']
    """
    result = list(args)
    for index, arg in enumerate(result):
        if arg == "--":
            break
        if arg == "--include-pseudo" and (
            index + 1 == len(result) or result[index + 1] not in PSEUDO_CHOICES
        ):
            result[index] = f"--include-pseudo={BARE_INCLUDE_PSEUDO}"
    return result


@app.command("train")
def train_command(
    project: ProjectArg,
    dims: DimsOption = None,
    mode: Annotated[
        str | None, typer.Option(help="full (fresh weights, the default) or continual (from the last model).")
    ] = None,
    epochs: EpochsOption = None,
    minutes: MinutesOption = None,
    device: DeviceOption = "auto",
    init_weights: Annotated[
        Path | None,
        typer.Option(help="Start from a segloop checkpoint, a PyTorch/MONAI state dict or bundle model.pt."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run with its own settings.")
    ] = False,
    seed: SeedOption = None,
    window: WindowOption = None,
    val_cases: ValCasesOption = None,
    include_pseudo: IncludePseudoOption = None,
    pseudo_entropy: Annotated[
        float | None,
        typer.Option(
            help="--include-pseudo confident: learn pseudo voxels of entropy (0-1) below it (default 0.1)."
        ),
    ] = None,
    train_count: Annotated[
        int | None,
        typer.Option(
            help="Train on this many labelled cases, drawn with --seed (default: all not validating)."
        ),
    ] = None,
    val_count: Annotated[
        int | None,
        typer.Option(
            help="Validate on this many labelled cases, drawn with --seed (default: a seeded 20 %)."
        ),
    ] = None,
    slice_axis: Annotated[
        int | None,
        typer.Option(help="2D: the voxel axis to slice along, 0, 1 or 2 (default: the axial one)."),
    ] = None,
    patch_size: PatchSizeOption = None,
    batch_size: BatchSizeOption = None,
    network: NetworkOption = None,
    features: FeaturesOption = None,
    deep_supervision: DeepSupervisionOption = None,
    context_slices: ContextSlicesOption = None,
    mirror: MirrorOption = None,
    bf16: BFloat16Option = None,
    nproc: Annotated[
        int,
        typer.Option(
            help="Training processes (torch.distributed: gloo on the CPU, one GPU each with cuda);"
            " --batch-size is the global batch. Under torchrun: 1 or the launcher's count."
        ),
    ] = 1,
) -> None:
    """Train a network on every labelled case (ignore voxels teach nothing).

    Seed 004's per-run parameters: --epochs (default 50), --train-count and --val-count (default:
    every labelled case, a seeded 20 % validating), --seed (default 0). Each epoch the progress
    shows the validation Dice and reports/training_model-ID.png shows one validation slice.
    """
    from segloop.cli.output import console, job_progress
    from segloop.errors import ConflictError, LabelValueError, NotFoundError
    from segloop.loop.training import (
        parse_features,
        reports_here,
        resume_training,
        train_config,
        train_project,
    )
    from segloop.store import Project

    opened = Project.open(project)
    settings = _training_settings(
        dims, epochs, minutes, seed, window, val_cases, patch_size=patch_size, batch_size=batch_size,
        slice_axis=slice_axis,
    )  # fmt: skip
    settings |= {
        "network": network,
        "features": parse_features(features) if features else None,
        "deep_supervision": deep_supervision,
        "context_slices": context_slices,
        "mirror": mirror,
        "cpu_bfloat16": bf16,
    }
    run_settings = {
        "include_pseudo": include_pseudo,
        "pseudo_entropy": pseudo_entropy,
        "train_count": train_count,
        "val_count": val_count,
    }
    with job_progress() as on_progress:
        if resume:
            asked = {**settings, **run_settings, "mode": mode, "init_weights": init_weights}
            with hint(ConflictError, _RESUME_HINT), hint(NotFoundError, "train without --resume"):
                model = resume_training(
                    opened,
                    asked=asked,
                    device=device,
                    on_progress=on_progress,
                    author=current_user(),
                    nproc=nproc,
                )
        else:
            with (
                hint(LabelValueError, _NO_LABELS_HINT),
                hint(NotFoundError, "train with --mode full first", when="continual training needs"),
            ):
                model = train_project(
                    opened,
                    train_config(opened, **settings),
                    mode=mode or "full",
                    device=device,
                    init_weights=init_weights,
                    include_pseudo=include_pseudo or False,
                    pseudo_entropy=pseudo_entropy,
                    train_count=train_count,
                    val_count=val_count,
                    on_progress=on_progress,
                    author=current_user(),
                    nproc=nproc,
                )
    if not reports_here():  # a torchrun rank other than 0: rank 0 prints
        return
    dice = model.metrics.get("best_mean_dice")
    console.print(
        f"model {model.id}: {model.metrics.get('epochs')} epochs, best validation Dice"
        f" {dice if dice is None else round(dice, 3)}, checkpoint {model.checkpoint}"
    )


@app.command("predict")
def predict_command(
    project: ProjectArg,
    cases: Annotated[str | None, typer.Option(help="Case ids, comma separated (default: all).")] = None,
    unlabeled: Annotated[bool, typer.Option("--unlabeled", help="Only cases without labels.")] = False,
    model: Annotated[int | None, typer.Option(help="Model id (default: the newest finished).")] = None,
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta",
            help="--tta: also average a pass flipped along axis 0. Default: a model trained with --mirror"
            " averages in its left-right mirror (paired classes swapped back), others predict once.",
        ),
    ] = None,
    postprocess: Annotated[
        str | None, typer.Option(help="Comma separated presets, e.g. close,open,largest (2 mm radii).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (on each worker).")] = "auto",
    again: Annotated[
        bool, typer.Option("--again", help="Also predict cases this model has predicted already.")
    ] = False,
    executor: Annotated[
        str, typer.Option(help="local (this process) or dask (a LocalCluster, or --scheduler).")
    ] = "local",
    scheduler: Annotated[
        str | None, typer.Option(help="A running Dask scheduler, e.g. tcp://host:8786 (--executor dask).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes of the LocalCluster (default: the cores).")
    ] = None,
    commit_every: Annotated[int, typer.Option(help="Predictions recorded per database transaction.")] = 16,
) -> None:
    """Predict cases: each becomes a pseudo label version with probabilities and entropy."""
    from segloop.cli.output import console, job_progress
    from segloop.engine.config import InferConfig
    from segloop.errors import InvalidInputError
    from segloop.loop.predict import predict_batch
    from segloop.loop.tools import Postprocess
    from segloop.store import Project

    steps = split_list(postprocess)
    options = Postprocess.from_presets(steps).morphology_kwargs() if steps else None
    with (
        job_progress() as on_progress,
        hint(InvalidInputError, "--cases or --unlabeled", when="got both"),
        hint(InvalidInputError, "--executor dask", when="options of the dask executor"),
    ):
        batch = predict_batch(
            Project.open(project),
            split_list(cases) or None,
            unlabeled=unlabeled,
            model_id=model,
            infer_config=InferConfig.from_tta_flag(tta),
            postprocess=options,
            device=device,
            author=current_user(),
            again=again,
            executor=executor,
            scheduler=scheduler,
            workers=workers,
            commit_every=commit_every,
            on_progress=on_progress,
        )
    for record in batch.records:
        console.print(
            f"{record.case_id}: pseudo version {record.label_version_id},"
            f" mean entropy {record.mean_entropy:.4f}"
        )
    done = len(batch.skipped)
    skipped = f", skipped {done} done before (--again: predict them too)" if done else ""
    console.print(f"model {batch.model_id} predicted {len(batch.records)} cases{skipped}")


@app.command()
def evaluate(
    project: ProjectArg,
    cases: Annotated[
        str | None,
        typer.Option(help="Case ids, comma separated (default: labelled cases the model did not train on)."),
    ] = None,
    model: Annotated[int | None, typer.Option(help="Model id (default: the newest finished).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    tolerance: Annotated[float, typer.Option(help="Surface Dice tolerance in mm.")] = 2.0,
) -> None:
    """Score a model against original/revised labels: Dice, HD95, surface Dice per class (stored)."""
    from segloop.cli.output import console, print_evaluation
    from segloop.errors import NotFoundError
    from segloop.loop.evaluation import evaluate_model
    from segloop.store import Project

    opened = Project.open(project)
    with hint(NotFoundError, "name them with --cases", when="no case to evaluate"):
        records = evaluate_model(
            opened,
            split_list(cases) or None,
            model_id=model,
            device=device,
            tolerance_mm=tolerance,
            on_case=lambda case_id: console.print(f"evaluating {case_id}"),
        )
    print_evaluation(records)


#: The names of `segloop.loop.ranking.STRATEGIES` for --help (written out: building the help must not
#: import the ranking's numpy/scipy; a test keeps it equal to the registry, which checks every name).
STRATEGY_HELP = "Ranking: uncertainty, gain-per-cost, random or least-recent."


@app.command("round")
def round_command(
    project: ProjectArg,
    mode: Annotated[
        str, typer.Option(help="continual (from the last model; full in round 1) or full.")
    ] = "continual",
    strategy: Annotated[str, typer.Option(help=STRATEGY_HELP)] = "uncertainty",
    n: Annotated[int, typer.Option("-n", help="Cases in the correction queue.")] = 5,
    dims: DimsOption = None,
    epochs: EpochsOption = None,
    minutes: MinutesOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = None,
    window: WindowOption = None,
    val_cases: ValCasesOption = None,
    include_pseudo: IncludePseudoOption = None,
    context_slices: ContextSlicesOption = None,
    mirror: MirrorOption = None,
    bf16: BFloat16Option = None,
) -> None:
    """One round: train -> predict cases not fully labelled by a person -> evaluate -> rank -> report.

    A killed round resumes where it stopped.
    """
    from segloop.cli.output import console, job_progress, print_rounds
    from segloop.errors import ConflictError, LabelValueError
    from segloop.loop.rounds import run_round
    from segloop.loop.training import train_config
    from segloop.store import Project

    opened = Project.open(project)
    settings = _training_settings(dims, epochs, minutes, seed, window, val_cases)
    settings |= {"context_slices": context_slices, "mirror": mirror, "cpu_bfloat16": bf16}
    with (
        job_progress() as on_progress,
        hint(ConflictError, "drop the differing options to finish the interrupted round"),
        hint(LabelValueError, _NO_LABELS_HINT),
    ):
        run_round(
            opened,
            train_config(opened, **settings),
            mode=mode,
            strategy=strategy,
            n_next=n,
            include_pseudo=include_pseudo or False,
            device=device,
            author=current_user(),
            on_step=lambda text: console.print(f"[bold]>[/bold] {text}"),
            on_progress=on_progress,
            asked={**settings, "include_pseudo": include_pseudo or None},
        )
    print_rounds(opened)


@app.command()
def report(
    project: ProjectArg,
    out: Annotated[Path | None, typer.Option(help="Folder (default: PROJECT/reports).")] = None,
) -> None:
    """Write the HTML report with PNG plots of every round."""
    from segloop.cli.output import console
    from segloop.loop.report import write_report
    from segloop.store import Project

    console.print(f"wrote {write_report(Project.open(project), out)}")


@app.command("export-mesh")
def export_mesh(
    project: ProjectArg,
    case: CaseArg,
    out: Annotated[Path, typer.Argument(help="Output .stl, .obj or .ply.", show_default=False)],
    class_name: Annotated[str, typer.Option("--class", help="Class to export.")],
    smoothing: Annotated[int, typer.Option(help="Taubin smoothing passes (0: exact voxel surface).")] = 10,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
) -> None:
    """Write the smoothed surface of one class (mm; LPS on disk, as 3D Slicer reads it)."""
    from segloop.cli.output import console
    from segloop.loop.tools import export_mesh as write_class_mesh
    from segloop.store import Project

    written = write_class_mesh(
        Project.open(project), case, class_name, out, smoothing_iterations=smoothing, overwrite=force
    )
    console.print(f"wrote {written}")


@app.command()
def info(path: Annotated[Path, typer.Argument(help="Image or label file, or DICOM folder.")]) -> None:
    """Read one file and print its grid (shape, spacing, orientation) and value range."""
    from segloop.cli.output import print_volume_info
    from segloop.io import read_volume

    print_volume_info(path, read_volume(path))


@app.command()
def convert(
    sources: Annotated[
        list[Path], typer.Argument(help="One image, or 2D images to stack in this order.", show_default=False)
    ],
    out: Annotated[
        Path, typer.Option(help="File to write; its suffix names the format.", show_default=False)
    ],
    spacing: Annotated[
        str | None, typer.Option(help="Voxel size X,Y,Z in --unit (default: the first file's).")
    ] = None,
    unit: Annotated[str, typer.Option(help="Unit of --spacing: mm, um, nm or angstrom.")] = "mm",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
) -> None:
    """Write an image in another format; several 2D images (serial sections) become one volume."""
    from segloop.cli.output import console
    from segloop.core.stacking import LENGTH_UNITS_MM, spacing_in_mm, stack_slices, with_spacing
    from segloop.errors import InvalidInputError
    from segloop.io import read_volume, write_volume

    spacing_mm = None
    if spacing is not None:
        try:
            values = [float(part) for part in split_list(spacing)]
        except ValueError:
            msg = f"--spacing: expected 3 numbers X,Y,Z; got {spacing!r}"
            raise InvalidInputError(msg) from None
        spacing_mm = spacing_in_mm(values, unit)
    volumes = [read_volume(path) for path in sources]
    if len(volumes) > 1:
        volume = stack_slices(volumes, spacing_mm, names=[str(path) for path in sources])
    else:
        volume = volumes[0] if spacing_mm is None else with_spacing(volumes[0], spacing_mm)
    written = write_volume(volume, out, overwrite=force)
    size = ", ".join(f"{s / LENGTH_UNITS_MM[unit]:g}" for s in volume.spacing)
    shape = f"shape {volume.array.shape} {volume.array.dtype}"
    console.print(f"wrote {written}: {shape}, voxel size {size} {unit}")


@app.command()
def demo(
    folder: Annotated[
        Path | None, typer.Option(help="Where to create the demo (default: a temp folder).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="nnU-Net raw folder (imagesTr/, labelsTr/); default: synthetic.")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Rounds of the loop.")] = 3,
    budget_minutes: Annotated[float, typer.Option(help="Training minutes of all rounds together.")] = 3.0,
    strategy: Annotated[str, typer.Option(help=STRATEGY_HELP)] = "uncertainty",
    mode: Annotated[str, typer.Option(help="continual or full training.")] = "continual",
    window: WindowOption = None,
) -> None:
    """The whole loop with a simulated annotator: sparse start, rounds of train/predict/rank/correct."""
    from segloop.cli.output import console, job_progress, print_demo
    from segloop.core.windowing import parse_window
    from segloop.loop.demo import run_demo

    with job_progress() as on_progress:
        result = run_demo(
            folder,
            data=data,
            rounds=rounds,
            budget_minutes=budget_minutes,
            strategy=strategy,
            mode=mode,
            window=parse_window(window) if window else None,
            on_step=lambda text: console.print(f"[bold]>[/bold] {text}"),
            on_progress=on_progress,
        )
    print_demo(result)
    serve = f"segloop serve {shlex.quote(str(result.project.root))}"
    console.print(f"open it in the browser: {serve}", markup=False, soft_wrap=True)


from segloop.cli.corrections import correct_command, next_command, patches_app  # noqa: E402

app.command("next")(next_command)
app.command("correct")(correct_command)
app.add_typer(patches_app, name="patches")
from segloop.cli.store import fsck_command, migrate_command  # noqa: E402

app.command("fsck")(fsck_command)
app.command("migrate")(migrate_command)
from segloop.cli.server import serve_command, user_app  # noqa: E402

app.command("serve")(serve_command)
app.add_typer(user_app, name="user")


def environment_failure(error: BaseException) -> str | None:
    """One line for the few expected failures of the machine around a command, else None.

    These are not bugs and not bad arguments, and no command can prevent them: a file or folder
    the process may not read or write (a read-only project, a full disk: `OSError`), and a
    database SQLite cannot use (locked by another process, corrupt, not a database:
    ``sqlite3.OperationalError`` / ``sqlite3.DatabaseError``, or SQLAlchemy's wrappers of those)
    or a PostgreSQL server that went away or kept the write lock too long
    (``psycopg.OperationalError``). SQLAlchemy's other errors (integrity, programming) are bugs
    and are not caught.
    """
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{where}"
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and type(error) in (
        sqlalchemy_exc.OperationalError,
        sqlalchemy_exc.DatabaseError,
    ):
        error = getattr(error, "orig", None) or error
    if type(error) in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return f"the project database cannot be used ({error})"
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(error, psycopg.OperationalError):
        return f"the project database cannot be used ({' '.join(str(error).split())})"
    return None


#: Commands that help with a store message, by a text it contains (the store names no commands).
_STORE_HINTS = (
    ("is not a segloop project", "run `segloop init`"),
    ("no case '", "see `segloop status`"),
    ("no model ", "see `segloop status`"),
)


def with_store_hint(message: str) -> str:
    """``message`` with the command that helps, if it is a store message `_STORE_HINTS` knows.

    Example:
        >>> with_store_hint("no model 3 in p")
        'no model 3 in p (see `segloop status`)'
    """
    if "did you mean" in message:
        return message
    for text, command in _STORE_HINTS:
        if text in message:
            return f"{message} ({command})"
    return message


def main() -> None:
    """Console entry point: a `SegloopError` or an `environment_failure` is one ``error:`` line, exit 1.

    Any other exception is a bug and keeps its traceback.
    """
    try:
        app(args=with_flag_values(sys.argv[1:]))
    except SegloopError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = with_store_hint(message)
        print(f"error: {message}", file=sys.stderr)  # noqa: T201
        sys.exit(1)
    except Exception as error:
        message = environment_failure(error)
        if message is None:
            raise
        print(f"error: {message.splitlines()[0]}", file=sys.stderr)  # noqa: T201
        sys.exit(1)


if __name__ == "__main__":
    main()
