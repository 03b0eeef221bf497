"""Correction patches (seed 003, MemBrain-seg's ``patch_corrections``): extract, correct, merge back.

**Extract.** Cubes (default 160³) centred on given voxels or on a case's largest uncertain
regions (`segloop.loop.ranking.find_attention_centers`). Along an axis where the case is not
longer than the size, the patch is the whole axis (a 2D image gets ``160 x 160 x 1`` patches).
A centre near the border works: the patch reaches past the case and the part outside is padded
(image: the image's minimum; label: *ignore*); the offset (the patch's first voxel in case
coordinates, possibly negative) is recorded. The label patch is cut from the case's **current
effective label** (what segloop believes now, assembled from all versions; for a case that only
has predictions, that is the newest prediction; a case with no label at all is refused — there is
nothing to correct yet), with a 16-voxel *ignore* border on every face
that lies inside the case (configurable; faces on the case's edge have nothing beyond them).
Image and label patches are NRRD files whose affine places them where they lie in the case
(spacing, direction and origin kept; MemBrain-seg loses them). Layout of ``OUTDIR``::

    images/<patch>.nrrd   labels/<patch>.nrrd   manifests/<patch>.json   corrections/<patch>/

A manifest holds the case, offset, size, border, the label version ids the label was assembled
from (``parent_version_id``: the one deciding most classes) and the SHA-256 of the effective
label it was cut from (whole, and under the patch); the project records it too (its patches
table, `Project.add_patches`, before any file is written), so a patch id is unique in the
project and a merge needs only the corrections folder.

**Merge.** Each patch's corrections (a `segloop.loop.corrections.Corrections` on the patch's
grid: `merge_patch_corrections` takes arrays; `merge_patches` reads them from
``corrections/<patch>/`` folders of ``Add*``, ``Remove*``, ``Ignore*`` files) are applied with
seed 003's precedence (Ignore > Add > Remove > label) to the case's current label under the patch.
Only the reviewed part (inside the case, off the ignore border) goes back into the case:
corrections painted on the border are dropped (and counted). All patches of a case become one
``revised`` version whose parent is the version that was corrected; it annotates every class not
decided by an ``original`` version, **but only inside its coverage**: the voxels a person reviewed
(each patch's box minus its ignore border), recorded in ``params["coverage"]`` (offset, size and
border per patch; `segloop.core.corrections.coverage_from_params`) and read by assembly. Outside,
the version holds *ignore* and the earlier versions keep deciding, so voxels nobody looked at do
not become "revised" (and training treats them as it treats their earlier source: a prediction
outside the patches is not learned unless pseudo labels are asked for). ``params["patches"]``
also records each patch (id, offset, size, digest of its corrections, files), so the ranking
treats the rest of the case as unreviewed.

Merging the same corrections again adds nothing (their digest is recorded). A patch whose label
changed under the patch since extraction (someone else revised the case there, or a new
prediction replaced it) is refused, naming both versions, unless ``force`` (then the corrections
apply to the current label). Changes elsewhere in the case do not block a patch and are kept.
Everything is read and checked before anything is stored, and the versions of all cases are
stored in one transaction that also checks no case changed since it was read: a merge is all or
nothing, and two merges at once serialise (the later one re-reads, so it finds its patches
already merged, or merges onto the earlier one's result).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.corrections import PatchBox, coverage_mask, crop_with_padding, patch_box, reviewed_mask
from segloop.core.geometry import spacing_from_affine
from segloop.core.volume import Volume
from segloop.errors import ConflictError, InvalidInputError, NotFoundError, SegloopError
from segloop.io import write_volume
from segloop.io.atomic import atomic_file
from segloop.loop.corrections import (
    CorrectionFile,
    Corrections,
    check_corrections,
    choose_parent,
    list_correction_files,
    original_class_values,
    read_correction_masks,
    read_current_label,
    stage_revised,
)
from segloop.loop.tools import read_case_image
from segloop.store import CaseRecord, LabelVersionRecord, NewPatch, PatchRecord, Project, compute_label_key

__all__ = [
    "DEFAULT_BORDER_VOXELS",
    "DEFAULT_PATCH_SIZE",
    "MergeReport",
    "PatchCorrection",
    "PatchMerge",
    "extract_patches",
    "merge_patch_corrections",
    "merge_patches",
    "patch_affine",
    "read_patch_corrections",
]

DEFAULT_PATCH_SIZE = 160
DEFAULT_BORDER_VOXELS = 16
MERGE_TOOL = "patch-corrections"
#: How often a merge re-reads and retries when another writer changed one of its cases meanwhile.
MERGE_ATTEMPTS = 3

_CORRECTIONS_README = """\
One folder per patch. Correct the label patch labels/<patch>.nrrd (over images/<patch>.nrrd) by
saving masks on the patch's grid into corrections/<patch>/ (MemBrain-seg's naming, any case):

  Add1.nrrd, Add2.nrrd ...          voxels of the class (Add_<class>1.nrrd names the class;
                                    or pass --class; or paint class values into the mask)
  Remove1.nrrd ...                  voxels that are background (Remove_<class>1.nrrd: only that class)
  Ignore1.nrrd ...                  voxels nobody can tell: the network will not learn there

