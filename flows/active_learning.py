"""`spinetrack round` and `spinetrack val-set`: active-learning rounds as Prefect flows.

Thin by design: the steps live in pipeline/active_learning/loop.py and record their progress in the
store. `spinetrack round` returns at once: after `push` the round is `awaiting-annotations` and the
command prints the round's status (tasks done / open / skipped, per annotator, age). Annotators take
hours or days; running `spinetrack round` again pulls and continues when the round's stored close
rule holds (`--close-when`, `--close-after`), or now with `--close`. A crashed or killed call re-run
continues where it stopped. Flags given when a round is resumed do not change it (it keeps the
settings stored when it started; the command says which flags it ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flows import lazy
from flows.app import app
from flows.console import emit

if TYPE_CHECKING:
    from pipeline.active_learning.loop import RoundContext, RoundSettings
    from pipeline.store import Store

#: Selection strategies (pipeline.active_learning.selection.STRATEGIES, checked in
#: tests/test_cli.py), named here so that listing the commands does not import the selection code.
STRATEGY_NAMES = ("random", "diversity", "uncertainty", "spine", "kcenter", "plausibility", "effort",
                  "typiclust", "hybrid")


@lazy.task(name="round-step", cache_policy="NO_CACHE", task_run_name="{step}",
           annotations_from=("pipeline.active_learning.loop",))
def round_step(ctx: RoundContext, step: str) -> str:
    from pipeline.active_learning.loop import run_step

    return run_step(ctx, step)


def round_report(store: Store) -> tuple[str, Path]:
    """Markdown metrics table and learning-curve PNG across all rounds so far."""
    from pipeline.active_learning.rounds import history, metrics_table, plot_learning_curve

    rounds = history(store)
    png = plot_learning_curve(rounds, store.home / "reports" / "learning_curve.png")
    return metrics_table(rounds), png


def round_status_table(store: Store, number: int) -> str:
    from pipeline.active_learning.rounds import get_round, status_table, task_status

    return status_table(task_status(store, number), get_round(store, number))


@lazy.flow(name="active-learning-round", annotations_from=("pipeline.active_learning.loop",))
def active_learning_round(
    settings: RoundSettings | None = None,
    start_model: str | None = None,
    simulate_annotators: bool = False,
    noise_px: float = 1.5,
    skip_rate: float = 0.05,
    close_now: bool = False,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start, continue or finish the current round; returns its state, status and ignored flags.

    `settings` (or `given`, the flags a person typed) apply to a new round; a round that already
    started keeps the settings it stored (`pipeline.active_learning.loop.resolve_settings`).
    """
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    from annotation.labelstudio.hooks import LabelStudioHooks
    from annotation.simulated_annotator import AnnotatorProfile
    from pipeline.active_learning.loop import RoundContext, advance_round, resolve_settings, start_round
    from pipeline.active_learning.rounds import RoundBusy, get_round, next_round_number
    from pipeline.store import Store

    logger = get_run_logger()
    store = Store()
    number = next_round_number(store)
    wanted = settings.as_dict() if settings is not None else dict(given or {})
    resolved, ignored = resolve_settings(store, number, wanted)
    for name, (typed, kept) in ignored.items():
        logger.warning(f"round {number} resumes with its stored {name}={kept!r}; ignoring {typed!r}")
    rnd = get_round(store, number)
    model = (rnd.state or {}).get("start_model") if rnd is not None else None
    model = model or start_model or store.current_model()
    if model is None:
        raise RuntimeError("no model to start from: run `spinetrack train` first or pass --model")
    start_round(store, number, resolved, model)
    ls = LabelStudioHooks.from_environment(store)
    annotate = None
    if simulate_annotators:
        profile = AnnotatorProfile(pixel_noise=noise_px, skip_rate=skip_rate)

        def annotate(st: Store, n: int) -> Any:
            return ls.simulate(st, n, profile=profile, seed=resolved.seed + n)
    ctx = RoundContext(store=store, settings=resolved, number=number, push=ls.push, pull=ls.pull,
                       annotate=annotate, log=logger.info, close_now=close_now)
    try:
        status = advance_round(ctx, run=round_step)
    except RoundBusy as busy:  # another process drives this round now: say who, and return
        logger.info(str(busy))
        return {"round": number, "status": "busy", "busy": str(busy),
                "ignored": {k: list(v) for k, v in ignored.items()}}
    table, png = round_report(store)
    create_markdown_artifact(
        f"# Active learning, round {number}: {status.value}\n\n{round_status_table(store, number)}\n\n"
        f"{table}\n\nLearning curve: `{png}`\n",
        key="active-learning", description=f"active-learning round {number}",
    )
    rnd = get_round(store, number)
    return {**dict((rnd.state if rnd else None) or {}), "round": number, "status": status.value,
            "ignored": {k: list(v) for k, v in ignored.items()}}


def _defaults() -> RoundSettings:
    from pipeline.active_learning.loop import RoundSettings

    return RoundSettings()


