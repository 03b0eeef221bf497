"""Use cases of the learning engine: train a model on the project's labels, predict cases.

The engine (`segloop.engine`, torch + MONAI) is imported inside these functions, so the rest of
segloop starts without torch. Training sees each labelled case's effective label (assembly rules)
with *ignore* where nobody annotated; the model row records the config, the label versions and
cases it saw, and its validation metrics. A prediction is stored as a ``pseudo`` label version
plus an uncertainty file (float16 probabilities and entropy) under ``predictions/<model>/``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.assembly import LabelLayer, assemble_labels
from segloop.core.geometry import axis_of_plane
from segloop.core.provenance import HUMAN_SOURCES, Source
from segloop.core.windowing import parse_window
from segloop.errors import ConflictError, InvalidInputError, LabelValueError, NotFoundError
from segloop.loop.jobs import JobReporter, ProgressCallback, run_job
from segloop.loop.labels import label_layers, select_versions
from segloop.loop.tools import read_case_image
from segloop.store import JobRecord, JobStatus, LabelVersionRecord, ModelRecord, PredictionRecord, Project

__all__ = [
    "DEFAULT_PSEUDO_ENTROPY",
    "MODES",
    "PSEUDO_POLICIES",
    "RUN_SETTINGS",
    "axial_slice_axis",
    "choose_cases",
    "collect_labeled_cases",
    "confident_pseudo_masks",
    "find_prediction_job",
    "finished_model",
    "parse_features",
    "parse_patch_size",
    "predict_cases",
    "pseudo_policy",
    "reports_here",
    "resume_training",
    "run_setting_differences",
    "stored_prediction_labels",
    "train_config",
    "train_project",
    "training_settings",
]

_LOG = logging.getLogger(__name__)

MODES = ("full", "continual")
#: What a model row's config holds beside the `TrainConfig` fields: settings of the run itself.
RUN_SETTINGS = ("include_pseudo", "pseudo_entropy", "train_count", "val_count", "init_weights")
#: Which pseudo-label voxels training learns from (`pseudo_policy`): none, all, or the confident ones.
PSEUDO_POLICIES = ("none", "all", "confident")
#: The normalised prediction entropy (0-1) below which a pseudo-label voxel is confident.
DEFAULT_PSEUDO_ENTROPY = 0.1
#: Training settings as people name them (``segloop round --minutes``, a server job's params) and
#: the `TrainConfig` field each sets; every other setting is named as its field.
SETTING_ALIASES = {"minutes": "time_budget_min", "val_cases": "validation_case_ids"}


def pseudo_policy(include_pseudo: bool | str | None) -> str:
    """The pseudo-label policy, one of `PSEUDO_POLICIES`, of a flag or a name (False/None: none, True: all).

    Raises:
        InvalidInputError: another value.

    Examples:
        >>> pseudo_policy(True), pseudo_policy(None), pseudo_policy("confident")
        ('all', 'none', 'confident')
    """
    if include_pseudo is None or isinstance(include_pseudo, bool):
        return "all" if include_pseudo else "none"
    if include_pseudo not in PSEUDO_POLICIES:
        msg = f"include pseudo labels {include_pseudo!r}: expected one of {', '.join(PSEUDO_POLICIES)}"
        raise InvalidInputError(msg)
    return str(include_pseudo)


def confident_pseudo_masks(
    project: Project, versions: Sequence[LabelVersionRecord], threshold: float
) -> dict[int, np.ndarray]:
    """Where each ``pseudo`` version of a model's prediction is confident: its stored entropy < ``threshold``.

    A pseudo version without a stored prediction (imported, such as TotalSegmentator's), or
    whose model predicted the case again since, has no entropy of its own and gets no mask.

    Args:
        project: the open project.
        versions: label versions of one case (others than ``pseudo`` are passed over).
        threshold: normalised entropy (0-1, `segloop.engine.uncertainty.voxel_entropy`).

    Returns:
        Version id -> ``(I, J, K)`` bool, True where the prediction's entropy is below ``threshold``.
    """
    if not 0.0 < threshold <= 1.0:
        msg = f"pseudo-label entropy threshold {threshold}: expected a number in (0, 1]"
        raise InvalidInputError(msg)
    masks: dict[int, np.ndarray] = {}
    pseudo = [v for v in versions if v.source == Source.PSEUDO]
    if not pseudo:
        return masks
    newest: dict[int, PredictionRecord] = {}  # model -> its newest prediction of the case
    for record in project.list_predictions(pseudo[0].case_id):
        newest[record.model_id] = record
    for record in newest.values():
        if record.label_version_id in {v.id for v in pseudo}:
            entropy = project.read_prediction(record.case_id, record.model_id).entropy
            masks[record.label_version_id] = entropy < threshold
    return masks


def _confident_layers(layers: Sequence[LabelLayer], masks: dict[int, np.ndarray]) -> list[LabelLayer]:
    """The layers with each pseudo one speaking only where ``masks`` says (none without a mask)."""
    from dataclasses import replace

    kept = []
    for layer in layers:
        if layer.source != Source.PSEUDO:
            kept.append(layer)
        elif layer.version_id in masks:
            mask = masks[layer.version_id]
            kept.append(replace(layer, coverage=mask if layer.coverage is None else mask & layer.coverage))
    return kept


def collect_labeled_cases(
    project: Project,
    *,
    include_pseudo: bool | str = False,
    pseudo_entropy: float = DEFAULT_PSEUDO_ENTROPY,
) -> tuple[list[Any], list[int]]:
    """Engine `Case`s of every case with an effective label that is not all *ignore*.

    A version that covers part of its case (`segloop.loop.corrections` ``region``) teaches
    there only: outside, voxels that no learned version speaks for are *ignore*.

    Args:
        project: the open project.
        include_pseudo: learn from ``pseudo`` versions (model predictions, or labels imported as
            pseudo such as TotalSegmentator's), a `pseudo_policy`: ``none`` (False, the default:
            a loop that trains on its own predictions learns its own mistakes; classes decided
            only by pseudo labels are ignored), ``all`` (True) or ``confident`` (only the voxels
            of a prediction whose stored entropy is below ``pseudo_entropy``, the rest ignored:
            self-training; `confident_pseudo_masks`). Human versions win over pseudo ones in
            every policy (assembly).
        pseudo_entropy: the ``confident`` policy's threshold (normalised entropy, 0-1).

    Returns:
        ``(cases, label_version_ids)``: the cases (image in its stored dtype, image and labels
        compressed in memory: `segloop.engine.data.compress_case`) and the ids of the label
        versions they were assembled from.
    """
    from segloop.engine.data import Case, compress_case

    policy = pseudo_policy(include_pseudo)
    schema = project.config.schema
    sources = HUMAN_SOURCES if policy == "none" else set(Source)
    versions_by_case: dict[str, list] = {}
    for version in select_versions(project.list_label_versions(), sources):
        versions_by_case.setdefault(version.case_id, []).append(version)
    cases, seen = [], []
    for case in project.list_cases():
        versions = versions_by_case.get(case.case_id)
        if not versions:
            continue
        layers = label_layers(project, case, versions)
        if policy == "confident":
            layers = _confident_layers(layers, confident_pseudo_masks(project, versions, pseudo_entropy))
        if not layers:
            continue
        assembly = assemble_labels(layers, n_classes=len(schema.classes), ignore_index=schema.ignore_index)
        if assembly.ignore_mask.all():
            continue
        image = read_case_image(project, case)
        # compressed at once: the raw arrays of all cases never exist together (the memory peak);
        # in axial planes, the ones 2D training reads by default (`axial_slice_axis`)
        engine_case = Case(case.case_id, image.array, assembly.labels, image.spacing)
        cases.append(compress_case(engine_case, axis_of_plane(case.affine, "axial")))
        seen.extend(layer.version_id for layer in layers)
        del image, assembly, layers
    return cases, seen


def axial_slice_axis(affines: Sequence[np.ndarray]) -> int:
    """The voxel axis of the axial plane, the most common one over ``affines`` (a project's cases).

    2D networks of a project slice along it unless the config names an axis: a person draws and
    reviews axial slices (the simulated annotator too), and the engine's own default, the axis of
    the largest spacing, is a sagittal plane on grids such as OpenKBP's 3.9 x 3.9 x 2.5 mm.

    Examples:
        >>> axial_slice_axis([np.diag([3.9, 3.9, 2.5, 1.0])])
        2
    """
    return Counter(axis_of_plane(affine, "axial") for affine in affines).most_common(1)[0][0]


def training_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Training settings as people name them, as `TrainConfig` field names (`SETTING_ALIASES`).

    Raises:
        InvalidInputError: a setting given under both names.

    Examples:
        >>> training_settings({"minutes": 2.0, "epochs": 5})
        {'time_budget_min': 2.0, 'epochs': 5}
    """
    both = sorted(alias for alias, name in SETTING_ALIASES.items() if alias in settings and name in settings)
    if both:
        msg = f"training setting {both[0]} given twice (also as {SETTING_ALIASES[both[0]]}): expected one"
        raise InvalidInputError(msg)
    return {SETTING_ALIASES.get(name, name): value for name, value in settings.items()}


def parse_patch_size(text: str) -> tuple[int, ...]:
    """A training crop size typed as ``"256,256"`` (2D) or ``"96,96,96"`` (3D), in voxels.

    Raises:
        InvalidInputError: not 2 or 3 whole numbers >= 8 (`TrainConfig` checks them against ``dims``).

    Examples:
        >>> parse_patch_size("256,256"), parse_patch_size(" 96, 96, 64 ")
        ((256, 256), (96, 96, 64))
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3) or not all(part.isdigit() and int(part) >= 8 for part in parts):
        msg = f"patch size: expected 2 or 3 whole numbers >= 8 like 256,256 or 96,96,96; got {text!r}"
        raise InvalidInputError(msg)
    return tuple(int(part) for part in parts)


def parse_features(text: str) -> tuple[int, ...]:
    """A network's channels per resolution level typed as ``"12,24,48,96,192"``.

    Raises:
        InvalidInputError: not at least 2 whole numbers > 0 (`TrainConfig` checks them against the network).

    Examples:
        >>> parse_features("12, 24,48,96,192")
        (12, 24, 48, 96, 192)
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) < 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        msg = f"features: expected at least 2 whole numbers > 0 like 16,32,64,128; got {text!r}"
        raise InvalidInputError(msg)
    return tuple(int(part) for part in parts)


#: The shortest time budget (minutes) for which a 2D run's default network is nnU-Net's DynUNet
#: with deep supervision rather than MONAI's UNet (`default_2d_network`).
DYNUNET_MIN_MINUTES = 10.0
#: The ablation's winning settings of each 2D network it measured, given unless set (a DynUNet
#: trained on its two next-coarser decoder outputs too; both see each slice with one neighbour on
#: each side, 2.5D). Other networks keep theirs (a pretrained SwinUNETR its bundle's one channel).
WINNING_2D_SETTINGS: dict[str, dict[str, int]] = {
    "dynunet": {"deep_supervision": 2, "context_slices": 1},
    "unet": {"context_slices": 1},
}


def default_2d_network(time_budget_min: float | None, levels: int = 5) -> str:
    """The winner of issue 15's ablation on OpenKBP for a 2D run of ``time_budget_min`` minutes.

    nnU-Net's DynUNet with deep supervision from `DYNUNET_MIN_MINUTES` (or without a time limit),
    MONAI's UNet for shorter runs: DynUNet trains half the samples per second and learns the small
    organs later (behind the UNet after 5 minutes of 2-core CPU training, ahead after 10 and 12). A
    network of fewer than 3 resolution ``levels`` (``features``) is a UNet: DynUNet needs 3.

    Examples:
        >>> default_2d_network(5.0), default_2d_network(12.0), default_2d_network(None, levels=2)
        ('unet', 'dynunet', 'unet')
    """
    long_enough = time_budget_min is None or time_budget_min >= DYNUNET_MIN_MINUTES
    return "dynunet" if long_enough and levels >= 3 else "unet"


def train_config(project: Project, **settings: Any) -> Any:
    """The `segloop.engine.TrainConfig` of ``settings`` over the project's defaults.

    The project decides the modality and, unless ``window`` is given, the CT window
    (``segloop.toml`` ``[defaults] window``); a network of `NETWORK_DEFAULTS` gets its own defaults
    (SwinUNETR: the pretrained bundles' features and instance norm). Four defaults differ from
    the engine's, the winners of issue 15's 12-minute ablation on OpenKBP (`benchmarks/engine.py
    --only ablation`): a 2D run trains the winner for its time budget (`default_2d_network`:
    DynUNet with deep supervision 2 from `DYNUNET_MIN_MINUTES`, else the UNet), seeing one
    neighbouring slice on each side (`WINNING_2D_SETTINGS`; unless the project's newest model is a
    2D UNet or DynUNet: then its network and settings, so that continual training keeps its
    architecture; other networks, e.g. a pretrained SwinUNETR bundle's, keep one slice), training
    mirrors left-right (`mirror_settings`) when the schema declares left-right pairs, and a CPU
    with native bfloat16 trains and predicts in bfloat16 autocast (``cpu_bfloat16``; ignored on
    other CPUs and GPUs). Every other field keeps the engine's default.

    Args:
        project: the open project.
        **settings: `TrainConfig` fields; a None value means "not given". ``window`` may be
            ``"WIDTH,LEVEL"`` or a pair; ``validation_case_ids`` any sequence of case ids;
            ``mirror`` True adds `mirror_settings` (left-right flips swapping the schema's pairs),
            False leaves them out, None (default) adds them when the schema has pairs.

    Raises:
        InvalidInputError: an unknown field or an invalid value.
    """
    from segloop.engine.config import NETWORK_DEFAULTS, NETWORKS, TrainConfig

    given = _normalize_settings({k: v for k, v in settings.items() if v is not None})
    mirror = given.pop("mirror", None)
    unknown = sorted(set(given) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        msg = f"unknown training settings {', '.join(unknown)}: expected fields of TrainConfig"
        raise InvalidInputError(msg)
    if not isinstance(given.get("network", ""), str):  # looked up below, before TrainConfig checks it
        msg = f"network={given['network']!r} is not valid: expected {' or '.join(NETWORKS)}"
        raise InvalidInputError(msg)
    base: dict[str, Any] = {
        "modality": project.config.modality,
        "cpu_bfloat16": True,
        **NETWORK_DEFAULTS.get(given.get("network"), {}),
    }
    stored_window = project.config.defaults.get("window")
    if stored_window:
        base["window"] = parse_window(stored_window)
    if mirror or (mirror is None and project.config.schema.pairs):
        try:
            base |= mirror_settings(project)
        except NotFoundError:  # no case yet: asked for, an error; by default, nothing to mirror
            if mirror:
                raise
    budget = given.get("time_budget_min", TrainConfig.time_budget_min)
    features = given.get("features", base.get("features", TrainConfig.features))
    levels = len(features) if isinstance(features, tuple | list) else 0
    if given.get("deep_supervision"):
        network = "dynunet"
    elif isinstance(budget, int | float) and levels:
        network = default_2d_network(budget, levels)
    else:  # a value of the wrong type: TrainConfig's one-line error names it
        network = "unet"
    base |= _architecture(project, given, default_network=network, levels=levels)
    return TrainConfig(**{**base, **given})


def _architecture(
    project: Project, given: Mapping[str, Any], *, default_network: str, levels: int
) -> dict[str, Any]:
    """The network and its `WINNING_2D_SETTINGS` for a 2D run of the networks the ablation measured.

    The network is ``given``'s, else the project's newest model's when that is a 2D run of one
    of them, else ``default_network``. A run of the newest model's network keeps its settings
    (continual training keeps its architecture; a model from before an option had it off); a
    DynUNet of fewer ``levels`` than 4 gets the deep supervision it can have (``levels - 2``).
    """
    if given.get("dims", 2) != 2 or given.get("network", default_network) not in WINNING_2D_SETTINGS:
        return {}
    newest = project.find_latest_model()
    kept = newest.config if newest is not None else {}
    kept_network = kept.get("network", "unet") if newest is not None and kept.get("dims", 2) == 2 else None
    network = given.get("network", kept_network if kept_network in WINNING_2D_SETTINGS else default_network)
    settings = WINNING_2D_SETTINGS[network]
    if network == kept_network:
        return {"network": network, **{key: int(kept.get(key) or 0) for key in settings}}
    if "deep_supervision" in settings:
        settings = settings | {"deep_supervision": min(settings["deep_supervision"], levels - 2)}
    return {"network": network, **settings}


def mirror_settings(project: Project) -> dict[str, Any]:
    """`TrainConfig` fields that mirror training samples left-right, swapping the schema's pairs.

    The left-right axis is the voxel axis closest to the sagittal plane's normal on most cases
    (`segloop.core.geometry.axis_of_plane`); a schema without ``pair`` entries mirrors the image
    and keeps every class (right for midline organs only: declare left/right classes as pairs).

    Raises:
        NotFoundError: the project has no case to find the left-right axis on.
    """
    affines = [np.asarray(case.affine) for case in project.list_cases()]
    if not affines:
        msg = "mirroring needs the left-right axis of the cases: the project has no case yet"
        raise NotFoundError(msg)
    axes = Counter(axis_of_plane(affine, "sagittal") for affine in affines)
    lateral = axes.most_common(1)[0][0]
    return {
        "flip_axes": (lateral,),
        "lateral_axis": lateral,
        "mirror_pairs": project.config.schema.pair_indices(),
    }


def _normalize_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with ``window`` parsed and ``validation_case_ids`` as a tuple (comparable to a config)."""
    normalized = dict(settings)
    if normalized.get("window") is not None:
        normalized["window"] = parse_window(normalized["window"])
    if normalized.get("validation_case_ids") is not None:
        normalized["validation_case_ids"] = tuple(normalized["validation_case_ids"])
    return normalized


def choose_cases(
    case_ids: Sequence[str],
    config: Any,
    *,
    train_count: int | None = None,
    val_count: int | None = None,
) -> tuple[list[str], list[str]]:
    """Training and validation case ids of a run (seed 004's numbers of training and validation images).

    Validation: ``val_count`` cases drawn with ``config.seed`` (the draw of
    `segloop.engine.data.split_cases`), else the config's ids or seeded fraction. Training: the
    other cases, or ``train_count`` of them drawn with ``config.seed``. Both keep ``case_ids``' order.

    Raises:
        InvalidInputError: a count the labelled cases cannot give (at least one training case),
            or ``val_count`` with the config's explicit validation ids.

    Examples:
        >>> from types import SimpleNamespace
        >>> config = SimpleNamespace(seed=2, validation_case_ids=None)
        >>> choose_cases(["a", "b", "c", "d", "e"], config, train_count=2, val_count=1)
        (['a', 'd'], ['c'])
    """
    from segloop.engine.data import split_cases

    ids = list(case_ids)
    if val_count is None:
        train_ids, val_ids = split_cases(ids, config)
    else:
        if config.validation_case_ids is not None:
            msg = "a number of validation cases and validation case ids: expected one of them"
            raise InvalidInputError(msg)
        if not 0 <= val_count < len(ids):
            msg = f"{val_count} validation cases of {len(ids)} labelled: expected 0 to {len(ids) - 1}"
            raise InvalidInputError(msg)
        chosen = {ids[i] for i in np.random.default_rng(config.seed).permutation(len(ids))[:val_count]}
        train_ids, val_ids = [i for i in ids if i not in chosen], [i for i in ids if i in chosen]
    if train_count is not None:
        if not 1 <= train_count <= len(train_ids):
            msg = f"{train_count} training cases: expected 1 to {len(train_ids)} (labelled, not validating)"
            raise InvalidInputError(msg)
        order = np.random.default_rng([config.seed, 1]).permutation(len(train_ids))[:train_count]
        kept = {train_ids[i] for i in order}
        train_ids = [i for i in train_ids if i in kept]
    return train_ids, val_ids


def train_project(
    project: Project,
    config: Any,
    *,
    mode: str = "full",
    device: str = "auto",
    init_weights: Path | None = None,
    include_pseudo: bool | str = False,
    pseudo_entropy: float | None = None,
    train_count: int | None = None,
    val_count: int | None = None,
    round_number: int | None = None,
    on_progress: ProgressCallback | None = None,
    author: str,
    nproc: int = 1,
) -> ModelRecord:
    """Train a new model on every labelled case (or ``train_count`` of them) and record it.

    The model row stores the config and the run's settings (`RUN_SETTINGS`) when the run starts,
    so an interrupted run resumes with exactly these settings (`resume_training`).

    With ``nproc`` 2+ this process records the run and spawns the training processes
    (`segloop.engine.train.train`). Started by ``torchrun`` (every rank calls this), the ranks
    join the launcher's group: rank 0 records the run and reports, the others only train.

    Args:
        project: the open project.
        config: a `segloop.engine.TrainConfig` (`train_config` builds one from the project's
            defaults); 2D without a ``slice_axis`` slices along the axial plane (`axial_slice_axis`).
        mode: ``full`` (fresh weights) or ``continual`` (start from the newest finished model, or
            ``init_weights``, and train on all current labels — the old ones are the replay).
        device: ``auto``, ``cpu`` or ``cuda``.
        init_weights: a local checkpoint to start from (continual training from elsewhere).
        include_pseudo: which ``pseudo`` voxels to learn from: ``none`` (False), ``all`` (True)
            or ``confident`` (see `collect_labeled_cases`).
        pseudo_entropy: the ``confident`` policy's entropy threshold (0-1; None:
            `DEFAULT_PSEUDO_ENTROPY`).
        train_count: train on this many of the labelled cases not validating, drawn with the
            config's seed (`choose_cases`); None: all of them.
        val_count: validate on this many labelled cases drawn with the config's seed; None: the
            config's ``validation_case_ids`` or ``validation_fraction``.
        round_number: the loop round this model belongs to, if any.
        on_progress: receives the training job's `Progress` events (stage ``train``; done/total
            in optimiser steps; metrics ``epoch``, ``loss``, ``lr``, ``val_dice``, ``best_dice``,
            ``elapsed_s``, ``eta_s``).
        author: who started it.
        nproc: training processes (``batch_size`` is the global batch, split over them).

    Raises:
        LabelValueError: no labelled case.
        InvalidInputError: an unknown mode or pseudo policy; ``pseudo_entropy`` without the
            ``confident`` policy; case counts the labelled cases cannot give; ``init_weights`` is
            not a checkpoint of this network and schema; an ``nproc`` the run cannot use (all
            checked before anything is recorded).
        NotFoundError: continual training without a finished model or initial weights.
    """
    from segloop.engine.distributed import join_launched, share
    from segloop.engine.weights import read_initial_weights

    if mode not in MODES:
        msg = f"unknown training mode {mode!r}: expected one of {', '.join(MODES)}"
        raise InvalidInputError(msg)
    if config.dims == 2 and config.slice_axis is None and project.list_case_ids():
        config = config.replace(slice_axis=axial_slice_axis([c.affine for c in project.list_cases()]))
    policy = pseudo_policy(include_pseudo)
    if pseudo_entropy is not None and policy != "confident":
        msg = f"a pseudo-label entropy threshold with pseudo labels {policy!r}: expected the confident policy"
        raise InvalidInputError(msg)
    if policy == "confident" and pseudo_entropy is None:
        pseudo_entropy = DEFAULT_PSEUDO_ENTROPY
    cases, seen = collect_labeled_cases(
        project, include_pseudo=policy, pseudo_entropy=pseudo_entropy or DEFAULT_PSEUDO_ENTROPY
    )
    if not cases:
        msg = "no labelled case to train on: expected a case with a human label" + (
            " (pseudo labels were left out)" if policy == "none" else ""
        )
        raise LabelValueError(msg)
    parent = project.find_latest_model() if mode == "continual" and init_weights is None else None
    if mode == "continual" and parent is None and init_weights is None:
        msg = "continual training needs a finished model or initial weights; train in full mode first"
        raise NotFoundError(msg)
    if init_weights is not None:  # a bad file is refused before a model row exists
        read_initial_weights(init_weights, config, n_classes=project.config.schema.ignore_index)
    by_id = {case.case_id: case for case in cases}
    train_ids, val_ids = choose_cases(list(by_id), config, train_count=train_count, val_count=val_count)
    _check_processes(nproc, device, config, train_ids)
    with join_launched(device) as group:  # under torchrun rank 0 records the run, the others learn it
        record = share(
            project.start_model(
                author=author,
                mode=mode,
                parent_id=parent.id if parent else None,
                config={
                    **config.to_dict(),
                    "include_pseudo": policy,
                    "pseudo_entropy": pseudo_entropy,
                    "train_count": train_count,
                    "val_count": val_count,
                    "init_weights": str(init_weights) if init_weights is not None else None,
                },
                label_version_ids=seen,
                train_case_ids=train_ids,
                val_case_ids=val_ids,
                round_number=round_number,
            )
            if group.is_writer
            else None,
            group,
        )
        return _run_training(
            project,
            record,
            config,
            by_id,
            resume=False,
            device=device,
            on_progress=on_progress,
            author=author,
            nproc=nproc,
        )


def reports_here() -> bool:
    """False on a torchrun rank other than 0: it trains its share while rank 0 records and reports."""
    from segloop.engine.distributed import launched_rank

    return launched_rank() in (None, 0)


def _check_processes(nproc: int, device: str, config: Any, train_ids: Sequence[str]) -> None:
    """Refuse an ``nproc`` the run cannot use before anything is recorded (a torchrun group counts)."""
    from segloop.engine.device import resolve_device
    from segloop.engine.distributed import check_nproc, launched_size

    size = launched_size() or nproc
    if launched_size() is not None and nproc not in (1, size):
        msg = f"nproc={nproc} under a launcher of {size} processes: expected 1 or {size}"
        raise InvalidInputError(msg)
    check_nproc(size, resolve_device(device), cases=len(train_ids), batch_size=config.batch_size)


def resume_training(
    project: Project,
    *,
    asked: Mapping[str, Any] | None = None,
    device: str = "auto",
    on_progress: ProgressCallback | None = None,
    author: str,
    nproc: int = 1,
) -> ModelRecord:
    """Continue the newest interrupted (``running``) training run with the settings it started with.

    A run killed before its first checkpoint starts again from scratch, with those settings. The
    process count is not a setting of the run: a run of 2 processes may resume with 1 or 4 (every
    rank loads the same checkpoint; see `segloop.engine.train`).

    Args:
        project: the open project.
        asked: settings the caller gave explicitly (`TrainConfig` fields as for `train_config`,
            ``mode`` and the `RUN_SETTINGS`); each must equal the run's.
        device: ``auto``, ``cpu`` or ``cuda`` (any: not a setting of the run).
        on_progress: receives the job's `Progress` events (as `train_project`).
        author: who resumes it.
        nproc: training processes (as `train_project`; any: not a setting of the run).

    Raises:
        NotFoundError: no interrupted run.
        ConflictError: ``asked`` differs from the run's settings (the message lists each
            difference: ``epochs: run 3, asked 5``), or a case of the run lost its labels. The run
            stays resumable: it is not marked failed.
    """
    from segloop.engine.config import TrainConfig

    record = project.find_latest_model(status="running")
    if record is None:
        msg = "nothing to resume: no interrupted training run in this project"
        raise NotFoundError(msg)
    differences = run_setting_differences(record, asked or {})
    if differences:
        msg = (
            f"cannot resume model {record.id} with other settings ({'; '.join(differences)}):"
            " resume with the run's settings or start a new run"
        )
        raise ConflictError(msg)
    stored = dict(record.config)
    run = {name: stored.pop(name, None) for name in RUN_SETTINGS}
    config = TrainConfig.from_dict(stored)
    cases, _ = collect_labeled_cases(
        project,
        include_pseudo=pseudo_policy(run["include_pseudo"]),
        pseudo_entropy=run["pseudo_entropy"] or DEFAULT_PSEUDO_ENTROPY,
    )
    by_id = {case.case_id: case for case in cases}
    missing = [case_id for case_id in [*record.train_case_ids, *record.val_case_ids] if case_id not in by_id]
    if missing:
        msg = (
            f"cannot resume model {record.id}: cases {', '.join(missing)} of the run have no usable"
            " label any more; start a new run"
        )
        raise ConflictError(msg)
    _check_processes(nproc, device, config, record.train_case_ids)
    return _run_training(
        project,
        record,
        config,
        by_id,
        resume=True,
        device=device,
        on_progress=on_progress,
        author=author,
        nproc=nproc,
    )


def run_setting_differences(record: ModelRecord, asked: Mapping[str, Any]) -> list[str]:
    """``"name: run X, asked Y"`` for each setting in ``asked`` that the run ``record`` did not use.

    Validation cases compare as sets with the run's actual split; ``mode`` with the record's mode;
    None values are "not asked".
    """
    differences = []
    for name, value in _normalize_settings({k: v for k, v in asked.items() if v is not None}).items():
        if name == "mode":
            theirs: Any = record.mode
        elif name == "validation_case_ids":
            theirs = tuple(record.val_case_ids)
            if set(theirs) == set(value):
                continue
        elif name == "init_weights":
            theirs, value = record.config.get("init_weights"), str(value)
        elif name == "mirror":  # `mirror_settings`: flips along the recorded left-right axis
            theirs = record.config.get("lateral_axis") in (record.config.get("flip_axes") or ())
        elif name == "include_pseudo":  # a run recorded before the policies stored a flag
            theirs, value = pseudo_policy(record.config.get(name)), pseudo_policy(value)
        else:
            theirs = record.config.get(name)
        if _plain(theirs) != _plain(value):
            differences.append(f"{name}: run {_shown(theirs)}, asked {_shown(value)}")
    return differences


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def _shown(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)


def _run_training(
    project: Project,
    record: ModelRecord,
    config: Any,
    by_id: dict[str, Any],
    *,
    resume: bool,
    device: str,
    on_progress: ProgressCallback | None,
    author: str,
    nproc: int,
) -> ModelRecord:
    """Train the recorded run ``record`` and finish its row (``done``, or ``failed`` on an error).

    A refusal (`ConflictError`: the checkpoint was written with other settings) and an interrupt
    leave the run ``running``, so it can be resumed. Under torchrun only rank 0 writes the job
    and the model row; another rank trains its share and returns ``record`` as it was.
    """
    from functools import partial

    from segloop.engine.distributed import join_launched
    from segloop.engine.train import train

    schema = project.config.schema
    parent = project.get_model(record.parent_id) if record.parent_id else None
    stored_weights = record.config.get("init_weights")
    start_from = (
        Path(stored_weights) if stored_weights else (project.root / parent.checkpoint if parent else None)
    )
    run = partial(
        train,
        config,
        [by_id[i] for i in record.train_case_ids],
        [by_id[i] for i in record.val_case_ids],
        n_classes=schema.ignore_index,
        device=device,
        checkpoint_path=project.root / record.checkpoint,
        init_weights=start_from,
        resume=resume,
        nproc=nproc,
    )
    params = {"model": record.id, "resume": resume}
    with join_launched(device) as group:
        if not group.is_writer:
            run()
            return record
        with run_job(project, "train", author=author, params=params, on_progress=on_progress) as job:
            try:
                result = run(
                    on_progress=lambda event: _report_training(project, record.id, config.window, job, event)
                )
            except (KeyboardInterrupt, ConflictError):
                raise  # the run stays `running`: it can be resumed
            except Exception:
                project.finish_model(record.id, status="failed", metrics={}, config=record.config)
                raise
            job.result = {"model": record.id, "epochs": result.epochs, "best_mean_dice": result.best_metric}
    metrics = {
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "best_mean_dice": result.best_metric,
        "dice_per_class": {schema.name_of(k): v for k, v in result.best_dice_per_class.items() if k > 0},
        "stopped_by": result.stopped_by,
        "elapsed_s": result.elapsed_s,
        "samples_per_s": result.samples_per_s,
        "processes": group.world_size if group.distributed else nproc,
        "unseen_classes": [schema.name_of(k) for k in result.unseen_classes if k > 0],
    }
    run_settings = {k: record.config.get(k) for k in RUN_SETTINGS}
    project.finish_model(
        record.id, status="done", metrics=metrics, config={**result.config.to_dict(), **run_settings}
    )
    project.log_event(
        "train", author, {"model": record.id, "mode": record.mode, "cases": len(record.train_case_ids)}
    )
    return project.get_model(record.id)


def _report_training(
    project: Project, model_id: int, window: Sequence[float], job: JobReporter, event: dict[str, Any]
) -> None:
    """One engine progress dict (`segloop.engine.train.train`) as the job's `Progress`; an epoch's
    validation slice as the run's live preview (`segloop.loop.report.write_training_preview`)."""
    if event.get("preview") is not None:
        from segloop.loop.report import write_training_preview

        try:
            write_training_preview(project, model_id, event["preview"], window=window)
        except OSError as error:  # a preview is a convenience: the run goes on without it
            _LOG.warning("the training preview of model %s was not written: %s", model_id, error)
    epochs = event.get("epochs")
    total = event["steps_per_epoch"] * epochs if epochs is not None else None
    message = f"epoch {event['epoch'] + 1}" + (f"/{epochs}" if epochs is not None else "")
    shown = ("epoch", "loss", "lr", "val_dice", "best_dice", "elapsed_s", "eta_s")
    job.report("train", event["step"], total, message, {name: event.get(name) for name in shown})


