"""Label sources: who made a label version, how far it is trusted, and who may learn from it.

One vocabulary for every layer (assembly, ranking, training, evaluation, exports): a label is
``original`` (a reference annotation), ``revised`` (a person corrected it), ``sparse`` (a person
painted part of it), ``draft`` (a tool made it from a person's input) or ``pseudo`` (a model
predicted it).

Example:
    >>> Source("revised").priority > Source.PSEUDO.priority
    True
    >>> sorted(s.value for s in REFERENCE_SOURCES)
    ['original', 'revised']
"""

from __future__ import annotations

from enum import StrEnum

from segloop.errors import InvalidInputError

__all__ = ["HUMAN_SOURCES", "REFERENCE_SOURCES", "Source", "parse_source", "parse_sources"]


class Source(StrEnum):
    """Where a label version came from; compares equal to its plain string."""

    ORIGINAL = "original"
    REVISED = "revised"
    SPARSE = "sparse"
    DRAFT = "draft"
    PSEUDO = "pseudo"

    @property
    def priority(self) -> int:
        """Trust order for assembly: pseudo 0 < draft 1 < sparse 2 < revised 3 < original 4."""
        return _PRIORITY[self]

    @property
    def is_reference(self) -> bool:
        """A person vouches for every annotated class (``original``, ``revised``): scores and exports."""
        return self in REFERENCE_SOURCES

    @property
    def is_human(self) -> bool:
        """Made by a person or a tool a person drove (not a model): learned from by default."""
        return self in HUMAN_SOURCES


_PRIORITY = {Source.PSEUDO: 0, Source.DRAFT: 1, Source.SPARSE: 2, Source.REVISED: 3, Source.ORIGINAL: 4}

#: Sources a person vouches for, class by class: references for evaluation and human-labelled exports.
REFERENCE_SOURCES = frozenset({Source.ORIGINAL, Source.REVISED})
#: Sources made by people (or tools they drove): what training learns from unless pseudo is asked.
HUMAN_SOURCES = frozenset({Source.ORIGINAL, Source.REVISED, Source.SPARSE, Source.DRAFT})


def parse_source(text: str) -> Source:
    """The `Source` named ``text``; raises `InvalidInputError` naming the known ones."""
    try:
        return Source(text)
    except ValueError:
        msg = f"unknown label source {text!r}: expected one of {', '.join(s.value for s in Source)}"
        raise InvalidInputError(msg) from None


def parse_sources(text: str) -> frozenset[Source]:
    """Sources from a comma list (``"original,revised"``), or the keywords ``human`` / ``all``.

    Example:
        >>> sorted(parse_sources("human,pseudo")) == sorted(Source)
        True
    """
    chosen: set[Source] = set()
    for part in (p.strip() for p in text.split(",")):
        if part == "human":
            chosen |= HUMAN_SOURCES
        elif part == "reference":
            chosen |= REFERENCE_SOURCES
        elif part == "all":
            chosen |= set(Source)
        else:
            chosen.add(parse_source(part))
    return frozenset(chosen)
