"""Routes: jobs (start, list, follow as server-sent events, cancel, resume), rounds and the report.

A job is a round, a training or a prediction running in its own process
(`segloop.server.jobs.JobRunner`); its row in the store is what every route reads, so a job keeps
its answers after a server restart (a job whose process is gone reads ``interrupted``).

A job's ``params`` hold what its use case records (a round's ``round``, a training's ``model``)
and, for a job started here, ``request`` (the params it was asked with; a resumed job also names
the job it ``resumes``). Jobs a round runs (its training and prediction) name it as ``within``;
their newest progress is also the round's, so following the round shows its epochs.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from segloop.errors import InvalidInputError, NotFoundError
from segloop.server.deps import Author, Jobs, OpenProject
from segloop.store import JobRecord, JobStatus, RoundRecord

__all__ = ["POLL_INTERVAL_S", "job_json", "round_json", "router"]

router = APIRouter(tags=["jobs"])

#: How often a job's event stream reads the job's row (seconds).
POLL_INTERVAL_S = 0.5
#: Polls between two keep-alive comments of an idle event stream (about 15 s).
_KEEP_ALIVE_POLLS = 30
#: A file of the report folder: a plain name, a PNG plot or the HTML page.
_REPORT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,200}\.(png|html)")
_REPORT_TYPES = {"png": "image/png", "html": "text/html; charset=utf-8"}
#: The report page may show its own images and inline style, and run nothing.
_REPORT_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"


class JobRequest(BaseModel):
    """``POST /api/jobs``: what to run."""

    kind: str = Field(description="round, train or predict")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "round: mode, strategy, n, include_pseudo, device and training settings; train: mode,"
            " include_pseudo, device and training settings (epochs, minutes, dims, seed, window,"
            " val_cases or any TrainConfig field); predict: cases or unlabeled, model, tta,"
            " postprocess, device"
        ),
    )


def _time(value: datetime | None) -> str | None:
    """ISO 8601 with its offset (the store keeps UTC; SQLite hands it back without one)."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()


def job_json(job: JobRecord) -> dict[str, Any]:
    """A job as the API shows it: ``{id, kind, status, author, params, progress, result, error, ...}``."""
    progress = job.progress
    return {
        "id": job.id,
        "kind": job.kind,
        "status": str(job.status),
        "author": job.author,
        "params": job.params,
        "progress": None
        if progress is None
        else {
            "stage": progress.stage,
            "done": progress.done,
            "total": progress.total,
            "message": progress.message,
            "metrics": progress.metrics,
        },
        "result": job.result,
        "error": job.error,
        "started_at": _time(job.started_at),
        "updated_at": _time(job.updated_at),
        "finished_at": _time(job.finished_at),
    }


def round_json(record: RoundRecord) -> dict[str, Any]:
    """A round as the API shows it: its state and the numbers of its summary.

    ``validation_dice_per_class`` is the model's Dice on its validation cases per class name;
    ``evaluation`` maps class names (and ``mean``) to Dice, HD95 (mm) and surface Dice on
    held-out human labels; ``cases_by_source`` counts cases by their most trusted label source.
    """
    summary, stages = record.summary, record.stages
    return {
        "number": record.number,
        "mode": summary.get("mode", record.mode),
        "status": str(record.status),
        "stages": list(stages),
        "started_at": _time(record.started_at),
        "finished_at": _time(record.finished_at),
        "model": summary.get("model", stages.get("train", {}).get("model")),
        "cases_by_source": summary.get("cases_by_source", {}),
        "validation_dice": summary.get("validation_dice"),
        "validation_dice_per_class": summary.get("validation_dice_per_class", {}),
        "evaluation": summary.get("evaluation") or {},
        "queue": summary.get("queue", []),
    }


@router.post("/api/jobs", status_code=202)
def start_job(body: JobRequest, jobs: Jobs, author: Author) -> dict[str, Any]:
    """Start a round, training or prediction; 409 while a training job of the project runs."""
    return job_json(jobs.start(body.kind, body.params, author=author))


@router.get("/api/jobs")
def list_jobs(
    project: OpenProject, _: Author, status: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """The project's jobs, oldest first (of one ``status``: running, done, failed, interrupted, cancelled)."""
    return {"jobs": [job_json(job) for job in project.list_jobs(kind=kind, status=status)]}


@router.get("/api/jobs/{job_id}")
def get_job(job_id: int, project: OpenProject, _: Author) -> dict[str, Any]:
    """One job."""
    return job_json(project.get_job(job_id))


@router.get("/api/jobs/{job_id}/events")
async def follow_job(job_id: int, project: OpenProject, _: Author, request: Request) -> StreamingResponse:
    """Server-sent events: ``data: <job JSON>`` now and at each change, until the job has ended."""
    first = await run_in_threadpool(project.get_job, job_id)  # an unknown job is a 404, not a stream

    async def events() -> AsyncIterator[str]:
        job, shown, idle = first, None, 0
        while True:
            if (job.status, job.updated_at) != shown:
                shown, idle = (job.status, job.updated_at), 0
                yield f"data: {json.dumps(job_json(job))}\n\n"
            elif idle >= _KEEP_ALIVE_POLLS:
                idle = 0
                yield ": keep-alive\n\n"
            if job.status != JobStatus.RUNNING or await request.is_disconnected():
                return
            await asyncio.sleep(POLL_INTERVAL_S)
            idle += 1
            job = await run_in_threadpool(project.get_job, job_id)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.delete("/api/jobs/{job_id}")
def cancel_job(job_id: int, jobs: Jobs, author: Author) -> dict[str, Any]:
    """Stop a running job of this server; it ends ``cancelled`` (409 when it is not running)."""
    return job_json(jobs.cancel(job_id, author=author))


@router.post("/api/jobs/{job_id}/resume", status_code=202)
def resume_job(job_id: int, jobs: Jobs, author: Author) -> dict[str, Any]:
    """Continue an interrupted or cancelled job as a new job (409 for a running, done or failed one)."""
    return job_json(jobs.resume(job_id, author=author))


@router.get("/api/rounds")
def list_rounds(project: OpenProject, _: Author) -> dict[str, Any]:
    """The rounds of the loop, oldest first, with their summary numbers."""
    return {"rounds": [round_json(record) for record in project.list_rounds()]}


@router.get("/api/report/{name}")
def report_file(name: str, project: OpenProject, _: Author) -> FileResponse:
    """A file of the project's report (``index.html`` or a PNG plot), written at the end of each round."""
    match = _REPORT_NAME.fullmatch(name)
    if match is None:
        msg = f"report file {name!r} is not a report file name: expected NAME.png or NAME.html"
        raise InvalidInputError(msg)
    folder = (project.root / "reports").resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        msg = f"the report has no file {name}: finish a round to write the report"
        raise NotFoundError(msg)
    headers = {"X-Content-Type-Options": "nosniff"}
    if match.group(1) == "html":
        headers["Content-Security-Policy"] = _REPORT_POLICY
    return FileResponse(path, media_type=_REPORT_TYPES[match.group(1)], headers=headers)
