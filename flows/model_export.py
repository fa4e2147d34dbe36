"""`spinetrack export-model NAME --format onnx|pth OUT` (Prefect flow `export-model`).

Thin by design: the work is in pipeline/model_export.py; this module runs it as a flow and prints
where the files went and what the card says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flows import lazy
from flows.app import app
from flows.console import emit

#: pipeline.model_export.FORMATS, repeated so the CLI lists them without importing torch.
FORMATS = ("onnx", "pth")


@lazy.flow(name="export-model")
def export_model_flow(name: str, fmt: str, out: str, val_release: str | None = None) -> dict[str, Any]:
    """Write a registered model with its metainfo and model card; returns the card."""
    from pipeline.model_export import export_model
    from pipeline.store import Store

    with Store.open() as store:
        exported = export_model(store, name, fmt, out, val_release=val_release)
    return {"folder": str(exported.folder), "file": str(exported.model_file), "card": exported.card}


@app.command("export-model")
def export_model_command(
    name: str = typer.Argument(..., help="a registered model's name (pipeline.model.registry)"),
    out: Path = typer.Argument(..., help="a new or empty folder for the model, metainfo.py and the card"),
    format: str = typer.Option("onnx", "--format", help="onnx or pth (mmpose checkpoint + config.py)"),
    val_release: str | None = typer.Option(
        None, help="release whose val split the card's metrics are measured on (default: the one the "
                   "model was trained on, else the newest)"),
) -> None:
    """Export a registered model to take away: ONNX or mmpose .pth, with metainfo and a model card."""
    from schemas.errors import InputError

    if format not in FORMATS:  # before any flow or model starts
        raise InputError("--format", f"{format!r}: choose one of {', '.join(FORMATS)}")
    result = export_model_flow(name, format, str(out), val_release)

    def render(console: Any) -> None:
        val = result["card"]["validation"]
        console.print(f"model {name} -> {result['file']} (+ metainfo.py, MODEL_CARD.md)")
        scores = ", ".join(f"{k} {v}" for k, v in sorted(val["metrics"].items()) if k.endswith("AP"))
        console.print(f"val: release {val['release']} split {val['split']}: {scores or 'not measured'}")

    emit(result, render)
