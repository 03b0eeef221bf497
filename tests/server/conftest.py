"""Fixtures of the server's API tests: a phantom project served through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")

from fastapi.testclient import TestClient

from segloop.server import Settings, create_app
from tests.conftest import make_phantom_project


@pytest.fixture
def make_client(tmp_path: Path) -> Callable[..., TestClient]:
    """Build a client of a new phantom project: ``make_client(count=3, labeled=(0,), **settings)``."""

    def make(
        count: int = 3, shape: tuple[int, int, int] = (24, 24, 12), labeled=(0,), **settings
    ) -> TestClient:
        project = make_phantom_project(tmp_path, count, shape, labeled=labeled)
        return TestClient(create_app(project, Settings(**settings)))

    return make


@pytest.fixture
def client(make_client) -> TestClient:
    """A client of a project of three 24×24×12 phantoms, ``c0`` labelled ``original``."""
    return make_client()
