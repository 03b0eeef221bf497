"""The segloop error hierarchy: the one module every layer may import.

Every message names what was expected, what came, and (where there is one) the fix, on one line,
so that the CLI can print it as is and the server can put it in a problem JSON.
"""

__all__ = [
    "ConflictError",
    "CorruptFileError",
    "GeometryMismatchError",
    "LabelValueError",
    "MissingDependencyError",
    "NotFoundError",
    "SegloopError",
    "UnknownClassError",
    "UnsupportedFormatError",
]


class SegloopError(Exception):
    """Base class of every error segloop raises on purpose."""


class NotFoundError(SegloopError):
    """A file, case, version or project that must exist does not."""


class ConflictError(SegloopError):
    """The request clashes with what exists (a duplicate case id, an existing output file)."""


class UnsupportedFormatError(SegloopError):
    """No reader or writer handles this path, or the file's variant is not supported."""


class CorruptFileError(SegloopError):
    """A file exists but cannot be decoded (truncated, wrong magic, inconsistent header)."""


class GeometryMismatchError(SegloopError):
    """Two arrays that must share a voxel grid (shape and affine) do not."""


class LabelValueError(SegloopError):
    """A label array holds values the label schema does not define."""


class UnknownClassError(SegloopError):
    """A class name is not in the project's label schema."""


class MissingDependencyError(SegloopError):
    """An optional package needed for this operation is not installed."""
