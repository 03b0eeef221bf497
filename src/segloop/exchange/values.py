"""Label values between another tool's convention and the project's schema.

Other tools number classes their own way: nnU-Net's ``dataset.json`` and MONAI Label's
``label_info`` name each value; a binary mask image uses 255 for the object; a sparse paint uses 0
for "not painted". Here a *value map* says, for each value a file holds, which schema name it
means: a class name, ``background`` (0) or ``ignore`` (the schema's ignore value).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from segloop.core.labels import BACKGROUND_NAME, IGNORE_NAME, LabelSchema
from segloop.errors import InvalidInputError, LabelValueError

__all__ = [
    "invert_value_map",
    "parse_value_map",
    "remap_labels",
    "schema_value_of",
    "schema_values_of_names",
]


def schema_value_of(name: str, schema: LabelSchema) -> int:
    """The schema value a name stands for: 0 for background, the ignore value, or a class's index.

    Examples:
        >>> schema = LabelSchema.from_names(["nucleus"])
        >>> [schema_value_of(n, schema) for n in ("background", "nucleus", "ignore")]
        [0, 1, 2]
    """
    if name == BACKGROUND_NAME:
        return 0
    if name == IGNORE_NAME:
        return schema.ignore_index
    return schema.index_of(name)


def parse_value_map(text: str, schema: LabelSchema) -> dict[int, int]:
    """Parse ``"255=nucleus,0=background"`` into ``{file value: schema value}``.

    Args:
        text: comma-separated ``VALUE=NAME`` pairs; NAME is a class, ``background`` or ``ignore``.
        schema: the project's classes.

    Returns:
        ``{file value: schema value}``.

    Raises:
        InvalidInputError: a malformed pair or a value given twice.
        UnknownClassError: a name that is not in the schema.

    Examples:
        >>> parse_value_map("0=ignore, 1=background, 2=nucleus", LabelSchema.from_names(["nucleus"]))
        {0: 2, 1: 0, 2: 1}
    """
    mapping: dict[int, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        value_text, _, name = part.partition("=")
        try:
            value = int(value_text.strip())
        except ValueError:
            value = None
        if value is None or not name.strip():
            msg = f"label value map entries must be VALUE=NAME (e.g. 255=nucleus); got {part!r}"
            raise InvalidInputError(msg)
        if value in mapping:
            msg = f"label value {value} is mapped twice in {text!r}: expected each value once"
            raise InvalidInputError(msg)
        mapping[value] = schema_value_of(name.strip(), schema)
    if not mapping:
        msg = f"empty label value map {text!r}: expected VALUE=NAME pairs, e.g. 255=nucleus"
        raise InvalidInputError(msg)
    return mapping


def schema_values_of_names(names_to_values: Mapping[str, int], schema: LabelSchema) -> dict[int, int]:
    """``{file value: schema value}`` from a file's ``{name: value}`` table (nnU-Net, MONAI Label).

    Raises:
        UnknownClassError: a name that is not in the schema (nor background / ignore).
        InvalidInputError: two names share one value.

    Examples:
        >>> schema = LabelSchema.from_names(["liver", "spleen"])
        >>> schema_values_of_names({"background": 0, "spleen": 1, "liver": 2}, schema)
        {0: 0, 1: 2, 2: 1}
    """
    mapping: dict[int, int] = {}
    for name, value in names_to_values.items():
        if int(value) in mapping:
            msg = f"label value {value} is given to two names ({name!r} and another): expected one each"
            raise InvalidInputError(msg)
        mapping[int(value)] = schema_value_of(str(name), schema)
    return mapping


def invert_value_map(mapping: Mapping[int, int]) -> dict[int, int]:
    """``{schema value: file value}`` for writing; raises if two file values share a schema value."""
    inverse: dict[int, int] = {}
    for file_value, schema_value in mapping.items():
        if schema_value in inverse:
            msg = (
                f"file values {inverse[schema_value]} and {file_value} both mean schema value"
                f" {schema_value}: a map used for writing must be one to one"
            )
            raise InvalidInputError(msg)
        inverse[schema_value] = file_value
    return inverse


def remap_labels(
    labels: np.ndarray, mapping: Mapping[int, int], *, dtype: np.dtype | type, what: str = "label"
) -> np.ndarray:
    """Replace every value of ``labels`` by ``mapping[value]``; every value present must be mapped.

    Args:
        labels: integer array of any shape.
        mapping: ``{old value: new value}``.
        dtype: dtype of the result.
        what: name of the array for the message (e.g. a file path).

    Returns:
        A new array of ``labels``' shape in ``dtype``.

    Raises:
        LabelValueError: ``labels`` holds a value the mapping does not name.

    Examples:
        >>> remap_labels(np.array([0, 255, 255]), {0: 0, 255: 1}, dtype=np.uint8).tolist()
        [0, 1, 1]
    """
    values = np.unique(labels)
    unmapped = [int(v) for v in values.tolist() if int(v) not in mapping]
    if unmapped:
        shown = ", ".join(str(v) for v in unmapped[:8])
        known = ", ".join(f"{k}" for k in sorted(mapping))
        msg = f"{what} holds values {shown} that the value map does not name: expected only {known}"
        raise LabelValueError(msg)
    if values.size and values.min() >= 0 and values.max() < 1 << 16:
        lookup = np.zeros(int(values.max()) + 1, dtype=dtype)
        for old, new in mapping.items():
            if 0 <= old < lookup.size:
                lookup[old] = new
        return lookup[labels.astype(np.intp, copy=False)]
    result = np.zeros(labels.shape, dtype=dtype)
    for old, new in mapping.items():
        result[labels == old] = new
    return result