def finished_model(project: Project, model_id: int | None = None) -> ModelRecord:
    """Model ``model_id`` (default: the newest finished one), which must be done training.

    Raises:
        NotFoundError: no such model, or none finished.
        ConflictError: the model is still running or failed.
    """
    model = project.get_model(model_id) if model_id is not None else project.find_latest_model()
    if model is None:
        msg = "no finished model in this project: train one first"
        raise NotFoundError(msg)
    if model.status != "done":
        msg = f"model {model.id} is {model.status}, not done: resume or retrain it"
        raise ConflictError(msg)
    return model


def stored_prediction_labels(project: Project, case_id: str, model_id: int) -> np.ndarray | None:
    """The labels of the newest stored prediction of a case by a model, or None if it has none.

    Returns:
        The ``(I, J, K)`` label array of the prediction's ``pseudo`` version, in schema values.
    """
    stored = [p for p in project.list_predictions(case_id) if p.model_id == model_id]
    if not stored:
        return None
    return project.read_labels(project.get_label_version(stored[-1].label_version_id))


def find_prediction_job(jobs: Iterable[JobRecord], case_id: str, model_id: int) -> JobRecord | None:
    """The first of ``jobs`` that is a running ``predict`` job of ``case_id`` by model ``model_id``.

    A job started by a face keeps its request (``{"cases": [...], "model": id, ...}``) in its
    params' ``request`` (`segloop.server.jobs.JobRunner.start`); other jobs name no case and match none.
    """
    for job in jobs:
        request = job.params.get("request")
        if job.kind != "predict" or job.status != JobStatus.RUNNING or not isinstance(request, Mapping):
            continue
        if case_id in (request.get("cases") or ()) and request.get("model") == model_id:
            return job
    return None


def predict_cases(
    project: Project,
    case_ids: Sequence[str] | None = None,
    *,
    unlabeled: bool = False,
    model_id: int | None = None,
    infer_config: Any = None,
    postprocess: dict[str, Any] | None = None,
    device: str = "auto",
    author: str,
    again: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[PredictionRecord]:
    """Predict cases with a model in this process; each becomes a ``pseudo`` version with an
    uncertainty file. Cases the model predicted already are skipped unless ``again``.

    `segloop.loop.predict.predict_batch` with the ``local`` executor (it also runs on Dask and
    says which cases it skipped); the arguments are its own.

    Returns:
        The predictions stored, in case order.

    Raises:
        NotFoundError: no finished model, an unknown case.
        ConflictError: the model is not finished, or predicts another number of classes.
        InvalidInputError: both ``case_ids`` and ``unlabeled``.
    """
    from segloop.loop.predict import predict_batch

    batch = predict_batch(
        project,
        case_ids,
        unlabeled=unlabeled,
        model_id=model_id,
        infer_config=infer_config,
        postprocess=postprocess,
        device=device,
        author=author,
        again=again,
        on_progress=on_progress,
    )
    return list(batch.records)
