"""segloop: annotation by iterative deep learning for medical images.

``from segloop import Project`` opens a project; the use cases live in `segloop.loop`. The
package loads its parts on first use, so ``import segloop`` stays fast and needs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segloop.core import Volume
    from segloop.store import Project

__all__ = ["Project", "Volume", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Project":
        from segloop.store import Project

        return Project
    if name == "Volume":
        from segloop.core import Volume

        return Volume
    raise AttributeError(f"module 'segloop' has no attribute {name!r}")
