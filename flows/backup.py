"""`spinetrack backup DIR` and `spinetrack restore DIR`: the whole store, kept and brought back.

Thin by design: the work is in pipeline/backup.py. A refused restore (a store already there, a
damaged backup, the wrong database kind) prints one line naming the file or field, exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flows.app import app
from flows.console import emit


@app.command("backup")
def backup_command(
    out: Path = typer.Argument(..., help="new (or empty) folder to write the backup into"),
) -> None:
    """Back up the store: database, the images it owns, Label Studio media, models (with checksums)."""
    from pipeline.backup import backup
    from pipeline.store import Store

    with Store.open() as store:
        summary = backup(store, out)

    def render(console: Any) -> None:
        console.print(f"backed up the {summary.database} store to [bold]{summary.path}[/bold]: "
                      f"{summary.files} files, {summary.bytes / 1e6:.1f} MB, releases "
                      f"{', '.join(summary.releases) or 'none'}")
        if summary.images_without_bytes:
            console.print(f"[yellow]{len(summary.images_without_bytes)} images have neither the store's "
                          f"copy nor their source any more (ids {summary.images_without_bytes[:10]})[/]")

    emit({"path": str(summary.path), "database": summary.database, "files": summary.files,
          "bytes": summary.bytes, "releases": summary.releases,
          "images_without_bytes": summary.images_without_bytes}, render)


@app.command("restore")
def restore_command(
    source: Path = typer.Argument(..., help="folder a `spinetrack backup` wrote"),
) -> None:
    """Restore a backup into this SPINETRACK_HOME (and SPINETRACK_DB_URL), which must hold no store;
    every release is rebuilt and checked byte for byte."""
    import os

    from pipeline.backup import restore
    from pipeline.store import spinetrack_home

    summary = restore(source, home=spinetrack_home(), url=os.environ.get("SPINETRACK_DB_URL"))

    def render(console: Any) -> None:
        moved = f" (paths moved from {summary.moved_from})" if summary.moved_from else ""
        console.print(f"restored the {summary.database} store into [bold]{summary.home}[/bold]{moved}: "
                      f"{summary.files} files; releases rebuilt byte for byte: "
                      f"{', '.join(summary.releases) or 'none'}")

    emit({"home": str(summary.home), "database": summary.database, "files": summary.files,
          "releases": summary.releases, "moved_from": summary.moved_from}, render)
