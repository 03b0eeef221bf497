"""Shared fixtures: the real data folder, synthetic phantoms, projects and an in-process CLI."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from collections.abc import Callable, Sequence
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
