"""Synthetic data flows: `spinetrack render-sample` and `spinetrack ingest` (Prefect flow `ingest-synthetic`).

Thin by design: the work is in synthetic/ (renderer, ingest); this module adds retries, one task per
sequence so a bad one fails alone, a Markdown artifact, and the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError

from flows.app import app
from pipeline.store import Store
from schemas.errors import InputError
from synthetic.ingest import DEFAULT_RESIDUAL_THRESHOLD_M, ingest_sequence, summary_markdown

#: Errors worth a retry: the file system or the database being briefly unavailable (e.g. SQLite locked).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, OperationalError, TimeoutError)


class IngestFailed(RuntimeError):
    """Some sequences failed; the others were ingested."""

    def __init__(self, failures: list[tuple[str, str]], summaries: list[dict[str, Any]]) -> None:
        self.failures = failures
        self.summaries = summaries
        lines = "\n".join(f"  {folder}: {message}" for folder, message in failures)
        super().__init__(f"{len(failures)} sequence(s) failed to ingest:\n{lines}")


def _retry_transient(_task: Any, _run: TaskRun, state: State[Any]) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, InputError)


@task(
    name="ingest-sequence",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
    task_run_name="ingest {folder}",
)
def ingest_sequence_task(
    folder: str,
    residual_threshold_m: float = DEFAULT_RESIDUAL_THRESHOLD_M,
    model: str | None = None,
    marker_map: str | None = None,
) -> dict[str, Any]:
    store = Store()
    try:
        summary = ingest_sequence(
            store, folder, residual_threshold_m=residual_threshold_m, model=model, marker_map=marker_map
        )
        return summary.to_dict()
    finally:
        store.engine.dispose()


@flow(name="ingest-synthetic")
def ingest_synthetic(
    render_dirs: list[str],
    residual_threshold_m: float = DEFAULT_RESIDUAL_THRESHOLD_M,
    model: str | None = None,
    marker_map: str | None = None,
) -> list[dict[str, Any]]:
    """Ingest each rendered sequence folder; fails at the end, listing the sequences that failed."""
    summaries: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    for folder in render_dirs:  # one at a time: IK is CPU-bound and SQLite has one writer
        state = ingest_sequence_task(folder, residual_threshold_m, model, marker_map, return_state=True)
        result = state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            failures.append((folder, str(result)))
        else:
            summaries.append(result)
    create_markdown_artifact(
        summary_markdown(summaries, failures), key="ingest-synthetic", description="synthetic ingest summary"
    )
    if failures:
        raise IngestFailed(failures, summaries)
    return summaries


# -- CLI ----------------------------------------------------------------------------------------
@app.command("render-sample")
def render_sample_command(
    out: Path = typer.Argument(..., help="folder to write the rendered sequence into (must not exist)"),
    frames: int = typer.Option(16, min=1, help="number of frames"),
    seed: int = typer.Option(0, help="random seed (same seed, same sequence)"),
    motion: str = typer.Option("mixed", help="motion kind (see synthetic.renderer)"),
    width: int = typer.Option(320, min=16),
    height: int = typer.Option(256, min=16),
    actors: int = typer.Option(1, min=1, max=8, help="people in the scene"),
) -> None:
    """Render a synthetic sample sequence in the render-contract layout (reference renderer)."""
    from synthetic.renderer import render_sequence

    path = render_sequence(
        out, frames=frames, seed=seed, motion=motion, width=width, height=height, actors=actors
    )
    Console().print(f"rendered {frames} frames to [bold]{path}[/bold]")


@app.command("ingest")
def ingest_command(
    render_dirs: list[Path] = typer.Argument(..., help="rendered sequence folders (docs/render-contract.md)"),
    residual_threshold_m: float = typer.Option(
        DEFAULT_RESIDUAL_THRESHOLD_M, help="IK RMS (m) above which a frame is stored flagged"
    ),
    model: Path | None = typer.Option(None, help="OpenSim .osim to fit instead of the built-in model"),
    marker_map: Path | None = typer.Option(None, help="marker map for --model (docs/opensim-marker-map.md)"),
) -> None:
    """Ingest rendered sequences into the store (OpenSim IK, projection, visibility)."""
    console = Console()
    try:
        summaries = ingest_synthetic(
            [str(d) for d in render_dirs],
            residual_threshold_m,
            str(model) if model else None,
            str(marker_map) if marker_map else None,
        )
        failures: list[tuple[str, str]] = []
    except IngestFailed as exc:
        summaries, failures = exc.summaries, exc.failures
    table = Table(title="synthetic ingest")
    for col in ("sequence", "status", "frames", "added", "existing", "flagged", "IK RMS mean (mm)"):
        table.add_column(col)
    for s in summaries:
        rms = s.get("ik_rms_m") or {}
        table.add_row(
            s["sequence_id"], s["status"], str(s["frames"]), str(s["annotations_added"]),
            str(s["annotations_existing"]), str(s["flagged"]),
            f"{rms['mean'] * 1000:.2f}" if "mean" in rms else "-",
        )
    console.print(table)
    for folder, message in failures:
        console.print(f"[red]failed[/red] {folder}: {message}")
    if failures:
        raise typer.Exit(code=1)