Precedence: Ignore > Add > Remove > the label. The outer {border} voxels (ignore in the label patch)
are not merged. Then: segloop patches merge PROJECT --corrections-dir {folder}
"""


def patch_affine(affine: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """The affine of a patch whose first voxel is ``offset`` of a grid with ``affine``.

    Examples:
        >>> patch_affine(np.diag([2.0, 2.0, 3.0, 1.0]), (1, -1, 0))[:3, 3].tolist()
        [2.0, -2.0, 0.0]
    """
    result = np.asarray(affine, dtype=np.float64).copy()
    result[:3, 3] = result[:3, :3] @ np.asarray(offset, dtype=np.float64) + result[:3, 3]
    return result


def _patches_by_id(project: Project) -> dict[str, PatchRecord]:
    """Every patch extracted in the project, by id."""
    return {patch.patch_id: patch for patch in project.list_patches()}


def _choose_centers(
    project: Project,
    case_id: str | None,
    centers: Sequence[Sequence[int]],
    auto: int,
    size: int,
) -> list[tuple[str, tuple[int, int, int], str, int | None]]:
    """``(case, centre, reason, flagged voxels)`` of the patches to extract."""
    from segloop.loop.ranking import find_attention_centers, rank_cases

    if bool(centers) == bool(auto):
        msg = "give either patch centres (of one case) or a number of automatic patches; got " + (
            "both" if centers else "neither"
        )
        raise InvalidInputError(msg)
    if centers:
        if case_id is None:
            msg = "patch centres need their case: they are voxel indices of one case; got no case"
            raise InvalidInputError(msg)
        return [(case_id, tuple(int(v) for v in c), "center", None) for c in centers]  # type: ignore[misc]
    if auto < 0:
        msg = f"the number of automatic patches must be positive; got {auto}"
        raise InvalidInputError(msg)
    if case_id is not None:
        found = [(case_id, c, n) for c, n in find_attention_centers(project, case_id, auto, size)]
    else:
        ranked = [r for r in rank_cases(project, count=auto, record=False) if r.score]
        found = []
        for row in ranked:
            found += [
                (row.case_id, c, n) for c, n in find_attention_centers(project, row.case_id, auto, size)
            ]
        found.sort(key=lambda item: -item[2])
        found = found[:auto]
    if not found:
        where = f"case {case_id!r}" if case_id else "any candidate case"
        msg = f"no uncertain region in {where}: predict it first, or give patch centres"
        raise NotFoundError(msg)
    return [(c, center, "uncertainty", n) for c, center, n in found]


def _new_patch_ids(out_dir: Path, taken: set[str], case_ids: Sequence[str]) -> list[str]:
    ids: list[str] = []
    counters: dict[str, int] = {}
    for case_id in case_ids:
        number = counters.get(case_id, 0)
        while True:
            number += 1
            candidate = f"{case_id}_patch{number}"
            exists = (out_dir / "images" / f"{candidate}.nrrd").exists() or (
                out_dir / "corrections" / candidate
            ).exists()
            if candidate not in taken and candidate not in ids and not exists:
                break
        counters[case_id] = number
        ids.append(candidate)
    return ids


def extract_patches(
    project: Project,
    out_dir: Path,
    *,
    case_id: str | None = None,
    centers: Sequence[Sequence[int]] = (),
    auto: int = 0,
    size: int = DEFAULT_PATCH_SIZE,
    border_voxels: int = DEFAULT_BORDER_VOXELS,
    author: str,
) -> list[dict[str, Any]]:
    """Cut correction patches out of cases (module docstring) and write the corrections skeleton.

    Args:
        project: the open project.
        out_dir: the output folder (created; more patches may be added to it later).
        case_id: the case (required with ``centers``; with ``auto``, None picks the most
            uncertain regions among the ranked cases).
        centers: voxel indices ``(i, j, k)`` of patch centres.
        auto: number of patches centred on the largest uncertain regions instead.
        size: edge length in voxels (clipped to the case along shorter axes).
        border_voxels: width of the ignore border of the label patches.
        author: recorded in the project's journal.

    Returns:
        The manifests of the new patches.

    Raises:
        InvalidInputError: a centre outside the case, both or neither of ``centers`` and ``auto``.
        NotFoundError: an unknown case, or ``auto`` without predictions.
    """
    if size < 1 or border_voxels < 0:
        msg = f"patch size must be >= 1 and the border >= 0 voxels; got {size} and {border_voxels}"
        raise InvalidInputError(msg)
    out_dir = Path(out_dir)
    chosen = _choose_centers(project, case_id, centers, auto, size)
    cases: dict[str, CaseRecord] = {c: project.get_case(c) for c, *_ in chosen}
    boxes = [patch_box(center, size, cases[c].shape) for c, center, *_ in chosen]  # checks every centre
    schema = project.config.schema
    ids = _new_patch_ids(out_dir, set(_patches_by_id(project)), [c for c, *_ in chosen])
    planned = []  # everything computed before anything is written
    state: dict[str, tuple[list[LabelVersionRecord], np.ndarray, LabelVersionRecord | None, Volume]] = {}
    for patch_id, (case_id_, center, reason, flagged), box in zip(ids, chosen, boxes, strict=True):
        case = cases[case_id_]
        if case_id_ not in state:
            versions, assembly, labels = read_current_label(project, case)
            if assembly is None:
                msg = (
                    f"case {case_id_!r} has no label yet: patches correct a label (predict it first, or"
                    " label it with a tool or a whole-case correction)"
                )
                raise NotFoundError(msg)
            image = read_case_image(project, case)
            if image.array.ndim == 4:
                image = Volume(image.array[0], image.affine)
            state[case_id_] = (versions, labels, choose_parent(versions, assembly), image)
        versions, labels, parent, image = state[case_id_]
        image_patch = crop_with_padding(image.array, box, fill=image.array.min())
        label_patch = crop_with_padding(labels, box, fill=schema.ignore_index)
        label_patch[~reviewed_mask(box, case.shape, border_voxels)] = schema.ignore_index
        affine = patch_affine(case.affine, box.offset)
        assembled = sorted({v.id for v in versions})
        manifest = {
            "patch": patch_id,
            "case": case_id_,
            "center": list(center),
            "offset": list(box.offset),
            "size": list(box.size),
            "border_voxels": border_voxels,
            "reason": reason,
            "flagged_voxels": flagged,
            "label": "effective",
            "parent_version_id": parent.id if parent else None,
            "version_ids": assembled,
            "label_sha256": compute_label_key(labels),
            "region_sha256": compute_label_key(crop_with_padding(labels, box, fill=schema.ignore_index)),
            "label_patch_sha256": compute_label_key(label_patch),
            "affine": affine.tolist(),
            "spacing_mm": list(spacing_from_affine(affine)),
            "files": {
                "image": f"images/{patch_id}.nrrd",
                "label": f"labels/{patch_id}.nrrd",
                "corrections": f"corrections/{patch_id}",
            },
        }
        planned.append((manifest, Volume(image_patch, affine), Volume(label_patch, affine)))
    # recorded first: of two extractions racing for one id, the second stops before writing a file
    project.add_patches([_new_patch(manifest, author) for manifest, *_ in planned])
    for manifest, image_volume, label_volume_ in planned:
        patch_id = manifest["patch"]
        write_volume(image_volume, out_dir / "images" / f"{patch_id}.nrrd")
        write_volume(label_volume_, out_dir / "labels" / f"{patch_id}.nrrd")
        with atomic_file(out_dir / "manifests" / f"{patch_id}.json") as temporary:
            temporary.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        (out_dir / "corrections" / patch_id).mkdir(parents=True, exist_ok=True)
    readme = out_dir / "corrections" / "README.txt"
    if not readme.exists():
        text = _CORRECTIONS_README.format(border=border_voxels, folder=out_dir / "corrections")
        readme.write_text(text, encoding="utf-8")
    return [manifest for manifest, *_ in planned]


def _new_patch(manifest: dict[str, Any], author: str) -> NewPatch:
    """The store's record of a patch described by its manifest."""
    columns = ("patch", "case", "offset", "size", "border_voxels", "parent_version_id", "version_ids")
    return NewPatch(
        patch_id=manifest["patch"],
        case_id=manifest["case"],
        offset=tuple(manifest["offset"]),
        size=tuple(manifest["size"]),
        border_voxels=manifest["border_voxels"],
        parent_version_id=manifest["parent_version_id"],
        version_ids=tuple(manifest["version_ids"]),
        region_sha256=manifest["region_sha256"],
        label_sha256=manifest["label_sha256"],
        affine=np.asarray(manifest["affine"]),
        author=author,
        detail={
            k: v
            for k, v in manifest.items()
            if k not in {*columns, "affine", "region_sha256", "label_sha256"}
        },
    )


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class PatchCorrection:
    """A person's corrections of one extracted patch.

    Attributes:
        patch_id: the patch (see `extract_patches`).
        corrections: the masks, on the patch's grid (``size`` of its manifest).
        files: the files they were read from, if any (recorded as provenance).
    """

    patch_id: str
    corrections: Corrections
    files: tuple[CorrectionFile, ...] = ()


