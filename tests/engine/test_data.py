from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine import data
from segloop.engine.data import (
    Case,
    CompressedVolume,
    PatchSampler,
    compress_case,
    compute_intensity_parameters,
    normalize_intensity,
    prepare_case,
    resample_image,
    resample_labels,
    resolve_patch_size,
    resolve_slice_axis,
    split_cases,
)
from segloop.engine.train import train
from segloop.errors import GeometryMismatchError, LabelValueError, SegloopError
from tests.engine.conftest import N_CLASSES, phantom_case, tiny_config

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
    assert resolve_patch_size(tiny_config(), [(30, 40, 10), (33, 20, 10)], 2, 4) == (24, 28)  # 5/8 of 33, 40


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


# Every int and slice form the sampler and validation use, on each axis: negative ints, slices
# running past the end or starting before it, steps, reversed and empty slices, partial keys.
KEYS = [
    (0,),
    (-1,),
    (slice(None), 3),
    (slice(2, 100), slice(-4, None), 5),
    (slice(-100, 3), slice(1, 6), slice(4, 40)),
    (slice(None, None, 2), -2, slice(None)),
    (slice(None, None, -1), slice(7, 1, -2), 1),
    (slice(5, 2), slice(None), slice(None)),
    (-7, slice(0, 0), -1),
    (slice(6, 7), slice(3, 4), slice(8, 9)),
    (3, 2, 1),
    (-1, -1, -1),
]


@pytest.mark.parametrize("band_bytes", [8, 64 * 2**10])  # several row bands per plane, and one
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("dtype", ["<i2", ">i2", "uint8", "float32"])
def test_compressed_volume_indexing_matches_numpy(monkeypatch, rng, band_bytes, axis, dtype):
    monkeypatch.setattr(data, "_BAND_BYTES", band_bytes)
    array = rng.integers(-1000, 1000, (7, 9, 10)).astype(dtype)
    volume = CompressedVolume(array, axis)
    assert (volume.shape, volume.dtype, volume.ndim, volume.axis) == (array.shape, array.dtype, 3, axis % 3)
    whole = np.asarray(volume)
    assert whole.flags.c_contiguous and whole.dtype == array.dtype and np.array_equal(whole, array)
    for key in KEYS[:-2]:
        part = volume[key]
        assert part.dtype == array.dtype and part.flags.writeable, key
        assert part.shape == array[key].shape and np.array_equal(part, array[key]), key
    for key in KEYS[-2:]:
        assert volume[key] == array[key]  # numpy scalars (native byte order, as numpy's)
    assert np.array_equal(volume[..., 2], array[..., 2])  # other keys: through a full decompression
    assert np.array_equal(np.asarray(volume, dtype=np.float32), array.astype(np.float32))
    for key in [(7,), (0, -10), (0, 0, 10)]:
        with pytest.raises(IndexError):
            volume[key]


def test_compressed_volume_is_small_and_refuses_a_no_copy_view():
    array = np.zeros((64, 64, 8), np.int16)
    array[20:40, 20:40] = 300
    volume = CompressedVolume(array, 2)
    assert volume.nbytes < array.nbytes / 50 and volume.raw_nbytes == array.nbytes
    with pytest.raises(ValueError, match="without decompressing"):
        np.asarray(volume, copy=False)
    with pytest.raises(SegloopError, match="axis must be"):
        CompressedVolume(array, 3)
    with pytest.raises(SegloopError, match=r"\(I, J, K\)"):
        CompressedVolume(array[0], 0)


