"""Synthetic data flows: `spinetrack render-sample` and `spinetrack ingest` (Prefect flow `ingest-synthetic`).

Thin by design: the work is in synthetic/ (renderer, ingest); this module adds retries, one task per
sequence so a bad one fails alone, a Markdown artifact, and the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flows import lazy
from flows.app import app
from flows.console import emit

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun
    from prefect.states import State

    from flows.runners import StoreRef

#: The ingest default (synthetic.ingest.DEFAULT_RESIDUAL_THRESHOLD_M, checked in tests/test_cli.py),
#: repeated here so that listing the commands does not import OpenSim.
DEFAULT_RESIDUAL_THRESHOLD_M = 0.02


def _transient_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import OperationalError

    return (OSError, OperationalError, TimeoutError)


#: Errors worth a retry: the file system or the database being briefly unavailable (e.g. SQLite locked).
#: (OSError, sqlalchemy's OperationalError, TimeoutError): see `_transient_errors`.


class IngestFailed(RuntimeError):
    """Some sequences failed; the others were ingested."""

    def __init__(self, failures: list[tuple[str, str]], summaries: list[dict[str, Any]],
                 bad_input: bool = False) -> None:
        self.failures = failures
        self.summaries = summaries
        self.bad_input = bad_input  # every failure is bad input (InputError): the user can fix it
        lines = "\n".join(f"  {folder}: {message}" for folder, message in failures)
        super().__init__(f"{len(failures)} sequence(s) failed to ingest:\n{lines}")


def _retry_transient(_task: Any, _run: TaskRun, state: State[Any]) -> bool:
    from schemas.errors import InputError

    exc = state.result(raise_on_failure=False)
    return isinstance(exc, _transient_errors()) and not isinstance(exc, InputError)


@lazy.task(
    name="ingest-sequence",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_retry_transient,
    cache_policy="NO_CACHE",
    task_run_name="ingest {folder}",
)
def ingest_sequence_task(
    folder: str,
    residual_threshold_m: float = DEFAULT_RESIDUAL_THRESHOLD_M,
    model: str | None = None,
    marker_map: str | None = None,
    store_ref: StoreRef | None = None,
) -> dict[str, Any]:
    from pipeline.store import Store
    from synthetic.ingest import ingest_sequence

    # on a Dask worker: the flow's store
    with store_ref.open() if store_ref is not None else Store.open() as store:
        summary = ingest_sequence(
            store, folder, residual_threshold_m=residual_threshold_m, model=model, marker_map=marker_map
        )
        return summary.to_dict()


@lazy.flow(name="ingest-synthetic")
def ingest_synthetic(
    render_dirs: list[str],
    residual_threshold_m: float = DEFAULT_RESIDUAL_THRESHOLD_M,
    model: str | None = None,
    marker_map: str | None = None,
    workers: int = 1,
    dask_address: str | None = None,
) -> list[dict[str, Any]]:
    """Ingest each rendered sequence folder; fails at the end, listing the sequences that failed.

    One sequence per task: in this process one after the other, or in parallel on a Dask cluster
    (`workers` > 1 starts a local one, `dask_address` uses a running one; flows/runners.py).
    """
    from prefect.artifacts import create_markdown_artifact

    from flows.runners import StoreRef, run_tasks, uses_dask
    from pipeline import progress
    from synthetic.ingest import summary_markdown

    ref = StoreRef.current()
    params = [{"folder": folder, "residual_threshold_m": residual_threshold_m, "model": model,
               "marker_map": marker_map, "store_ref": ref} for folder in render_dirs]
    if uses_dask(workers, dask_address):
        results = run_tasks(ingest_sequence_task, params, workers=workers, dask_address=dask_address)
    else:  # one at a time, with progress: IK is CPU-bound
        results = [run_tasks(ingest_sequence_task, [p])[0]
                   for p in progress.track(params, "ingest sequences")]
    summaries: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    for folder, result in zip(render_dirs, results, strict=True):
        if isinstance(result, BaseException):
            failures.append((folder, str(result)))
        else:
            summaries.append(result)
    create_markdown_artifact(
        summary_markdown(summaries, failures), key="ingest-synthetic", description="synthetic ingest summary"
    )
    if failures:
        from schemas.errors import InputError

        errors = [r for r in results if isinstance(r, BaseException)]
        raise IngestFailed(failures, summaries, bad_input=all(isinstance(e, InputError) for e in errors))
    return summaries


def _dask_picklable() -> None:
    from flows.runners import dask_picklable

    dask_picklable(ingest_sequence_task, ingest_synthetic)


_dask_picklable()


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
    emit({"path": str(path), "frames": frames},
         lambda con: con.print(f"rendered {frames} frames to [bold]{path}[/bold]"))


@app.command("ingest")
def ingest_command(
    render_dirs: list[Path] = typer.Argument(
        ..., exists=True, file_okay=False, help="rendered sequence folders (docs/render-contract.md)"),
    residual_threshold_m: float = typer.Option(
        DEFAULT_RESIDUAL_THRESHOLD_M, help="IK RMS (m) above which a frame is stored flagged"
    ),
    model: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                      help="OpenSim .osim to fit instead of the built-in model"),
    marker_map: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                           help="marker map for --model (docs/opensim-marker-map.md)"),
    workers: int = typer.Option(1, min=1, help="sequences in parallel on a local Dask cluster of N workers"),
    dask_address: str | None = typer.Option(
        None, help="run on an existing Dask cluster, e.g. tcp://scheduler:8786 (docs/deployment.md)"),
) -> None:
    """Ingest rendered sequences into the store (OpenSim IK, projection, visibility)."""
    from schemas.errors import InputError

    for folder in render_dirs:  # before any flow or server starts: a typo fails at once
        if not (folder / "sequence.json").is_file():
            raise InputError(folder / "sequence.json", "not a rendered sequence folder (no sequence.json; "
                             "see docs/render-contract.md)")
    try:
        summaries = ingest_synthetic(
            [str(d) for d in render_dirs],
            residual_threshold_m,
            str(model) if model else None,
            str(marker_map) if marker_map else None,
            workers,
            dask_address,
        )
        failures: list[tuple[str, str]] = []
        bad_input = False
    except IngestFailed as exc:
        summaries, failures, bad_input = exc.summaries, exc.failures, exc.bad_input
    only_bad_input = bad_input and not summaries  # nothing ingested, every folder refused as bad input

    def render(console: Any) -> None:
        from rich.table import Table

        if only_bad_input:  # one line per refused folder, naming its file and field
            for _folder, message in failures:
                console.print(message, highlight=False, soft_wrap=True)
            return
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

    emit({"sequences": summaries, "failures": [{"folder": f, "error": m} for f, m in failures]}, render)
    if failures:
        raise typer.Exit(code=2 if only_bad_input else 1)
