"""Several annotators at once on a live server: saves of one case race, and nothing is lost or forked.

Four users, each with a token, save labels of the same case in rounds, all starting each round
from the head they read (``If-Match``) and sending at the same moment (a barrier), through
uvicorn's thread pool as ``segloop serve`` runs. Every save is a 201 or a 409 with
``versions_since``; no two saves made from the same head are both stored; afterwards the case's
versions form one line (each based on the head before it), every 201 is a stored version holding
the voxels that were sent, and the project passes `segloop.store.check_project` (``segloop fsck``).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")

import httpx

from segloop.io import nifti
from segloop.loop import corrections
from segloop.loop.tools import store_tool_labels
from segloop.loop.users import create_user
from segloop.store import Project, check_project
from tests.conftest import make_phantom_project
from tests.e2e.conftest import LiveServer, start_server

SHAPE = (16, 16, 8)
USERS = ("ana", "ben", "cleo", "dev")
ROUNDS = 6


@dataclass
class Save:
    """One save as its annotator saw it."""

    user: str
    etag: str  # the head the label was read at
    status: int
    body: dict[str, Any]
    labels: np.ndarray  # what was sent


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    """One 16x16x8 phantom ``c0`` whose label is a prediction (``pseudo``), served with sign-in."""
    project = make_phantom_project(tmp_path, 1, SHAPE, labeled=(0,), source="pseudo")
    tokens = {name: create_user(project, name)[1] for name in USERS}
    server = start_server(project, require_sign_in=True)
    try:
        yield server, tokens
    finally:
        server.stop()


def _nifti(labels: np.ndarray, project: Project) -> bytes:
    return nifti.encode(nifti.Volume(labels, project.get_case("c0").affine))


def _edit(user_index: int, round_index: int) -> np.ndarray:
    """A label no other (user, round) sends: one row of liver or spleen, and a corner voxel."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[user_index, round_index % SHAPE[1], :] = 1 + user_index % 2
    labels[SHAPE[0] - 1, SHAPE[1] - 1, round_index % SHAPE[2]] = 1
    return labels


