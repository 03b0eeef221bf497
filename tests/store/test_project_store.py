"""The project store: config, schema version, atomic objects, and two writers at once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from segloop.errors import ConflictError, CorruptFileError, NotFoundError, SegloopError
from segloop.io import write_volume
from segloop.loop.cases import init_project
from segloop.store import NewLabel, Project
from segloop.store.config import read_config
from segloop.store.database import SCHEMA_VERSION, schema_info
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import make_phantom_project


@pytest.mark.sqlite_only  # the SQLite file's WAL mode
def test_init_writes_config_and_a_versioned_wal_database(tmp_path):
    project = init_project(tmp_path / "p", ["a", "b"], modality="MR")
    config = read_config(tmp_path / "p" / "segloop.toml")
    assert config.schema.names == ("a", "b") and config.modality == "MR"
    with project.engine.connect() as connection:
        assert connection.execute(select(schema_info.c.version)).scalar() == SCHEMA_VERSION
    connection = sqlite3.connect(tmp_path / "p" / "segloop.db")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()
    with pytest.raises(ConflictError, match="already a segloop project"):
        init_project(tmp_path / "p", ["a"])


def test_open_explains_what_is_missing_or_wrong(tmp_path):
    with pytest.raises(NotFoundError, match="not a segloop project: expected .*segloop.toml"):
        Project.open(tmp_path)
    (tmp_path / "segloop.toml").write_text("config_version = 1\n[project\n")
    with pytest.raises(CorruptFileError, match="not valid TOML"):
        Project.open(tmp_path)
    with pytest.raises(SegloopError, match="unknown modality 'XR'"):
        init_project(tmp_path / "q", ["a"], modality="XR")


def test_a_newer_database_is_refused(tmp_path):
    project = init_project(tmp_path / "p", ["a"])
    with project.engine.begin() as connection:
        connection.execute(schema_info.update().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(SegloopError, match="newer than this segloop"):
        Project.open(tmp_path / "p")


def test_label_versions_need_a_published_object_and_known_classes(tmp_path):
    project = init_project(tmp_path / "p", ["a"])
    label = NewLabel("0" * 64, "pseudo", ("a",), {}, "me", "test")
    with pytest.raises(SegloopError, match="no case 'x'"):
        project.add_label_version("x", label)
    phantoms = make_phantom_project(tmp_path, 1, (4, 4, 2), name="q")
    with pytest.raises(ConflictError, match="is not stored"):
        phantoms.add_label_version("c0", label)
    assert phantoms.list_label_versions("c0") == []


def test_staged_objects_vanish_when_the_batch_fails(tmp_path):
    project = init_project(tmp_path / "p", ["a"])
    with pytest.raises(RuntimeError), project.objects.stage() as staged:
        staged.put(np.ones((2, 2, 2), np.uint8), np.eye(4))
        raise RuntimeError
    assert [p.name for p in (project.root / "objects").rglob("*")] == []
    with project.objects.stage() as staged:
        key = staged.put(np.ones((2, 2, 2), np.uint8), np.eye(4))
    assert project.objects.has(key)
    assert [p.name for p in (project.root / "objects").iterdir()] == [key[:2]]


@pytest.mark.slow
def test_two_add_processes_at_once_lose_nothing(tmp_path, store_engine):
    init_project(tmp_path / "p", PHANTOM_CLASSES)
    batches = []
    for batch in range(2):
        paths = []
        for index in range(6):
            phantom = make_ct_phantom((24, 24, 12), seed=10 * batch + index)
            name = f"b{batch}_{index}"
            paths.append(write_volume(phantom.image, tmp_path / f"data{batch}" / f"{name}_0000.nii.gz"))
            write_volume(phantom.labels, tmp_path / f"labels{batch}" / f"{name}.nii.gz")
        batches.append(paths)
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "segloop.cli.main",
                "add",
                str(tmp_path / "p"),
                *map(str, paths),
                "--labels-dir",
                str(tmp_path / f"labels{batch}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
        )
        for batch, paths in enumerate(batches)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    project = Project.open(tmp_path / "p")
    assert sorted(project.list_case_ids()) == sorted(f"b{b}_{i}" for b in range(2) for i in range(6))
    versions = project.list_label_versions()
    assert len(versions) == 12
    for version in versions:
        assert project.read_labels(version).any()
    if store_engine == "sqlite":
        connection = sqlite3.connect(tmp_path / "p" / "segloop.db")
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        connection.close()
    # the same batch twice at once: exactly one wins, the other adds nothing
    extra = [
        write_volume(make_ct_phantom((24, 24, 12), seed=99).image, tmp_path / "x" / f"dup{i}.nii.gz")
        for i in range(3)
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "segloop.cli.main", "add", str(tmp_path / "p"), *map(str, extra)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert sorted(p.returncode for p in processes) == [0, 1], outputs
    assert len(Project.open(tmp_path / "p").list_case_ids()) == 15
