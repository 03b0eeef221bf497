"""Issue 17: `segloop migrate P --to URL` copies a SQLite project into PostgreSQL, verified, and the
project uses PostgreSQL from then on (without ``SEGLOOP_DATABASE_URL``, which still overrides).
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

import segloop.store.copy as copy_module
from segloop.errors import ConflictError
from segloop.loop.tools import store_tool_labels
from segloop.store import DATABASE_URL_VARIABLE, NewPatch, PredictionArrays, Project
from segloop.store.config import trusted_databases_path
from segloop.store.database import SCHEMA_VERSION, cases, connect, events, metadata, schema_info
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import make_phantom_project, snapshot_project

SHAPE = (16, 16, 8)


@pytest.fixture(autouse=True)
def user_config(tmp_path, monkeypatch):
    """This user's ``databases.toml`` lies in the test's folder; the project's database is its own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "me"))
    monkeypatch.delenv(DATABASE_URL_VARIABLE, raising=False)


@pytest.fixture
def project(tmp_path) -> Project:
    """Label versions (original, pseudo, revised), a model, a prediction, an evaluation, a round, jobs,
    a user and a draft: a row in every table."""
    project = make_phantom_project(tmp_path, 3, SHAPE, labeled=[0])
    truth = make_ct_phantom(SHAPE, seed=1).labels.array
    store_tool_labels(project, project.get_case("c1"), truth, source="pseudo", classes=PHANTOM_CLASSES,
                      tool="model", params={"p": 0.5}, author="ai")  # fmt: skip
    store_tool_labels(project, project.get_case("c1"), truth, source="revised", classes=["liver"],
                      tool="slicer", params={}, author="ann")  # fmt: skip
    model = project.start_model(author="t", mode="full", parent_id=None, config={"epochs": 1},
                                label_version_ids=[1], train_case_ids=["c0"], val_case_ids=[])  # fmt: skip
    project.finish_model(model.id, status="done", metrics={"dice": 0.5}, config={"epochs": 1})
    (project.root / model.checkpoint).parent.mkdir(parents=True, exist_ok=True)
    (project.root / model.checkpoint).write_bytes(b"weights")  # fsck wants a finished model's file
    rng = np.random.default_rng(0)
    arrays = PredictionArrays(rng.dirichlet(np.ones(5), size=SHAPE).transpose(3, 0, 1, 2), rng.random(SHAPE))
    project.write_prediction("c2", model.id, arrays, label_version_id=1, params={"passes": 1})
    project.add_evaluation("c0", model_id=model.id, reference_version_ids=[1], metrics={"dice": 0.9})
    project.start_round(1, mode="full")
    job = project.start_job("train", author="t", params={"minutes": 1})
    project.finish_job(job.id, result={"model": model.id})
    project.add_user("ann", "a" * 64)
    project.save_draft("c0", "ann", truth, parent=1)
    project.record_ranking("ann", {"strategy": "entropy"}, [("c2", 0.75), ("c1", None)])
    project.add_patches([NewPatch("c0_p1", "c0", (0, 0, 0), (8, 8, 8), 1, 1, (1,), "b" * 64, "c" * 64,
                                  np.eye(4), "ann", {"centre": [4, 4, 4]})])  # fmt: skip
    project.read_image("c1")  # its hash cached (file_hashes)
    project.engine.dispose()
    return project


def _records(project: Project) -> dict[str, list]:
    """What a user reads, engine-neutral (no datetimes: SQLite returns them naive)."""
    return {
        "cases": [
            (c.case_id, c.shape, c.affine.tolist(), [i.sha256 for i in c.images])
            for c in project.list_cases()
        ],
        "versions": [
            (v.id, v.case_id, v.object_key, v.source, v.classes, v.parent_id, v.author, v.params)
            for v in project.list_label_versions()
        ],
        "models": [(m.id, m.status, m.metrics, m.train_case_ids) for m in project.list_models()],
        "predictions": [(p.id, p.case_id, p.model_id, p.mean_entropy) for p in project.list_predictions()],
        "evaluations": [(e.id, e.case_id, e.metrics) for e in project.list_evaluations()],
        "rounds": [(r.number, r.mode) for r in project.list_rounds()],
        "jobs": [(j.id, j.kind, j.status, j.result) for j in project.list_jobs()],
        "users": [(u.name, u.created_at.replace(tzinfo=None)) for u in project.list_users()],
        "drafts": [(d.case_id, d.author, d.object_key, d.parent) for d in project.list_drafts()],
        "events": [
            (e.id, e.kind, e.actor, e.detail, e.at.replace(tzinfo=None)) for e in project.list_events()
        ],
    }