def test_compress_case_slices_along_the_largest_spacing_and_keeps_compressed_arrays(cases):
    case = cases[0]
    compressed = compress_case(case)
    assert compressed.spacing == case.spacing and compressed.case_id == case.case_id
    assert (
        compressed.image.axis == compressed.labels.axis == resolve_slice_axis(tiny_config(), [case.spacing])
    )
    assert np.array_equal(np.asarray(compressed.image), case.image)
    assert np.array_equal(np.asarray(compressed.labels), case.labels)
    assert compress_case(compressed).image is compressed.image  # already along that axis: no work
    assert compress_case(compressed, 0).image.axis == 0
    tied = Case("t", case.image, None, (2.0, 2.0, 1.0))
    assert compress_case(tied).image.axis == 1 and compress_case(tied).labels is None


@pytest.mark.parametrize(
    ("dims", "axis", "patch"), [(2, 2, (32, 32)), (2, 0, (24, 40)), (3, 1, (16, 40, 12))]
)
def test_sampler_gives_identical_batches_for_compressed_and_raw_cases(cases, dims, axis, patch):
    config = tiny_config(dims=dims, batch_size=4, patch_size=patch)
    batches = []
    for source in (cases, [compress_case(c, axis) for c in cases]):
        prepared = [prepare_case(c, config, N_CLASSES, seed=i) for i, c in enumerate(source)]
        sampler = PatchSampler(
            prepared, config, n_classes=N_CLASSES, patch_size=patch, slice_axis=axis, seed=5
        )
        batches.append([sampler.sample() for _ in range(3)])
    for (image_a, labels_a), (image_b, labels_b) in zip(*batches, strict=True):
        assert torch.equal(image_a, image_b) and torch.equal(labels_a, labels_b)


def test_prepared_compressed_cases_use_much_less_memory():
    case = phantom_case(0, shape=(96, 96, 48))
    config = tiny_config()
    prepared = prepare_case(compress_case(case), config, N_CLASSES)
    raw = prepare_case(case, config, N_CLASSES)
    assert isinstance(prepared.case.image, CompressedVolume)
    # the phantom's smoothed noise covers the air too, a worst case (OpenKBP CT: 10x smaller)
    assert prepared.case.image.nbytes < case.image.nbytes / 1.5
    assert prepared.case.labels.nbytes < case.labels.nbytes / 20
    assert prepared.intensity == raw.intensity and prepared.annotated_fraction == raw.annotated_fraction
    assert all(np.array_equal(prepared.foreground[k], raw.foreground[k]) for k in raw.foreground)


def test_prepare_case_resamples_compressed_cases_and_keeps_them_compressed(cases):
    config = tiny_config(target_spacing=(2.0, 2.0, 3.0))
    prepared = prepare_case(compress_case(cases[0]), config, N_CLASSES)
    raw = prepare_case(cases[0], config, N_CLASSES)
    assert isinstance(prepared.case.image, CompressedVolume) and prepared.case.image.shape == (24, 24, 16)
    assert isinstance(prepared.case.labels, CompressedVolume) and prepared.case.spacing == (2.0, 2.0, 3.0)
    assert np.array_equal(np.asarray(prepared.case.image), raw.case.image)
    assert np.array_equal(np.asarray(prepared.case.labels), raw.case.labels)


@pytest.mark.parametrize("changes", [{}, {"target_spacing": (2.0, 2.0, 3.0)}, {"slice_axis": 0}])
def test_training_and_validation_on_compressed_cases_match_raw_cases(cases, val_case, tmp_path, changes):
    config = tiny_config(**changes)
    results = [
        train(
            config,
            train_cases,
            [validation],
            n_classes=N_CLASSES,
            device="cpu",
            checkpoint_path=tmp_path / f"{name}.pt",
        )
        for name, train_cases, validation in (
            ("raw", cases, val_case),
            ("compressed", [compress_case(c) for c in cases], compress_case(val_case)),
        )
    ]
    raw, compressed = results
    assert compressed.config == raw.config and compressed.best_metric == raw.best_metric
    assert [h["loss"] for h in compressed.history] == [h["loss"] for h in raw.history]
    assert [h["val_dice"] for h in compressed.history] == [h["val_dice"] for h in raw.history]
