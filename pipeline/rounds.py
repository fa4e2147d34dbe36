"""Bookkeeping of active-learning rounds in the store, so a round can resume where it stopped.

A round walks through ROUND_STEPS in order. After each step the store records the step and what it
produced (selected ids, threshold, model name...); a re-run reads that back and skips finished steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pipeline.store import Store
from pipeline.store.models import ModelVersion, Round

ROUND_STEPS: tuple[str, ...] = (
    "pseudo_label",  # predict the unlabelled real pool with the current model
    "calibrate",  # choose the auto-accept threshold on the validation split
    "auto_accept",  # confident pseudo-labels become pseudo-accepted revisions
    "select",  # choose `budget` uncertain instances
    "push",  # send them to Label Studio with the prediction as pre-annotation
    "collect",  # wait for / pull human corrections
    "retrain",  # fine-tune from the previous model on everything accepted
    "evaluate",  # AP on the fixed validation split
    "record",  # the round is complete
)


def step_done(rnd: Round, step: str) -> bool:
    """Whether `step` finished in `rnd` (steps finish in ROUND_STEPS order)."""
    if rnd.step == "started":
        return False
    return ROUND_STEPS.index(rnd.step) >= ROUND_STEPS.index(step)


def open_round(store: Store, number: int, *, strategy: str, budget: int,
               params: dict[str, Any] | None = None) -> Round:
    """The round `number`, created on first call; a later call returns it unchanged (resume)."""
    with store.session() as s:
        rnd = s.get(Round, number)
        if rnd is None:
            rnd = Round(number=number, strategy=strategy, budget=budget, step="started",
                        state={"params": params or {}}, metrics={})
            s.add(rnd)
            s.flush()
        return rnd


def finish_step(store: Store, number: int, step: str, **state: Any) -> Round:
    """Record that `step` finished, merging `state` into the round's state."""
    if step not in ROUND_STEPS:
        raise ValueError(f"unknown round step {step!r}")
    return update_round(store, number, step=step, **state)


def update_round(store: Store, number: int, *, step: str | None = None, **state: Any) -> Round:
    """Merge `state` into the round's state (and move its step when given)."""
    with store.session() as s:
        rnd = s.get(Round, number)
        if rnd is None:
            raise KeyError(f"round {number} was never opened")
        merged = dict(rnd.state or {})
        merged.update(state)
        rnd.state = merged
        if step is not None:
            rnd.step = step
        rnd.updated_at = datetime.now(UTC)
        if "model_version" in state:
            rnd.model_version = state["model_version"]
        if "metrics" in state:
            rnd.metrics = state["metrics"]
        s.flush()
        return rnd


def get_round(store: Store, number: int) -> Round | None:
    with store.session() as s:
        return s.get(Round, number)


def history(store: Store) -> list[Round]:
    with store.session() as s:
        return list(s.scalars(select(Round).order_by(Round.number)))


def next_round_number(store: Store) -> int:
    """The round to run next: an unfinished round resumes, otherwise a new one starts."""
    rounds = history(store)
    if not rounds:
        return 1
    last = rounds[-1]
    return last.number if last.step != ROUND_STEPS[-1] else last.number + 1


def current_model(store: Store) -> str | None:
    """The model the next round starts from: the last finished round's, else the newest trained."""
    for rnd in reversed(history(store)):
        if rnd.model_version and step_done(rnd, "retrain"):
            return rnd.model_version
    with store.session() as s:
        newest = s.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())).first()
        return newest.name if newest else None


def metrics_table(rounds: Sequence[Round]) -> str:
    """Markdown table of per-round metrics (the Prefect artifact and the CLI summary)."""
    keys = ["all_AP", "body_AP", "feet_AP", "spine_AP"]
    lines = [
        "| round | strategy | budget | human labels | auto-accepted | model | "
        + " | ".join(keys) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(keys),
    ]
    for rnd in rounds:
        m = rnd.metrics or {}
        st = rnd.state or {}
        vals = " | ".join(f"{m[k]:.3f}" if isinstance(m.get(k), int | float) else "–" for k in keys)
        lines.append(
            f"| {rnd.number} | {rnd.strategy} | {rnd.budget} | {st.get('human_labels', '–')} | "
            f"{st.get('auto_accepted', '–')} | {rnd.model_version or '–'} | {vals} |"
        )
    return "\n".join(lines)


def plot_learning_curve(rounds: Sequence[Round], out_png: str | Path,
                        baseline: dict[str, float] | None = None) -> Path:
    """AP per round (all, body, feet, spine) against cumulative human annotations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs: list[float] = []
    total = 0
    for rnd in rounds:
        total += int((rnd.state or {}).get("human_labels", 0))
        xs.append(total)
    for key, colour in (("all_AP", "black"), ("body_AP", "#4a90e2"), ("feet_AP", "#7ed321"),
                        ("spine_AP", "#d0021b")):
        ys = [float((r.metrics or {}).get(key, float("nan"))) for r in rounds]
        ax.plot(xs, ys, marker="o", label=key, color=colour)
        if baseline and key in baseline:
            ax.axhline(baseline[key], color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("human annotations (cumulative)")
    ax.set_ylabel("OKS AP (validation split)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("SpineTrack active learning")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
