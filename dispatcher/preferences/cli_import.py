"""``dispatcher residents import FILE``: the bulk import with a rich progress bar and a short report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from dispatcher.db import connect
from dispatcher.preferences.importing import ImportReport, import_residents

#: Rejected rows printed one by one; the rest are only counted.
SHOWN_REJECTIONS = 20


def run_import(path: Path, console: Console | None = None) -> ImportReport:
    """Import ``path`` into the configured database, showing progress on ``console``."""
    console = console or Console()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                label = "reading and checking" if phase == "read" else "upserting"
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        with connect(autocommit=True) as conn:
            report = import_residents(conn, path, progress=progress)

    console.print(
        f"{report.rows_read:,} rows read in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s): "
        f"{report.inserted:,} new, {report.updated:,} changed, {report.unchanged:,} unchanged, "
        f"{report.skipped_stale:,} older than the index, {report.skipped_deleted:,} deleted residents, "
        f"{report.tokens_added:,} tokens added, {len(report.rejected):,} rejected"
    )
    for line, problem in report.rejected[:SHOWN_REJECTIONS]:
        console.print(f"  line {line}: {problem}")
    if len(report.rejected) > SHOWN_REJECTIONS:
        console.print(f"  ... and {len(report.rejected) - SHOWN_REJECTIONS:,} more")
    return report
