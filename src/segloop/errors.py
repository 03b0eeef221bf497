"""The segloop error hierarchy: the one module every layer may import.

Every message names what was expected, what came, and (where there is one) the fix, on one line,
in the domain's words (no command-line flags: the CLI adds those), so that the CLI can print it as
is and the server can put it in a problem JSON.

Three kinds decide how a face answers (the server's status code in brackets):

- `NotFoundError` (404): a case, version, model, file or project that must exist does not;
- `ConflictError` (409): the request clashes with what exists (a stale parent, a duplicate id, an
  existing output, a run already going);
- `InvalidInputError` (422): a bad file, grid, value, name or option; its subclasses say which
  (`CorruptFileError`, `GeometryMismatchError`, `LabelValueError`, `UnknownClassError`,
  `UnsupportedFormatError`, `TooLargeError`).

`StoreIntegrityError` (500) means the project itself is damaged (a stored file changed on disk, a
missing or corrupt database); `MissingDependencyError` (501) an optional package is absent.
"""

__all__ = [
    "ConflictError",
    "CorruptFileError",
    "GeometryMismatchError",
    "InvalidInputError",
    "LabelValueError",
    "MissingDependencyError",
    "NotFoundError",
    "SegloopError",
    "StoreIntegrityError",
    "TooLargeError",
    "UnknownClassError",
    "UnsupportedFormatError",
]


class SegloopError(Exception):
    """Base class of every error segloop raises on purpose."""


class NotFoundError(SegloopError):
    """A file, case, version or project that must exist does not."""


class ConflictError(SegloopError):
    """The request clashes with what exists (a stale parent, a duplicate id, an existing output)."""


class InvalidInputError(SegloopError):
    """A file, array, value, name or option given by the caller is not what was expected."""


class TooLargeError(InvalidInputError):
    """A declared size (header, RLE, upload) exceeds the configured cap; nothing was allocated."""


class StoreIntegrityError(SegloopError):
    """The project's own data is damaged: a stored file changed or vanished, the database is missing."""


class UnsupportedFormatError(InvalidInputError):
    """No reader or writer handles this path, or the file's variant is not supported."""


class CorruptFileError(InvalidInputError):
    """A file exists but cannot be decoded (truncated, wrong magic, inconsistent header)."""


class GeometryMismatchError(InvalidInputError):
    """Two arrays that must share a voxel grid (shape and affine) do not."""


class LabelValueError(InvalidInputError):
    """A label array holds values the label schema does not define."""


class UnknownClassError(InvalidInputError):
    """A class name is not in the project's label schema."""


class MissingDependencyError(SegloopError):
    """An optional package needed for this operation is not installed."""
