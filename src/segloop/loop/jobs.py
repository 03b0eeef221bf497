"""Long work as a job: a row in the store's ``jobs`` table and one typed progress event.

Training, batch prediction and rounds run inside `run_job`: the job is recorded when the work
starts, its newest `segloop.store.Progress` is stored (at most once per ``min_interval_s``, and
always at the end of a stage) and handed to the caller's ``on_progress`` (a CLI progress bar, a
server's event stream), and it finishes ``done`` with a result, ``failed`` with the error's first
line, or ``interrupted`` (Ctrl-C). A job whose process died is reported ``interrupted`` by the
store; starting a job writes that status for every such job of the project.

Jobs nest: a round runs a training and a prediction job. A job started inside another stores
``within: <outer id>`` in its params, and its stored progress is also the outer job's newest
progress (a round shows the epochs of its training). A face that runs work in another process
(the server) records the job itself, at once, and the work's process takes that job over
(`job_scope`), so the job exists before the work has even loaded its libraries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from segloop.errors import SegloopError
from segloop.store import JobRecord, JobStatus, Progress, Project

__all__ = ["JobReporter", "ProgressCallback", "error_line", "job_scope", "run_job"]

#: What a face passes to receive a job's progress events.
ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class _Scope:
    job_id: int | None
    params: dict[str, Any]
    on_start: Callable[[JobRecord], None] | None


#: The job whose work is running in this context (None: none), the parent of jobs started now.
_running_job: ContextVar[int | None] = ContextVar("segloop_running_job", default=None)
_scope: ContextVar[_Scope | None] = ContextVar("segloop_job_scope", default=None)


@contextmanager
def job_scope(
    job_id: int | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    on_start: Callable[[JobRecord], None] | None = None,
) -> Iterator[None]:
    """How a face marks the job of the work inside the block (the outermost one, not nested ones).

    Args:
        job_id: a running job the face recorded for this work (`Project.start_job`), which the
            work's job takes over (`Project.claim_job`) instead of recording a new one.
        params: stored beside the job's own params (the request that started it).
        on_start: receives the job's record once the work's job is stored (before its work runs).
    """
    token = _scope.set(_Scope(job_id, dict(params or {}), on_start))
    try:
        yield
    finally:
        _scope.reset(token)


class JobReporter:
    """Turns a job's steps into `Progress` events: stored (throttled) and handed to a callback.

    Args:
        project: the open project.
        job_id: the running job.
        on_progress: receives every event, or None.
        min_interval_s: least time between two stored events (the callback gets all of them).
        outer_job_id: the job this one runs inside: its stored events are stored there too.

    Attributes:
        result: what the job produced, stored when it finishes (set by the work).
    """

    def __init__(
        self,
        project: Project,
        job_id: int,
        on_progress: ProgressCallback | None,
        min_interval_s: float = 1.0,
        outer_job_id: int | None = None,
    ) -> None:
        self.project = project
        self.job_id = job_id
        self.outer_job_id = outer_job_id
        self.on_progress = on_progress
        self.min_interval_s = min_interval_s
        self.result: dict[str, Any] = {}
        self._stored_at = -float("inf")
        self._unstored: Progress | None = None

    def report(
        self,
        stage: str,
        done: int,
        total: int | None = None,
        message: str = "",
        metrics: Mapping[str, float | None] | None = None,
    ) -> Progress:
        """Emit one event; returns it.

        Args:
            stage: what the job is doing (``train``, ``predict``, ``evaluate``, ...).
            done: units finished in this stage (epochs, cases).
            total: units the stage will do, None when unknown; ``done >= total`` stores the
                event at once.
            message: one line for a person.
            metrics: numbers worth showing by name (``loss``, ``val_dice``); None values are
                left out.
        """
        progress = Progress(
            self.job_id,
            stage,
            int(done),
            total,
            message,
            {k: float(v) for k, v in (metrics or {}).items() if v is not None},
        )
        now = time.monotonic()
        self._unstored = progress
        if now - self._stored_at >= self.min_interval_s or (total is not None and done >= total):
            self.flush()
            self._stored_at = now
        if self.on_progress is not None:
            self.on_progress(progress)
        return progress

    def flush(self) -> None:
        """Store the newest event if throttling held it back."""
        if self._unstored is not None:
            self.project.update_job(self._unstored)
            if self.outer_job_id is not None:
                self.project.update_job(dataclasses.replace(self._unstored, job_id=self.outer_job_id))
            self._unstored = None


@contextmanager
def run_job(
    project: Project,
    kind: str,
    *,
    author: str,
    params: Mapping[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
) -> Iterator[JobReporter]:
    """Record the work inside the ``with`` block as a job of ``kind`` (``train``, ``predict``, ``round``).

    Args:
        project: the open project (running jobs whose process died are marked first).
        kind: the job's kind.
        author: who started it.
        params: what it was asked to do, stored with it.
        on_progress: receives every `Progress` event of the job.

    Yields:
        The `JobReporter` of the new job; set its ``result`` before the block ends.

    Raises:
        Whatever the work raises, after the job is stored ``failed`` (``interrupted`` for Ctrl-C).
    """
    project.mark_interrupted_jobs()
    outer = _running_job.get()
    scope = _scope.get() if outer is None else None
    stored = dict(params or {})
    if outer is not None:
        stored["within"] = outer
    elif scope is not None:
        stored.update(scope.params)
    if scope is not None and scope.job_id is not None:
        job = project.claim_job(scope.job_id, kind=kind, params=stored)
    else:
        job = project.start_job(kind, author=author, params=stored)
    if scope is not None and scope.on_start is not None:
        scope.on_start(job)
    reporter = JobReporter(project, job.id, on_progress, outer_job_id=outer)
    token = _running_job.set(job.id)
    try:
        yield reporter
    except KeyboardInterrupt:
        _finish_quietly(reporter, JobStatus.INTERRUPTED, "interrupted")
        raise
    except Exception as error:
        _finish_quietly(reporter, JobStatus.FAILED, error_line(error))
        raise
    finally:
        _running_job.reset(token)
    reporter.flush()
    project.finish_job(job.id, status=JobStatus.DONE, result=reporter.result)


def error_line(error: BaseException) -> str:
    r"""What a failed job stores as its error: the message's first line (the error's type without one).

    Examples:
        >>> error_line(ValueError("no labelled case\nmore")), error_line(KeyError())
        ('no labelled case', 'KeyError')
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _finish_quietly(reporter: JobReporter, status: JobStatus, error: str) -> None:
    """Store a failed job's end; a store that cannot record it must not hide the work's own error."""
    with contextlib.suppress(SegloopError, OSError):
        reporter.flush()
        reporter.project.finish_job(reporter.job_id, status=status, error=error)
