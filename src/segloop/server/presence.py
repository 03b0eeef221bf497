"""Who is editing which case: an in-memory note per author, forgotten after a few idle minutes.

An author is "editing" the case whose label or draft they fetched or whose draft they saved last;
the dashboard shows the names beside each case so that two people do not correct the same one.
Nothing is stored: a restarted server starts with nobody editing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["PRESENCE_TIMEOUT_S", "Presence"]

#: Seconds after an author's last request on a case when they no longer count as editing it.
PRESENCE_TIMEOUT_S = 600.0


class Presence:
    """Thread-safe ``author -> (case, last seen)``; one case per author (the newest).

    Args:
        timeout_s: idle seconds after which an entry is dropped.
        clock: monotonic seconds (a test passes its own).

    Example:
        >>> presence = Presence()
        >>> presence.touch("ana", "c0"); presence.touch("ben", "c0"); presence.touch("ana", "c1")
        >>> presence.editors()
        {'c0': ['ben'], 'c1': ['ana']}
    """

    def __init__(
        self, timeout_s: float = PRESENCE_TIMEOUT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, float]] = {}

    def touch(self, author: str, case_id: str) -> None:
        """Note that ``author`` works on ``case_id`` now."""
        with self._lock:
            self._seen[author] = (case_id, self._clock())

    def leave(self, author: str, case_id: str) -> None:
        """Forget ``author`` on ``case_id`` (no-op when they moved to another case)."""
        with self._lock:
            if self._seen.get(author, ("",))[0] == case_id:
                del self._seen[author]

    def editors(self) -> dict[str, list[str]]:
        """``{case id: [authors]}`` (both sorted) of the entries seen within the timeout."""
        now = self._clock()
        result: dict[str, list[str]] = {}
        with self._lock:
            for author, (case_id, seen) in list(self._seen.items()):
                if now - seen > self._timeout_s:
                    del self._seen[author]
                    continue
                result.setdefault(case_id, []).append(author)
        return {case_id: sorted(result[case_id]) for case_id in sorted(result)}
