"""`LabelSchema`: the classes of a project (index, name, colour), background and *ignore*.

Index 0 is background. Classes take 1..N. The *ignore* index is N + 1, the highest value, named
``ignore`` (nnU-Net's convention): voxels holding it teach the network nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from segloop.errors import InvalidInputError, LabelValueError, UnknownClassError

__all__ = ["BACKGROUND_NAME", "IGNORE_NAME", "LabelClass", "LabelSchema"]

BACKGROUND_NAME = "background"
IGNORE_NAME = "ignore"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# A colour cycle of clearly distinct hues (RGB 0-255) for classes created without a colour.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
)


@dataclass(frozen=True)
class LabelClass:
    """One foreground class: its label value, name and display colour (RGB, 0-255)."""

    index: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class LabelSchema:
    """The ordered foreground classes of a project.

    Args:
        classes: classes with indices 1..N in order.
        pairs: left-right pairs of class names (e.g. ``("RightParotid", "LeftParotid")``) that a
            left-right mirror of an image swaps; each class in one pair at most.

    Examples:
        >>> schema = LabelSchema.from_names(["liver", "spleen"])
        >>> schema.index_of("spleen"), schema.ignore_index
        (2, 3)
        >>> LabelSchema.from_names(["lung_r", "lung_l"], pairs=[("lung_r", "lung_l")]).pair_indices()
        ((1, 2),)
    """

    classes: tuple[LabelClass, ...]
    pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.classes:
            msg = "a label schema needs at least one class; got none"
            raise InvalidInputError(msg)
        for position, label in enumerate(self.classes, start=1):
            if label.index != position:
                msg = (
                    f"class indices must run 1..N in order;"
                    f" class {label.name!r} has {label.index}, expected {position}"
                )
                raise InvalidInputError(msg)
            if not _NAME_PATTERN.match(label.name) or label.name in (BACKGROUND_NAME, IGNORE_NAME):
                msg = (
                    f"class name {label.name!r} is not allowed: expected letters, digits, '_', '.', '-'"
                    f" and not {BACKGROUND_NAME!r} or {IGNORE_NAME!r}"
                )
                raise InvalidInputError(msg)
        names = [label.name for label in self.classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            msg = f"class names must be unique; repeated: {', '.join(duplicates)}"
            raise InvalidInputError(msg)
        self._check_pairs(names)

    def _check_pairs(self, names: list[str]) -> None:
        """Each pair: two different known classes; no class in two pairs (one-line errors)."""
        paired: list[str] = []
        for pair in self.pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0] != pair[1]):
                msg = f"class pair {pair!r} is not valid: expected two different class names"
                raise InvalidInputError(msg)
            unknown = [n for n in pair if n not in names]
            if unknown:
                msg = (
                    f"class pair {pair!r} names unknown class {unknown[0]!r}:"
                    f" expected some of {', '.join(names)}"
                )
                raise UnknownClassError(msg)
            twice = [n for n in pair if n in paired]
            if twice:
                msg = f"class {twice[0]!r} is in two pairs: expected each class in one pair at most"
                raise InvalidInputError(msg)
            paired.extend(pair)

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        colors: Sequence[Sequence[int]] | None = None,
        *,
        pairs: Iterable[Sequence[str]] = (),
    ) -> LabelSchema:
        """Build a schema from class names (indices 1..N); colours default to a distinct palette."""
        colors = colors or [_PALETTE[i % len(_PALETTE)] for i in range(len(names))]
        if len(colors) != len(names):
            msg = f"expected one colour per class ({len(names)}); got {len(colors)}"
            raise InvalidInputError(msg)
        return cls(
            tuple(
                LabelClass(i, name.strip(), tuple(int(c) for c in color))  # type: ignore[arg-type]
                for i, (name, color) in enumerate(zip(names, colors, strict=True), start=1)
            ),
            tuple(tuple(pair) for pair in pairs),  # type: ignore[misc]
        )

    def pair_indices(self) -> tuple[tuple[int, int], ...]:
        """The ``pairs`` as label values (for `segloop.engine.config.TrainConfig.mirror_pairs`)."""
        return tuple((self.index_of(a), self.index_of(b)) for a, b in self.pairs)

    def partner_of(self, name: str) -> str | None:
        """The class paired with ``name``, or None."""
        for a, b in self.pairs:
            if name in (a, b):
                return b if name == a else a
        return None

    @property
    def names(self) -> tuple[str, ...]:
        """Foreground class names in index order."""
        return tuple(label.name for label in self.classes)

    @property
    def ignore_index(self) -> int:
        """The label value that marks voxels to ignore: N + 1."""
        return len(self.classes) + 1

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned dtype that holds every label value including *ignore*."""
        return np.dtype(np.uint8 if self.ignore_index <= 255 else np.uint16)

    def index_of(self, name: str) -> int:
        """Label value of class ``name``; raises `UnknownClassError` naming the known classes."""
        for label in self.classes:
            if label.name == name:
                return label.index
        msg = f"unknown class {name!r}: expected one of {', '.join(self.names)}"
        raise UnknownClassError(msg)

    def name_of(self, index: int) -> str:
        """Class name of label value ``index`` (1..N)."""
        if not 1 <= index <= len(self.classes):
            msg = f"label value {index} is not a class: expected 1..{len(self.classes)}"
            raise LabelValueError(msg)
        return self.classes[index - 1].name

    def indices_of(self, names: Iterable[str]) -> tuple[int, ...]:
        """Label values of several class names, in the order given."""
        return tuple(self.index_of(name) for name in names)

    def check_values(self, labels: np.ndarray, *, what: str = "label") -> None:
        """Raise `LabelValueError` if ``labels`` holds values other than 0..N and *ignore*.

        Args:
            labels: integer array of any shape.
            what: name of the array for the message (e.g. a file path).
        """
        is_integer = np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
        if not is_integer and not np.all(np.mod(labels, 1) == 0):
            msg = f"{what} must hold integer label values; got non-integer {labels.dtype} values"
            raise LabelValueError(msg)
        if labels.size == 0 or (is_integer and labels.min() >= 0 and labels.max() <= self.ignore_index):
            return  # the common case, without sorting every voxel
        values = np.unique(labels)
        bad = [v for v in values.tolist() if not (0 <= v <= self.ignore_index)]
        if bad:
            shown = ", ".join(str(int(v)) for v in bad[:8])
            msg = (
                f"{what} holds label values {shown} outside the schema: expected 0 (background),"
                f" 1..{len(self.classes)} ({', '.join(self.names)}) or {self.ignore_index} (ignore)"
            )
            raise LabelValueError(msg)

    def to_records(self) -> list[dict]:
        """Plain data for `segloop.toml`: ``[{"index", "name", "color"[, "pair"]}, ...]``.

        Both classes of a pair name their partner under ``"pair"``.
        """
        records = []
        for c in self.classes:
            record: dict = {"index": c.index, "name": c.name, "color": list(c.color)}
            partner = self.partner_of(c.name)
            if partner is not None:
                record["pair"] = partner
            records.append(record)
        return records

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> LabelSchema:
        """Inverse of `to_records`; a ``"pair"`` on either or both classes of a pair declares it.

        Raises:
            InvalidInputError: a record without index, name and color; a pair naming an unknown
                class (`UnknownClassError`) or a class in two pairs.
        """
        try:
            ordered = sorted(records, key=lambda r: int(r["index"]))
            classes = tuple(
                LabelClass(int(r["index"]), str(r["name"]), tuple(int(c) for c in r["color"]))  # type: ignore[arg-type]
                for r in ordered
            )
            position = {str(r["name"]): int(r["index"]) for r in ordered}
            declared = [(str(r["name"]), str(r["pair"])) for r in ordered if "pair" in r]
        except (KeyError, TypeError, ValueError) as error:
            msg = f"label records must have index, name and color; got {records!r} ({error})"
            raise InvalidInputError(msg) from error
        pairs: list[tuple[str, str]] = []
        for pair in declared:  # in index order; a pair declared from both sides counts once
            ordered_pair = tuple(sorted(pair, key=lambda n: position.get(n, len(position) + 1)))
            if ordered_pair not in pairs:
                pairs.append(ordered_pair)  # type: ignore[arg-type]
        return cls(classes, tuple(pairs))
