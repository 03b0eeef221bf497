"""The store's commands: `segloop fsck`.

Registered in `segloop.cli.main`; parses, calls `segloop.store.check_project`, prints a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["fsck_command"]

ProjectArg = Annotated[Path, typer.Argument(help="Project folder.", show_default=False)]


def fsck_command(project: ProjectArg) -> None:
    """Verify a project: database integrity, every label object's and image's SHA-256, missing files, orphans.

    Prints what is wrong and exits 1 if anything is; repairs nothing.
    """
    from rich.table import Table

    from segloop.cli.output import console
    from segloop.store import Project, check_project

    report = check_project(Project.open(project))
    checked = (
        f"{report.objects_checked} label objects, {report.images_checked} images,"
        f" {report.predictions_checked} predictions"
    )
    if report.ok:
        console.print(f"{project}: checked {checked}: no problems")
        return
    table = Table(title=f"{project}: {len(report.problems)} problems (checked {checked})")
    for column in ("problem", "file", "detail"):
        table.add_column(column, overflow="fold")
    for problem in report.problems:
        table.add_row(problem.kind, problem.subject, problem.detail)
    console.print(table)
    raise typer.Exit(1)
