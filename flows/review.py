"""Review flows: `spinetrack review` (FiftyOne App on loopback) and `spinetrack review-sync`.

Thin by design: the work is in annotation/fiftyone/. `review-sync` is a Prefect flow (`review-sync`)
because it writes to the store; `review` is interactive and stays a plain command. The App keeps
running when the reviewer reloads or closes the browser tab; Ctrl-C stops it.
"""

from __future__ import annotations

from typing import Any

import typer

from flows import lazy
from flows.app import app
from flows.console import emit, stdout
from schemas.enums import ReviewTag

NEEDS_FIX = str(ReviewTag.NEEDS_FIX)


@lazy.flow(name="review-sync")
def review_sync(release: str | None = None, reviewer: str | None = None,
                tags: list[str] | None = None) -> list[int]:
    """Pull reviewer tags from the FiftyOne dataset into ReviewTag rows; returns tagged instance ids."""
    from annotation.fiftyone_review import dataset_name, fiftyone_module, sync_review_tags
    from pipeline.release import ReleaseError
    from pipeline.store import Store

    with Store.open() as store:
        fo = fiftyone_module(store.home)
        name = dataset_name(release)
        if not fo.dataset_exists(name):
            raise ReleaseError(f"no FiftyOne dataset {name!r}: run `spinetrack review` first")
        rows = sync_review_tags(store, fo.load_dataset(name), tags=tags or [NEEDS_FIX], reviewer=reviewer)
        return sorted(row.instance_id for row in rows)


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
    from annotation.fiftyone_review import launch, load_into_fiftyone, review_counts
    from pipeline.store import Store

    dataset = load_into_fiftyone(Store(), release=release, with_predictions=predictions)
    counts = review_counts(dataset)

    def render(console: Any) -> None:
        from rich.table import Table

        table = Table(title=f"FiftyOne dataset {dataset.name}")
        table.add_column("view")
        table.add_column("samples", justify="right")
        for view_name, count in counts.items():
            table.add_row(view_name, str(count))
        console.print(table)

    emit({"dataset": dataset.name, "views": counts}, render)
    if launch_app:
        stdout().print(f"App on http://{address}:{port}  (reloading or closing the tab keeps it running; "
                       f"Ctrl-C stops it). Tag labels '{NEEDS_FIX}', then `spinetrack review-sync`.")
        launch(dataset, port=port, address=address, wait=True)


@app.command("review-sync")
def review_sync_command(
    release: str | None = typer.Option(None, help="release whose dataset was reviewed (default: working)"),
    reviewer: str | None = typer.Option(None, help="name to record (default: $SPINETRACK_REVIEWER or user)"),
    tag: list[str] = typer.Option([NEEDS_FIX], help="tags to pull (repeatable)"),
) -> None:
    """Write reviewer tags from FiftyOne into the store (ReviewTag rows; `push --from-review` sends them)."""
    instances = review_sync(release, reviewer, list(tag))
    where = f" on instances {instances}" if instances else ""
    emit({"new_tags": len(instances), "instances": instances},
         lambda con: con.print(f"{len(instances)} new review tag(s){where}"))
