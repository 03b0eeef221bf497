"""The store's tests run on both engines: each test of this folder once on SQLite (the project's
``segloop.db``) and once on PostgreSQL (a fresh database of the session's cluster, named by
``SEGLOOP_DATABASE_URL`` as a user would), except those marked ``sqlite_only`` (tests of the SQLite
file itself: missing, corrupt, read-only, its WAL) or ``postgresql_only``.
"""

from __future__ import annotations

import pytest

from segloop.store import DATABASE_URL_VARIABLE

ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_engine" in metafunc.fixturenames:
        marked = {name for name in ENGINES if metafunc.definition.get_closest_marker(f"{name}_only")}
        metafunc.parametrize("store_engine", sorted(marked) or ENGINES, indirect=True)


@pytest.fixture(autouse=True)
def store_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine of this run of the test; on PostgreSQL every project of the test lives in one fresh
    database (``SEGLOOP_DATABASE_URL``; `Project.create` and `Project.open` read it)."""
    if request.param == "postgresql":
        monkeypatch.setenv(DATABASE_URL_VARIABLE, request.getfixturevalue("postgres_project_url"))
    else:
        monkeypatch.delenv(DATABASE_URL_VARIABLE, raising=False)
    return request.param
