"""Corrections and patch merges saved at once by several processes: one wins, nothing is lost.

Each test starts real processes (fork) that wait at a barrier and then run the same `segloop`
command at the same moment, as two people pressing "save" together would (issue 18 #5, #6). Each
runs on SQLite and on PostgreSQL (issue 17: several annotators at once on one server).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import sys

import numpy as np
import pytest

from segloop.core import Volume
from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.labels import compute_effective_label
from segloop.loop.patches import extract_patches, merge_patches
from segloop.loop.tool_exports import export_for_tool
from segloop.loop.tools import store_tool_labels
from segloop.store import DATABASE_URL_VARIABLE, Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

SHAPE = (24, 24, 12)
SPLEEN = 2
CASES = ("c0", "c1", "c2")

fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method (POSIX)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def project(request, tmp_path, monkeypatch):
    """Three phantoms with pseudo labels, in SQLite or in a fresh PostgreSQL database (named by
    ``SEGLOOP_DATABASE_URL``, which the processes inherit)."""
    monkeypatch.delenv(DATABASE_URL_VARIABLE, raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv(DATABASE_URL_VARIABLE, request.getfixturevalue("postgres_project_url"))
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    images = []
    for seed, case_id in enumerate(CASES):
        phantom = make_ct_phantom(SHAPE, seed=seed)
        images.append(write_volume(phantom.image, tmp_path / "data" / f"{case_id}.nii.gz"))
    import_cases(project, images)
    for seed, case_id in enumerate(CASES):
        store_tool_labels(
            project, project.get_case(case_id), make_ct_phantom(SHAPE, seed=seed).labels.array,
            source="pseudo", classes=PHANTOM_CLASSES, tool="model", params={}, author="ai",
        )  # fmt: skip
    return project


def _segloop(barrier, results, args) -> None:
    """One process: wait for the others, run ``segloop ARGS``, report (exit code, stderr)."""
    from segloop.cli.main import main

    sys.argv = ["segloop", *map(str, args)]
    err = io.StringIO()
    barrier.wait(timeout=120)
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    results.put((code, err.getvalue()))


def run_at_once(*commands: list) -> list[tuple[int, str]]:
    """Run several ``segloop`` commands in their own processes, released together."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(commands))
    results = context.Queue()
    processes = [context.Process(target=_segloop, args=(barrier, results, args)) for args in commands]
    for process in processes:
        process.start()
    try:
        return [results.get(timeout=120) for _ in processes]
    finally:  # a process that never reports fails the test instead of hanging the session
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()


def revised(project: Project, case_id: str | None = None) -> list:
    return [v for v in project.list_label_versions(case_id) if v.source == "revised"]


def effective(project: Project, case_id: str) -> np.ndarray:
    return compute_effective_label(project, project.get_case(case_id)).labels


def add_spleen(path, voxel, shape, affine) -> None:
    mask = np.zeros(shape, np.uint8)
    mask[voxel] = 1
    write_volume(Volume(mask, affine), path)


@fork
def test_corrections_of_one_export_saved_at_once_one_wins(project, tmp_path):
    case = project.get_case("c0")
    voxels = [(1, 1, 1), (1, 3, 1), (3, 1, 1), (3, 3, 1)]
    commands = []
    for number, voxel in enumerate(voxels):
        out = tmp_path / f"person{number}"
        export_for_tool(project, "c0", "slicer", out)
        add_spleen(out / "corrections" / "Add_spleen1.nrrd", voxel, SHAPE, case.affine)
        commands.append(["correct", project.root, "c0", "--corrections-dir", out / "corrections"])
    results = run_at_once(*commands)
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1, 1, 1], results  # before: all 4 stored, 3 edits lost
    for code, err in results:
        if code:
            assert "case 'c0' changed" in err and "nothing was stored" in err and "--force" in err
    assert len(revised(project, "c0")) == 1
    labels = effective(project, "c0")
    assert sum(labels[v] == SPLEEN for v in voxels) == 1  # the winner's edit, and it was not lost


