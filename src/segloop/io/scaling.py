"""Linear scaling of stored values (NIfTI ``scl_slope``/``scl_inter``, DICOM RescaleSlope/Intercept).

Both formats store integers and a ``value = stored * slope + intercept`` rule. A forged or damaged
header can make that rule overflow (``scl_slope = 1e30`` on int16 CT), produce infinities or NaN,
or turn every voxel into garbage; `scaled_dtype` checks the rule on the stored values' extremes
before anything is computed and picks the dtype that holds the result exactly.

Example:
    >>> import numpy as np
    >>> scaled_dtype([(0, 4095)], [(1.0, -1024.0)], integral=True, what="ct.nii")
    dtype('int16')
    >>> scaled_dtype([(0, 4095)], [(0.5, 0.0)], integral=True, what="ct.nii")
    dtype('float32')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from segloop.errors import CorruptFileError

__all__ = ["MAX_SCALED_MAGNITUDE", "finite_extremes", "scaled_dtype"]

#: Largest magnitude a scaled value may reach: its square still fits float32, so means and
#: variances of the image stay finite (about 1.8e19).
MAX_SCALED_MAGNITUDE = math.sqrt(float(np.finfo(np.float32).max))
_INT64_LIMIT = 2**63


def finite_extremes(values: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of the finite values of ``values``; None when there is none.

    Integers come back as Python ints (exact), floats as Python floats.
    """
    if values.size == 0:
        return None
    if values.dtype.kind in "iub":
        return int(values.min()), int(values.max())
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else None


def _fits(low: int, high: int, dtype: type) -> bool:
    info = np.iinfo(dtype)
    return info.min <= low and high <= info.max


def scaled_dtype(
    extremes: Sequence[tuple[float, float] | None],
    scales: Sequence[tuple[float, float]],
    *,
    integral: bool,
    what: str,
) -> np.dtype:
    """The dtype of ``stored * slope + intercept`` over several blocks (NIfTI: one; DICOM: slices).

    Args:
        extremes: per block, the stored values' finite (min, max) (`finite_extremes`), or None.
        scales: per block, (slope, intercept).
        integral: whether the stored values are integers.
        what: the file, for messages.

    Returns:
        int16, int32 or int64 when every scaled value is an integer that fits, else float32.

    Raises:
        CorruptFileError: a slope or intercept that is not finite, or scaled values beyond
            ±`MAX_SCALED_MAGNITUDE` (a damaged header, not an image).
    """
    for slope, intercept in scales:
        if not (math.isfinite(slope) and math.isfinite(intercept)):
            msg = f"{what}: expected a finite scaling slope and intercept; got {slope} and {intercept}"
            raise CorruptFileError(msg)
    ends = [
        value * slope + intercept
        for block, (slope, intercept) in zip(extremes, scales, strict=True)
        if block is not None
        for value in block
    ]
    largest = max((abs(e) for e in ends), default=0.0)
    if largest > MAX_SCALED_MAGNITUDE:
        msg = (
            f"{what}: the scaling (slope {scales[0][0]:.6g}, intercept {scales[0][1]:.6g}) gives values"
            f" up to {largest:.3g};"
            f" expected magnitudes below {MAX_SCALED_MAGNITUDE:.2g}: the scaling fields look corrupt"
        )
        raise CorruptFileError(msg)
    exact = integral and all(
        float(s).is_integer() and float(i).is_integer() and abs(s) < _INT64_LIMIT and abs(i) < _INT64_LIMIT
        for s, i in scales
    )
    if not exact:
        return np.dtype(np.float32)
    integer_ends = [
        int(value) * int(slope) + int(intercept)
        for block, (slope, intercept) in zip(extremes, scales, strict=True)
        if block is not None
        for value in block
    ]
    low, high = min(integer_ends, default=0), max(integer_ends, default=0)
    for dtype in (np.int16, np.int32, np.int64):
        if _fits(low, high, dtype):
            return np.dtype(dtype)
    return np.dtype(np.float32)  # unreachable below MAX_SCALED_MAGNITUDE < 2**63, kept for safety
