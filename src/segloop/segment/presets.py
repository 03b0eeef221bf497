"""Named intensity ranges users type in Slicer (plain data, no numpy: a CLI lists them for --help)."""

from __future__ import annotations

__all__ = ["THRESHOLD_PRESETS_HU"]

#: Ranges in Hounsfield units (inclusive). ``lung`` is the range of seed 001 (Slicer, -1024..-500).
THRESHOLD_PRESETS_HU: dict[str, tuple[float, float]] = {
    "lung": (-1024.0, -500.0),
    "air": (-1024.0, -900.0),
    "fat": (-190.0, -30.0),
    "soft-tissue": (-100.0, 300.0),
    "bone": (300.0, 3071.0),
}