@fork
def test_four_annotators_on_three_cases_at_once_lose_nothing(project, tmp_path):
    """Two people correct one export of c0, two others c1 and c2: three versions, one refusal."""
    people = [("c0", (1, 1, 1)), ("c0", (3, 3, 1)), ("c1", (2, 2, 1)), ("c2", (2, 2, 1))]
    commands = []
    for number, (case_id, voxel) in enumerate(people):
        out = tmp_path / f"person{number}"
        export_for_tool(project, case_id, "slicer", out)
        add_spleen(out / "corrections" / "Add_spleen1.nrrd", voxel, SHAPE, project.get_case(case_id).affine)
        commands.append(["correct", project.root, case_id, "--corrections-dir", out / "corrections"])
    results = run_at_once(*commands)
    assert sorted(code for code, _ in results) == [0, 0, 0, 1], results
    assert [len(revised(project, case_id)) for case_id in CASES] == [1, 1, 1]
    for case_id, voxel in people[2:]:
        assert effective(project, case_id)[voxel] == SPLEEN  # the other cases' edits are all kept
    assert sum(effective(project, "c0")[voxel] == SPLEEN for _, voxel in people[:2]) == 1


def _extract(project, out, case_id, center):
    [manifest] = extract_patches(
        project, out, case_id=case_id, centers=[center], size=8, border_voxels=1, author="me"
    )
    return manifest


@fork
def test_one_folder_merged_by_three_processes_merges_each_patch_once(project, tmp_path):
    out = tmp_path / "patches"
    for case_id in CASES:
        manifest = _extract(project, out, case_id, (12, 12, 6))
        folder = out / "corrections" / manifest["patch"]
        add_spleen(folder / "Add_spleen1.nrrd", (3, 3, 3), (8, 8, 8), np.asarray(manifest["affine"]))
    command = ["patches", "merge", project.root, "--corrections-dir", out / "corrections"]
    results = run_at_once(command, command, command)
    assert all(code == 0 or "changed" in err for code, err in results), results
    assert sorted(v.case_id for v in revised(project)) == list(CASES)  # 3 versions, not 9


@fork
def test_two_patches_of_one_case_merged_at_once_lose_no_voxel(project, tmp_path):
    commands, voxels = [], []
    for number, center in enumerate([(5, 5, 6), (17, 17, 6)]):
        out = tmp_path / f"patches{number}"
        manifest = _extract(project, out, "c0", center)
        folder = out / "corrections" / manifest["patch"]
        add_spleen(folder / "Add_spleen1.nrrd", (4, 4, 4), (8, 8, 8), np.asarray(manifest["affine"]))
        voxels.append(tuple(np.add(manifest["offset"], 4)))
        commands.append(["patches", "merge", project.root, "--corrections-dir", out / "corrections"])
    results = run_at_once(*commands)
    assert [code for code, _ in results] == [0, 0], results
    labels = effective(project, "c0")
    assert [labels[v] for v in voxels] == [SPLEEN, SPLEEN]  # before: one patch's voxel lost
    assert len(revised(project, "c0")) == 2


def test_a_merge_killed_after_the_first_case_stores_nothing_and_reruns_once(project, tmp_path, monkeypatch):
    import segloop.loop.patches as patches

    out = tmp_path / "patches"
    for case_id in CASES[:2]:
        manifest = _extract(project, out, case_id, (12, 12, 6))
        folder = out / "corrections" / manifest["patch"]
        add_spleen(folder / "Add_spleen1.nrrd", (3, 3, 3), (8, 8, 8), np.asarray(manifest["affine"]))
    staged = []
    original = patches.stage_revised

    def dies_at_the_second_case(*args, **kwargs):
        if staged:
            raise KeyboardInterrupt  # killed while the second case is being stored
        staged.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(patches, "stage_revised", dies_at_the_second_case)
    with pytest.raises(KeyboardInterrupt):
        merge_patches(project, out / "corrections", author="me")
    assert revised(project) == [] and project.count_events("patches-merged") == 0
    monkeypatch.undo()
    report = merge_patches(project, out / "corrections", author="me")
    assert sorted(v.case_id for v in report.versions) == ["c0", "c1"]
    again = merge_patches(project, out / "corrections", author="me")
    assert again.versions == () and {r.status for r in again.patches} == {"already merged"}
    assert len(revised(project)) == 2
