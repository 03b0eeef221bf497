"""`Volume`: the one image type of segloop.

An array, a 4x4 affine and free metadata. Array axes follow the affine's voxel axes (I, J, K); the
affine maps voxel indices to RAS+ coordinates in millimetres. A 2D image is a volume with one slice
(shape ``(I, J, 1)``). An optional leading channel axis gives ``(C, I, J, K)`` (RGB images,
layered segmentations). Every reader returns a `Volume` and every writer takes one; conventions of
file formats (LPS, Ångström, TIFF tags) are converted inside their format module only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segloop.core.geometry import spacing_from_affine
from segloop.errors import InvalidInputError

__all__ = ["Volume"]


@dataclass(frozen=True, eq=False)
class Volume:
    """An image or label array on a physical voxel grid.

    Args:
        array: ``(I, J, K)`` or ``(C, I, J, K)`` array of any numeric or boolean dtype.
        affine: ``(4, 4)`` voxel-index to RAS+ millimetre transform.
        meta: format details worth keeping (segment names, voxel size in Å, units, ...).

    Examples:
        >>> import numpy as np
        >>> v = Volume(np.zeros((4, 5, 6), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]))
        >>> v.spatial_shape, v.spacing
        ((4, 5, 6), (2.0, 2.0, 3.0))
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asanyarray(self.array)
        affine = np.asarray(self.affine, dtype=np.float64)
        if array.ndim not in (3, 4):
            msg = (
                f"Volume array must be 3D (I, J, K) or 4D (C, I, J, K); got shape {array.shape}"
                " (reshape a 2D image to (I, J, 1))"
            )
            raise InvalidInputError(msg)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            msg = f"Volume affine must be a finite 4x4 matrix; got shape {affine.shape}"
            raise InvalidInputError(msg)
        lengths = np.asarray(spacing_from_affine(affine))
        # scale-free: cryo-ET voxels are 1e-7 mm, so test the shape of the axes, not their size
        if np.any(lengths == 0) or abs(np.linalg.det(affine[:3, :3] / lengths)) < 1e-6:
            msg = f"Volume affine must be invertible; got a singular 3x3 part {affine[:3, :3].tolist()}"
            raise InvalidInputError(msg)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Shape of the voxel grid ``(I, J, K)``, without the channel axis."""
        return tuple(int(n) for n in self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along I, J, K in mm (lengths of the affine's columns)."""
        return spacing_from_affine(self.affine)

    @property
    def n_channels(self) -> int:
        """Number of channels: 1 for a 3D array, ``C`` for ``(C, I, J, K)``."""
        return 1 if self.array.ndim == 3 else int(self.array.shape[0])

    def with_array(self, array: np.ndarray, **meta: Any) -> Volume:
        """A new volume on the same grid holding ``array`` (meta updated with ``meta``)."""
        return Volume(array, self.affine.copy(), {**self.meta, **meta})
