"""`spinetrack round`: one active-learning round as a Prefect flow (resumable at every step).

Thin by design: the steps live in pipeline/active_learning.py and record their progress in the
store, so a crashed or interrupted round re-run with the same command continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from rich.console import Console

from annotation.labelstudio.hooks import LabelStudioHooks
from annotation.simulated_annotator import AnnotatorProfile
from flows.app import app
from pipeline.active_learning import RoundContext, RoundSettings, run_step, start_round
from pipeline.rounds import (
    ROUND_STEPS,
    current_model,
    history,
    metrics_table,
    next_round_number,
    plot_learning_curve,
)
from pipeline.selection import STRATEGIES
from pipeline.store import Store


@task(name="round-step", cache_policy=NO_CACHE, task_run_name="{step}")
def round_step(ctx: RoundContext, step: str) -> bool:
    return run_step(ctx, step)


def round_report(store: Store) -> tuple[str, Path]:
    """Markdown metrics table and learning-curve PNG across all rounds so far."""
    rounds = history(store)
    png = plot_learning_curve(rounds, store.home / "reports" / "learning_curve.png")
    return metrics_table(rounds), png


@flow(name="active-learning-round")
def active_learning_round(
    settings: RoundSettings | None = None,
    start_model: str | None = None,
    simulate_annotators: bool = False,
    noise_px: float = 1.5,
    skip_rate: float = 0.05,
) -> dict[str, Any]:
    """Run (or resume) the next round; returns the round's state."""
    settings = settings or RoundSettings()
    logger = get_run_logger()
    store = Store()
    number = next_round_number(store)
    model = start_model or current_model(store)
    if model is None:
        raise RuntimeError("no model to start from: run `spinetrack train` first or pass --model")
    start_round(store, number, settings, model)
    ls = LabelStudioHooks.from_environment(store)
    annotate = None
    if simulate_annotators:
        profile = AnnotatorProfile(pixel_noise=noise_px, skip_rate=skip_rate)

        def annotate(st: Store, n: int) -> Any:
            return ls.simulate(st, n, profile=profile, seed=settings.seed + n)
    ctx = RoundContext(store=store, settings=settings, number=number, push=ls.push, pull=ls.pull,
                       annotate=annotate, log=logger.info)
    for step in ROUND_STEPS:
        round_step(ctx, step)
    table, png = round_report(store)
    create_markdown_artifact(
        f"# Active learning, round {number}\n\n{table}\n\nLearning curve: `{png}`\n",
        key="active-learning", description=f"active-learning round {number}",
    )
    return dict(ctx.state)


@app.command("round")
def round_command(
    budget: int = typer.Option(20, min=1, help="instances sent to annotators this round"),
    strategy: str = typer.Option("diversity", help=f"selection strategy: {', '.join(sorted(STRATEGIES))}"),
    iters: int = typer.Option(300, min=1, help="training iterations when retraining"),
    model: str | None = typer.Option(None, help="model to start from (default: the current one)"),
    wait: float = typer.Option(0.0, help="seconds to wait for annotators before retraining"),
    simulate_annotators: bool = typer.Option(
        False, help="BENCHMARK ONLY: fill tasks from hidden ground truth instead of waiting for people"),
    seed: int = typer.Option(0),
    annotator: str = typer.Option("combined", help="neural annotator that proposes labels"),
    teacher: str | None = typer.Option(None, help="teacher distilled into the student when retraining"),
    config: str = typer.Option("tiny", help="model config the round retrains"),
    device: str = typer.Option("cpu", help="torch device for prediction and training"),
) -> None:
    """Run the next active-learning round (or resume the unfinished one)."""
    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"unknown strategy {strategy!r}", param_hint="--strategy")
    settings = RoundSettings(budget=budget, strategy=strategy, train_iters=iters, wait_s=wait, seed=seed,
                             annotator=annotator, teacher=teacher, config=config, device=device)
    state = active_learning_round(settings, start_model=model, simulate_annotators=simulate_annotators)
    table, png = round_report(Store())
    console = Console()
    console.print(table)
    console.print(f"learning curve: [bold]{png}[/bold]; model now: {state.get('model_version')}")
