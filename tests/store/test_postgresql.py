"""Issue 17: the store on PostgreSQL — what differs from SQLite (the rest of tests/store runs on both).

Writers queue as with SQLite's ``BEGIN IMMEDIATE`` (an advisory lock), sizes beyond 32 bits fit,
and a server that cannot be used is one line naming the database, never its password.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from segloop.errors import NotFoundError, StoreIntegrityError
from segloop.loop.cases import init_project
from segloop.store import DATABASE_URL_VARIABLE, ImageRecord, JobStatus, NewCase, Project
from segloop.store.database import events, write_transaction
from segloop.synthetic import PHANTOM_CLASSES


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_image_beyond_2_gib_keeps_its_size(tmp_path):
    """``case_images.size_bytes`` is a 64-bit column (PostgreSQL's INTEGER stops at 2 GiB)."""
    project = init_project(tmp_path / "p", PHANTOM_CLASSES)
    image = ImageRecord(channel=0, path=str(tmp_path / "big.nii"), size_bytes=5 << 30, sha256="0" * 64)
    case = NewCase("big", (2, 2, 2), np.eye(4), "int16", (image,), added_by="t")
    project.add_cases([case])
    assert Project.open(project.root).get_case("big").images[0].size_bytes == 5 << 30


def _count_then_insert(project: Project) -> None:
    """A check and the write it guards: record how many events there were before this one."""
    with write_transaction(project.engine) as connection:
        seen = connection.execute(select(func.count()).select_from(events)).scalar()
        connection.execute(
            events.insert().values(at=func.now(), kind="probe", actor="t", detail={"seen": seen})
        )


@pytest.mark.postgresql_only
def test_a_second_writer_waits_and_then_sees_the_first(tmp_path):
    project = init_project(tmp_path / "p", PHANTOM_CLASSES)
    other = Project.open(project.root)
    with write_transaction(project.engine) as first:
        first.execute(events.insert().values(at=func.now(), kind="probe", actor="t", detail={"seen": 0}))
        second = threading.Thread(target=_count_then_insert, args=(other,))
        second.start()
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%pg_advisory_xact_lock%' AND pid <> pg_backend_pid()"
        )
        with project.engine.connect() as observer:
            while not observer.execute(waiting).scalar():  # until the second writer queues
                assert second.is_alive()
                time.sleep(0.01)
    second.join(timeout=60)
    with project.engine.connect() as connection:  # a writer never waits forever (SQLite: busy timeout)
        assert connection.execute(text("SHOW lock_timeout")).scalar() == "1min"
    seen = sorted(event.detail["seen"] for event in project.list_events("probe"))
    assert seen == [0, 1]  # before (READ COMMITTED alone): [0, 0], the second check missed the first write


@pytest.mark.postgresql_only
@pytest.mark.parametrize("problem", ["unreachable", "missing database", "wrong role"])
def test_a_server_that_cannot_be_used_is_one_line_without_the_password(tmp_path, problem):
    project = init_project(tmp_path / "p", PHANTOM_CLASSES)
    given = make_url(os.environ[DATABASE_URL_VARIABLE]).set(password="s3cret-word")
    url = {
        "unreachable": given.set(host="127.0.0.1", port=_free_port()),
        "missing database": given.set(database="segloop_no_such_database"),
        "wrong role": given.set(username="nobody_here"),
    }[problem].render_as_string(hide_password=False)
    with pytest.raises(StoreIntegrityError, match="cannot be read .*check that it is reachable") as caught:
        Project.open(project.root, database_url=url)
    message = str(caught.value)
    assert "\n" not in message and "s3cret-word" not in message and "***" in message
    with pytest.raises(StoreIntegrityError):
        Project.create(tmp_path / "new", project.config, database_url=url)
    assert not (tmp_path / "new").exists()


def test_a_bare_postgresql_url_means_psycopg(tmp_path):
    from segloop.store.database import parse_database_url

    assert parse_database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert parse_database_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


def test_a_failed_job_keeps_the_start_of_a_very_long_error(tmp_path):
    """PostgreSQL enforces String lengths (SQLite does not): the store cuts ``jobs.error`` to its column."""
    project = init_project(tmp_path / "p", PHANTOM_CLASSES)
    job = project.start_job("train", author="t")
    error = "no labelled case among " + ", ".join(f"case_{n}" for n in range(2000))
    project.finish_job(job.id, status=JobStatus.FAILED, error=error)
    stored = project.get_job(job.id).error
    assert len(stored) == 4096 and error.startswith(stored)


def test_an_id_beyond_the_id_columns_names_no_row(tmp_path):
    """Ids from requests: PostgreSQL refuses a 64-bit number compared with a 32-bit id column."""
    project = init_project(tmp_path / "p", PHANTOM_CLASSES)
    for number in (2**31, 2**40, 2**63 - 1, 2**64):
        for find in (project.get_label_version, project.get_job, project.get_model):
            with pytest.raises(NotFoundError):
                find(number)  # before, on PostgreSQL: DataError (integer out of range)
