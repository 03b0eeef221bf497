"""The store's commands: `segloop fsck`, `segloop migrate`.

Registered in `segloop.cli.main`; they parse, call `segloop.store` (`check_project`,
`segloop.store.copy.migrate_project`) and print the outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["fsck_command", "migrate_command"]

ProjectArg = Annotated[Path, typer.Argument(help="Project folder.", show_default=False)]


def fsck_command(project: ProjectArg) -> None:
    """Verify a project: database integrity, every label object's and image's SHA-256, missing files, orphans.

    Prints what is wrong and exits 1 if anything is; repairs nothing.
    """
    from rich.table import Table

    from segloop.cli.output import console
    from segloop.store import Project, check_project

    opened = Project.open(project)
    report = check_project(opened)
    checked = (
        f"{report.objects_checked} label objects, {report.images_checked} images,"
        f" {report.predictions_checked} predictions"
    )
    shown = opened.engine.url.render_as_string(hide_password=True)
    console.print(f"database: {shown}", soft_wrap=True, markup=False)
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


def migrate_command(
    project: ProjectArg,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="An empty PostgreSQL database: postgresql+psycopg://user@host[:port]/db (no password in"
            " the URL: ~/.pgpass or PGPASSWORD).",
            show_default=False,
        ),
    ],
) -> None:
    """Copy a project's SQLite database into an empty PostgreSQL database, verified, and use it from now on.

    Every row and id is copied, then compared: row counts and a SHA-256 per table.

    segloop.toml then records the database (SEGLOOP_DATABASE_URL still overrides it).

    Your ~/.config/segloop/databases.toml trusts it for this folder; the SQLite file is left as it was.

    Others of a shared project run the same command once: it copies nothing then, it trusts.
    """
    from segloop.cli.output import console
    from segloop.store.copy import migrate_project

    report = migrate_project(project, to)
    if not report.rows:
        console.print(
            f"{project} uses {report.destination} already: trusted for you ({report.trusted_in})",
            soft_wrap=True,
            markup=False,
        )
        return
    console.print(
        f"copied {sum(report.rows.values())} rows of {len(report.rows)} tables from {report.source} to"
        f" {report.destination}, verified (row counts and SHA-256 of every table equal)",
        soft_wrap=True,
        markup=False,
    )
    console.print(
        f"{project} uses {report.destination} from now on (segloop.toml [database] url, trusted in"
        f" {report.trusted_in}); {project / 'segloop.db'} is left as it was",
        soft_wrap=True,
        markup=False,
    )
