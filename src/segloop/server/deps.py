"""What routes ask FastAPI for: the open project, the settings, the job runner, the signed-in author."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from segloop.server.auth import current_author
from segloop.server.jobs import JobRunner
from segloop.server.settings import Settings
from segloop.store import Project

__all__ = ["AppSettings", "Author", "Jobs", "OpenProject"]


def _project(request: Request) -> Project:
    return request.app.state.project


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _jobs(request: Request) -> JobRunner:
    return request.app.state.jobs


#: The project the server serves.
OpenProject = Annotated[Project, Depends(_project)]
#: The server's `Settings`.
AppSettings = Annotated[Settings, Depends(_settings)]
#: The name recorded as author of what the request stores (401 when sign-in is required and missing).
Author = Annotated[str, Depends(current_author)]
#: The server's `segloop.server.jobs.JobRunner`.
Jobs = Annotated[JobRunner, Depends(_jobs)]
