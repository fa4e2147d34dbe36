"""Bookkeeping of active-learning rounds in the store, so a round can resume where it stopped.

A round walks through ROUND_STEPS in order. After each step the store records the step and what it
produced (selected ids, threshold, model name...); a re-run reads that back and skips finished steps.
Between `push` and the close of `collect` a round is `awaiting-annotations`: no process waits, the
store holds everything, and the round's status (tasks done / open / skipped, per annotator, age) is
computed from the store whenever it is asked for.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from pipeline.store import Store
from pipeline.store.lease import Holder, Lease, LeaseBusy
from pipeline.store.models import Revision, Round
from schemas.enums import RevisionSource, RevisionStatus, RoundStatus, RoundStep, TaskState, step_reached

#: Tasks pushed to freeze the real validation split (not part of a round's close rule).
VALIDATION_REASON = "validation"

#: The steps of a round, in order (what each does: schemas.enums.RoundStep).
ROUND_STEPS: tuple[RoundStep, ...] = tuple(RoundStep)


def step_done(rnd: Round, step: str) -> bool:
    """Whether `step` finished in `rnd` (steps finish in ROUND_STEPS order)."""
    return step_reached(rnd.step, step)


def open_round(store: Store, number: int, *, strategy: str, budget: int,
               params: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> Round:
    """The round `number`, created on first call; a later call returns it unchanged (resume).

    Two drivers opening it at once make one row (the first one's settings), with no error."""
    row = {"number": number, "strategy": strategy, "budget": budget, "step": "started",
           "state": {"params": params or {}, **(state or {})}, "metrics": {}}
    with store.session() as s:
        store.insert_ignore(s, Round, [row], ["number"])
        rnd = s.get(Round, number, populate_existing=True)
        assert rnd is not None
        return rnd


def finish_step(store: Store, number: int, step: str, *, lease: Lease | None = None, **state: Any) -> Round:
    """Record that `step` finished, merging `state` into the round's state (and closing the step's
    entry in `step_runs`); with `lease`, only while it is still this process's (LeaseLost)."""
    if step not in ROUND_STEPS:
        raise ValueError(f"unknown round step {step!r}")
    return update_round(store, number, step=step, lease=lease, finished_run=step, **state)


def start_step(store: Store, number: int, step: str, lease: Lease) -> None:
    """Log that `step` starts, and who runs it, in the round's `step_runs` (an audit: a run never
    finished was interrupted, and the next driver's run follows it)."""
    update_round(store, number, lease=lease, started_run=(step, lease.describe))


def update_round(store: Store, number: int, *, step: str | None = None, lease: Lease | None = None,
                 started_run: tuple[str, str] | None = None, finished_run: str | None = None,
                 **state: Any) -> Round:
    """Merge `state` into the round's state (and move its step when given).

    The row is locked for writing before it is read, so two writers merge instead of one losing
    the other's keys; with `lease`, the write happens only while the lease is still this
    process's (LeaseLost otherwise, nothing written)."""
    with store.session() as s:
        s.execute(update(Round).where(Round.number == number).values(number=Round.number))
        if lease is not None:
            lease.check(s)
        rnd = s.get(Round, number, populate_existing=True)
        if rnd is None:
            raise KeyError(f"round {number} was never opened")
        merged = dict(rnd.state or {})
        merged.update(state)
        now = datetime.now(UTC).isoformat()
        runs = list(merged.get("step_runs") or [])
        if started_run is not None:
            runs.append({"step": started_run[0], "by": started_run[1], "started": now})
        if finished_run is not None and runs and runs[-1]["step"] == finished_run:
            runs[-1] = {**runs[-1], "finished": now}
        if runs:
            merged["step_runs"] = runs
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


def drop_unfinished_run(store: Store, number: int, step: str, lease: Lease) -> None:
    """Forget the open `step_runs` entry of a step that only found the round still waiting (a pull
    on every webhook event would otherwise grow the log without end)."""
    with store.session() as s:
        s.execute(update(Round).where(Round.number == number).values(number=Round.number))
        lease.check(s)
        rnd = s.get(Round, number, populate_existing=True)
        assert rnd is not None
        runs = list((rnd.state or {}).get("step_runs") or [])
        if runs and runs[-1]["step"] == step and "finished" not in runs[-1]:
            rnd.state = {**(rnd.state or {}), "step_runs": runs[:-1]}


class RoundBusy(RuntimeError):
    """Another process is advancing the round now: this one says who and since when, and returns."""

    def __init__(self, number: int, holder: Holder) -> None:
        super().__init__(f"round {number} is being advanced by {holder.describe()}")
        self.number = number
        self.holder = holder


def round_lease_name(number: int) -> str:
    return f"round:{number}"


@contextmanager
def driving(store: Store, number: int) -> Iterator[Lease]:
    """Hold round `number`'s lease for the block: one driver per round (the CLI, cron, the webhook
    receiver); RoundBusy when another live process holds it (pipeline/store/lease.py)."""
    lease = Lease(store, round_lease_name(number))
    try:
        lease.acquire()
    except LeaseBusy as busy:
        raise RoundBusy(number, busy.holder) from None
    with lease.kept():
        yield lease


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


def round_status(rnd: Round) -> RoundStatus:
    """Where a round stands, as shown to the user."""
    if rnd.step == ROUND_STEPS[-1]:
        return RoundStatus.COMPLETE
    if step_done(rnd, "push") and not step_done(rnd, "collect"):
        return RoundStatus.AWAITING_ANNOTATIONS
    return RoundStatus.STARTED if rnd.step == "started" else RoundStatus.RUNNING


# -- what annotators did with a round's tasks ---------------------------------------------------
@dataclass
class AnnotatorStatus:
    done: int = 0  # live completed annotations
    skipped: int = 0
    revoked: int = 0  # deleted or rejected in Label Studio
    agreement_oks: float | None = None  # mean OKS against the other annotators of shared tasks
    shared_tasks: int = 0


@dataclass
class TaskStatus:
    """A round's tasks as the store sees them after the last pull."""

    round: int
    total: int = 0  # tasks of the round's selection (validation tasks are counted apart)
    done: int = 0
    open: int = 0
    skipped: int = 0
    validation_total: int = 0
    validation_done: int = 0
    pushed_at: str | None = None
    age_s: float = 0.0  # since the round's tasks were pushed
    oldest_open_s: float = 0.0
    annotators: dict[str, AnnotatorStatus] = field(default_factory=dict)
    disagreements: int = 0  # tasks whose annotators disagree (sent to review)

    @property
    def resolved_share(self) -> float:
        """Share of the round's tasks done or skipped (1.0 for a round without tasks)."""
        return (self.done + self.skipped) / self.total if self.total else 1.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["resolved_share"] = self.resolved_share
        return out


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def live_human_revisions(store: Store, number: int | None = None) -> list[Revision]:
    """Accepted human revisions (credited to round `number`) that no later revocation took back.

    Only each Label Studio annotation's newest version counts: an annotation edited twice is one label.
    """
    revs = store.revisions_for(sources=[RevisionSource.HUMAN], round=number)
    revoked = {r.supersedes for r in revs if r.status == RevisionStatus.REVOKED}
    newest: dict[str, Revision] = {}
    for rev in revs:
        if rev.accepted and rev.id not in revoked:
            newest[annotation_key(rev)] = rev
    return sorted(newest.values(), key=lambda r: r.id)


def annotation_key(rev: Revision) -> str:
    """The Label Studio annotation a revision is a version of (`ls:<id>:<time>` -> `ls:<id>`)."""
    ext = rev.external_id or f"rev:{rev.id}"
    return ":".join(ext.split(":")[:2])


def task_status(store: Store, number: int, now: datetime | None = None) -> TaskStatus:
    """Done / open / skipped tasks of round `number`, per annotator, with ages (from the store)."""
    now = now or datetime.now(UTC)
    status = TaskStatus(round=number)
    tasks = store.tasks(round=number)
    revs = store.revisions_for(sources=[RevisionSource.HUMAN], round=number)
    pushed = [_aware(t.created_at) for t in tasks if t.task_id is not None]
    if pushed:
        status.pushed_at = min(pushed).isoformat()
        status.age_s = (now - min(pushed)).total_seconds()
    for t in tasks:
        if t.task_id is None:
            continue
        if t.reason == VALIDATION_REASON:
            status.validation_total += 1
            status.validation_done += t.state == TaskState.DONE
            continue
        status.total += 1
        if t.state == TaskState.DONE:
            status.done += 1
        elif t.state == TaskState.SKIPPED:
            status.skipped += 1
        else:
            status.open += 1
            status.oldest_open_s = max(status.oldest_open_s, (now - _aware(t.created_at)).total_seconds())
    live = {r.id for r in live_human_revisions(store, number)}
    agreements: dict[str, list[float]] = defaultdict(list)
    disagreeing: set[int] = set()
    skipped_by: Counter[str] = Counter()
    for rev in revs:
        who = rev.annotator or "unknown"
        entry = status.annotators.setdefault(who, AnnotatorStatus())
        if rev.status == RevisionStatus.REVOKED:
            entry.revoked += 1
        elif rev.status == RevisionStatus.SKIPPED:
            skipped_by[annotation_key(rev)] += 1
            entry.skipped += skipped_by[annotation_key(rev)] == 1
        elif rev.id in live:
            entry.done += 1
            quality = rev.quality or {}
            if isinstance(quality.get("agreement_oks"), int | float):
                agreements[who].append(float(quality["agreement_oks"]))
                if quality.get("disagreement"):
                    disagreeing.add(rev.instance_id)
    for who, values in agreements.items():
        status.annotators[who].agreement_oks = sum(values) / len(values)
        status.annotators[who].shared_tasks = len(values)
    status.disagreements = len(disagreeing)
    return status


# -- when a round stops waiting --------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """'3d', '12h', '90m', '45s', '600' -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 3d, 12h, 90m, 45s)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class CloseDecision:
    close: bool
    reason: str


def close_decision(status: TaskStatus, *, close_when: float, close_after_s: float | None,
                   close_now: bool = False) -> CloseDecision:
    """Whether the round's collection closes now, under the rule stored when the round started."""
    share = status.resolved_share
    if close_now:
        return CloseDecision(True, f"closed on request with {share:.0%} of tasks done or skipped")
    if status.total and share >= close_when:
        return CloseDecision(True, f"{share:.0%} of tasks done or skipped (close at {close_when:.0%})")
    if close_after_s is not None and status.age_s >= close_after_s:
        return CloseDecision(True, f"open for {_human_age(status.age_s)} (close after "
                                   f"{_human_age(close_after_s)}) with {share:.0%} done or skipped")
    if not status.total:
        return CloseDecision(True, "the round sent no tasks")
    rule = f"{close_when:.0%} done or skipped"
    if close_after_s is not None:
        rule += f", or {_human_age(close_after_s)} after the push"
    return CloseDecision(False, f"{share:.0%} done or skipped; closes at {rule} (or `--close`)")


def _human_age(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def late_labels(store: Store, rnd: Round) -> int:
    """Live human labels credited to `rnd` that were stored after its collection closed."""
    closed = (rnd.state or {}).get("closed_at")
    if not closed:
        return 0
    closed_at = datetime.fromisoformat(closed)
    return sum(1 for r in live_human_revisions(store, rnd.number) if _aware(r.created_at) > closed_at)


def status_table(status: TaskStatus, rnd: Round | None = None) -> str:
    """Markdown: the round's tasks and what each annotator did (what `spinetrack round` prints)."""
    head = f"round {status.round}"
    if rnd is not None:
        head += f" — {round_status(rnd).value}"
    lines = [
        f"**{head}**: {status.total} tasks, {status.done} done, {status.open} open, "
        f"{status.skipped} skipped; pushed {_human_age(status.age_s)} ago, "
        f"oldest open task {_human_age(status.oldest_open_s)}",
    ]
    if status.validation_total:
        lines.append(f"validation tasks: {status.validation_done} of {status.validation_total} done")
    if status.disagreements:
        lines.append(f"{status.disagreements} tasks with annotator disagreement sent to review")
    lines += ["", "| annotator | done | skipped | revoked | agreement (OKS) | shared tasks |",
              "|---|---|---|---|---|---|"]
    for who, a in sorted(status.annotators.items()):
        agree = f"{a.agreement_oks:.3f}" if a.agreement_oks is not None else "–"
        lines.append(f"| {who} | {a.done} | {a.skipped} | {a.revoked} | {agree} | {a.shared_tasks} |")
    return "\n".join(lines)


METRIC_KEYS = ("all_AP", "body_AP", "feet_AP", "spine_AP")


def metrics_table(rounds: Sequence[Round]) -> str:
    """Markdown table of per-round metrics (the Prefect artifact and the CLI summary).

    Real-image validation metrics are the headline; synthetic ones are shown beside, never mixed.
    """
    keys = list(METRIC_KEYS)
    lines = [
        "| round | status | strategy | budget | human labels | late | auto-accepted | model | "
        + " | ".join(f"real {k}" for k in keys) + " | real n | "
        + " | ".join(f"synth {k}" for k in keys) + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * (2 * len(keys) + 1),
    ]
    for rnd in rounds:
        m = rnd.metrics or {}
        st = rnd.state or {}
        real, synth = m.get("real", {}), m.get("synthetic", {})

        def fmt(part: dict[str, Any], k: str) -> str:
            v = part.get(k)
            return f"{v:.3f}" if isinstance(v, int | float) else "–"

        lines.append(
            f"| {rnd.number} | {round_status(rnd).value} | {rnd.strategy} | {rnd.budget} | "
            f"{st.get('human_labels', '–')} | {st.get('late_labels', '–')} | "
            f"{st.get('auto_accepted', '–')} | {rnd.model_version or '–'} | "
            + " | ".join(fmt(real, k) for k in keys) + f" | {int(real.get('instances', 0))} | "
            + " | ".join(fmt(synth, k) for k in keys) + " |"
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
        for part, style in (("real", "-"), ("synthetic", "--")):
            ys = [float((r.metrics or {}).get(part, {}).get(key, float("nan"))) for r in rounds]
            ax.plot(xs, ys, marker="o", linestyle=style, label=f"{part} {key}", color=colour)
        if baseline and key in baseline:
            ax.axhline(baseline[key], color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("human annotations (cumulative)")
    ax.set_ylabel("OKS AP (validation split: real solid, synthetic dashed)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=6, ncol=2)
    ax.set_title("SpineTrack active learning")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
