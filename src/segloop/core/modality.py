"""Imaging modalities a project may declare, and how training normalises each one's intensities.

One table for every layer: the project config (`segloop.store.config`) accepts these names, the
engine (`segloop.engine.config.TrainConfig`) normalises by them.

Example:
    >>> NORMALIZATION["CT"], "cryo-ET" in MODALITIES
    ('window', True)
"""

from __future__ import annotations

__all__ = ["MODALITIES", "NORMALIZATION"]

#: Intensity normalisation per modality: ``window`` (clip to a CT window, scale to [0, 1]),
#: ``zscore`` (per case), ``percentiles`` (clip to percentiles, scale to [0, 1]).
NORMALIZATION: dict[str, str] = {
    "CT": "window",
    "MR": "zscore",
    "microscopy": "percentiles",
    "EM": "percentiles",
    "cryo-ET": "percentiles",
    "other": "zscore",
}
#: The modality names, in the order the help texts list them.
MODALITIES: tuple[str, ...] = tuple(NORMALIZATION)
