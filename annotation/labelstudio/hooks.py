"""The Label Studio side of an active-learning round: push, pull and (benchmarks only) simulate.

pipeline/active_learning.py knows nothing about Label Studio; it calls these three hooks. Keeping
them here means the round works the same against a team's server or the one `spinetrack labelstudio
start` runs, and that the simulated annotator can only be plugged in explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from annotation.labelstudio.client import Connection, connect, connection_from_env
from annotation.labelstudio.pull import PullReport, pull, stored_project
from annotation.labelstudio.push import PushReport, push
from annotation.simulated_annotator import AnnotatorProfile, SimulationReport, annotate_tasks
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Revision

#: Revision sources that count as the truth a simulated annotator copies (benchmarks only).
TRUTH_SOURCES = ("import", "synthetic")


@dataclass(frozen=True)
class LabelStudioHooks:
    conn: Connection

    @classmethod
    def from_environment(cls, store: Store) -> LabelStudioHooks:
        """$SPINETRACK_LS_URL/$SPINETRACK_LS_TOKEN, else the server this home started."""
        return cls(connection_from_env(store.home))

    def push(self, store: Store, instance_ids: Sequence[int], round: int) -> PushReport:
        return push(store, instance_ids, round, conn=self.conn)

    def pull(self, store: Store) -> PullReport:
        return pull(store, conn=self.conn)

    def simulate(self, store: Store, round: int, *, profile: AnnotatorProfile, seed: int) -> SimulationReport:
        """BENCHMARK ONLY: annotate this round's tasks from the hidden ground truth in the store."""
        with store.session() as s:
            tasks = dict(s.execute(
                select(AnnotationTask.instance_id, AnnotationTask.task_id)
                .where(AnnotationTask.round == round, AnnotationTask.task_id.is_not(None))
            ).tuples().all())
            truth: dict[int, tuple[list[float], list[float]]] = {}
            for rev in s.scalars(
                select(Revision)
                .where(Revision.instance_id.in_(list(tasks)), Revision.source.in_(TRUTH_SOURCES))
                .order_by(Revision.id)
            ):
                truth[rev.instance_id] = (list(rev.keypoints), list(rev.bbox))
        project = stored_project(store, self.conn)
        if project is None or not tasks:
            return SimulationReport()
        return annotate_tasks(connect(self.conn), project, truth.get, profile=profile, seed=seed,
                              task_ids=[int(t) for t in tasks.values() if t is not None])