def _race(
    server: LiveServer, tokens: dict[str, str], send: Callable[[httpx.Client, int, int, str], Save]
) -> list[Save]:
    """Every user, in ``ROUNDS`` rounds: read the label's ETag, wait for the others, then ``send``."""
    barrier = threading.Barrier(len(tokens))
    saves: list[Save] = []
    errors: list[BaseException] = []

    def annotate(user_index: int, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            try:
                for round_index in range(ROUNDS):
                    read = http.get("/api/cases/c0/label.nii.gz")
                    assert read.status_code == 200, read.text
                    barrier.wait(timeout=60)
                    saves.append(send(http, user_index, round_index, read.headers["ETag"]))
            except (
                AssertionError,
                httpx.HTTPError,
                threading.BrokenBarrierError,
            ) as error:  # told by the test
                barrier.abort()
                errors.append(error)

    threads = [threading.Thread(target=annotate, args=item) for item in enumerate(tokens.values())]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(saves) == len(tokens) * ROUNDS
    return saves


def _put_label(project: Project) -> Callable[[httpx.Client, int, int, str], Save]:
    def send(http: httpx.Client, user_index: int, round_index: int, etag: str) -> Save:
        labels = _edit(user_index, round_index)
        response = http.put(
            "/api/cases/c0/label",
            content=_nifti(labels, project),
            headers={"If-Match": etag, "Content-Type": "application/gzip"},
        )
        return Save(USERS[user_index], etag, response.status_code, response.json(), labels)

    return send


def _assert_saves_are_linear_and_stored(project: Project, saves: list[Save]) -> None:
    statuses = Counter(save.status for save in saves)
    assert set(statuses) <= {201, 409}, statuses
    stored = [save for save in saves if save.status == 201]
    assert stored, f"no save was stored: {statuses}"
    won_from = Counter(save.etag for save in stored)
    assert max(won_from.values()) == 1, f"two saves from the same head were both stored: {won_from}"
    for save in saves:
        if save.status == 409:
            assert save.body["versions_since"], save.body  # what was stored since the head it read
            assert save.body["head"] == save.body["versions_since"][-1]["id"]
    versions = project.list_label_versions("c0")
    by_id = {version.id: version for version in versions}
    for save in stored:
        version = by_id[save.body["version"]["id"]]
        assert (version.author, version.source) == (save.user, "revised")
        assert f'"{version.params["based_on"]}"' == save.etag
        assert np.array_equal(project.read_labels(version), save.labels), "a stored save lost its voxels"
    revised = [version for version in versions if version.source == "revised"]
    assert len(revised) == len(stored)  # no lost write, no write nobody was told of
    for before, version in itertools.pairwise(versions):
        if version.source == "revised":  # based on the head it followed: one line, no fork
            assert version.params["based_on"] == before.id, (before.id, version.id, version.params)


def test_four_annotators_saving_one_case_at_once_leave_one_line_of_versions(served):
    server, tokens = served
    saves = _race(server, tokens, _put_label(server.project))
    _assert_saves_are_linear_and_stored(server.project, saves)
    assert sum(save.status == 201 for save in saves) >= ROUNDS  # each round, one of them wins
    report = check_project(server.project)  # a refused save leaves no file behind
    assert report.ok, [(problem.kind, problem.detail) for problem in report.problems]


def test_a_save_that_loses_the_race_at_the_insert_leaves_no_file(served, monkeypatch):
    server, tokens = served
    project = server.project
    head = project.find_head("c0")
    publish = corrections.stage_revised

    def publish_then_ben_saves(*args: Any, **kwargs: Any) -> Any:
        staged = publish(*args, **kwargs)  # ana's label is published, her head check passed ...
        monkeypatch.setattr(corrections, "stage_revised", publish)
        corrections.apply_label(project, "c0", _edit(1, 1), parent=head, author="ben")  # ... ben lands first
        return staged

    monkeypatch.setattr(corrections, "stage_revised", publish_then_ben_saves)
    response = httpx.put(
        f"{server.url}/api/cases/c0/label",
        content=_nifti(_edit(0, 0), project),
        headers={"Authorization": f"Bearer {tokens['ana']}", "If-Match": f'"{head}"'},
    )
    assert response.status_code == 409, response.text
    assert [v.author for v in project.list_label_versions("c0")][-1] == "ben"
    report = check_project(project)
    assert report.ok, [(problem.kind, problem.detail) for problem in report.problems]


def test_four_annotators_keep_their_own_drafts_at_once(served):
    server, tokens = served
    project = server.project

    def send(http: httpx.Client, user_index: int, round_index: int, etag: str) -> Save:
        labels = _edit(user_index, round_index)
        response = http.put(
            "/api/cases/c0/draft",
            content=_nifti(labels, project),
            headers={"If-Match": etag, "Content-Type": "application/gzip"},
        )
        return Save(USERS[user_index], etag, response.status_code, response.json(), labels)

    saves = _race(server, tokens, send)
    assert {save.status for save in saves} == {201}
    last = {save.user: save for save in saves}  # each thread's saves are in order
    for user, save in last.items():
        draft = project.find_draft("c0", user)
        assert draft is not None and np.array_equal(project.read_draft(draft), save.labels), user
    assert len(project.list_drafts("c0")) == len(USERS)
    assert [v.source for v in project.list_label_versions("c0")] == ["pseudo"]  # a draft is no version
    assert check_project(project).ok


def test_saves_racing_a_prediction_s_pseudo_versions_are_refused_not_lost(served):
    """A prediction job stores ``pseudo`` versions without a head check; a save read before one is a 409."""
    server, tokens = served
    project = server.project
    case = project.get_case("c0")
    stop = threading.Event()
    predicted: list[int] = []

    def predict() -> None:  # what a predict job's process does for each case (loop/training.predict_cases)
        step = 0
        while not stop.is_set() and step < 6:
            labels = np.zeros(SHAPE, np.uint8)
            labels[2:6, 2:6, step % SHAPE[2]] = 2
            version = store_tool_labels(
                project, case, labels, source="pseudo", classes=project.config.schema.names,
                tool="model 1", params={"model_id": 1, "step": step}, author="tester", allow_empty=True,
            )  # fmt: skip
            predicted.append(version.id)
            step += 1
            stop.wait(0.15)

    predictor = threading.Thread(target=predict)
    predictor.start()
    try:
        saves = _race(server, tokens, _put_label(project))
    finally:
        stop.set()
        predictor.join(timeout=30)
    assert len(predicted) >= 2
    _assert_saves_are_linear_and_stored(project, saves)
    problems = [p for p in check_project(project).problems if p.kind != "orphan-object"]
    assert problems == []
