"""`spinetrack export-coco`: the store's current labels as a COCO file."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.app import app
from flows.console import emit


@app.command("export-coco")
def export_coco_command(
    out: Path = typer.Argument(..., help="COCO JSON file to write"),
    source: str | None = typer.Option(None, help="only images of this source: synthetic or real"),
    subset: str | None = typer.Option(None, help="only images of this subset (e.g. train-unreal)"),
    relative_to: Path | None = typer.Option(None, help="write image paths relative to this folder"),
) -> None:
    """Write the store's current (latest accepted) labels as COCO keypoints JSON."""
    from pipeline.export import export_coco
    from pipeline.store import Store

    store = Store()
    path = export_coco(store, out, image_source=source, subset=subset, image_root=relative_to)
    labels = store.current_labels(image_source=source, subset=subset)
    emit({"path": str(path), "annotations": len(labels)},
         lambda con: con.print(f"wrote {len(labels)} annotations to [bold]{path}[/bold]"))
