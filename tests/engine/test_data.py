from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine.data import (
    Case,
    PatchSampler,
    compute_intensity_parameters,
    normalize_intensity,
    prepare_case,
    resample_image,
    resample_labels,
    resolve_patch_size,
    resolve_slice_axis,
    split_cases,
)
from segloop.errors import GeometryMismatchError, LabelValueError, SegloopError
from tests.engine.conftest import N_CLASSES, tiny_config

IGNORE = N_CLASSES


def test_prepared_case_keeps_the_stored_image_without_a_float_copy(cases):
    prepared = prepare_case(cases[0], tiny_config(), N_CLASSES)
    assert prepared.case.image is cases[0].image
    assert prepared.case.image.dtype == np.int16
    assert prepared.case.labels.dtype == np.uint8
    assert set(prepared.foreground) == {1, 2, 3, 4}


def test_ct_window_maps_level_minus_half_width_to_0_and_plus_half_width_to_1():
    params = compute_intensity_parameters(np.zeros((2, 2, 2), np.int16), tiny_config(window=(400.0, 40.0)))
    batch = torch.tensor([-1000.0, -160.0, 40.0, 240.0, 3000.0]).reshape(1, 1, 5)
    normalize_intensity(batch, params.low, params.high, params.shift, params.scale)
    assert torch.allclose(batch.flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_mr_zscore_and_microscopy_percentiles(rng):
    image = rng.normal(100.0, 15.0, (20, 20, 20)).astype(np.float32)
    z = compute_intensity_parameters(image, tiny_config(modality="MR"))
    values = normalize_intensity(torch.from_numpy(image.copy())[None, None], z.low, z.high, z.shift, z.scale)
    assert abs(float(values.mean())) < 1e-3 and abs(float(values.std()) - 1.0) < 1e-2
    p = compute_intensity_parameters(image, tiny_config(modality="EM", percentiles=(1.0, 99.0)))
    values = normalize_intensity(torch.from_numpy(image.copy())[None, None], p.low, p.high, p.shift, p.scale)
    assert float(values.min()) == 0.0 and float(values.max()) == pytest.approx(1.0)


def test_resampling_changes_the_grid_and_keeps_dtypes():
    image = np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4)
    resampled = resample_image(image, (1.0, 1.0, 2.0), (2.0, 2.0, 2.0))
    assert resampled.shape == (4, 4, 4) and resampled.dtype == np.int16
    labels = np.zeros((8, 8, 4), np.uint8)
    labels[:4] = 2
    back = resample_labels(resample_labels(labels, (4, 4, 4)), (8, 8, 4))
    assert back.dtype == np.uint8 and np.array_equal(back, labels)


def test_prepare_case_resamples_to_the_target_spacing(cases):
    prepared = prepare_case(cases[0], tiny_config(target_spacing=(2.0, 2.0, 3.0)), N_CLASSES)
    assert prepared.case.image.shape == (24, 24, 16)  # 32 x 1.5 mm / 2 mm
    assert prepared.case.spacing == (2.0, 2.0, 3.0)


def test_labels_outside_the_schema_are_rejected(cases):
    bad = cases[0].labels.copy()
    bad[0, 0, 0] = N_CLASSES + 1
    with pytest.raises(LabelValueError, match="expected 0..4"):
        prepare_case(Case("bad", cases[0].image, bad, cases[0].spacing), tiny_config(), N_CLASSES)
    with pytest.raises(GeometryMismatchError):
        Case("x", cases[0].image, bad[:-1], cases[0].spacing)


def test_slice_axis_defaults_to_the_largest_spacing_and_patch_to_the_whole_slice():
    assert resolve_slice_axis(tiny_config(), [(0.8, 0.8, 3.0), (0.7, 0.7, 2.5)]) == 2
    assert resolve_slice_axis(tiny_config(), [(3.0, 1.0, 1.0)]) == 0
    assert resolve_slice_axis(tiny_config(slice_axis=1), [(3.0, 1.0, 1.0)]) == 1
    assert resolve_patch_size(tiny_config(), [(30, 40, 10), (33, 20, 10)], 2, 4) == (36, 40)


def _sampler(cases, seed=0, **changes):
    config = tiny_config(**changes)
    prepared = [prepare_case(c, config, N_CLASSES) for c in cases]
    return PatchSampler(prepared, config, n_classes=N_CLASSES, patch_size=(32, 32), slice_axis=2, seed=seed)


def test_sampler_is_deterministic_given_the_seed(cases):
    first = _sampler(cases, seed=3).sample()
    again = _sampler(cases, seed=3).sample()
    other = _sampler(cases, seed=4).sample()
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_sampler_state_restores_the_stream(cases):
    sampler = _sampler(cases)
    sampler.sample()
    state = sampler.state
    expected = sampler.sample()
    sampler.set_state(state)
    assert torch.equal(sampler.sample()[1], expected[1])


def test_sampler_batches_have_the_expected_shapes_and_dtypes(cases):
    images, labels = _sampler(cases, batch_size=3).sample()
    assert images.shape == (3, 1, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (3, 32, 32) and labels.dtype == torch.int64


def test_sampler_draws_only_annotated_slices_of_sparse_labels(cases):
    sparse = []
    for case in cases:
        labels = np.full_like(case.labels, IGNORE)
        labels[:, :, 8] = case.labels[:, :, 8]  # one annotated axial slice per case
        sparse.append(Case(case.case_id, case.image, labels, case.spacing))
    sampler = _sampler(sparse, foreground_ratio=0.0, batch_size=8)
    for _ in range(5):
        _, labels = sampler.sample()
        assert torch.all((labels != IGNORE).flatten(1).any(1))


def test_foreground_ratio_one_centres_every_sample_on_foreground(cases):
    config = tiny_config(foreground_ratio=1.0, batch_size=8)
    prepared = [prepare_case(c, config, N_CLASSES) for c in cases]
    sampler = PatchSampler(prepared, config, n_classes=N_CLASSES, patch_size=(8, 8), slice_axis=2, seed=0)
    for _ in range(5):
        _, labels = sampler.sample()
        foreground = (labels > 0) & (labels < IGNORE)
        assert torch.all(foreground.flatten(1).any(1))


def test_three_dimensional_patches_are_padded_with_ignore(cases):
    config = tiny_config(dims=3, patch_size=(40, 40, 16))
    prepared = [prepare_case(c, config, N_CLASSES) for c in cases]
    sampler = PatchSampler(
        prepared, config, n_classes=N_CLASSES, patch_size=(40, 40, 16), slice_axis=2, seed=0
    )
    images, labels = sampler.sample()
    assert images.shape == (2, 1, 40, 40, 16)
    assert int((labels == IGNORE).sum()) == 2 * (40 * 40 - 32 * 32) * 16


def test_sampler_without_annotated_voxels_fails_clearly(cases):
    case = cases[0]
    empty = Case("empty", case.image, np.full_like(case.labels, IGNORE), case.spacing)
    with pytest.raises(SegloopError, match="no training case has an annotated voxel"):
        _sampler([empty])


def test_split_cases_by_fraction_is_seeded_and_disjoint():
    ids = [f"c{i}" for i in range(10)]
    train, val = split_cases(ids, tiny_config(validation_fraction=0.2))
    assert len(val) == 2 and set(train) | set(val) == set(ids) and not set(train) & set(val)
    assert split_cases(ids, tiny_config(validation_fraction=0.2)) == (train, val)
    with pytest.raises(SegloopError, match="not among"):
        split_cases(ids, tiny_config(validation_case_ids=("zz",)))
