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
ACCEPT = str(ReviewTag.ACCEPT)


@lazy.flow(name="review-sync")
def review_sync(release: str | None = None, reviewer: str | None = None,
                tags: list[str] | None = None) -> dict[str, Any]:
    """Pull reviewer tags from the FiftyOne dataset: accept / needs-fix as `review` revisions, other
    tags (and needs-fix on proposal-only instances) as ReviewTag rows. Returns what was written."""
    from annotation.fiftyone_review import DECISION_TAGS, dataset_name, fiftyone_module, sync_review
    from pipeline.release.build import ReleaseError
    from pipeline.store import Store

    with Store.open() as store:
        fo = fiftyone_module(store.home)
        name = dataset_name(release)
        if not fo.dataset_exists(name):
            raise ReleaseError(f"no FiftyOne dataset {name!r}: run `spinetrack review` first")
        synced = sync_review(store, fo.load_dataset(name), tags=tags or list(DECISION_TAGS),
                             reviewer=reviewer)
        return {"decisions": [{"instance": d.instance_id, "decision": d.decision, "revision": d.revision_id}
                              for d in synced.decisions],
                "tagged": sorted({row.instance_id for row in synced.tags})}


@app.command("review")
def review_command(
    release: str | None = typer.Option(None, help="release to review (default: the store's working set)"),
    port: int = typer.Option(5151, help="port of the FiftyOne App"),
    address: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    launch_app: bool = typer.Option(True, "--launch/--no-launch", help="serve the App after loading"),
    predictions: bool = typer.Option(True, help="also load each instance's latest model proposal"),
) -> None:
    """Load a release or the working set into FiftyOne and serve the App for review.

    Tag samples or labels `needs-fix` or `accept` in the App, then run `spinetrack review-sync`.
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
                       f"Ctrl-C stops it). Tag labels '{NEEDS_FIX}' or '{ACCEPT}', "
                       "then `spinetrack review-sync`.")
        launch(dataset, port=port, address=address, wait=True)


@app.command("review-sync")
def review_sync_command(
    release: str | None = typer.Option(None, help="release whose dataset was reviewed (default: working)"),
    reviewer: str | None = typer.Option(None, help="name to record (default: $SPINETRACK_REVIEWER or user)"),
    tag: list[str] = typer.Option([NEEDS_FIX, ACCEPT], help="tags to pull (repeatable)"),
) -> None:
    """Write reviewer tags from FiftyOne into the store: accept / needs-fix as `review` revisions
    (a needs-fix keeps the instance out of releases until an accept or a correction), other tags as
    ReviewTag rows (`push --from-review` reopens needs-fix tasks). A second sync writes nothing."""
    out = review_sync(release, reviewer, list(tag))
    instances = out["tagged"]
    where = f" on instances {instances}" if instances else ""

    def render(con: Any) -> None:
        for d in out["decisions"]:
            con.print(f"instance {d['instance']}: {d['decision']} (review revision {d['revision']})")
        con.print(f"{len(out['decisions'])} new review decision(s); "
                  f"{len(instances)} new review tag(s){where}")

    emit({"new_decisions": len(out["decisions"]), "decisions": out["decisions"],
          "new_tags": len(instances), "instances": instances}, render)
