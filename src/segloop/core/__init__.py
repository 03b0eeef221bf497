"""Core types: `Volume`, voxel-grid geometry and the label schema (numpy only)."""

from segloop.core.geometry import (
    affine_from_spacing,
    check_same_grid,
    flip_ras_lps,
    spacing_from_affine,
)
from segloop.core.labels import IGNORE_NAME, LabelClass, LabelSchema
from segloop.core.volume import Volume

__all__ = [
    "IGNORE_NAME",
    "LabelClass",
    "LabelSchema",
    "Volume",
    "affine_from_spacing",
    "check_same_grid",
    "flip_ras_lps",
    "spacing_from_affine",
]
