"""What a person should correct next: rank cases (and the classes within a case).

Strategies:

- ``uncertainty`` — AbdomenAtlas's attention (seed 002) from the stored predictions. Per class
  ``c``: an *entropy* map (binary entropy of the class's probability ``p_c``, in bits, so in
  [0, 1]) above 0.05, and, where several passes or models exist, a *disagreement* map above 0.1;
  each binary map is cleaned by 2 erosions then 2 dilations (3x3x3, full connectivity) and their
  union is the class's flagged voxels. Cases are ordered by flagged voxels summed over classes
  (most first; ties by the summed attention, then by the entropy mass before cleaning, which
  keeps the order by uncertainty on coarse grids where the cleaning erases every flagged voxel);
  classes within a case by their attention (the entropy and disagreement values summed over the
  flagged voxels), then by their entropy mass.
  The order really is by uncertainty: the time a case was last served plays no part (MONAI
  Label's epistemic strategy re-sorts its top-k by time; this one does not).
- ``gain-per-cost`` — expected gain per second of correction (`GainPerCostStrategy`): the
  attention of each case's flagged voxels (the maps above) divided by what reviewing and fixing
  them costs with the simulated annotator's `segloop.loop.simulate.CostModel` (so ranking and
  simulation count alike), ordered greedily with a diversity penalty so one round does not queue
  near-duplicates; each row names the flagged slices (``detail["regions"]``) to review first.
- ``least-recent`` — cases never served first, then the one served longest ago (each call of
  `rank_cases` with ``record=True`` logs a ``served`` event).
- ``random`` — a seeded permutation (same seed, same order).

Candidates: every case whose label is not entirely human — a case drops out once each of its
classes is annotated by some ``original`` or ``revised`` version made for the whole case (an
imported annotation, `segloop correct`). A ``revised`` version merged from patches
(`segloop.loop.patches`) does not count: a person saw only its patches, so the case stays a
candidate and the voxels of those patches are not scored again. Within a case, classes a human
version annotates are not scored (AbdomenAtlas scores only the organs missing from the original
annotation).

Disagreement, by what is stored: with predictions of the case by two or more models (the newest
prediction of each of the newest ``max_models``), the standard deviation of ``p_c`` across them,
per class (AbdomenAtlas's inconsistency map); else a ``disagreement`` map stored with the
prediction (std over TTA / MC-dropout passes, averaged over classes, counted for class ``c``
where ``p_c >= 0.05``); else none, and the entropy map alone decides — one model with one pass
has nothing to disagree with. AbdomenAtlas's third map (overlapping organs) does not arise: a
softmax prediction assigns one class per voxel.

The morphology is in voxels (scipy's binary erosion/dilation): AbdomenAtlas cleans with a
3x3x3 element twice on CT of ~0.8 mm voxels, erasing uncertain specks thinner than ~4 mm. A
case's stored predictions are cleaned with as many voxels per axis as cover those 1.6 mm, at
least one and at most AbdomenAtlas's two (`cleaning_radii`): the same opening on fine CT, one
voxel on a coarse grid (OpenKBP's 3.9 x 3.9 x 2.5 mm), where two would need uncertain regions
2 cm thick and erase every uncertain boundary — no case would have flagged slices to review.
Along an axis of length 1 (2D images) the element is flat, so a single slice is not eroded away.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import ndimage

from segloop.core.corrections import PatchBox, coverage_from_params, patch_box
from segloop.core.geometry import axis_of_plane, bounding_box, spacing_from_affine
from segloop.core.provenance import REFERENCE_SOURCES
from segloop.core.volume import Volume
from segloop.errors import GeometryMismatchError, InvalidInputError, NotFoundError
from segloop.io.atomic import atomic_file
from segloop.loop.simulate import CostModel
from segloop.metrics import binary_entropy
from segloop.store import LabelVersionRecord, PredictionRecord, Project

__all__ = [
    "STRATEGIES",
    "Candidate",
    "CaseAttention",
    "ClassScore",
    "CorrectionEstimate",
    "GainPerCostStrategy",
    "LeastRecentStrategy",
    "RandomStrategy",
    "RankedCase",
    "Strategy",
    "UncertaintyStrategy",
    "attention_volume",
    "cleaning_radii",
    "compute_attention",
    "estimate_case",
    "estimate_correction",
    "find_attention_centers",
    "flagged_regions",
    "get_strategy",
    "list_candidate_cases",
    "list_versions_by_case",
    "open_mask_iterations",
    "order_least_recent",
    "order_random",
    "rank_cases",
    "score_case",
    "select_diverse",
    "slice_regions",
    "write_priority_csv",
]

ENTROPY_THRESHOLD = 0.05
STD_THRESHOLD = 0.1
NEAR_PROBABILITY = 0.05
#: AbdomenAtlas's opening: 2 voxels (erosions, then dilations) of its ~0.8 mm CT, in millimetres
CLEANING_MM = 1.6
CLEANING_ITERATIONS = 2


# -- pure parts ----------------------------------------------------------------------------------


def cleaning_radii(spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels per axis the opening of a case's attention maps erodes (`open_mask_iterations`).

    Args:
        spacing: voxel size per array axis in mm.

    Returns:
        Per axis, the voxels covering `CLEANING_MM`, at least 1 and at most AbdomenAtlas's 2.

    Examples:
        >>> cleaning_radii((0.8, 0.8, 1.0)), cleaning_radii((3.9, 3.9, 2.5))
        ((2, 2, 2), (1, 1, 1))
    """
    return tuple(min(CLEANING_ITERATIONS, max(1, math.ceil(CLEANING_MM / s - 1e-6))) for s in spacing)


