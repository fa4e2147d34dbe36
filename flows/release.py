"""Release flows: `spinetrack release VERSION` (Prefect flow `release-dataset`), reproduce, verify, list.

Thin by design: the work is in pipeline/release.py; this module runs it as a flow, attaches the
dataset card as a Markdown artifact, and prints a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from rich.console import Console
from rich.table import Table

from flows.app import app
from pipeline.dataset_card import render_card
from pipeline.release import (
    ReleaseError,
    create_release,
    get_release,
    list_releases,
    reproduce_release,
    verify_release,
)
from pipeline.splits import DEFAULT_FRACTIONS, SPLITS, parse_fractions
from pipeline.store import Store


@flow(name="release-dataset")
def release_dataset(
    version: str,
    parent: str | None = None,
    notes: str = "",
    fractions: dict[str, float] | None = None,
    copy_images: bool = True,
) -> dict[str, Any]:
    """Publish the store's current labels as an immutable release; returns the manifest."""
    store = Store()
    try:
        published = create_release(
            store, version, parent=parent, notes=notes, fractions=fractions or DEFAULT_FRACTIONS,
            copy_images=copy_images,
        )
    finally:
        store.engine.dispose()
    create_markdown_artifact(
        render_card(published.manifest), key=f"release-{version.replace('.', '-').lower()}"[:100],
        description=f"dataset card of release {version}",
    )
    return {"path": str(published.path), "manifest": published.manifest.model_dump(mode="json")}


# -- CLI ----------------------------------------------------------------------------------------
@app.command("release")
def release_command(
    version: str = typer.Argument(..., help="semantic version of the new release, e.g. 1.0.0"),
    parent: str | None = typer.Option(None, help="parent release for the changelog (default: the latest)"),
    notes: str = typer.Option("", help="release notes, shown in the dataset card"),
    fractions: str = typer.Option("80/10/10", help="train/val/test shares for groups never split before"),
    images: bool = typer.Option(True, help="hard-link/copy images into the release (--no-images: reference)"),
) -> None:
    """Publish the store's current labels as an immutable, versioned COCO release."""
    console = Console()
    try:
        result = release_dataset(version, parent, notes, parse_fractions(fractions), images)
    except (ReleaseError, ValueError) as exc:
        console.print(f"[red]release refused:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    manifest = result["manifest"]
    table = Table(title=f"release {version} (parent {manifest['parent'] or 'none'})")
    for col in ("split", "images", "instances", "groups"):
        table.add_column(col)
    for split in SPLITS:
        c = manifest["counts"]["splits"][split]
        table.add_row(split, str(c["images"]), str(c["instances"]), str(c["groups"]))
    console.print(table)
    log = manifest["changelog"]
    console.print(f"added {len(log['added'])}, removed {len(log['removed'])}, "
                  f"relabelled {len(log['relabelled'])}; written to [bold]{result['path']}[/bold]")


@app.command("release-reproduce")
def release_reproduce_command(
    version: str = typer.Argument(..., help="release to rebuild"),
    out: Path = typer.Argument(..., help="empty or new folder to rebuild it into"),
) -> None:
    """Rebuild a release byte for byte from the revisions its manifest names."""
    store = Store()
    try:
        path = reproduce_release(store, version, out)
    except ReleaseError as exc:
        Console().print(f"[red]cannot reproduce:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    problems = verify_release(path)
    Console().print(f"rebuilt {version} in [bold]{path}[/bold]: " + ("identical" if not problems else
                                                                       "; ".join(problems)))


@app.command("release-verify")
def release_verify_command(
    version: str = typer.Argument(..., help="release to check against its manifest's checksums"),
) -> None:
    """Check every file of a release against the sha256 in its manifest."""
    store = Store()
    try:
        published = get_release(store, version)
    except ReleaseError as exc:
        Console().print(f"[red]{exc}[/red]")
        raise typer.Exit(code=1) from exc
    problems = verify_release(published.path)
    for problem in problems:
        Console().print(f"[red]{problem}[/red]")
    if problems:
        raise typer.Exit(code=1)
    Console().print(f"release {version}: {len(published.manifest.files)} files intact")


@app.command("releases")
def releases_command() -> None:
    """List the releases in the store."""
    store = Store()
    table = Table(title="releases")
    for col in ("version", "parent", "created (UTC)", "instances", "snapshot", "path"):
        table.add_column(col)
    for version in list_releases(store):
        rel = get_release(store, version)
        m = rel.manifest
        table.add_row(version, m.parent or "-", f"{m.created_at:%Y-%m-%d %H:%M:%S}",
                      str(sum(s.instances for s in m.counts.splits.values())), m.snapshot_id, str(rel.path))
    Console().print(table)
