"""`gateway folders import FILE`: customer folders from CSV or JSON lines."""

from __future__ import annotations

import time

import click

from gateway.cli.common import runtime_or_exit
from gateway.folders import (
    FolderFileError,
    FolderImportError,
    ImportReport,
    import_folders,
    open_folder_file,
)

PROGRESS_EVERY_ROWS = 10_000

IMPORT_HELP = """Import customer folders from FILE (CSV or JSON lines), idempotent on external_id.

\b
Format:
  .csv is CSV with a header row; .jsonl, .ndjson and .json are JSON lines
  (one object per line); other names are decided by the content.
  Fields: external_id and name (required), phones, sales_resource,
  service_resource. Other columns/keys are ignored.
  Phones: columns or keys named phone, phones, phone2, phone3, ... all hold
  phones, and one value may hold several separated by ";", "|" or ","
  (quote a CSV value that uses commas). In JSON a phone field may be a
  string, a number or a list. Numbers are normalised to E.164 with the
  config's default_region.

\b
Outcome:
  A row whose external_id exists updates the name and resources and
  replaces the folder's phones ("updated"); a row equal to what is stored
  is "unchanged" and not written. A bad row is rejected with its line and
  reason and changes nothing; the good rows are still imported and the
  exit status is 0. The exit status is 1 only when the file as a whole
  cannot be read (missing, not UTF-8, no external_id/name header) or the
  database fails; rows are committed in batches of 2,000, so the error
  says which rows before the failure were saved.
  sales_resource and service_resource are user names: a name that is no
  user yet is imported and listed in a note at the end.
"""


@click.group("folders")
def folders_group() -> None:
    """Customer folders: their phones and their sales and service resources."""


@folders_group.command("import", help=IMPORT_HELP)
@click.argument("file")
def import_command(file: str) -> None:
    runtime = runtime_or_exit()
    try:
        source = open_folder_file(file)
    except FolderFileError as exc:
        raise click.ClickException(str(exc)) from None
    started, region = time.monotonic(), runtime.settings.default_region
    try:
        report = import_folders(runtime.sessions, source, region, on_progress=_progress_printer(source.lines))
    except (FolderFileError, FolderImportError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_summary(report, file, time.monotonic() - started))
    for rejection in report.rejected:
        click.echo(f"line {rejection.line}: {rejection.reason}")
    for name, rows in report.unknown_resources.items():
        rows_text = "1 row" if rows == 1 else f"{rows} rows"
        click.echo(f"note: resource {name!r} on {rows_text} is no user yet; add it with `gateway users add`")


def _progress_printer(total_lines: int):
    """A line on stderr every PROGRESS_EVERY_ROWS rows, so large files show they are moving."""
    printed_at = 0

    def progress(rows: int, line: int) -> None:
        nonlocal printed_at
        if rows - printed_at >= PROGRESS_EVERY_ROWS:
            printed_at = rows
            percent = 100 * line // max(total_lines, 1)
            message = f"folders import: {rows} rows read, line {line} of {total_lines} ({percent}%)"
            click.echo(message, err=True)

    return progress


def _summary(report: ImportReport, file: str, seconds: float) -> str:
    return (
        f"imported {report.imported}, updated {report.updated}, unchanged {report.unchanged}, "
        f"rejected {len(report.rejected)} of {report.rows} rows from {file} in {seconds:.1f}s"
    )


def register(main: click.Group) -> None:
    main.add_command(folders_group)
