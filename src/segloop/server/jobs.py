"""Long work started from the server: rounds, training and prediction as jobs.

OWNED BY HELPER H4 — contract only for now.
"""

from __future__ import annotations

from typing import Any

from segloop.store import JobRecord, Project

__all__ = ["JobRunner"]


class JobRunner:
    """Starts, tracks and cancels the server's jobs (one training job per project at a time).

    Args:
        project: the open project.
    """

    def __init__(self, project: Project) -> None:
        self.project = project

    def start(self, kind: str, params: dict[str, Any], *, author: str) -> JobRecord:
        """Start a job of ``kind`` (``round``, ``train``, ``predict``); ConflictError if one is running."""
        raise NotImplementedError

    def cancel(self, job_id: int) -> JobRecord:
        """Stop a running job; it ends ``cancelled``."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop every running job (server exit): they end ``interrupted`` and can be resumed."""