@dataclass(frozen=True)
class PatchMerge:
    """What happened to one patch.

    Attributes:
        patch: the patch id (the folder's name).
        case_id: its case.
        status: ``merged``, ``already merged`` or ``skipped (no corrections)``.
        version_id: the revised version holding it (None when skipped).
        changed_voxels: voxels of the case this patch changed.
        files: the correction files read.
        dropped_voxels: corrected voxels in the ignore border or padding (not merged).
    """

    patch: str
    case_id: str
    status: str
    version_id: int | None = None
    changed_voxels: int = 0
    files: tuple[str, ...] = ()
    dropped_voxels: int = 0


@dataclass(frozen=True)
class MergeReport:
    """The result of a merge: one row per patch, the new versions, warnings."""

    patches: tuple[PatchMerge, ...]
    versions: tuple[LabelVersionRecord, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def read_patch_corrections(
    project: Project,
    corrections_dir: Path,
    *,
    class_name: str | None = None,
    accept_empty: bool = False,
) -> tuple[list[PatchCorrection], list[PatchMerge], list[str]]:
    """Read ``corrections_dir/<patch>/`` folders of ``Add*``/``Remove*``/``Ignore*`` files.

    Args:
        project: the open project (its patches give each folder's grid).
        corrections_dir: the folder holding one sub-folder per patch.
        class_name: the class *Add*/*Remove* files without a class in their name mean.
        accept_empty: a folder without files is a patch reviewed as it is (else skipped).

    Returns:
        ``(corrections, skipped rows, warnings)``.

    Raises:
        NotFoundError: the folder is missing or empty, or a sub-folder is no known patch.
        GeometryMismatchError: a file's grid differs from its patch's.
    """
    corrections_dir = Path(corrections_dir)
    if not corrections_dir.is_dir():
        msg = f"corrections folder {corrections_dir} does not exist: expected an extraction's corrections/"
        raise NotFoundError(msg)
    folders = sorted(p for p in corrections_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        msg = f"{corrections_dir} holds no patch folder: expected <patch>/ folders of an extraction"
        raise NotFoundError(msg)
    manifests = _patches_by_id(project)
    _check_known(project, [f.name for f in folders], manifests, where=f"{corrections_dir}: ")
    schema = project.config.schema
    items, skipped, warnings = [], [], []
    for folder in folders:
        manifest = manifests[folder.name]
        files, others = list_correction_files(folder, schema.names)
        warnings += [f"{folder.name}: {p.name} is no Add*/Remove*/Ignore* file; skipped" for p in others]
        if not files and not accept_empty:
            skipped.append(PatchMerge(folder.name, manifest.case_id, "skipped (no corrections)"))
            continue
        try:
            masks = read_correction_masks(
                files, schema, manifest.size, manifest.affine, class_name=class_name
            )
        except SegloopError as error:
            raise type(error)(f"patch {folder.name}: {error}") from error
        items.append(PatchCorrection(folder.name, masks, tuple(files)))
    return items, skipped, warnings


def _check_known(project: Project, patch_ids: Sequence[str], manifests: dict, *, where: str = "") -> None:
    unknown = [p for p in patch_ids if p not in manifests]
    if unknown:
        known = ", ".join(sorted(manifests)[:5]) or "none"
        msg = (
            f"{where}no patch {', '.join(unknown[:5])} was extracted in {project.root}"
            f" (known patches: {known}); nothing was merged"
        )
        raise NotFoundError(msg)


def _merged_digest(versions: Sequence[LabelVersionRecord], patch_id: str, digest: str) -> int | None:
    for version in versions:
        for patch in version.params.get("patches", []):
            if patch.get("patch") == patch_id and patch.get("corrections_sha256") == digest:
                return version.id
    return None


def _outdated_message(
    manifest: PatchRecord, current: LabelVersionRecord | None, versions: Sequence[LabelVersionRecord]
) -> str:
    newer = [v for v in versions if v.id not in set(manifest.version_ids)]
    described = ", ".join(f"{v.id} ({v.source} by {v.author}, {v.tool})" for v in newer[-3:]) or "none"
    hint = ""
    if any(p.get("patch") == manifest.patch_id for v in newer for p in v.params.get("patches", [])):
        hint = " (an earlier merge of this patch; its corrections changed since)"
    now = current.id if current else None
    return (
        f"patch {manifest.patch_id} of case {manifest.case_id!r} was cut from label version"
        f" {manifest.parent_version_id}, but the case is now at version {now}: added since:"
        f" {described}{hint}"
    )


@dataclass(frozen=True)
class _PlannedCase:
    """One case's merged version, computed but not stored."""

    case: CaseRecord
    head: int | None
    labels: np.ndarray
    classes: tuple[str, ...]
    parent: LabelVersionRecord | None
    records: list[dict[str, Any]]
    rows: list[tuple[str, int, tuple[str, ...], int]]


def _plan_case(
    project: Project,
    case: CaseRecord,
    patches: Sequence[tuple[PatchRecord, PatchCorrection, str]],
    current: np.ndarray,
    parent: LabelVersionRecord | None,
    classes: tuple[str, ...],
    head: int | None,
    warnings: list[str],
) -> _PlannedCase:
    """Apply a case's patches (in order) to its current label; the version holds their coverage only."""
    schema = project.config.schema
    running, records, rows = current.copy(), [], []
    for manifest, item, digest in patches:
        box = PatchBox(manifest.offset, manifest.size)
        border = int(manifest.border_voxels)
        try:
            masks = check_corrections(item.corrections, schema, box.size)
        except SegloopError as error:
            raise type(error)(f"patch {item.patch_id}: {error}") from error
        region = crop_with_padding(running, box, fill=schema.ignore_index)
        merged = masks.apply(region, schema.ignore_index)
        reviewed = reviewed_mask(box, case.shape, border)
        dropped = int(np.count_nonzero((merged != region) & ~reviewed))
        case_slices, patch_slices = box.inside(case.shape)
        target = running[case_slices]
        inside = reviewed[patch_slices]
        changed = int(np.count_nonzero(target[inside] != merged[patch_slices][inside]))
        target[inside] = merged[patch_slices][inside]
        if dropped:
            warnings.append(
                f"{item.patch_id}: {dropped} corrected voxels lie in the {border}-voxel"
                " ignore border or outside the case and were not merged"
            )
        records.append(
            {
                "patch": item.patch_id,
                "offset": list(box.offset),
                "size": list(box.size),
                "border_voxels": border,
                "corrections_sha256": digest,
                "extracted_label_sha256": manifest.label_sha256,
                "files": [{"file": f.path.name, "kind": f.kind, "sha256": f.sha256} for f in item.files],
            }
        )
        rows.append((item.patch_id, changed, tuple(f.path.name for f in item.files), dropped))
    boxes = [(PatchBox(tuple(r["offset"]), tuple(r["size"])), r["border_voxels"]) for r in records]
    labels = np.where(coverage_mask(boxes, case.shape), running, schema.ignore_index).astype(schema.dtype)
    return _PlannedCase(case, head, labels, classes, parent, records, rows)


class _CaseMovedError(Exception):
    """A case got a new version between reading it and storing the merge: read again."""


def _merge_once(
    project: Project, items: Sequence[PatchCorrection], *, force: bool, author: str
) -> tuple[list[PatchMerge], list[LabelVersionRecord], list[str]]:
    schema = project.config.schema
    manifests = _patches_by_id(project)
    _check_known(project, [item.patch_id for item in items], manifests)
    by_case: dict[str, list[PatchCorrection]] = {}
    for item in items:
        by_case.setdefault(manifests[item.patch_id].case_id, []).append(item)
    rows: list[PatchMerge] = []
    warnings: list[str] = []
    planned, outdated = [], []
    for case_id, case_items in by_case.items():
        case = project.get_case(case_id)
        versions, assembly, current = read_current_label(project, case)
        parent = choose_parent(versions, assembly)
        pending = []
        for item in case_items:
            manifest = manifests[item.patch_id]
            digest = item.corrections.digest(border_voxels=manifest.border_voxels)
            done = _merged_digest(versions, item.patch_id, digest)
            files = tuple(f.path.name for f in item.files)
            if done is not None:
                rows.append(PatchMerge(item.patch_id, case_id, "already merged", done, 0, files))
                continue
            box = PatchBox(manifest.offset, manifest.size)
            region = crop_with_padding(current, box, fill=schema.ignore_index)
            if compute_label_key(region) != manifest.region_sha256:
                outdated.append(_outdated_message(manifest, parent, versions))
            pending.append((manifest, item, digest))
        if pending:
            originals = original_class_values(versions, assembly)
            classes = tuple(c.name for c in schema.classes if c.index not in originals)
            head = versions[-1].id if versions else None
            planned.append(_plan_case(project, case, pending, current, parent, classes, head, warnings))
    if outdated and not force:
        msg = (
            "; ".join(outdated[:3]) + " — the label under the patch changed since extraction: extract it"
            " again, or apply these corrections to the current label; nothing was merged"
        )
        raise ConflictError(msg)
    new = [
        (
            plan.case.case_id,
            stage_revised(
                project,
                plan.case,
                plan.labels,
                classes=plan.classes,
                parent_id=plan.parent.id if plan.parent else None,
                tool=MERGE_TOOL,
                params={
                    "patches": plan.records,
                    "coverage": [
                        {k: r[k] for k in ("offset", "size", "border_voxels")} for r in plan.records
                    ],
                    "force": force,
                },
                author=author,
            ),
        )
        for plan in planned
    ]
    try:
        stored = project.add_label_versions(new, expected_heads={p.case.case_id: p.head for p in planned})
    except ConflictError as error:
        raise _CaseMovedError from error
    for plan, version in zip(planned, stored, strict=True):
        rows += [PatchMerge(p, version.case_id, "merged", version.id, n, f, d) for p, n, f, d in plan.rows]
        project.log_event(
            "patches-merged",
            author,
            {"case": version.case_id, "version": version.id, "patches": [r["patch"] for r in plan.records]},
        )
    return rows, stored, warnings


def merge_patch_corrections(
    project: Project, items: Sequence[PatchCorrection], *, force: bool = False, author: str
) -> MergeReport:
    """Merge corrected patches into their cases (module docstring): all cases or none.

    Args:
        project: the open project.
        items: the patches' corrections, each on its patch's grid.
        force: merge patches whose label changed since extraction, onto the current label.
        author: recorded on the versions.

    Returns:
        The `MergeReport`, rows in the order of ``items``.

    Raises:
        NotFoundError: a patch id is unknown.
        GeometryMismatchError: a mask is not on its patch's grid.
        ConflictError: a patch's label changed since extraction (without ``force``), or its case
            kept changing while the merge was stored.
    """
    for _ in range(MERGE_ATTEMPTS):
        try:
            rows, stored, warnings = _merge_once(project, items, force=force, author=author)
        except _CaseMovedError:
            continue  # another writer stored a version of one of the cases: read them again
        order = {item.patch_id: i for i, item in enumerate(items)}
        rows.sort(key=lambda r: order[r.patch])
        return MergeReport(tuple(rows), tuple(stored), tuple(warnings))
    msg = f"the cases kept changing while the merge was stored ({MERGE_ATTEMPTS} tries); nothing was merged"
    raise ConflictError(msg)


def merge_patches(
    project: Project,
    corrections_dir: Path,
    *,
    class_name: str | None = None,
    force: bool = False,
    accept_empty: bool = False,
    author: str,
) -> MergeReport:
    """Read ``corrections_dir/<patch>/`` folders (`read_patch_corrections`) and merge them.

    Args:
        project: the open project.
        corrections_dir: the folder holding one sub-folder per patch.
        class_name: the class *Add* files without a class in their name paint.
        force: merge patches whose case changed since extraction, onto its current label.
        accept_empty: merge patches without correction files too (a person found nothing to
            fix: the patch becomes reviewed as it is); by default they are skipped.
        author: recorded on the versions.
    """
    items, skipped, warnings = read_patch_corrections(
        project, corrections_dir, class_name=class_name, accept_empty=accept_empty
    )
    report = merge_patch_corrections(project, items, force=force, author=author) if items else None
    rows = [*skipped, *(report.patches if report else ())]
    rows.sort(key=lambda r: r.patch)
    versions = report.versions if report else ()
    return MergeReport(tuple(rows), versions, (*warnings, *(report.warnings if report else ())))
