"""Ranking what to correct: AbdomenAtlas attention, the strategies, candidates, priority.csv."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from segloop.errors import InvalidInputError, NotFoundError, SegloopError
from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.labels import count_voxels
from segloop.loop.ranking import (
    compute_attention,
    find_attention_centers,
    list_candidate_cases,
    open_mask_iterations,
    order_least_recent,
    rank_cases,
    write_priority_csv,
)
from segloop.loop.tools import store_tool_labels
from segloop.metrics import binary_entropy
from segloop.store import NewLabel, PredictionArrays, Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

SHAPE = (32, 32, 16)


def start_model(project: Project) -> int:
    """A finished model row (no checkpoint): enough to record predictions."""
    record = project.start_model(
        author="test", mode="full", parent_id=None, config={}, label_version_ids=[], train_case_ids=[],
        val_case_ids=[],
    )  # fmt: skip
    project.finish_model(record.id, status="done", metrics={}, config={})
    return record.id


def add_prediction(
    project: Project,
    case_id: str,
    probabilities: np.ndarray,
    *,
    model_id: int,
    disagreement: np.ndarray | None = None,
):
    """Store a prediction as `predict_cases` does: a pseudo version, then `Project.write_prediction`."""
    schema = project.config.schema
    case = project.get_case(case_id)
    labels = probabilities.argmax(0).astype(schema.dtype)
    with project.objects.stage() as staged:  # as store_tool_labels, but an empty prediction is allowed
        key = staged.put(labels, case.affine)
    counts = count_voxels(labels, schema)
    label = NewLabel(key, "pseudo", schema.names, counts, "test", f"model {model_id}", {})
    version = project.add_label_version(case_id, label)
    arrays = PredictionArrays(probabilities, np.zeros(case.shape, np.float16), disagreement)
    return project.write_prediction(case_id, model_id, arrays, label_version_id=version.id, params={})


def confident(labels: np.ndarray, n_channels: int) -> np.ndarray:
    """One-hot probabilities (C, I, J, K) of a label map."""
    return (np.arange(n_channels)[:, None, None, None] == labels[None]).astype(np.float32)


def blur_block(probabilities: np.ndarray, value: int, box: tuple[slice, ...], p: float = 0.5) -> np.ndarray:
    """Make class ``value`` uncertain (probability p vs background) inside ``box``."""
    result = probabilities.copy()
    result[(slice(None), *box)] = 0.0
    result[(value, *box)] = p
    result[(0, *box)] = 1.0 - p
    return result


@pytest.fixture
def project(tmp_path):
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    images = []
    for seed in range(3):
        phantom = make_ct_phantom(SHAPE, seed=seed)
        images.append(write_volume(phantom.image, tmp_path / "data" / f"c{seed}.nii.gz"))
    import_cases(project, images)
    return project


def test_open_mask_is_two_erosions_then_two_dilations():
    mask = np.zeros((12, 12, 12), bool)
    mask[2:9, 2:9, 2:9] = True  # 7^3 cube survives an opening of radius 2 unchanged
    mask[11, 11, 11] = True  # a speck vanishes
    mask[0:4, 11, 0:4] = True  # a 1-voxel-thin sheet vanishes
    opened = open_mask_iterations(mask)
    assert opened.sum() == 7**3 and opened[2:9, 2:9, 2:9].all()
    thin = np.zeros((12, 12, 12), bool)
    thin[2:6, 2:6, 2:6] = True  # 4 voxels thick: eroded away by 2 erosions
    assert not open_mask_iterations(thin).any()


def test_open_mask_keeps_single_slice_images():
    mask = np.zeros((10, 10, 1), bool)
    mask[2:8, 2:8] = True
    assert open_mask_iterations(mask).sum() == 36


def test_binary_entropy_is_symmetric_bits():
    values = binary_entropy(np.array([0.0, 0.1, 0.5, 0.9, 1.0]))
    assert values[2] == pytest.approx(1.0) and values[0] == 0 and values[4] == 0
    assert values[1] == pytest.approx(values[3], abs=1e-6) == pytest.approx(0.469, abs=1e-3)


def test_attention_orders_classes_by_uncertainty_and_counts_flagged_voxels():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = 1
    labels[10:18, 10:18, 10:18] = 2
    p = confident(labels, 4)
    p = blur_block(p, 1, (slice(2, 7), slice(2, 7), slice(2, 7)))  # 125 voxels of class 1
    p = blur_block(p, 2, (slice(10, 18), slice(10, 18), slice(10, 18)))  # 512 voxels of class 2
    attention = compute_attention([p], [1, 2])
    assert [c.value for c in attention.classes] == [2, 1]
    assert [c.flagged_voxels for c in attention.classes] == [512, 125]
    assert attention.score == 637 and attention.flagged.sum() == 637
    assert attention.disagreement == "none"


def test_attention_uses_model_disagreement_when_several_models_exist():
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[3:12, 3:12, 3:12] = 1
    sure = confident(labels, 3)
    other = sure.copy()
    other[:, 3:12, 3:12, 3:12] = 0.0
    other[2, 3:12, 3:12, 3:12] = 1.0  # the other model says class 2 there: std 0.5 for both classes
    attention = compute_attention([sure, other], [1, 2])
    assert attention.disagreement == "models"
    assert {c.value: c.flagged_voxels for c in attention.classes} == {1: 729, 2: 729}
    # the same single confident model has nothing to flag
    assert compute_attention([sure], [1, 2]).score == 0


def test_attention_uses_stored_pass_disagreement_near_the_class():
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[3:12, 3:12, 3:12] = 1
    p = confident(labels, 3)
    passes = np.full(labels.shape, 0.3, np.float32)  # passes disagree everywhere
    attention = compute_attention([p], [1, 2], pass_disagreement=passes)
    assert attention.disagreement == "passes"
    # counted only where the class is plausible (p_c >= 0.05): class 1's cube, nothing for class 2
    assert [(c.value, c.flagged_voxels) for c in attention.classes] == [(1, 729)]


def test_attention_excludes_reviewed_voxels():
    labels = np.zeros((16, 16, 16), np.uint8)
    p = blur_block(confident(labels, 2), 1, (slice(2, 14),) * 3)
    exclude = np.zeros(labels.shape, bool)
    exclude[:8] = True
    attention = compute_attention([p], [1], exclude=exclude)
    assert attention.score == 6 * 12 * 12  # rows 8..13 only
    with pytest.raises(SegloopError, match="at least one"):
        compute_attention([], [1])


def test_least_recent_order():
    assert order_least_recent(["a", "b", "c", "d"], {"a": 5, "c": 2}) == ["b", "d", "c", "a"]


def test_uncertainty_strategy_ranks_by_flagged_voxels_not_by_time(project):
    model = start_model(project)
    schema = project.config.schema
    n_channels = schema.ignore_index
    sizes = {"c0": 4, "c1": 10, "c2": 7}  # edge of an uncertain cube of kidney_left
    for case_id, edge in sizes.items():
        labels = np.zeros(SHAPE, np.uint8)
        p = blur_block(
            confident(labels, n_channels), 3, (slice(2, 2 + edge),) * 2 + (slice(2, 2 + min(edge, 12)),)
        )
        add_prediction(project, case_id, p, model_id=model)
    first = rank_cases(project, count=3, author="me")
    assert [r.case_id for r in first] == ["c1", "c2", "c0"]
    assert first[0].classes == ("kidney_left",) and first[0].model_id == model
    assert first[0].score == 10 * 10 * 10
    # serving them does not change the uncertainty order (MONAI Label's epistemic would re-sort by time)
    again = rank_cases(project, count=3, author="me")
    assert [r.case_id for r in again] == ["c1", "c2", "c0"]
    served = project.list_events("served")
    assert len(served) == 2 and served[0].detail == {
        "cases": ["c1", "c2", "c0"],
        "strategy": "uncertainty",
        "seed": 0,
        "ranked": 3,
        # the newest row ids the ranking saw (it is stale once a case or prediction comes after them)
        "newest": {"cases": 3, "predictions": 3, "label_versions": 3, "events": 1},
    }
    recorded = project.list_ranking(served[0].id)
    assert recorded == (3, [(r.rank, r.case_id, r.score) for r in first])


def test_uncertainty_puts_unpredicted_cases_last(project):
    model = start_model(project)
    p = blur_block(
        confident(np.zeros(SHAPE, np.uint8), project.config.schema.ignore_index), 1, (slice(1, 9),) * 3
    )
    add_prediction(project, "c1", p, model_id=model)
    ranked = rank_cases(project, record=False)
    assert [(r.case_id, r.score is None) for r in ranked] == [("c1", False), ("c0", True), ("c2", True)]
    assert ranked[1].note == "no prediction"
    assert project.list_events("served") == []


def test_random_is_seeded_and_least_recent_rotates(project):
    first = [r.case_id for r in rank_cases(project, strategy="random", seed=4, record=False)]
    assert first == [r.case_id for r in rank_cases(project, strategy="random", seed=4, record=False)]
    assert sorted(first) == ["c0", "c1", "c2"]
    served = [r.case_id for r in rank_cases(project, strategy="least-recent", count=2)]
    assert served == ["c0", "c1"]
    assert [r.case_id for r in rank_cases(project, strategy="least-recent", count=2)] == ["c2", "c0"]
    with pytest.raises(
        InvalidInputError, match="unknown ranking strategy 'epistemic': expected one of uncertainty"
    ):
        rank_cases(project, strategy="epistemic")


def test_strategies_are_a_registry_of_one_protocol(project, monkeypatch):
    from segloop.loop import ranking

    assert list(ranking.STRATEGIES) == ["uncertainty", "gain-per-cost", "random", "least-recent"]

    class Reversed:
        def rank(self, project, candidates, *, count, seed):
            rows = [
                ranking.RankedCase(0, case_id, None, classes) for case_id, classes in reversed(candidates)
            ]
            return rows[:count]

    monkeypatch.setitem(ranking.STRATEGIES, "reversed", Reversed())
    ranked = rank_cases(project, strategy="reversed", record=False)
    assert [r.case_id for r in ranked] == [c for c, _ in reversed(list_candidate_cases(project))]


def test_ranking_an_empty_project_says_it_has_no_cases(tmp_path):
    empty = init_project(tmp_path / "empty", ["liver"])
    for strategy in ("uncertainty", "random", "least-recent"):
        with pytest.raises(NotFoundError, match="no case in project empty"):
            rank_cases(empty, strategy=strategy)


def test_candidates_exclude_cases_fully_decided_by_people(project):
    schema = project.config.schema
    case = project.get_case("c0")
    labels = make_ct_phantom(SHAPE, seed=0).labels.array
    store_tool_labels(
        project, case, labels, source="original", classes=schema.names, tool="t", params={}, author="a"
    )
    partial = project.get_case("c1")
    store_tool_labels(
        project, partial, labels, source="revised", classes=["liver"], tool="t", params={}, author="a"
    )
    candidates = dict(list_candidate_cases(project))
    assert "c0" not in candidates
    assert candidates["c1"] == tuple(n for n in schema.names if n != "liver")
    assert candidates["c2"] == schema.names


def test_human_classes_are_not_scored(project):
    model = start_model(project)
    schema = project.config.schema
    labels = np.zeros(SHAPE, np.uint8)
    p = blur_block(confident(labels, schema.ignore_index), 1, (slice(2, 10),) * 3)
    p = blur_block(p, 2, (slice(12, 18), slice(12, 18), slice(6, 12)))
    add_prediction(project, "c0", p, model_id=model)
    liver = np.zeros(SHAPE, np.uint8)
    store_tool_labels(
        project, project.get_case("c0"), liver + 1, source="revised", classes=["liver"], tool="t", params={},
        author="a",
    )  # fmt: skip
    [row] = [r for r in rank_cases(project, record=False) if r.case_id == "c0"]
    assert row.classes == ("spleen",) and row.score == 216


def test_priority_csv(project, tmp_path):
    ranked = rank_cases(project, strategy="random", record=False)
    path = write_priority_csv(ranked, tmp_path / "priority.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["rank", "case", "score", "classes"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"] and rows[1][3] == ";".join(PHANTOM_CLASSES)


def test_attention_centers_are_the_largest_regions(project):
    model = start_model(project)
    p = confident(np.zeros(SHAPE, np.uint8), project.config.schema.ignore_index)
    p = blur_block(p, 1, (slice(2, 10), slice(2, 10), slice(2, 10)))  # 512 voxels, centre 5.5
    p = blur_block(p, 2, (slice(20, 26), slice(20, 26), slice(8, 14)))  # 216 voxels
    add_prediction(project, "c0", p, model_id=model)
    centers = find_attention_centers(project, "c0", 5, 8)
    assert [n for _, n in centers] == [512, 216]
    assert centers[1][0] == (22, 22, 10)  # 22.5 rounds to even
    # a patch as large as the case covers both regions: one centre only
    assert len(find_attention_centers(project, "c0", 5, 64)) == 1


def test_a_whole_case_revision_stays_human_under_later_patch_merges(project):
    case = project.get_case("c2")
    labels = make_ct_phantom(SHAPE, seed=2).labels.array
    names = project.config.schema.names
    for params in ({}, {"patches": [{"patch": "c2_patch1", "offset": [0, 0, 0], "size": [8, 8, 8]}]}):
        store_tool_labels(
            project, case, labels, source="revised", classes=names, tool="t", params=params, author="a"
        )
    assert "c2" not in dict(list_candidate_cases(project))
    only_patch = project.get_case("c1")
    params = {"patches": [{"patch": "c1_patch1", "offset": [0, 0, 0], "size": [8, 8, 8]}]}
    store_tool_labels(
        project, only_patch, labels, source="revised", classes=names, tool="t", params=params, author="a"
    )
    assert dict(list_candidate_cases(project))["c1"] == names


def test_equal_flagged_voxels_are_ordered_by_attention(project):
    model = start_model(project)
    n_channels = project.config.schema.ignore_index
    box = (slice(2, 12),) * 3
    for case_id, p in (("c0", 0.2), ("c1", 0.5), ("c2", 0.3)):  # entropy 0.72, 1.0, 0.88 bits
        add_prediction(
            project,
            case_id,
            blur_block(confident(np.zeros(SHAPE, np.uint8), n_channels), 1, box, p),
            model_id=model,
        )
    ranked = rank_cases(project, record=False)
    assert [r.score for r in ranked] == [1000.0] * 3
    assert [r.case_id for r in ranked] == ["c1", "c2", "c0"]
    assert ranked[0].attention == pytest.approx(1000.0, rel=1e-3)


def test_entropy_mass_orders_cases_whose_cleaned_maps_are_empty():
    from segloop.loop.ranking import compute_attention

    def thin_rim(width):  # uncertain rims one voxel thick: 2 erosions erase them all
        p = np.zeros((2, 20, 20, 3), np.float32)
        p[0] = 1.0
        p[1, 5 : 5 + width, 5:6] = 0.5
        p[0, 5 : 5 + width, 5:6] = 0.5
        return p

    small, large = compute_attention([thin_rim(3)], [1]), compute_attention([thin_rim(12)], [1])
    assert small.score == large.score == 0
    assert large.entropy_mass > small.entropy_mass > 0
    assert [c.value for c in large.classes] == [1]  # kept for the person, in entropy order


def test_cases_whose_cleaned_maps_are_empty_are_ranked_by_entropy_mass_not_project_order(project):
    """On coarse grids (OpenKBP's 4 mm) the cleaning erases every flagged voxel of most cases."""
    model = start_model(project)
    n_channels = project.config.schema.ignore_index
    for case_id, width in (("c0", 3), ("c1", 12), ("c2", 7)):  # uncertain rims one voxel thick
        box = (slice(5, 5 + width), slice(5, 6), slice(4, 5))
        add_prediction(
            project,
            case_id,
            blur_block(confident(np.zeros(SHAPE, np.uint8), n_channels), 1, box),
            model_id=model,
        )
    ranked = rank_cases(project, record=False)
    assert [r.score for r in ranked] == [0.0] * 3
    assert [r.case_id for r in ranked] == ["c1", "c2", "c0"]
    assert ranked[0].entropy_mass > ranked[1].entropy_mass > ranked[2].entropy_mass > 0
