"""Shared fixtures: the real data folder, synthetic phantoms, projects and an in-process CLI."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
OPENKBP_CLASSES = "brainstem,spinal_cord,parotid_r,parotid_l,esophagus,larynx,mandible"


def shared_dataset(name: str) -> Path:
    """``../shared/data/<name>`` beside the checkout, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (it lies beside the checkout in CI)")
    return path


@pytest.fixture
def openkbp() -> Path:
    """The OpenKBP head-and-neck CT folder (imagesTr, labelsTr, cases.tsv)."""
    return shared_dataset("openkbp-headneck-ct")


@pytest.fixture
def totalseg() -> Path:
    """The TotalSegmentator example folder (NIfTI CT/MR and a DICOM series)."""
    return shared_dataset("totalsegmentator-examples")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys, monkeypatch) -> Callable[..., CliResult]:
    """Run ``segloop ARGS`` in-process; returns exit code, stdout and stderr."""
    from segloop.cli.main import main

    def run(*args: object) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["segloop", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def snapshot_project(root: Path) -> tuple[str, tuple[str, ...]]:
    """A fingerprint of a project's database rows and object files (to prove nothing changed)."""
    connection = sqlite3.connect(root / "segloop.db")
    try:
        dump = "\n".join(connection.iterdump())
    finally:
        connection.close()
    objects = tuple(sorted(str(p.relative_to(root)) for p in (root / "objects").rglob("*")))
    images = (
        tuple(sorted(str(p.relative_to(root)) for p in (root / "images").rglob("*")))
        if (root / "images").exists()
        else ()
    )
    return hashlib.sha256(dump.encode()).hexdigest(), objects + images


def make_phantom_project(
    tmp_path: Path,
    count: int,
    shape: tuple[int, int, int],
    *,
    labeled: Sequence[int] = (),
    name: str = "p",
    source: str = "original",
):
    """A project of ``count`` CT phantoms ``c0..`` (images in ``tmp_path/img``, referenced in place).

    Args:
        tmp_path: the test's folder.
        count: how many phantoms (seeds 0..count-1).
        shape: ``(I, J, K)`` of each.
        labeled: the indices whose true labels are added as versions (of ``source``).
        name: the project folder's name under ``tmp_path``.
        source: the provenance of those labels (``pseudo`` for a prediction to correct).
    """
    from segloop.io import write_volume
    from segloop.loop.cases import import_cases, init_project
    from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

    project = init_project(tmp_path / name, PHANTOM_CLASSES)
    images = []
    for index in range(count):
        phantom = make_ct_phantom(shape, seed=index)
        images.append(write_volume(phantom.image, tmp_path / "img" / f"c{index}_0000.nii.gz"))
        if index in labeled:
            write_volume(phantom.labels, tmp_path / "lab" / f"c{index}.nii.gz")
    import_cases(project, images, labels_dir=tmp_path / "lab" if labeled else None, source=source)
    return project


def liver_scribbles(truth: np.ndarray, background: int, liver: int = 1) -> np.ndarray:
    """Grow seeds on a phantom: the liver's eroded core on 3 axial slices, a background shell around it."""
    from scipy import ndimage

    seeds = np.zeros_like(truth)
    mask = truth == liver
    core = ndimage.binary_erosion(mask, iterations=2)
    slices = np.flatnonzero(core.any(axis=(0, 1)))
    for k in slices[[len(slices) // 4, len(slices) // 2, 3 * len(slices) // 4]]:
        seeds[:, :, k][core[:, :, k]] = liver
    seeds[ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_dilation(mask)] = background
    return seeds


# -- PostgreSQL: a throwaway cluster on loopback for the store's tests on both engines ---------------
#: A server the tests may use instead of their own cluster: ``postgresql+psycopg://user@host:port/db``
#: of a role that may create databases (each test gets a fresh one there, dropped afterwards).
TEST_POSTGRES_VARIABLE = "SEGLOOP_TEST_POSTGRES_URL"
#: ``1`` (set by ``.ci/run``): a missing PostgreSQL fails the PostgreSQL tests instead of skipping them.
REQUIRE_POSTGRES_VARIABLE = "SEGLOOP_REQUIRE_POSTGRES"


def postgres_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (``pg_config --bindir``, else the newest Debian one)."""
    import shutil
    import subprocess

    candidates = []
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(found.stdout.strip()))
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)[::-1]
    on_path = shutil.which("initdb")
    candidates += [Path(on_path).resolve().parent] if on_path else []
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Cluster:
    """A PostgreSQL cluster in a temporary folder, run by ``postgres`` when this process is root.

    The folder names the test process that owns it (``owner.pid``): a cluster whose process died
    without its teardown (a killed xdist worker, ``kill -9``) is stopped and removed by the next one.
    """

    PREFIX = "segloop-pg-"

    def __init__(self, bindir: Path, folder: Path | None = None) -> None:
        import os
        import tempfile

        self.bindir = bindir
        root = os.geteuid() == 0
        # as root: in /tmp, which the postgres user can reach (a $TMPDIR under /root it could not)
        self.base = Path("/tmp" if root else tempfile.gettempdir())
        self.as_owner = ["runuser", "-u", "postgres", "--"] if root else []  # postgres refuses root
        self.port = 0
        if folder is not None:
            self.folder = folder
            return
        self.folder = Path(tempfile.mkdtemp(prefix=self.PREFIX, dir=self.base))
        (self.folder / "owner.pid").write_text(str(os.getpid()))
        if root:
            import shutil

            shutil.chown(self.folder, "postgres", "postgres")

    def remove_orphans(self) -> None:
        """Stop and remove the clusters of test processes that are gone."""
        import os

        for folder in self.base.glob(f"{self.PREFIX}*"):
            try:
                os.kill(int((folder / "owner.pid").read_text()), 0)
                continue  # its process runs (or another user's: PermissionError)
            except ProcessLookupError:
                pass  # gone
            except (OSError, ValueError):
                continue  # no owner recorded: not ours to judge
            orphan = _Cluster(self.bindir, folder)
            orphan.port = 1  # stop it if it runs
            orphan.stop()

    def _run(self, *args: object) -> None:
        import subprocess

        command = [*self.as_owner, *map(str, args)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode:
            log = self.folder / "log"
            detail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            msg = f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}\n{detail}"
            raise RuntimeError(msg)

    def start(self) -> str:
        """initdb and start on a free port of 127.0.0.1 (three tries: a port may be taken meanwhile)."""
        data = self.folder / "data"
        self._run(self.bindir / "initdb", "-D", data, "-U", "segloop", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")  # fmt: skip
        for attempt in range(3):
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                self._run(self.bindir / "pg_ctl", "-D", data, "-l", self.folder / "log", "-w", "-t", "60",
                          "-o", options, "start")  # fmt: skip
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        return f"postgresql+psycopg://segloop@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        import shutil

        if self.port:
            with contextlib.suppress(RuntimeError):  # not running
                self._run(self.bindir / "pg_ctl", "-D", self.folder / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server's URL (its maintenance database): ``SEGLOOP_TEST_POSTGRES_URL`` or a cluster
    of this session (each xdist worker starts its own), removed at the end; skips when PostgreSQL is
    not installed, or fails when ``SEGLOOP_REQUIRE_POSTGRES=1``."""
    import os

    given = os.environ.get(TEST_POSTGRES_VARIABLE, "")
    if given:
        yield given
        return
    bindir = postgres_bindir()
    if bindir is None:
        reason = "PostgreSQL is not installed (no initdb/pg_ctl: `make setup` installs Debian's postgresql)"
        if os.environ.get(REQUIRE_POSTGRES_VARIABLE) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_POSTGRES_VARIABLE}=1 requires it", pytrace=False)
        pytest.skip(reason)
    cluster = _Cluster(bindir)
    cluster.remove_orphans()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@contextlib.contextmanager
def _database(server_url: str, prefix: str, template: str = "") -> Iterator[str]:
    """A new database on the server of ``server_url`` (a copy of ``template``); its URL.

    Dropped afterwards, on a throwaway cluster too (a database is ~7 MB: hundreds of tests would
    hold gigabytes of /tmp until the session ends).
    """
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    yield server.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a fresh, empty database on `postgres_server`."""
    with _database(postgres_server, "segloop_test") as url:
        yield url


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str) -> Iterator[str]:
    """The name of a database holding the schema of an empty project, made once per session."""
    from sqlalchemy.engine import make_url

    from segloop.store.database import connect, migrate

    with _database(postgres_server, "segloop_template") as url:
        engine = connect(url)
        migrate(engine)
        engine.dispose()  # a template must have no connection when it is copied
        yield str(make_url(url).database)


@pytest.fixture
def postgres_project_url(postgres_server: str, postgres_template: str) -> Iterator[str]:
    """The URL of a fresh database holding the schema of an empty project (what `Project.create`
    makes of an empty one, copied from `postgres_template`: 0.07 s instead of 0.3 s a test)."""
    with _database(postgres_server, "segloop_test", template=postgres_template) as url:
        yield url
