"""Pure checks of what `Project.save_draft` stores: a draft label on its case's grid, in schema values."""

from __future__ import annotations

import numpy as np

from segloop.core.labels import LabelSchema
from segloop.errors import GeometryMismatchError, InvalidInputError

__all__ = ["check_draft_labels", "check_draft_parent"]


def check_draft_labels(
    labels: np.ndarray, case_id: str, shape: tuple[int, ...], schema: LabelSchema
) -> np.ndarray:
    """``labels`` as the schema's dtype, once checked to be a label of the case grid ``shape``.

    Args:
        labels: ``(I, J, K)`` integer label values (0, 1..N classes, N + 1 ignore).
        case_id: the case (for the messages).
        shape: the case's ``(I, J, K)``.
        schema: the project's label schema.

    Returns:
        ``(I, J, K)`` array of ``schema.dtype`` (a new array only where the dtype differs).

    Raises:
        GeometryMismatchError: the shape is not the case's.
        LabelValueError: values outside the schema (or not integers).

    Examples:
        >>> schema = LabelSchema.from_names(["liver"])
        >>> check_draft_labels(np.ones((2, 2, 1), np.int64), "c0", (2, 2, 1), schema).dtype
        dtype('uint8')
    """
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        msg = f"the draft of case {case_id!r} has shape {labels.shape}: expected the case's {tuple(shape)}"
        raise GeometryMismatchError(msg)
    schema.check_values(labels, what=f"the draft of case {case_id!r}")
    return labels.astype(schema.dtype, copy=False)


def check_draft_parent(parent: int | None, parent_case_id: str | None, case_id: str) -> None:
    """Refuse a parent label version of another case (``parent_case_id``: the case it belongs to).

    Raises:
        InvalidInputError: ``parent`` is a version of another case.

    Examples:
        >>> check_draft_parent(None, None, "c0"), check_draft_parent(3, "c0", "c0")
        (None, None)
    """
    if parent is not None and parent_case_id != case_id:
        msg = (
            f"label version {parent} is a version of case {parent_case_id!r}: a draft of case"
            f" {case_id!r} starts from one of its own versions (or none)"
        )
        raise InvalidInputError(msg)
