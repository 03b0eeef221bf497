"""Every consumer of a case's image (training, tools, reports) reads it through `read_case_image`,
which refuses what is not one finite number per voxel: a project made before imports checked
images may hold NaN or RGB voxels, and training must not turn them into a NaN loss."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.core.volume import Volume
from segloop.errors import InvalidInputError
from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.tools import read_case_image
from segloop.loop.training import collect_labeled_cases
from segloop.store import Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A labelled phantom whose stored image reads back with one NaN voxel."""
    project = init_project(tmp_path / "p", PHANTOM_CLASSES)
    phantom = make_ct_phantom((16, 16, 8), seed=0)
    image = write_volume(phantom.image, tmp_path / "c0_0000.nii.gz")
    write_volume(phantom.labels, tmp_path / "lab" / "c0.nii.gz")
    import_cases(project, [image], labels_dir=tmp_path / "lab")
    read = Project.read_image

    def with_nan(self, case_id, channel=0):
        volume = read(self, case_id, channel)
        array = volume.array.astype(np.float32)
        array[1, 2, 3] = np.nan
        return Volume(array, volume.affine)

    monkeypatch.setattr(Project, "read_image", with_nan)
    return project


def test_read_case_image_refuses_non_finite_voxels(project):
    expected = r"image of case 'c0': expected finite voxel values; got 1 NaN"
    with pytest.raises(InvalidInputError, match=expected):
        read_case_image(project, project.get_case("c0"))


def test_training_refuses_the_case_before_it_starts(project):
    with pytest.raises(InvalidInputError, match="expected finite voxel values"):
        collect_labeled_cases(project)