@app.command("round")
def round_command(
    budget: int | None = typer.Option(None, min=1, help="instances sent to annotators this round [20]"),
    strategy: str | None = typer.Option(None, help=f"selection strategy: {', '.join(STRATEGY_NAMES)}"),
    iters: int | None = typer.Option(None, min=1, help="training iterations when retraining [300]"),
    model: str | None = typer.Option(None, help="model to start from (default: the current one)"),
    close_when: float | None = typer.Option(
        None, min=0.0, max=1.0, help="continue when this share of tasks is done or skipped [1.0]"),
    close_after: str | None = typer.Option(
        None, help="continue this long after the push whatever is done (e.g. 3d, 12h) [never]"),
    close: bool = typer.Option(False, "--close", help="close the round's collection now and continue"),
    overlap: float | None = typer.Option(
        None, min=0.0, max=1.0, help="share of tasks given to two annotators, for agreement [0]"),
    val_size: int | None = typer.Option(
        None, min=0, help="real val images the first round sends to freeze the real validation split [20]"),
    auto_accept: bool | None = typer.Option(None, "--auto-accept/--no-auto-accept",
                                            help="accept confident pseudo-labels [on]"),
    wait: float | None = typer.Option(
        None, min=0.0, help="keep pulling this many seconds for the close rule before returning [0]"),
    simulate_annotators: bool = typer.Option(
        False, help="BENCHMARK ONLY: fill tasks from hidden ground truth instead of waiting for people"),
    seed: int | None = typer.Option(None),
    annotator: str | None = typer.Option(None, help="neural annotator that proposes labels [combined]"),
    teacher: str | None = typer.Option(None, help="teacher distilled into the student when retraining"),
    config: str | None = typer.Option(None, help="model config the round retrains [blaze37]"),
    device: str | None = typer.Option(None, help="torch device for prediction and training [cpu]"),
) -> None:
    """Start the next active-learning round, or continue the waiting one; prints its status.

    Returns at once while annotators work: run it again later (or let the webhook do it).
    Defaults in brackets come from pipeline.active_learning.loop.RoundSettings.
    """
    from pipeline.active_learning.rounds import parse_duration
    from pipeline.active_learning.selection import STRATEGIES
    from pipeline.store import Store

    if strategy is not None and strategy not in STRATEGIES:
        raise typer.BadParameter(f"unknown strategy {strategy!r}", param_hint="--strategy")
    try:
        close_after_s = parse_duration(close_after) if close_after is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--close-after") from exc
    given = {
        "budget": budget, "strategy": strategy, "train_iters": iters, "close_when": close_when,
        "close_after_s": close_after_s, "overlap": overlap, "val_size": val_size,
        "auto_accept": auto_accept, "wait_s": wait, "seed": seed, "annotator": annotator,
        "teacher": teacher, "config": config, "device": device,
    }
    state = active_learning_round(start_model=model, simulate_annotators=simulate_annotators,
                                  close_now=close, given={k: v for k, v in given.items() if v is not None})
    store = Store()
    number = int(state["round"])
    if state["status"] == "busy":  # one driver per round: the other one carries on
        emit({"round": state}, lambda console: console.print(state["busy"]))
        return
    status_md = round_status_table(store, number)
    table, png = round_report(store)

    def render(console: Any) -> None:
        for name, (typed, kept) in state.get("ignored", {}).items():
            console.print(f"[yellow]round {number} keeps its stored {name}={kept!r} (ignored {typed!r})[/]")
        console.print(status_md)
        if state["status"] == "awaiting-annotations":
            console.print(f"round {number}: [bold]awaiting annotations[/bold] — {state.get('awaiting', '')}. "
                          "Run `spinetrack round` again to continue (or `--close` to close now).")
        console.print(table)
        console.print(f"learning curve: [bold]{png}[/bold]; model now: {state.get('model_version')}")

    emit({"round": state, "learning_curve": str(png)}, render)


@lazy.flow(name="validation-set", annotations_from=("pipeline.active_learning.loop",))
def validation_set(size: int, seed: int = 0, model: str | None = None) -> dict[str, Any]:
    """Send real `val` images to Label Studio; their human labels freeze the real validation split."""
    from annotation.labelstudio.hooks import LabelStudioHooks
    from pipeline.active_learning.loop import push_validation_set
    from pipeline.active_learning.rounds import next_round_number
    from pipeline.store import Store

    store = Store()
    name = model or store.current_model()
    if name is None:
        raise RuntimeError("no model to pre-annotate with: run `spinetrack train` first or pass --model")
    number = next_round_number(store)
    ls = LabelStudioHooks.from_environment(store)
    sent = push_validation_set(store, ls.push, size, round=number, model_name=name,
                               device=_defaults().device, seed=seed)
    return {"round": number, "sent": sent}


@app.command("val-set")
def val_set_command(
    size: int = typer.Option(..., "--size", min=1, help="real val images to send to Label Studio"),
    seed: int = typer.Option(0),
    model: str | None = typer.Option(None, help="model that pre-annotates them (default: the current one)"),
) -> None:
    """Send real `val` images for labelling; their human labels become the real validation split."""
    out = validation_set(size, seed=seed, model=model)

    def render(console: Any) -> None:
        console.print(f"sent {len(out['sent'])} real validation images to Label Studio "
                      f"(round {out['round']})")

    emit(out, render)
