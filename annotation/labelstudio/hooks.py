"""The Label Studio side of an active-learning round: push, pull and (benchmarks only) simulate.

pipeline/active_learning/loop.py knows nothing about Label Studio; it calls these three hooks. Keeping
them here means the round works the same against a team's server or the one `spinetrack labelstudio
start` runs, and that the simulated annotator can only be plugged in explicitly.

`continue_waiting_round` is what an annotation event should run (the Label Studio webhook receiver
calls it from its worker thread): pull, and if the waiting round's stored close rule now holds,
finish the round (retrain, evaluate, record). It is safe to call on every event: it only pulls
while the round keeps waiting, and a concurrent `spinetrack round` converges on the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from annotation.labelstudio.client import Connection, connect, connection_from_env
from annotation.labelstudio.pull import PullReport, pull, stored_project
from annotation.labelstudio.push import PushReport, push
from annotation.labelstudio.vanished import push_missing
from annotation.simulated_annotator import AnnotatorProfile, SimulationReport, annotate_tasks
from pipeline.store import Store
from pipeline.store.models import AnnotationTask

#: Revision sources that count as the truth a simulated annotator copies (benchmarks only).
TRUTH_SOURCES = ("import", "synthetic")


@dataclass(frozen=True)
class LabelStudioHooks:
    conn: Connection
    log: Callable[[str], None] = print  # where what Label Studio lost is reported (one line a case)

    @classmethod
    def from_environment(cls, store: Store) -> LabelStudioHooks:
        """$SPINETRACK_LS_URL/$SPINETRACK_LS_TOKEN, else the server this home started."""
        return cls(connection_from_env(store.home))

    def push(self, store: Store, instance_ids: Sequence[int], round: int, *, reason: str = "uncertain",
             overlap: float | None = None) -> PushReport:
        return push(store, instance_ids, round, conn=self.conn, reason=reason, overlap=overlap)

    def pull(self, store: Store) -> PullReport:
        """Pull; when Label Studio lost open tasks (deleted, project gone, database reset), push
        them again at once, so a waiting round can still close (annotation/labelstudio/vanished.py)."""
        report = pull(store, conn=self.conn)
        for note in report.vanished.notes:
            self.log(note)
        if report.vanished.requeued:
            again = push_missing(store, self.conn)
            where = ", ".join(sorted({str(r.project_id) for r in again}))
            self.log(f"pushed {sum(len(r.created) for r in again)} lost tasks to Label Studio again "
                     f"(project {where})")
        return report

    def simulate(self, store: Store, round: int, *, profile: AnnotatorProfile, seed: int) -> SimulationReport:
        """BENCHMARK ONLY: annotate this round's tasks from the hidden ground truth in the store."""
        with store.session() as s:
            tasks = dict(s.execute(
                select(AnnotationTask.instance_id, AnnotationTask.task_id)
                .where(AnnotationTask.round == round, AnnotationTask.task_id.is_not(None))
            ).tuples().all())
        truth = {iid: (list(rev.keypoints), list(rev.bbox))
                 for iid, rev in store.latest_revisions(tasks, sources=TRUTH_SOURCES).items()}
        project = stored_project(store, self.conn)
        if project is None or not tasks:
            return SimulationReport()
        return annotate_tasks(connect(self.conn), project, truth.get, profile=profile, seed=seed,
                              task_ids=[int(t) for t in tasks.values() if t is not None])


def continue_waiting_round(store: Store, hooks: LabelStudioHooks,
                           log: Callable[[str], None] = lambda _msg: None) -> str | None:
    """Pull; if a round is awaiting annotations and its close rule now holds, finish it.

    Returns the round's status after the call (None when no round is in progress). Runs the
    production steps (`pipeline.active_learning.loop.advance_round`) with the settings the round stored.
    When another process drives the round now (a person, cron) this only pulls, logs who drives
    it and returns "busy": that driver, or the next event, continues the round.
    """
    from pipeline.active_learning.loop import RoundContext, advance_round, resolve_settings
    from pipeline.active_learning.rounds import (
        ROUND_STEPS,
        RoundBusy,
        get_round,
        next_round_number,
        step_done,
    )

    number = next_round_number(store)
    rnd = get_round(store, number)
    if rnd is None or rnd.step == ROUND_STEPS[-1] or not step_done(rnd, "push"):
        hooks.pull(store)
        return None
    settings, _ignored = resolve_settings(store, number, {})
    ctx = RoundContext(store=store, settings=settings, number=number, push=hooks.push, pull=hooks.pull,
                       log=log)
    try:
        return str(advance_round(ctx))
    except RoundBusy as busy:
        hooks.pull(store)  # the event's annotations are stored either way (pulls are idempotent)
        log(str(busy))
        return "busy"