def open_mask_iterations(
    mask: np.ndarray,
    iterations: int | Sequence[int] = CLEANING_ITERATIONS,
    volume_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Erode ``iterations`` times, then dilate as often (3x3x3, full connectivity; flat on unit axes).

    Args:
        mask: ``(I, J, K)`` bool.
        iterations: erosions and dilations (AbdomenAtlas: 2), or one count per axis (the element
            is then a box of ``2 * n + 1`` voxels along each axis, the same as ``n`` iterations of
            the 3x3x3 one).
        volume_shape: the shape whose unit axes make the element flat, when ``mask`` is a box cut
            from a larger volume (default: ``mask.shape``); a box one voxel thick is still eroded.

    Returns:
        A new ``(I, J, K)`` bool array: specks thinner than ``2 * iterations + 1`` voxels vanish.

    Examples:
        >>> mask = np.zeros((9, 9, 1), bool); mask[1:8, 1:8] = True; mask[0, 0] = True
        >>> opened = open_mask_iterations(mask)
        >>> int(opened.sum()), bool(opened[0, 0, 0])
        (49, False)
    """
    shape = mask.shape if volume_shape is None else volume_shape
    radii = [iterations] * len(shape) if isinstance(iterations, int) else list(iterations)
    if len(radii) != len(shape):
        msg = f"open_mask_iterations needs one iteration count per axis ({len(shape)}); got {iterations}"
        raise InvalidInputError(msg)
    # a box element is separable: per axis, a 3-voxel line iterated r times (3r tests a voxel,
    # not (2r + 1)^3), equal to the iterated 3x3x3 element when every r is the same
    lines = [
        (np.ones([3 if a == axis else 1 for a in range(len(shape))], dtype=bool), r)
        for axis, (r, n) in enumerate(zip(radii, shape, strict=True))
        if r > 0 and n > 1
    ]
    opened = mask.astype(bool, copy=True)
    for line, r in lines:
        if not opened.any():
            return opened
        opened = ndimage.binary_erosion(opened, structure=line, iterations=r)
    for line, r in lines:
        if not opened.any():
            return opened
        opened = ndimage.binary_dilation(opened, structure=line, iterations=r)
    return opened


@dataclass(frozen=True)
class ClassScore:
    """The attention one class of a case gets.

    Attributes:
        value: the class's label value (1..N).
        flagged_voxels: voxels in the class's cleaned entropy-or-disagreement map.
        attention: entropy + disagreement summed over those voxels (orders classes in a case).
        entropy_mass: the class's binary entropy summed over all its voxels, before any
            threshold or cleaning (breaks ties: on coarse grids, e.g. 4 mm voxels, the cleaning
            can erase every flagged voxel of every case).
    """

    value: int
    flagged_voxels: int
    attention: float
    entropy_mass: float = 0.0


@dataclass(frozen=True)
class CaseAttention:
    """A case's attention: per class scores and the union of flagged voxels.

    Attributes:
        classes: `ClassScore` of each scored class, most attention first, then most entropy
            mass (classes with neither are dropped).
        flagged: ``(I, J, K)`` bool union of every class's flagged voxels.
        disagreement: what the disagreement map came from: ``models``, ``passes`` or ``none``.
        heat: ``(I, J, K)`` float32 attention map: each class's entropy + disagreement on its
            flagged voxels, summed over classes (0 elsewhere); what a reviewer opens beside the label.
    """

    classes: tuple[ClassScore, ...]
    flagged: np.ndarray
    disagreement: str
    heat: np.ndarray | None = None

    @property
    def score(self) -> int:
        """Flagged voxels summed over classes (a voxel counts once per class that flags it)."""
        return sum(c.flagged_voxels for c in self.classes)

    @property
    def entropy_mass(self) -> float:
        """Entropy mass summed over classes."""
        return sum(c.entropy_mass for c in self.classes)


def compute_attention(
    probabilities: Sequence[np.ndarray],
    classes: Sequence[int],
    *,
    pass_disagreement: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    entropy_threshold: float = ENTROPY_THRESHOLD,
    std_threshold: float = STD_THRESHOLD,
    iterations: int | Sequence[int] = CLEANING_ITERATIONS,
    near_probability: float = NEAR_PROBABILITY,
) -> CaseAttention:
    """AbdomenAtlas attention of a case's classes (see the module docstring).

    Args:
        probabilities: one ``(C, I, J, K)`` softmax array per model, the newest first (channel 0
            background, channel ``c`` class ``c``). The entropy comes from the first; with two or
            more the per-class standard deviation across them is the disagreement.
        classes: the class values to score.
        pass_disagreement: ``(I, J, K)`` std over passes of the newest model (used when only one
            model is given), or None.
        exclude: ``(I, J, K)`` bool voxels not to score (already reviewed by a person), or None.
        entropy_threshold: binary-entropy threshold in bits (AbdomenAtlas: 0.05).
        std_threshold: disagreement threshold (AbdomenAtlas: 0.1).
        iterations: erosions then dilations cleaning each binary map (AbdomenAtlas: 2), or one
            count per axis (`cleaning_radii` of the case's spacing, as stored cases are scored).
        near_probability: a class-averaged ``pass_disagreement`` counts for class ``c`` only
            where ``p_c`` is at least this.

    Returns:
        The `CaseAttention`. Inputs are not modified.

    Raises:
        InvalidInputError: no probabilities, or a class without a probability channel.
        GeometryMismatchError: arrays of different shapes.

    Examples:
        >>> p = np.zeros((2, 12, 12, 1), np.float32); p[0] = 1.0
        >>> p[1, 2:9, 2:9] = 0.5; p[0, 2:9, 2:9] = 0.5
        >>> attention = compute_attention([p], [1])
        >>> attention.score, attention.classes[0].flagged_voxels
        (49, 49)
    """
    if not probabilities:
        msg = "uncertainty needs at least one probability array; got none"
        raise InvalidInputError(msg)
    newest = probabilities[0]
    for other in probabilities[1:]:
        if other.shape != newest.shape:
            msg = f"predictions of one case must share a shape; got {newest.shape} and {other.shape}"
            raise GeometryMismatchError(msg)
    spatial = newest.shape[1:]
    flagged_all = np.zeros(spatial, dtype=bool)
    heat_all = np.zeros(spatial, dtype=np.float32)
    keep = np.ones(spatial, dtype=bool) if exclude is None else ~exclude
    source = "models" if len(probabilities) > 1 else ("passes" if pass_disagreement is not None else "none")
    low, high = _entropy_bounds(entropy_threshold)
    scores = []
    for value in classes:
        if value >= newest.shape[0]:
            msg = f"class value {value} has no probability channel (the prediction has {newest.shape[0]})"
            raise InvalidInputError(msg)
        # Where a map can exceed its threshold at all (cheap comparisons on the stored float16):
        # the entropy where low < p < high, the std across models where some p > 2 * threshold
        # (a std of values in [0, m] is at most m / 2). Everything else runs inside that box, which
        # gives the same opening: the opened mask lies inside the mask.
        candidates = (newest[value] > low) & (newest[value] < high)
        if len(probabilities) > 1:
            candidates |= np.logical_or.reduce([p[value] > 2 * std_threshold for p in probabilities])
        elif pass_disagreement is not None:
            candidates |= (newest[value] >= near_probability) & (pass_disagreement > std_threshold)
        box = bounding_box(candidates & keep)
        if box is None:
            continue
        inside = keep[box]
        entropy = binary_entropy(newest[value][box])
        entropy_bin = open_mask_iterations((entropy > entropy_threshold) & inside, iterations, spatial)
        heat = np.where(entropy_bin, entropy, 0.0)
        flagged = entropy_bin
        std = None
        if len(probabilities) > 1:
            std = np.std(
                np.stack([np.asarray(p[value][box], dtype=np.float32) for p in probabilities]), axis=0
            )
        elif pass_disagreement is not None:
            near = np.asarray(newest[value][box], dtype=np.float32) >= near_probability
            std = np.where(near, np.asarray(pass_disagreement[box], dtype=np.float32), 0.0)
        if std is not None:
            std_bin = open_mask_iterations((std > std_threshold) & inside, iterations, spatial)
            heat = heat + np.where(std_bin, std, 0.0)
            flagged = flagged | std_bin
        count = int(flagged.sum())
        mass = float(entropy[inside].sum(dtype=np.float64))
        if count or mass > 0:
            scores.append(ClassScore(int(value), count, float(heat.sum(dtype=np.float64)), mass))
            flagged_all[box] |= flagged
            heat_all[box] += heat
    scores.sort(key=lambda s: (-s.attention, -s.entropy_mass, s.value))
    return CaseAttention(tuple(scores), flagged_all, source, heat_all)


def _entropy_bounds(threshold: float) -> tuple[float, float]:
    """``(low, high)``: the binary entropy exceeds ``threshold`` bits exactly for low < p < high."""
    if threshold >= 1.0:
        return 0.5, 0.5
    if threshold <= 0.0:
        return 0.0, 1.0
    low, high = 0.0, 0.5
    for _ in range(60):  # bisection: the entropy rises on [0, 0.5]
        middle = (low + high) / 2
        if binary_entropy(np.array(middle)) > threshold:
            high = middle
        else:
            low = middle
    margin = 1e-3 * low  # a little wider: float16 inputs are compared exactly below
    return low - margin, 1.0 - low + margin


def order_random(case_ids: Sequence[str], seed: int) -> list[str]:
    """A seeded permutation of ``case_ids``.

    Examples:
        >>> order_random(["a", "b", "c"], 0) == order_random(["a", "b", "c"], 0)
        True
    """
    order = np.random.default_rng(seed).permutation(len(case_ids))
    return [case_ids[i] for i in order]


def order_least_recent(case_ids: Sequence[str], last_served: dict[str, int]) -> list[str]:
    """Cases never served first (in the given order), then by when they were last served.

    Args:
        case_ids: the candidates, in project order.
        last_served: case id -> a number that grows with time (the ``served`` event's id).

    Examples:
        >>> order_least_recent(["a", "b", "c"], {"a": 7, "b": 3})
        ['c', 'b', 'a']
    """
    position = {case_id: i for i, case_id in enumerate(case_ids)}
    return sorted(case_ids, key=lambda c: (last_served.get(c, -1), position[c]))


# -- use case ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankedCase:
    """One row of the priority list.

    Attributes:
        rank: 1 for the case to correct first.
        case_id: the case.
        score: flagged voxels (``uncertainty``); None for other strategies or without prediction.
        classes: class names in attention order (``uncertainty``), else the classes not decided
            by a human version.
        model_id: the model whose prediction was scored, or None.
        note: why a case has no score, or where the disagreement came from.
        detail: per class name, ``flagged_voxels`` and ``attention`` (``uncertainty``).
        attention: the classes' attention summed; breaks ties of ``score`` (a model that is
            unsure everywhere flags every voxel of every case).
        entropy_mass: the classes' entropy mass summed; breaks the remaining ties.
    """

    rank: int
    case_id: str
    score: float | None
    classes: tuple[str, ...]
    model_id: int | None = None
    note: str = ""
    detail: dict = field(default_factory=dict, compare=False)
    attention: float | None = None
    entropy_mass: float = 0.0


def _is_patch_merge(version: LabelVersionRecord) -> bool:
    return "patches" in version.params


def _is_partial_review(version: LabelVersionRecord) -> bool:
    """A patch merge, or a correction of a reviewed region: a person saw part of the case only."""
    return _is_patch_merge(version) or "coverage" in version.params


def _human_classes(versions: Sequence[LabelVersionRecord]) -> set[str]:
    """Classes some whole-case ``original`` or ``revised`` version annotates (patch merges excluded)."""
    human: set[str] = set()
    for version in versions:
        if version.source in REFERENCE_SOURCES and not _is_partial_review(version):
            human.update(version.classes)
    return human


def list_versions_by_case(project: Project) -> dict[str, list[LabelVersionRecord]]:
    """Every label version of the project, by case id (oldest first within a case)."""
    grouped: dict[str, list[LabelVersionRecord]] = {}
    for version in project.list_label_versions():
        grouped.setdefault(version.case_id, []).append(version)
    return grouped


def list_candidate_cases(project: Project) -> list[tuple[str, tuple[str, ...]]]:
    """Cases still worth correcting and, for each, its classes not decided by a person.

    Returns:
        ``[(case_id, class_names), ...]`` in project order (rules in the module docstring).
    """
    names = tuple(project.config.schema.names)
    reviewed = project.list_reviewed_classes()  # the store keeps `_human_classes`'s rule per class
    candidates = []
    for case_id in project.list_case_ids():
        human = reviewed.get(case_id)
        open_classes = names if human is None else tuple(n for n in names if n not in human)
        if open_classes:
            candidates.append((case_id, open_classes))
    return candidates


def _reviewed_boxes(versions: Sequence[LabelVersionRecord], shape: Sequence[int]) -> np.ndarray | None:
    """Voxels a person reviewed in part of the case: inside merged patches and the reviewed regions
    of corrections (None when there are none)."""
    boxes = [p for v in versions if _is_patch_merge(v) for p in v.params["patches"]]
    regions = [v for v in versions if "coverage" in v.params and not _is_patch_merge(v)]
    if not boxes and not regions:
        return None
    mask = np.zeros(tuple(shape), dtype=bool)
    for patch in boxes:
        case_slices, _ = PatchBox(tuple(patch["offset"]), tuple(patch["size"])).inside(shape)
        mask[case_slices] = True
    for version in regions:
        mask |= coverage_from_params(version.params, shape)
    return mask


def score_case(
    project: Project,
    case_id: str,
    *,
    classes: Sequence[str] | None = None,
    max_models: int = 3,
    versions: Sequence[LabelVersionRecord] | None = None,
) -> tuple[CaseAttention, int] | None:
    """The attention of a case from its stored predictions, or None if it has none.

    Args:
        project: the open project.
        case_id: the case.
        classes: class names to score (default: those not decided by a person).
        max_models: how many models' newest predictions (newest models first) to compare.
        versions: the case's label versions, if already listed.

    Returns:
        ``(attention, model_id)`` of the newest prediction, or None.
    """
    inputs = _read_attention_inputs(project, case_id, classes, max_models, versions)
    if inputs is None:
        return None
    arrays, values, options, model_id = inputs
    return compute_attention(arrays, values, **options), model_id


def _read_attention_inputs(
    project: Project,
    case_id: str,
    classes: Sequence[str] | None,
    max_models: int,
    versions: Sequence[LabelVersionRecord] | None,
) -> tuple[list[np.ndarray], list[int], dict, int] | None:
    """What `compute_attention` needs for a case (`score_case`'s arguments), or None without prediction.

    Returns:
        ``(probabilities, class values, keyword arguments, newest model id)``.
    """
    records = project.list_predictions(case_id)
    if not records:
        return None
    case = project.get_case(case_id)
    versions = project.list_label_versions(case_id) if versions is None else versions
    schema = project.config.schema
    if classes is None:
        human = _human_classes(versions)
        classes = [n for n in schema.names if n not in human]
    newest_per_model: dict[int, PredictionRecord] = {}
    for record in records:
        newest_per_model[record.model_id] = record  # oldest first: the last one wins
    chosen = sorted(newest_per_model.values(), key=lambda r: r.id, reverse=True)[: max(1, max_models)]
    stored = [project.read_prediction(case_id, r.model_id) for r in chosen]
    shape = stored[0].probabilities.shape
    arrays = [s.probabilities for s in stored if s.probabilities.shape == shape]
    options = {
        "pass_disagreement": stored[0].disagreement,
        "exclude": _reviewed_boxes(versions, case.shape),
        "iterations": cleaning_radii(spacing_from_affine(case.affine)),
    }
    return arrays, schema.indices_of(classes), options, chosen[0].model_id


def attention_volume(project: Project, case_id: str, *, classes: Sequence[str] | None = None) -> Volume:
    """The AbdomenAtlas attention map of a case on its grid (`CaseAttention.heat`), for a reviewer.

    Args:
        project: the open project.
        case_id: the case (it needs a stored prediction: `segloop predict`).
        classes: class names to score (default: those no person has decided).

    Returns:
        A float32 ``(I, J, K)`` `Volume` on the case's affine: entropy + disagreement of the flagged
        voxels summed over classes, 0 elsewhere; ``meta["classes"]`` holds each class's flagged
        voxels and attention, most attention first.

    Raises:
        NotFoundError: no such case, or no prediction of it.
        InvalidInputError: an unknown class name.
    """
    case = project.get_case(case_id)
    scored = score_case(project, case_id, classes=classes)
    if scored is None:
        msg = f"case {case_id!r} has no stored prediction: expected `segloop predict` to have run on it"
        raise NotFoundError(msg)
    attention, model_id = scored
    schema = project.config.schema
    detail = [
        {
            "class": schema.name_of(c.value),
            "flagged_voxels": c.flagged_voxels,
            "attention": round(c.attention, 3),
        }
        for c in attention.classes
    ]
    meta = {"classes": detail, "model_id": model_id, "disagreement": attention.disagreement}
    return Volume(np.asarray(attention.heat, dtype=np.float32), case.affine, meta)


def _last_served(project: Project) -> dict[str, int]:
    last: dict[str, int] = {}
    for event in project.list_events("served"):
        for case_id in event.detail.get("cases", []):
            last[case_id] = event.id
    return last


#: ``(case_id, class names not decided by a person)`` of `list_candidate_cases`.
Candidate = tuple[str, tuple[str, ...]]


class Strategy(Protocol):
    """A ranking strategy: orders candidate cases, most worth correcting first.

    A new strategy is a class with this method and one row in `STRATEGIES`.
    """

    def rank(
        self, project: Project, candidates: Sequence[Candidate], *, count: int | None, seed: int
    ) -> list[RankedCase]:
        """At most ``count`` (None: all) rows for ``candidates``, numbered from rank 1."""
        ...


@dataclass(frozen=True)
class UncertaintyStrategy:
    """AbdomenAtlas attention from the stored predictions (module docstring).

    Attributes:
        max_models: how many models' newest predictions are compared for disagreement.
    """

    max_models: int = 3

    def rank(
        self, project: Project, candidates: Sequence[Candidate], *, count: int | None, seed: int
    ) -> list[RankedCase]:
        """Scored cases by flagged voxels (ties: attention, then entropy mass); unscored ones last."""
        schema = project.config.schema
        grouped = list_versions_by_case(project)
        scored, unscored = [], []
        for case_id, open_classes in candidates:
            result = score_case(
                project,
                case_id,
                classes=open_classes,
                max_models=self.max_models,
                versions=grouped.get(case_id, []),
            )
            if result is None:
                unscored.append(RankedCase(0, case_id, None, open_classes, None, "no prediction"))
                continue
            attention, model_id = result
            detail = {
                schema.name_of(c.value): {
                    "flagged_voxels": c.flagged_voxels,
                    "attention": c.attention,
                    "entropy_mass": c.entropy_mass,
                }
                for c in attention.classes
            }
            scored.append(
                RankedCase(
                    0,
                    case_id,
                    float(attention.score),
                    tuple(schema.name_of(c.value) for c in attention.classes),
                    model_id,
                    f"disagreement: {attention.disagreement}",
                    detail,
                    sum(c.attention for c in attention.classes),
                    attention.entropy_mass,
                )
            )
        # most flagged voxels first; ties by attention, then by entropy mass (stable: project order)
        scored.sort(key=lambda r: (-(r.score or 0.0), -(r.attention or 0.0), -r.entropy_mass))
        return _numbered([*scored, *unscored], count)


@dataclass(frozen=True)
class RandomStrategy:
    """A seeded permutation of the candidates (same seed, same order)."""

    def rank(
        self, project: Project, candidates: Sequence[Candidate], *, count: int | None, seed: int
    ) -> list[RankedCase]:
        """The candidates in `order_random` order."""
        return _in_order(candidates, order_random([case_id for case_id, _ in candidates], seed), count)


@dataclass(frozen=True)
class LeastRecentStrategy:
    """Cases never served first, then the one served longest ago (``served`` events)."""

    def rank(
        self, project: Project, candidates: Sequence[Candidate], *, count: int | None, seed: int
    ) -> list[RankedCase]:
        """The candidates in `order_least_recent` order."""
        order = order_least_recent([case_id for case_id, _ in candidates], _last_served(project))
        return _in_order(candidates, order, count)


# -- gain per cost -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectionEstimate:
    """What correcting a case's flagged regions should gain, and cost (`estimate_correction`).

    Attributes:
        gain: attention (entropy + disagreement in bits) summed over the flagged voxels of every
            scored class: the uncertainty a correction would remove.
        seconds: `CostModel` seconds to open the case, look at each flagged class slice and fix
            the flagged blobs that are wrong (one stroke per 2D connected region of a class on a
            slice, `strokes` of them expected).
        class_slices: slices looked at, counted once per class flagged on them.
        strokes: expected strokes: the flagged blobs (2D connected regions per class and slice),
            each counted by its chance of being wrong (every blob counts 1 without ``doubt``).
        slices: the slice indices along ``axis`` where some class is flagged (what to review).
        axis: the voxel axis of ``slices`` (the case's axial one).
    """

    gain: float
    seconds: float
    class_slices: int
    strokes: float
    slices: tuple[int, ...]
    axis: int

    @property
    def gain_per_second(self) -> float:
        """``gain / seconds`` (0 when nothing is flagged)."""
        return self.gain / self.seconds if self.seconds > 0 else 0.0


def estimate_correction(
    flagged_by_class: Mapping[int, np.ndarray],
    gain: float,
    axis: int,
    cost: CostModel,
    predicted_by_class: Mapping[int, np.ndarray] | None = None,
    doubt: np.ndarray | None = None,
) -> CorrectionEstimate:
    """Price the review of a case's flagged slices with the simulated annotator's `CostModel`.

    The person opens the case once (``seconds_per_case``), goes to each slice where some class is
    flagged and there looks at each class predicted or flagged on it (``seconds_per_reviewed_slice``
    per class and slice, as `segloop.loop.simulate.SimulatedAnnotator` counts a flagged review),
    and fixes each flagged blob that is wrong with one stroke (``seconds_per_stroke``). A flagged
    blob may turn out right (a weak model flags much that is right: counting every blob as a
    stroke priced one OpenKBP case at 1,493 s where the simulated person spent 655 s), so with
    ``doubt`` each blob counts by the model's own chance of being wrong there. The same constants
    price what the simulated person really does, so ranking and simulation count alike.

    Args:
        flagged_by_class: class value -> ``(I, J, K)`` bool flagged voxels of that class.
        gain: the case's attention (`CaseAttention` attention summed over classes).
        axis: the voxel axis a person scrolls along.
        cost: the cost model.
        predicted_by_class: class value -> ``(I, J, K)`` bool voxels predicted as that class (the
            classes a person also checks on a flagged slice), or None (flagged classes only).
        doubt: ``(I, J, K)`` chance in [0, 1] that the prediction is wrong at each voxel (1 - its
            top probability); a blob's chance is its voxels' mean. None: every blob is wrong.

    Examples:
        >>> f = np.zeros((8, 8, 4), bool); f[1:3, 1:3, 1] = True; f[5:7, 5:7, 1] = True
        >>> e = estimate_correction({1: f}, 4.0, 2, CostModel(seconds_per_case=10.0))
        >>> e.class_slices, e.strokes, e.seconds, e.slices
        (1, 2.0, 18.0, (1,))
        >>> doubt = np.where(np.arange(8)[:, None, None] < 4, 0.5, 0.1) * np.ones((8, 8, 4))
        >>> round(estimate_correction({1: f}, 4.0, 2, CostModel(), doubt=doubt).strokes, 2)
        0.6
    """
    structure = np.zeros((3, 3, 3), dtype=bool)  # 2D 8-connectivity within each slice of ``axis``
    index: list[slice | int] = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = True
    other = tuple(a for a in range(3) if a != axis)
    strokes = 0.0
    on_slices: dict[int, np.ndarray] = {}  # class value -> (slices,) bool: the class shows there
    for value, flagged in flagged_by_class.items():
        on_slices[value] = flagged.any(axis=other)
        blobs, count = ndimage.label(flagged, structure=structure)
        if doubt is None or count == 0:
            strokes += count
        else:
            strokes += float(np.sum(ndimage.mean(doubt, blobs, np.arange(1, count + 1))))
    union = np.logical_or.reduce(list(on_slices.values())) if on_slices else np.zeros(0, bool)
    for value, predicted in (predicted_by_class or {}).items():
        shown = predicted.any(axis=other)
        on_slices[value] = shown if value not in on_slices else on_slices[value] | shown
    class_slices = sum(int(np.sum(shown & union)) for shown in on_slices.values()) if union.any() else 0
    seconds = (
        cost.seconds_per_case
        + class_slices * cost.seconds_per_reviewed_slice
        + strokes * cost.seconds_per_stroke
    )
    slices = tuple(int(k) for k in np.flatnonzero(union))
    return CorrectionEstimate(float(gain), float(seconds), class_slices, float(strokes), slices, axis)


def slice_regions(slices: Sequence[int], axis: int, shape: Sequence[int]) -> tuple[PatchBox, ...]:
    """Whole-slice boxes covering ``slices`` along ``axis``, one per run of consecutive slices.

    Examples:
        >>> slice_regions([3, 4, 5, 9], 2, (4, 4, 12))
        (PatchBox(offset=(0, 0, 3), size=(4, 4, 3)), PatchBox(offset=(0, 0, 9), size=(4, 4, 1)))
    """
    boxes = []
    ordered = sorted({int(k) for k in slices})
    runs: list[list[int]] = []
    for k in ordered:
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    for run in runs:
        offset, size = [0, 0, 0], [int(n) for n in shape]
        offset[axis], size[axis] = run[0], len(run)
        boxes.append(PatchBox(tuple(offset), tuple(size)))  # type: ignore[arg-type]
    return tuple(boxes)


def select_diverse(scores: np.ndarray, profiles: np.ndarray, weight: float) -> list[tuple[int, float]]:
    """Greedy order: each pick maximises ``score * (1 - weight * similarity to the closest pick)``.

    Args:
        scores: ``(N,)`` non-negative scores (gain per second), in the order that breaks ties.
        profiles: ``(N, F)`` feature rows (class-uncertainty profiles); similarity is their cosine,
            0 for an all-zero row.
        weight: 0 (plain order by score) to 1 (a duplicate of a picked case scores 0).

    Returns:
        ``(index, adjusted score)`` for every row, in pick order; the adjusted scores never rise
        (penalties only grow), so they read as the ranking's scores.

    Examples:
        >>> p = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> [i for i, _ in select_diverse(np.array([3.0, 2.9, 2.0]), p, 0.5)]
        [0, 2, 1]
    """
    count = len(scores)
    norms = np.linalg.norm(profiles, axis=1, keepdims=True)
    unit = np.divide(profiles, norms, out=np.zeros_like(profiles, dtype=float), where=norms > 0)
    closest = np.zeros(count)
    left = np.ones(count, dtype=bool)
    order = []
    for _ in range(count):
        adjusted = np.where(left, scores * (1.0 - weight * closest), -np.inf)
        pick = int(np.argmax(adjusted))  # the first of equals: the given order breaks ties
        order.append((pick, float(adjusted[pick])))
        left[pick] = False
        closest = np.maximum(closest, np.clip(unit @ unit[pick], 0.0, 1.0))
    return order


def estimate_case(
    project: Project,
    case_id: str,
    *,
    classes: Sequence[str] | None = None,
    cost: CostModel | None = None,
    max_models: int = 3,
    versions: Sequence[LabelVersionRecord] | None = None,
) -> tuple[CorrectionEstimate, tuple[ClassScore, ...], int] | None:
    """A case's `CorrectionEstimate` from its stored predictions, or None if it has none.

    Each class's flagged voxels come from `compute_attention` (the ``uncertainty`` strategy's
    maps), one class at a time so that each blob is priced; the newest prediction's argmax says
    which other classes a person checks on the flagged slices, and its top probability how likely
    each flagged blob is wrong (`estimate_correction`'s ``doubt``).

    Returns:
        ``(estimate, class scores most attention first, newest model id)``.
    """
    inputs = _read_attention_inputs(project, case_id, classes, max_models, versions)
    if inputs is None:
        return None
    arrays, values, options, model_id = inputs
    axis = axis_of_plane(project.get_case(case_id).affine, "axial")
    flagged_by_class, scores = {}, []
    for value in values:
        attention = compute_attention(arrays, [value], **options)
        scores.extend(attention.classes)
        if attention.score:
            flagged_by_class[value] = attention.flagged
    scores.sort(key=lambda c: (-c.attention, -c.entropy_mass, c.value))
    gain = sum(c.attention for c in scores)
    predicted = np.argmax(arrays[0], axis=0) if flagged_by_class else None
    shown = {value: predicted == value for value in values} if predicted is not None else None
    doubt = 1.0 - np.max(arrays[0], axis=0) if flagged_by_class else None
    estimate = estimate_correction(flagged_by_class, gain, axis, cost or CostModel(), shown, doubt)
    return estimate, tuple(scores), model_id


def flagged_regions(
    project: Project, case_id: str, *, classes: Sequence[str] | None = None
) -> tuple[PatchBox, ...]:
    """The whole slices where some class of a case is flagged (what a person reviews first).

    Args:
        project: the open project.
        case_id: the case.
        classes: class names scored (default: those no person has decided).

    Returns:
        Whole-slice boxes along the case's axial axis (`slice_regions`); empty when nothing is
        flagged or the case has no prediction.
    """
    result = estimate_case(project, case_id, classes=classes)
    if result is None:
        return ()
    estimate = result[0]
    return slice_regions(estimate.slices, estimate.axis, project.get_case(case_id).shape)


@dataclass(frozen=True)
class GainPerCostStrategy:
    """Expected gain per second of correction, spread over unlike cases.

    A case's score is the attention of its flagged voxels (the ``uncertainty`` strategy's maps)
    divided by the seconds a person needs to review and fix them (`estimate_correction` with the
    simulated annotator's `CostModel`): a cheap uncertain case beats a costly, slightly more
    uncertain one. The order is then chosen greedily (`select_diverse`): a case whose
    class-uncertainty profile (its attention per class) resembles an already-picked one's is
    penalised by ``diversity`` times their cosine similarity, so one round does not queue
    near-duplicates. Each row's ``detail`` holds the estimate and the flagged ``regions``
    (whole-slice boxes: where to look); cases without a prediction follow, unscored.

    Attributes:
        cost: the cost model (the simulated annotator's defaults).
        diversity: the penalty weight in [0, 1] (0: order by gain per second alone).
        max_models: how many models' newest predictions are compared for disagreement.
    """

    cost: CostModel = field(default_factory=CostModel)
    diversity: float = 0.5
    max_models: int = 3

    def rank(
        self, project: Project, candidates: Sequence[Candidate], *, count: int | None, seed: int
    ) -> list[RankedCase]:
        """Scored cases in `select_diverse` order (score: the adjusted gain per second); unscored last."""
        schema = project.config.schema
        grouped = list_versions_by_case(project)
        rows, unscored, profiles = [], [], []
        for case_id, open_classes in candidates:
            result = estimate_case(
                project,
                case_id,
                classes=open_classes,
                cost=self.cost,
                max_models=self.max_models,
                versions=grouped.get(case_id, []),
            )
            if result is None:
                unscored.append(RankedCase(0, case_id, None, open_classes, None, "no prediction"))
                continue
            estimate, scores, model_id = result
            shape = project.get_case(case_id).shape
            regions = slice_regions(estimate.slices, estimate.axis, shape)
            profile = np.zeros(len(schema.classes) + 1)
            for c in scores:
                profile[c.value] = c.attention
            profiles.append(profile)
            detail = {
                "gain": estimate.gain,
                "seconds": estimate.seconds,
                "class_slices": estimate.class_slices,
                "strokes": estimate.strokes,
                "axis": estimate.axis,
                "regions": [{"offset": list(b.offset), "size": list(b.size)} for b in regions],
            }
            entropy_mass = sum(c.entropy_mass for c in scores)
            note = f"{estimate.gain:.1f} bits / {estimate.seconds:.0f} s"
            classes = tuple(schema.name_of(c.value) for c in scores)
            row = RankedCase(0, case_id, estimate.gain_per_second, classes, model_id, note, detail)
            rows.append(dataclasses.replace(row, attention=estimate.gain, entropy_mass=entropy_mass))
        # ties (e.g. nothing flagged anywhere) by entropy mass per second, then project order
        by_score = sorted(
            range(len(rows)),
            key=lambda i: (-(rows[i].score or 0.0), -rows[i].entropy_mass / rows[i].detail["seconds"]),
        )
        picks = select_diverse(
            np.array([rows[i].score or 0.0 for i in by_score]),
            np.array([profiles[i] for i in by_score]).reshape(len(by_score), -1),
            self.diversity,
        )
        ordered = [dataclasses.replace(rows[by_score[i]], score=adjusted) for i, adjusted in picks]
        return _numbered([*ordered, *unscored], count)


#: The ranking strategies by name: every face lists these names.
STRATEGIES: dict[str, Strategy] = {
    "uncertainty": UncertaintyStrategy(),
    "gain-per-cost": GainPerCostStrategy(),
    "random": RandomStrategy(),
    "least-recent": LeastRecentStrategy(),
}


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``.

    Raises:
        InvalidInputError: no such strategy (the message lists the known ones).
    """
    if name not in STRATEGIES:
        msg = f"unknown ranking strategy {name!r}: expected one of {', '.join(STRATEGIES)}"
        raise InvalidInputError(msg)
    return STRATEGIES[name]


def _in_order(candidates: Sequence[Candidate], order: Sequence[str], count: int | None) -> list[RankedCase]:
    """The candidates as unscored `RankedCase`s in the case-id ``order``, numbered."""
    classes = dict(candidates)
    chosen = order[:count] if count is not None else order
    return [RankedCase(rank, case_id, None, classes[case_id]) for rank, case_id in enumerate(chosen, start=1)]


def _numbered(rows: Sequence[RankedCase], count: int | None) -> list[RankedCase]:
    chosen = rows[:count] if count is not None else rows
    return [dataclasses.replace(row, rank=i) for i, row in enumerate(chosen, start=1)]


def rank_cases(
    project: Project,
    *,
    strategy: str = "uncertainty",
    count: int | None = None,
    seed: int = 0,
    record: bool = True,
    author: str = "unknown",
) -> list[RankedCase]:
    """Rank the candidate cases (module docstring) with a registered strategy; log the served ones.

    Args:
        project: the open project.
        strategy: a name in `STRATEGIES` (``uncertainty``, ``gain-per-cost``, ``random``,
            ``least-recent``).
        count: how many to return (None: all candidates).
        seed: the ``random`` strategy's seed.
        record: log a ``served`` event with the returned cases (``cases``) and record the whole
            ranking with it (`Project.record_ranking`), which dashboards show and
            `segloop.loop.review.serve_next_case` serves from; the event's ``newest`` holds the
            newest row ids stored before the ranking began (`Project.find_newest_ids`).
        author: who asked (the event's actor).

    Returns:
        `RankedCase` rows, rank 1 first; empty when every case is decided by a person. With
        ``uncertainty``, cases without a stored prediction follow the scored ones (in project
        order) with score None.

    Raises:
        InvalidInputError: an unknown strategy or a negative count.
        NotFoundError: the project has no case at all.
    """
    chosen = get_strategy(strategy)
    if count is not None and count < 0:
        msg = f"the number of cases must be >= 0; got {count}"
        raise InvalidInputError(msg)
    if not project.count_cases():
        msg = f"no case in project {project.root.name}: add images first"
        raise NotFoundError(msg)
    newest = project.find_newest_ids()  # before ranking: what is stored meanwhile counts as newer
    ranking = chosen.rank(project, list_candidate_cases(project), count=None, seed=seed)
    ranked = ranking[:count] if count is not None else ranking
    if record and ranked:
        detail = {"cases": [r.case_id for r in ranked], "strategy": strategy, "seed": seed, "newest": newest}
        project.record_ranking(author, detail, [(r.case_id, r.score) for r in ranking])
    return ranked


def write_priority_csv(ranked: Sequence[RankedCase], path: Path, *, overwrite: bool = True) -> Path:
    """Write ``rank,case,score,classes`` rows (classes in attention order, ``;``-separated)."""
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as temporary, open(temporary, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["rank", "case", "score", "classes"])
        for row in ranked:
            score = "" if row.score is None else f"{row.score:g}"
            writer.writerow([row.rank, row.case_id, score, ";".join(row.classes)])
    return path


def find_attention_centers(
    project: Project,
    case_id: str,
    count: int,
    size: Sequence[int] | int,
    *,
    max_models: int = 3,
) -> list[tuple[tuple[int, int, int], int]]:
    """Centres of a case's largest flagged regions, for correction patches.

    The flagged voxels (union over classes) are split into 26-connected regions; each region's
    centre is its centroid rounded to a voxel. Regions are taken largest first, skipping any whose
    centre falls inside a patch already chosen.

    Returns:
        Up to ``count`` ``(centre, region voxels)`` pairs.

    Raises:
        NotFoundError: the case has no stored prediction.
    """
    result = score_case(project, case_id, max_models=max_models)
    if result is None:
        msg = f"case {case_id!r} has no stored prediction to find uncertain regions in: predict it first"
        raise NotFoundError(msg)
    flagged = result[0].flagged
    structure = np.ones((3, 3, 3), dtype=bool)
    regions, n_regions = ndimage.label(flagged, structure=structure)
    if n_regions == 0:
        return []
    sizes = np.bincount(regions.ravel())[1:]
    centroids = ndimage.center_of_mass(flagged, regions, index=np.arange(1, n_regions + 1))
    chosen: list[tuple[tuple[int, int, int], int]] = []
    boxes: list[PatchBox] = []
    for index in np.argsort(-sizes, kind="stable"):
        center = tuple(int(np.rint(v)) for v in centroids[index])
        if any(_box_contains(box, center) for box in boxes):
            continue
        chosen.append((center, int(sizes[index])))  # type: ignore[arg-type]
        boxes.append(patch_box(center, size, flagged.shape))
        if len(chosen) == count:
            break
    return chosen


def _box_contains(box: PatchBox, point: Sequence[int]) -> bool:
    return all(o <= p < o + s for o, s, p in zip(box.offset, box.size, point, strict=True))
