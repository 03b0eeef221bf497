"""Serial sections to a volume (`segloop.core.stacking`) and `segloop convert` on phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.core.stacking import spacing_in_mm, stack_slices, with_spacing
from segloop.core.volume import Volume
from segloop.errors import InvalidInputError
from segloop.io import read_volume, write_volume


def _section(value: int, shape=(6, 5), dtype=np.uint8) -> Volume:
    array = np.arange(np.prod(shape), dtype=dtype).reshape(*shape, 1) + value
    return Volume(array, np.diag([2.0, 3.0, 2.0, 1.0]), {"spacing_unit": "pixel"})


def test_stack_keeps_order_grid_and_sets_the_voxel_size():
    sections = [_section(v) for v in (0, 10, 20)]
    stacked = stack_slices(sections, (0.004, 0.004, 0.05))
    assert stacked.array.shape == (6, 5, 3)
    for k, section in enumerate(sections):
        np.testing.assert_array_equal(stacked.array[..., k], section.array[..., 0])
    assert stacked.spacing == pytest.approx((0.004, 0.004, 0.05))
    assert "spacing_unit" not in stacked.meta
    assert stack_slices(sections).spacing == (2.0, 3.0, 2.0)  # no voxel size given: the first's


def test_with_spacing_keeps_directions_and_origin():
    affine = np.array([[-2.0, 0, 0, 5], [0, 0, 3, 6], [0, 1, 0, 7], [0, 0, 0, 1]])
    volume = with_spacing(Volume(np.zeros((2, 2, 2)), affine), (1.0, 0.5, 4.0))
    np.testing.assert_allclose(volume.affine[:3, :3], [[-1, 0, 0], [0, 0, 4], [0, 0.5, 0]])
    np.testing.assert_allclose(volume.affine[:3, 3], [5, 6, 7])


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ([], "at least one"),
        ([_section(0), _section(0, shape=(6, 4))], "image 2: expected uint8 of shape (6, 5, 1)"),
        ([_section(0), _section(0, dtype=np.uint16)], "got uint16"),
        ([Volume(np.zeros((6, 5, 2), np.uint8), np.eye(4))], "expected a 2D image"),
    ],
)
def test_stack_refuses_mismatches_naming_expected_and_got(sections, expected):
    with pytest.raises(InvalidInputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        stack_slices(sections)


def test_spacing_units_and_bad_spacing():
    assert spacing_in_mm((1, 2, 3), "um") == pytest.approx((1e-3, 2e-3, 3e-3))
    with pytest.raises(InvalidInputError, match="length unit"):
        spacing_in_mm((1, 1, 1), "inch")
    with pytest.raises(InvalidInputError, match="3 positive numbers"):
        spacing_in_mm((1, 0, 1), "mm")


def test_convert_stacks_pngs_into_an_mrc_with_its_angstrom_voxel_size(run_cli, tmp_path):
    sections = [_section(v) for v in (0, 10, 20)]
    paths = [write_volume(s, tmp_path / f"{i:02d}.png") for i, s in enumerate(sections)]
    out = tmp_path / "tomo.mrc"
    result = run_cli("convert", *paths, "--out", out, "--spacing", "40,40,500", "--unit", "angstrom")
    assert result.code == 0, result.err
    assert "voxel size 40, 40, 500 angstrom" in result.out
    tomogram = read_volume(tmp_path / "tomo.mrc")
    assert tomogram.meta["voxel_size_angstrom"] == (40.0, 40.0, 500.0)
    assert "voxel size 40 x 40 x 500 Å" in run_cli("info", out).out
    np.testing.assert_array_equal(tomogram.array, stack_slices(sections).array)


def test_convert_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path):
    paths = [write_volume(_section(0), tmp_path / "a.png")]
    paths.append(write_volume(_section(0, (4, 4)), tmp_path / "b.png"))
    out = tmp_path / "tomo.mrc"
    for extra in ([], ["--spacing", "40,40"], ["--spacing", "4x4x5"]):
        pair = paths if not extra else paths[:1]
        result = run_cli("convert", *pair, "--out", out, *extra)
        assert result.code == 1, result.err
        assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
        assert not out.exists()
    assert "b.png: expected uint8 of shape (6, 5, 1)" in run_cli("convert", *paths, "--out", out).err
