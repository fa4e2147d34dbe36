"""Release flows: `spinetrack release VERSION` (Prefect flow `release-dataset`), reproduce, verify, list.

Thin by design: the work is in pipeline/release/build.py; this module runs it as a flow, attaches the
dataset card as a Markdown artifact, and prints a summary. A refused release (version exists, bad
version, nothing changed) is a ReleaseError: one line, exit code 2 (flows/console.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flows import lazy
from flows.app import app
from flows.console import emit


@lazy.flow(name="release-dataset")
def release_dataset(
    version: str,
    parent: str | None = None,
    notes: str = "",
    fractions: dict[str, float] | None = None,
    copy_images: bool = True,
) -> dict[str, Any]:
    """Publish the store's current labels as an immutable release; returns the manifest."""
    from prefect.artifacts import create_markdown_artifact

    from pipeline.release.build import create_release
    from pipeline.release.dataset_card import render_card
    from pipeline.splits import DEFAULT_FRACTIONS
    from pipeline.store import Store

    with Store.open() as store:
        published = create_release(
            store, version, parent=parent, notes=notes, fractions=fractions or DEFAULT_FRACTIONS,
            copy_images=copy_images,
        )
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
    from pipeline.release.build import ReleaseError
    from pipeline.splits import SPLITS, parse_fractions
    from schemas.manifest import check_semver

    try:  # before the flow (and Prefect's server) starts
        check_semver(version)
        shares = parse_fractions(fractions)
    except ValueError as exc:
        raise ReleaseError(f"release refused: {exc}") from exc
    result = release_dataset(version, parent, notes, shares, images)
    manifest = result["manifest"]

    def render(console: Any) -> None:
        from rich.table import Table

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

    emit(result, render)


@app.command("release-reproduce")
def release_reproduce_command(
    version: str = typer.Argument(..., help="release to rebuild"),
    out: Path = typer.Argument(..., help="empty or new folder to rebuild it into"),
) -> None:
    """Rebuild a release byte for byte from the revisions its manifest names."""
    from pipeline.release.build import reproduce_release, verify_release
    from pipeline.store import Store

    path = reproduce_release(Store(), version, out)
    problems = verify_release(path)
    emit({"version": version, "path": str(path), "identical": not problems, "problems": problems},
         lambda con: con.print(f"rebuilt {version} in [bold]{path}[/bold]: "
                               + ("identical" if not problems else "; ".join(problems))))
    if problems:
        raise typer.Exit(code=1)


@app.command("release-verify")
def release_verify_command(
    version: str = typer.Argument(..., help="release to check against its manifest's checksums"),
) -> None:
    """Check every file of a release against the sha256 in its manifest."""
    from pipeline.release.build import get_release, verify_release
    from pipeline.store import Store

    published = get_release(Store(), version)
    problems = verify_release(published.path)

    def render(console: Any) -> None:
        for problem in problems:
            console.print(f"[red]{problem}[/red]")
        if not problems:
            console.print(f"release {version}: {len(published.manifest.files)} files intact")

    emit({"version": version, "files": len(published.manifest.files), "problems": problems}, render)
    if problems:
        raise typer.Exit(code=1)


@app.command("releases")
def releases_command() -> None:
    """List the releases in the store."""
    from pipeline.release.build import get_release, list_releases
    from pipeline.store import Store

    store = Store()
    rows = []
    for version in list_releases(store):
        rel = get_release(store, version)
        m = rel.manifest
        rows.append({"version": version, "parent": m.parent,
                     "created_at": f"{m.created_at:%Y-%m-%d %H:%M:%S}",
                     "instances": sum(s.instances for s in m.counts.splits.values()),
                     "snapshot": m.snapshot_id, "path": str(rel.path)})

    def render(console: Any) -> None:
        from rich.table import Table

        table = Table(title="releases")
        for col in ("version", "parent", "created (UTC)", "instances", "snapshot", "path"):
            table.add_column(col)
        for r in rows:
            table.add_row(str(r["version"]), str(r["parent"] or "-"), str(r["created_at"]),
                          str(r["instances"]), str(r["snapshot"]), str(r["path"]))
        console.print(table)

    emit(rows, render)
