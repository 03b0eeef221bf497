"""The simulated annotator: a person played from reference labels, through the doors a person uses.

The annotator holds reference labels *outside* the project and submits only what a person would:

- a **sparse first annotation**: per class, contours on a few slices spread evenly over the
  organ (seed 000 corrects "5-7 layers ... evenly distributed and include the top and bottom
  layers"), given as a polygon document to the contour tool with fill-between
  (`segloop.loop.tools.Contours`, as ``segloop segment CASE contours --fill-between`` does): a
  ``sparse`` version of the drawn slices and a ``draft`` of the filled organ;
- **corrections** of what the ranking picked: the person scrolls through the predicted class,
  and on each slice where the prediction is visibly wrong paints what is missing and erases what
  is extra (`segloop.loop.corrections.apply`, as ``segloop correct CASE --add A --remove R
  --class C`` does): a ``revised`` version. With ``review="flagged"`` the person looks only at
  the slices the ranking flagged (`segloop.loop.ranking.flagged_regions`) and the version covers
  exactly those slices (``--reviewed-slices``); with ``review="whole"`` at every slice of the case.

Effort is counted the way a person spends it (`Effort`), priced by a `CostModel`. The engine only
ever sees the submitted label versions; the reference arrays never enter the project, and nothing
is written outside it (the annotator calls the array API directly, no temporary files).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from segloop.core.corrections import PatchBox, coverage_mask
from segloop.core.geometry import axis_of_plane
from segloop.core.volume import Volume
from segloop.errors import InvalidInputError, NotFoundError
from segloop.loop import corrections, tools
from segloop.loop.labels import compute_effective_label
from segloop.segment.contours import make_polygon_document, mask_to_polygons
from segloop.store import LabelVersionRecord, Project

__all__ = [
    "REVIEWS",
    "CostModel",
    "Effort",
    "SimulatedAnnotator",
    "SimulatedRound",
    "evenly_spaced_slices",
    "manual_effort",
    "run_simulated_loop",
    "score_test_cases",
    "simulate_review",
]


@dataclass(frozen=True)
class CostModel:
    """Seconds a person spends per action (assumptions; calibrate with a stopwatch for your tools).

    The same constants price the simulated person's work (`SimulatedAnnotator`) and the ranking's
    estimate of a correction (`segloop.loop.ranking.estimate_correction`, strategy
    ``gain-per-cost``), so what the ranking expects and what the simulation counts agree. They are
    this module's assumptions, kept since the first effort benchmark (``benchmarks/effort.py``);
    ``seconds_per_case`` was added with the cost-aware ranking: without a price for opening a case,
    gain per second would favour cases with a single flagged voxel.

    Attributes:
        seconds_per_contour_point: placing one polygon vertex (AnatomySketch / Slicer / ITK-SNAP
            polygon tools: click on the organ's edge).
        seconds_per_reviewed_slice: scrolling to a slice and judging one class on it.
        seconds_per_stroke: one brush or eraser stroke (one connected region painted or erased on
            a slice).
        polygon_tolerance_voxels: how far a clicked outline may stray from the true edge (the
            Douglas-Peucker tolerance that turns a traced outline into the vertices a person
            clicks).
        seconds_per_case: opening a case to correct it (loading, windowing, finding the organs);
            counted once per case reviewed, not for a sparse start or contouring from scratch.
    """

    seconds_per_contour_point: float = 1.5
    seconds_per_reviewed_slice: float = 2.0
    seconds_per_stroke: float = 3.0
    polygon_tolerance_voxels: float = 1.0
    seconds_per_case: float = 20.0


@dataclass(frozen=True)
class Effort:
    """Work a person did (sums with ``+``).

    Attributes:
        slices_drawn: slices contoured.
        contour_points: polygon vertices placed.
        slices_reviewed: class slices looked at while correcting.
        slices_corrected: slices painted or erased on.
        strokes: brush / eraser strokes.
        voxels_changed: voxels whose label the submitted work changed.
        seconds: the time estimate of the cost model.
        cases_opened: cases opened for review.
    """

    slices_drawn: int = 0
    contour_points: int = 0
    slices_reviewed: int = 0
    slices_corrected: int = 0
    strokes: int = 0
    voxels_changed: int = 0
    seconds: float = 0.0
    cases_opened: int = 0

    def __add__(self, other: Effort) -> Effort:
        return Effort(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)}
        )

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


def evenly_spaced_slices(mask: np.ndarray, axis: int, count: int) -> list[int]:
    """``count`` slice indices along ``axis`` spread evenly from the first to the last slice of ``mask``.

    Examples:
        >>> m = np.zeros((1, 1, 20), bool); m[..., 4:15] = True
        >>> evenly_spaced_slices(m, 2, 3)
        [4, 9, 14]
    """
    present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
    if present.size == 0:
        return []
    chosen = np.linspace(present[0], present[-1], num=min(count, present.size)).round().astype(int)
    # a linspace point may fall on a gap of a split organ: take the nearest slice that holds it
    snapped = {int(present[np.argmin(np.abs(present - c))]) for c in chosen}
    return sorted(snapped)


def _contour(
    mask: np.ndarray, axis: int, slices: Sequence[int], cost: CostModel
) -> tuple[list[dict], Effort]:
    """Polygons a person clicks on ``slices`` of ``mask``, and what that costs."""
    only = np.zeros_like(mask)
    index = [slice(None)] * 3
    index[axis] = list(slices)
    only[tuple(index)] = mask[tuple(index)]
    polygons = mask_to_polygons(only, axis, tolerance_voxels=cost.polygon_tolerance_voxels)
    points = sum(len(p["points"]) for p in polygons)
    effort = Effort(
        slices_drawn=len(slices),
        contour_points=points,
        voxels_changed=int(only.sum()),
        seconds=points * cost.seconds_per_contour_point,
    )
    return polygons, effort


def manual_effort(reference: np.ndarray, classes: Sequence[int], axis: int, cost: CostModel) -> Effort:
    """Effort of contouring every slice of every class from scratch (the baseline without segloop).

    Args:
        reference: ``(I, J, K)`` reference label array.
        classes: class values to count.
        axis: the slice axis a person contours along.
        cost: the cost model.
    """
    total = Effort()
    for value in classes:
        mask = reference == value
        slices = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))).tolist()
        total += _contour(mask, axis, slices, cost)[1]
    return total


@dataclass
class SimulatedAnnotator:
    """Plays the person from reference labels (which never enter the project).

    Args:
        references: case id -> ``(I, J, K)`` reference label array in the project's schema values.
        cost: the cost model.
        plane: the plane a person draws and reviews in.
        author: recorded on every submitted version.
        slice_tolerance: a reviewed slice is corrected when more than this fraction of the class's
            voxels on it (reference or predicted, whichever is larger) is visibly wrong.
        min_error_voxels: ...and at least this many voxels are (a person ignores specks).
        edge_tolerance_voxels: a missing voxel within this distance of the current label, or an
            extra one within it of the reference, is not a visible error (two people disagree on
            where an edge runs by that much; 1 voxel is 4 mm on OpenKBP).
    """

    references: dict[str, np.ndarray]
    cost: CostModel = dataclasses.field(default_factory=CostModel)
    plane: str = "axial"
    author: str = "simulated-annotator"
    slice_tolerance: float = 0.1
    min_error_voxels: int = 5
    edge_tolerance_voxels: int = 1
    log: list[tuple[str, str, Effort]] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> Effort:
        """All effort so far."""
        result = Effort()
        for _, _, effort in self.log:
            result += effort
        return result

    def _reference(self, case_id: str) -> np.ndarray:
        return self.references[case_id]

    def annotate_sparse(
        self, project: Project, case_id: str, *, slices_per_class: int = 7
    ) -> tuple[list[LabelVersionRecord], Effort]:
        """Contour ``slices_per_class`` slices of every class present and fill between them.

        Returns:
            The stored versions (a sparse and a draft per class) and the effort spent.
        """
        case = project.get_case(case_id)
        schema = project.config.schema
        axis = axis_of_plane(case.affine, self.plane)
        reference = self._reference(case_id)
        polygons_by_class, effort = {}, Effort()
        for value in sorted(int(v) for v in np.unique(reference) if 0 < v < schema.ignore_index):
            mask = reference == value
            polygons, spent = _contour(
                mask, axis, evenly_spaced_slices(mask, axis, slices_per_class), self.cost
            )
            if polygons:
                polygons_by_class[schema.name_of(value)] = polygons
                effort += spent
        if not polygons_by_class:
            return [], effort
        request = tools.Contours(make_polygon_document(polygons_by_class, axis), fill_between=True)
        result = tools.run(project, case_id, request, author=self.author)
        self.log.append((case_id, "sparse", effort))
        return list(result.versions), effort

    def _visible(
        self, missing: np.ndarray, extra: np.ndarray, truth: np.ndarray, current: np.ndarray
    ) -> np.ndarray:
        """Differences a person sees on a slice: missing voxels farther than ``edge_tolerance_voxels``
        from the current label, extra ones farther than that from the reference.

        Measured from the *other* outline, not from the reference's: a structure 2-4 voxels wide
        (the esophagus or spinal cord at 4 mm) lies wholly within one voxel of its own outline, so
        that rule hid a cross-section missed entirely; this one hides only disagreement on where
        an edge runs.
        """
        if self.edge_tolerance_voxels <= 0:
            return missing | extra
        near_current = ndimage.binary_dilation(current, iterations=self.edge_tolerance_voxels)
        near_truth = ndimage.binary_dilation(truth, iterations=self.edge_tolerance_voxels)
        return (missing & ~near_current) | (extra & ~near_truth)

    def _slice_fix_cost(
        self, missing: np.ndarray, extra: np.ndarray, truth: np.ndarray, visible: np.ndarray
    ) -> Effort:
        """Fixing one slice: paint and erase region by region, or erase all and redraw the contour.

        A visible region (``visible``: off the edge band) of at least ``min_error_voxels`` is one
        stroke; smaller specks together are one more (an island-removal click). When that costs
        more than clearing the slice (one stroke) and clicking the organ's contour anew, the person
        redraws.
        """
        regions = [ndimage.label(mask & visible)[0] for mask in (missing, extra)]
        sizes = np.concatenate([np.bincount(r.ravel())[1:] for r in regions])
        strokes = int(np.sum(sizes >= self.min_error_voxels)) + int(np.any(sizes < self.min_error_voxels))
        changed = int(missing.sum() + extra.sum())
        brush = strokes * self.cost.seconds_per_stroke
        points = sum(
            len(p["points"])
            for p in mask_to_polygons(
                truth[..., None], 2, tolerance_voxels=self.cost.polygon_tolerance_voxels
            )
        )
        redraw = self.cost.seconds_per_stroke + points * self.cost.seconds_per_contour_point
        if brush <= redraw:
            return Effort(slices_corrected=1, strokes=strokes, voxels_changed=changed, seconds=brush)
        return Effort(
            slices_corrected=1,
            slices_drawn=1,
            contour_points=points,
            strokes=1,
            voxels_changed=changed,
            seconds=redraw,
        )

    def correct_class(
        self,
        project: Project,
        case_id: str,
        class_name: str,
        *,
        region: Sequence[PatchBox] | None = None,
    ) -> tuple[LabelVersionRecord | None, Effort]:
        """Review one class of a case's current label and fix the visibly wrong slices.

        The person looks at every slice where the class is predicted or truly present (inside
        ``region`` only, when given), and on slices whose error exceeds the tolerance paints the
        missing voxels (Add) and erases the extra ones (Remove), priced by `_slice_fix_cost`; the
        result is exactly the reference on the fixed slices, and the prediction elsewhere.

        Args:
            project: the open project.
            case_id: the case.
            class_name: the class reviewed.
            region: the part of the case reviewed (boxes on its grid, e.g. the ranking's flagged
                slices, `segloop.loop.ranking.flagged_regions`); None: the whole case. The
                version's coverage is exactly ``region`` (`segloop.loop.corrections.apply`).

        Returns:
            The ``revised`` version of the class (also when nothing needed fixing: the person
            reviewed and accepted it) and the effort spent.
        """
        case = project.get_case(case_id)
        schema = project.config.schema
        value = schema.index_of(class_name)
        axis = axis_of_plane(case.affine, self.plane)
        versions = project.list_label_versions(case_id)
        assembly = compute_effective_label(project, case, versions) if versions else None
        current = np.zeros(case.shape, bool) if assembly is None else assembly.labels == value
        truth = self._reference(case_id) == value
        if region is not None:  # what lies outside the region is not looked at
            inside = coverage_mask([(box, 0) for box in region], case.shape)
            current, truth = current & inside, truth & inside
        other = tuple(a for a in range(3) if a != axis)
        reviewed = np.flatnonzero((current | truth).any(axis=other))
        add = np.zeros(case.shape, bool)
        remove = np.zeros(case.shape, bool)
        effort = Effort(
            slices_reviewed=int(reviewed.size),
            seconds=reviewed.size * self.cost.seconds_per_reviewed_slice,
        )
        for k in reviewed.tolist():
            index = [slice(None)] * 3
            index[axis] = k
            plane_index = tuple(index)
            missing = truth[plane_index] & ~current[plane_index]
            extra = current[plane_index] & ~truth[plane_index]
            # differences along the organ's edge are within what two people would draw
            visible = self._visible(missing, extra, truth[plane_index], current[plane_index])
            wrong = int(visible.sum())
            size = max(int(truth[plane_index].sum()), int(current[plane_index].sum()), 1)
            if wrong < self.min_error_voxels or wrong <= self.slice_tolerance * size:
                continue
            add[plane_index] = missing  # a stroke that fixes a region fixes its edge too
            remove[plane_index] = extra
            effort += self._slice_fix_cost(missing, extra, truth[plane_index], visible)
        # submitted even when nothing needed fixing: the person reviewed the class and accepts it
        result = corrections.apply(
            project,
            case_id,
            corrections.Corrections(add=add, remove=remove, class_name=class_name),
            parent=versions[-1].id if versions else None,
            author=self.author,
            region=region,
        )
        self.log.append((case_id, f"correct {class_name}", effort))
        return result.version, effort

    def review_case(
        self,
        project: Project,
        case_id: str,
        classes: Sequence[str],
        *,
        region: Sequence[PatchBox] | None = None,
    ) -> Effort:
        """Open a case and correct ``classes`` in order (`correct_class`), in ``region`` or everywhere.

        Opening costs ``seconds_per_case`` once. An empty ``region`` (nothing flagged) is not
        opened at all: nothing is stored and nothing spent.

        Returns:
            The effort spent on the case (opening included).
        """
        if region is not None and not region:
            return Effort()
        effort = Effort(cases_opened=1, seconds=self.cost.seconds_per_case)
        self.log.append((case_id, "open", effort))
        for class_name in classes:
            effort += self.correct_class(project, case_id, class_name, region=region)[1]
        return effort


REVIEWS = ("whole", "flagged")


def simulate_review(
    project: Project,
    case_id: str,
    reference: np.ndarray,
    *,
    review: str = "flagged",
    cost: CostModel | None = None,
    author: str = "simulated-annotator",
) -> tuple[Effort, tuple[PatchBox, ...] | None]:
    """A simulated person corrects one case from a reference: the flagged slices, or all of it.

    Args:
        project: the open project.
        case_id: the case (``flagged`` needs its stored prediction: `segloop predict`).
        reference: ``(I, J, K)`` reference labels in schema values (never stored).
        review: ``flagged`` (the slices `segloop.loop.ranking.flagged_regions` names) or ``whole``.
        cost: the cost model (default `CostModel`).
        author: recorded on the versions.

    Returns:
        The effort and the reviewed region (None: the whole case; empty: nothing was flagged,
        nothing stored).

    Raises:
        InvalidInputError: an unknown review, or every class of the case is decided by a person.
        NotFoundError: ``flagged`` for a case without a stored prediction.
    """
    from segloop.loop.ranking import flagged_regions, list_candidate_cases

    if review not in REVIEWS:
        msg = f"unknown review {review!r}: expected one of {', '.join(REVIEWS)}"
        raise InvalidInputError(msg)
    classes = dict(list_candidate_cases(project)).get(case_id)
    if not classes:
        project.get_case(case_id)  # an unknown case says so
        msg = f"every class of case {case_id!r} is decided by a person: expected a case with open classes"
        raise InvalidInputError(msg)
    region = None
    if review == "flagged":
        if not project.list_predictions(case_id):
            msg = f"case {case_id!r} has no stored prediction to flag slices in: run `segloop predict` first"
            raise NotFoundError(msg)
        region = flagged_regions(project, case_id, classes=classes)
    annotator = SimulatedAnnotator({case_id: reference}, cost=cost or CostModel(), author=author)
    return annotator.review_case(project, case_id, classes, region=region), region


@dataclass(frozen=True)
class SimulatedRound:
    """What one round of a simulated loop reached, and what it cost so far.

    Attributes:
        round: the round number.
        model_id: the round's model.
        cases_by_source: cases by the most trusted source of their labels.
        test_dice: class name -> mean Dice over the test cases whose reference holds the class.
        mean_test_dice: mean over classes.
        effort: cumulative effort before this round's training (what the model could learn from).
    """

    round: int
    model_id: int
    cases_by_source: dict[str, int]
    test_dice: dict[str, float]
    mean_test_dice: float
    effort: Effort


def score_test_cases(
    project: Project, model_id: int, test_cases: dict[str, tuple[Volume, np.ndarray]], *, device: str = "auto"
) -> dict[str, float]:
    """Mean Dice per class of a model on test cases kept outside the project.

    Args:
        project: the project the model belongs to.
        model_id: the model.
        test_cases: case id -> (image, ``(I, J, K)`` reference labels in schema values).
        device: ``auto``, ``cpu`` or ``cuda``.
    """
    from segloop.engine.infer import load_model, predict
    from segloop.metrics import dice_per_class

    schema = project.config.schema
    trained = load_model(project.root / project.get_model(model_id).checkpoint, device)
    scores: dict[str, list[float]] = {}
    for image, reference in test_cases.values():
        labels = predict(
            trained.network, image.array, image.spacing, trained.config, device=trained.device
        ).labels
        present = [v for v in range(1, schema.ignore_index) if (reference == v).any()]
        per_class = dice_per_class(labels, reference, schema.ignore_index)
        for value in present:
            scores.setdefault(schema.name_of(value), []).append(float(per_class[value - 1]))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def run_simulated_loop(
    project: Project,
    annotator: SimulatedAnnotator,
    train_config: object,
    *,
    start_cases: Sequence[str],
    test_cases: dict[str, tuple[Volume, np.ndarray]],
    rounds: int,
    corrections_per_round: int,
    mode: str = "continual",
    strategy: str = "uncertainty",
    review: str = "whole",
    include_pseudo: bool | str = False,
    seed: int = 0,
    slices_per_class: int = 7,
    device: str = "auto",
    on_step: Callable[[str], None] = lambda _: None,
    on_progress: Callable[[dict], None] | None = None,
) -> list[SimulatedRound]:
    """Sparse start, then rounds of train → predict → rank → simulated corrections of the queue.

    The queue of the last round is not corrected (no later training would learn from it).

    Args:
        project: a project holding the images (the annotator holds their reference labels).
        annotator: the simulated person.
        train_config: the `segloop.engine.TrainConfig` of every round.
        start_cases: cases the person annotates sparsely before the first round.
        test_cases: images and references kept outside the project, to measure each model.
        rounds: how many rounds.
        corrections_per_round: cases corrected (every class not yet decided by a person, those
            the ranking points at first) after each round but the last.
        mode: ``continual`` or ``full`` training.
        strategy: a ranking strategy (`segloop.loop.ranking.STRATEGIES`).
        review: ``whole`` (every slice of every open class of a queued case) or ``flagged`` (only
            the slices the ranking flagged: the queue's ``regions``, else
            `segloop.loop.ranking.flagged_regions`; a predicted case with nothing flagged is
            skipped, a case without prediction, such as a sparse start's draft, reviewed whole).
        include_pseudo: which pseudo labels teach each round (`segloop.loop.training.train_project`:
            ``none``/False, ``all``/True or ``confident``).
        seed: round ``i`` (from 0) ranks with seed ``1000 * seed + i + 1`` (the ``random``
            strategy): never ``seed`` itself, so a start drawn with ``order_random(pool, seed)``
            is not the first round's random queue too (with seed 0 it was: round 1 re-queued the
            five start cases).
        slices_per_class: contoured slices per class of a sparse start.
        device: ``auto``, ``cpu`` or ``cuda``.
        on_step: receives one line per step.
        on_progress: the engine's training progress callback.
    """
    from segloop.loop.ranking import flagged_regions, list_candidate_cases
    from segloop.loop.rounds import run_round

    if review not in REVIEWS:
        msg = f"unknown review {review!r}: expected one of {', '.join(REVIEWS)}"
        raise InvalidInputError(msg)
    for case_id in start_cases:
        _, effort = annotator.annotate_sparse(project, case_id, slices_per_class=slices_per_class)
        on_step(f"{case_id}: sparse start, {effort.slices_drawn} slices, {effort.contour_points} points")
    results = []
    for index in range(rounds):
        spent = annotator.total
        record = run_round(
            project,
            train_config,
            mode=mode,
            strategy=strategy,
            n_next=corrections_per_round,
            seed=1000 * seed + index + 1,
            include_pseudo=include_pseudo,
            device=device,
            author=annotator.author,
            on_step=on_step,
            on_progress=on_progress,
        )
        test_dice = score_test_cases(project, int(record.summary["model"]), test_cases, device=device)
        mean = float(np.mean(list(test_dice.values()))) if test_dice else 0.0
        results.append(
            SimulatedRound(
                record.number,
                int(record.summary["model"]),
                record.summary["cases_by_source"],
                test_dice,
                mean,
                spent,
            )
        )
        on_step(f"round {record.number}: test Dice {mean:.3f} after {spent.hours:.2f} h of simulated work")
        if index == rounds - 1:
            break
        open_classes = dict(list_candidate_cases(project))
        for item in record.stages["rank"]["queue"]:
            # the classes the ranking points at first, then the case's other open classes: a
            # person who opens a case reviews every class not yet confirmed
            rest = [c for c in open_classes.get(item["case"], ()) if c not in item["classes"]]
            region = None
            # a case without prediction (a sparse start's draft) has nothing flagged: reviewed whole
            if review == "flagged" and project.list_predictions(item["case"]):
                stored = item.get("regions")
                region = (
                    flagged_regions(project, item["case"])
                    if stored is None
                    else tuple(PatchBox(tuple(b["offset"]), tuple(b["size"])) for b in stored)
                )
            spent = annotator.review_case(project, item["case"], [*item["classes"], *rest], region=region)
            where = "whole case" if region is None else f"{len(region)} flagged slice runs"
            on_step(f"corrected {item['case']} ({where}, {spent.seconds:.0f} s)")
    return results