def _data_tables():
    return [table for table in metadata.sorted_tables if table is not schema_info]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_migrate_copies_everything_and_the_project_uses_postgresql(project, postgres_url, run_cli):
    before, files = _records(project), snapshot_project(project.root)
    result = run_cli("migrate", project.root, "--to", postgres_url)
    assert result.code == 0, result.err
    assert "verified" in result.out and "left as it was" in result.out and "[database] url" in result.out
    assert f'url = "{postgres_url}"' in (project.root / "segloop.toml").read_text()
    assert snapshot_project(project.root) == files  # the SQLite file and the objects are untouched
    with connect(postgres_url).connect() as connection:
        empty = [
            t.name
            for t in _data_tables()
            if not connection.execute(select(func.count()).select_from(t)).scalar()
        ]
    assert empty == []  # the fixture wrote a row in every table, and every table was copied
    opened = Project.open(project.root)
    assert opened.engine.dialect.name == "postgresql" and _records(opened) == before
    assert opened.read_prediction("c2").probabilities.shape == (5, *SHAPE)
    assert opened.read_draft(opened.list_drafts()[0]).shape == SHAPE
    checked = run_cli("fsck", project.root)
    assert checked.code == 0 and "no problems" in checked.out and "postgresql" in checked.out, checked.out
    assert run_cli("status", project.root).code == 0
    # a new correction: ids continue past the copied ones, and a stale parent is refused
    head = opened.find_head("c1")
    truth = make_ct_phantom(SHAPE, seed=1).labels.array
    added = store_tool_labels(opened, opened.get_case("c1"), np.where(truth == 2, 0, truth), source="revised",
                              classes=PHANTOM_CLASSES, tool="slicer", params={}, author="bob")  # fmt: skip
    assert added.id == max(v[0] for v in before["versions"]) + 1 and added.id > head
    stale = opened.list_label_versions("c1")[0]
    with pytest.raises(ConflictError, match="changed while this was being saved"):
        opened.add_label_version("c1", stale_label(stale), expected_head=head)
    # SEGLOOP_DATABASE_URL still overrides the recorded database
    sqlite_url = f"sqlite:///{project.root / 'segloop.db'}"
    assert Project.open(project.root, database_url=sqlite_url).find_head("c1") == head


def stale_label(version):
    """A correction of ``version`` by someone who read the case before the newest version."""
    from segloop.store import NewLabel

    return NewLabel(object_key=version.object_key, source="revised", classes=version.classes,
                    voxel_counts=version.voxel_counts, author="eve", tool="slicer", params={},
                    parent_id=version.id)  # fmt: skip


def test_another_user_must_trust_the_recorded_database_first(
    project, postgres_url, run_cli, tmp_path, monkeypatch
):
    assert run_cli("migrate", project.root, "--to", postgres_url).code == 0
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "someone-else"))
    with pytest.raises(ConflictError, match="moved to .* not trusted for this folder: run `segloop migrate"):
        Project.open(project.root)  # never the SQLite file left behind, never the file's URL unasked
    result = run_cli("migrate", project.root, "--to", postgres_url)
    assert result.code == 0 and "already" in result.out, result.err
    assert trusted_databases_path().is_file()
    assert Project.open(project.root).engine.dialect.name == "postgresql"


def _schema_older(project, _url):
    with connect(f"sqlite:///{project.root / 'segloop.db'}").begin() as connection:
        connection.execute(schema_info.update().values(version=SCHEMA_VERSION - 1))
    return f"schema {SCHEMA_VERSION - 1}, this segloop {SCHEMA_VERSION}: run `segloop status"


def _destination_taken(project, url):
    other = make_phantom_project(project.root.parent / "other", 1, SHAPE)
    assert copy_module.migrate_project(other.root, url).rows
    return "holds a segloop project already"


REFUSALS = {
    "password in the URL": (lambda p, u: "~/.pgpass or PGPASSWORD", lambda u: make_url(u).set(password="pw")),
    "unreachable server": (lambda p, u: "cannot be read", lambda u: make_url(u).set(port=_free_port())),
    "missing database": (
        lambda p, u: "does not exist",
        lambda u: make_url(u).set(database="segloop_nothing"),
    ),
    "not PostgreSQL": (lambda p, u: "PostgreSQL database only", lambda u: make_url(f"sqlite:///{u[-8:]}.db")),
    "older schema": (_schema_older, lambda u: make_url(u)),
    "destination not empty": (_destination_taken, lambda u: make_url(u)),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_migrate_refuses_with_one_line_and_changes_nothing(project, postgres_url, run_cli, refusal):
    prepare, destination = REFUSALS[refusal]
    says = prepare(project, postgres_url)
    url = destination(postgres_url).render_as_string(hide_password=False)
    config, files = (project.root / "segloop.toml").read_text(), snapshot_project(project.root)
    result = run_cli("migrate", project.root, "--to", url)
    assert result.code == 1 and result.err.count("\n") == 1 and says in result.err, result.err
    assert "pw@" not in result.err
    assert (project.root / "segloop.toml").read_text() == config and snapshot_project(project.root) == files


def test_a_copy_that_differs_is_an_error_and_is_left_for_inspection(
    project, postgres_url, run_cli, monkeypatch
):
    copy_rows = copy_module._copy_rows

    def loses_an_event(source, destination):
        copied = copy_rows(source, destination)
        destination.execute(events.delete().where(events.c.id == 1))
        return copied

    monkeypatch.setattr(copy_module, "_copy_rows", loses_an_event)
    config = (project.root / "segloop.toml").read_text()
    result = run_cli("migrate", project.root, "--to", postgres_url)
    assert result.code == 1 and "copy of table events" in result.err and "left for inspection" in result.err
    assert (project.root / "segloop.toml").read_text() == config
    with connect(postgres_url).connect() as connection:
        assert connection.execute(select(func.count()).select_from(cases)).scalar() == 3
        assert connection.execute(select(events.c.id).where(events.c.id == 1)).first() is None


def test_an_empty_postgresql_database_named_for_a_sqlite_project_says_how_to_migrate(
    project, postgres_url, run_cli, monkeypatch
):
    monkeypatch.setenv(DATABASE_URL_VARIABLE, postgres_url)
    result = run_cli("status", project.root)
    assert result.code == 1 and "holds no segloop project" in result.err, result.err
    assert f"segloop migrate {project.root} --to URL" in result.err and result.err.count("\n") == 1


def test_a_server_that_goes_away_mid_command_is_one_line():
    import psycopg
    from sqlalchemy.exc import OperationalError

    from segloop.cli.main import environment_failure

    gone = psycopg.OperationalError("server closed the connection\n\tThis probably means")
    line = environment_failure(OperationalError("SELECT 1", {}, gone))
    assert line == "the project database cannot be used (server closed the connection This probably means)"
