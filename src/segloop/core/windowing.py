"""Display / training intensity windows (``WIDTH,LEVEL`` in the image's stored units).

Example:
    >>> parse_window("400,40")
    (400.0, 40.0)
    >>> parse_window([400, 1064])
    (400.0, 1064.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from segloop.errors import InvalidInputError

__all__ = ["parse_window"]


def parse_window(value: str | Sequence[float]) -> tuple[float, float]:
    """A window ``(width, level)`` from ``"WIDTH,LEVEL"`` or a stored pair.

    Raises:
        InvalidInputError: not two finite numbers, or a width <= 0.
    """
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        width, level = (float(v) for v in parts)
    except (TypeError, ValueError):
        msg = f"window must be WIDTH,LEVEL, two numbers (e.g. 400,40); got {value!r}"
        raise InvalidInputError(msg) from None
    if not (math.isfinite(width) and math.isfinite(level)):
        msg = f"window must be two finite numbers (e.g. 400,40); got {value!r}"
        raise InvalidInputError(msg)
    if width <= 0:
        msg = f"window width must be > 0; got {width:g}"
        raise InvalidInputError(msg)
    return width, level
