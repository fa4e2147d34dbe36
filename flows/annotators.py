"""`spinetrack predict` and `spinetrack annotators`: neural annotators from the command line.

Thin: the work is pipeline.annotators. Heavy libraries load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from flows.app import app
from flows.console import emit


@app.command("predict")
def predict_command(
    coco_file: Path = typer.Argument(..., help="COCO file whose images and person boxes to label"),
    images: Path = typer.Option(..., help="folder the file_names are relative to"),
    annotator: str = typer.Option("combined", help="annotator spec (docs/annotators.md)"),
    out: Path = typer.Option(..., help="COCO keypoint results JSON to write"),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]"),
    student: str | None = typer.Option(None, help="registered model: the combined annotator's student"),
) -> None:
    """COCO keypoint results (37 triplets + score per person) for the boxes of any COCO file."""
    from pipeline.annotators import load_annotator
    from pipeline.annotators.coco_predict import predict_coco

    store = _store_if_any()
    ann = load_annotator(annotator, store, device=device, student=student)
    results = predict_coco(ann, coco_file, images)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results))
    summary = {"persons": len(results), "annotator": ann.identity.as_json(), "out": str(out)}
    emit(summary, lambda con: con.print(f"{len(results)} persons labelled by {ann.identity.name} -> {out}"))


@app.command("annotators")
def annotators_command(
    folder: list[Path] = typer.Option([], help="extra folders to search for .onnx / .pth files"),
) -> None:
    """What can annotate here: registered models, ONNX/mmpose files found, BlazePose, the spine prior."""
    from pipeline.annotators import available_annotators

    found = available_annotators(_store_if_any(), list(folder))

    def render(console):  # type: ignore[no-untyped-def]
        for entry in found:
            state = "error: " + entry["error"] if "error" in entry else (
                "unavailable: " + entry.get("reason", "") if entry.get("available") is False else "ok")
            covers = entry.get("covers")
            console.print(f"[bold]{entry['spec']}[/bold]  {state}"
                          + (f"\n    sha256 {entry['sha256'][:16]}" if entry.get("sha256") else "")
                          + (f"\n    covers {len(covers)}: {', '.join(covers)}" if covers else ""))

    emit(found, render)


def _store_if_any():  # type: ignore[no-untyped-def]
    """The store when SPINETRACK_HOME has one (predict works without)."""
    from pipeline.store import Store
    from pipeline.store.store import spinetrack_home

    home = spinetrack_home()
    return Store() if home.is_dir() else None
