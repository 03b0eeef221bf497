"""The API by topic; `ROUTERS` lists what `create_app` includes, in order."""

from __future__ import annotations

from segloop.server.routes import cases, jobs, monailabel, pages, tools

__all__ = ["ROUTERS"]

ROUTERS = (cases.router, tools.router, jobs.router, monailabel.router, pages.router)
