"""Review flows: `spinetrack review` (FiftyOne App on loopback) and `spinetrack review-sync`.

Thin by design: the work is in annotation/fiftyone_review.py. `review-sync` is a Prefect flow
(`review-sync`) because it writes to the store; `review` is interactive and stays a plain command.
"""

from __future__ import annotations

import typer
from prefect import flow
from rich.console import Console
from rich.table import Table

from annotation.fiftyone_review import (
    NEEDS_FIX,
    dataset_name,
    fiftyone_module,
    launch,
    load_into_fiftyone,
    review_counts,
    sync_review_tags,
)
from flows.app import app
from pipeline.release import ReleaseError
from pipeline.store import Store


@flow(name="review-sync")
def review_sync(release: str | None = None, reviewer: str | None = None,
                tags: list[str] | None = None) -> list[int]:
    """Pull reviewer tags from the FiftyOne dataset into ReviewTag rows; returns tagged instance ids."""
    store = Store()
    try:
        fo = fiftyone_module(store.home)
        name = dataset_name(release)
        if not fo.dataset_exists(name):
            raise ReleaseError(f"no FiftyOne dataset {name!r}: run `spinetrack review` first")
        rows = sync_review_tags(store, fo.load_dataset(name), tags=tags or [NEEDS_FIX], reviewer=reviewer)
        return sorted(row.instance_id for row in rows)
    finally:
        store.engine.dispose()


@app.command("review")
def review_command(
    release: str | None = typer.Option(None, help="release to review (default: the store's working set)"),
    port: int = typer.Option(5151, help="port of the FiftyOne App"),
    address: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    launch_app: bool = typer.Option(True, "--launch/--no-launch", help="serve the App after loading"),
    predictions: bool = typer.Option(True, help="also load each instance's latest model proposal"),
) -> None:
    """Load a release or the working set into FiftyOne and serve the App for review.

    Tag samples or labels `needs-fix` in the App, then run `spinetrack review-sync`.
    """
    console = Console()
    store = Store()
    try:
        dataset = load_into_fiftyone(store, release=release, with_predictions=predictions)
    except ReleaseError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=1) from exc
    table = Table(title=f"FiftyOne dataset {dataset.name}")
    table.add_column("view")
    table.add_column("samples")
    for view_name, count in review_counts(dataset).items():
        table.add_row(view_name, str(count))
    console.print(table)
    if launch_app:
        console.print(f"App on http://{address}:{port}  (Ctrl-C to stop; tag labels '{NEEDS_FIX}', "
                      "then `spinetrack review-sync`)")
        launch(dataset, port=port, address=address, wait=True)


@app.command("review-sync")
def review_sync_command(
    release: str | None = typer.Option(None, help="release whose dataset was reviewed (default: working)"),
    reviewer: str | None = typer.Option(None, help="name to record (default: $SPINETRACK_REVIEWER or user)"),
    tag: list[str] = typer.Option([NEEDS_FIX], help="tags to pull (repeatable)"),
) -> None:
    """Write reviewer tags from FiftyOne into the store (ReviewTag rows; `push --from-review` sends them)."""
    try:
        instances = review_sync(release, reviewer, list(tag))
    except ReleaseError as exc:
        Console().print(f"[red]{exc}[/red]")
        raise typer.Exit(code=1) from exc
    where = f" on instances {instances}" if instances else ""
    Console().print(f"{len(instances)} new review tag(s){where}")
