"""When Label Studio forgets: its project, tasks or annotations vanish, or it refuses our token.

Label Studio is another server with a life of its own: a manager deletes a task or the whole
project, someone recreates the project, its database is reset to an older backup, the token is
revoked. The store is the record of what people did, so:

- a human label in the store is never taken back because Label Studio no longer has it. Only an
  annotation deleted while its task still exists is a revocation, and Label Studio bumps the
  task's `updated_at` when it deletes one: a task that is older than a label the store pulled from
  it (an older backup), or a server that hands out annotation ids it used before (its database
  went back), forgot the annotation; nobody deleted it (`forgotten`).
- a task Label Studio lost (deleted, or the project gone) that was still open is made `pending`
  again, and the next push (`push_missing`, run after every round's pull) recreates it, in a new
  project when the old one is gone; a done task keeps its labels and is not asked for again.
- each case adds one line to the pull's `notes`, saying what happened and what was done.

A refused token stops the command with one line (`client.LabelStudioRefused`) before anything in
the store changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from sqlalchemy import select

from annotation.labelstudio.client import PROJECT_KEY, Connection
from annotation.labelstudio.push import PushReport, push
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Revision
from schemas.enums import RevisionSource, RevisionStatus, TaskState

#: A task the store made whose Label Studio task is gone, to be pushed again (push treats a row
#: without a task id as one whose import has not happened yet).
PENDING = "pending"
#: Sync key (per server and project) of the highest Label Studio annotation id the store has seen,
#: and of the id at or below which annotations Label Studio lost count as forgotten.
IDS_KEY = "labelstudio:annotation-ids"


@dataclass
class Vanished:
    """What a pull found missing in Label Studio (and did about it)."""

    project_gone: bool = False
    requeued: int = 0  # open tasks made pending, to be pushed again
    kept: int = 0  # tasks gone from Label Studio whose human labels stay in the store
    forgotten: int = 0  # annotations Label Studio no longer has, kept in the store
    notes: list[str] = field(default_factory=list)


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# -- the project ---------------------------------------------------------------------------------
def project_gone(store: Store, client: LabelStudio, conn: Connection, project_id: int,
                 found: Vanished) -> bool:
    """Whether the store's project is no longer there (deleted, or its id now names a project the
    store did not make); if so its open tasks are made pending and the project forgotten, so the
    next push makes a new one."""
    saved = store.sync_value(f"{PROJECT_KEY}:{conn.url}") or {}
    try:
        project = client.projects.get(id=project_id)
    except ApiError as error:
        if error.status_code != 404:
            raise
        why = "deleted, or its database was reset"
    else:
        made = saved.get("created_at")
        if made is None or project.created_at is None or _aware(project.created_at) == _aware(made):
            return False
        why = "its id now names another project: recreated, or the database was reset"
    with store.session() as s:
        rows = list(s.scalars(select(AnnotationTask).where(AnnotationTask.project_id == project_id,
                                                           AnnotationTask.task_id.is_not(None))))
        requeued, kept = _requeue(rows)
    store.set_sync_value(f"{PROJECT_KEY}:{conn.url}", {**saved, "project_id": project_id, "gone": True})
    found.project_gone, found.requeued, found.kept = True, requeued, kept
    found.notes.append(
        f"Label Studio project {project_id} at {conn.url} is gone ({why}): the store keeps the human "
        f"labels of its {kept} done tasks; its {requeued} open tasks go to a new project at the next push")
    return True


def _requeue(rows: list[AnnotationTask]) -> tuple[int, int]:
    """Open tasks among `rows` become pending (pushed again); done or skipped ones keep their labels.
    Returns (requeued, kept)."""
    requeued = kept = 0
    for row in rows:
        if row.state in (TaskState.DONE, TaskState.SKIPPED):
            row.project_id = None  # in no project any more: not reported again, not asked for again
            kept += 1
            continue
        row.task_id, row.state, row.project_id = None, PENDING, None
        requeued += 1
    return requeued, kept


# -- the tasks -----------------------------------------------------------------------------------
def reconcile_tasks(store: Store, client: LabelStudio, conn: Connection, project_id: int,
                    found: Vanished) -> list[int]:
    """Compare the project's tasks with the store's: tasks gone (or whose id now names another
    task) are handled like a gone project's; returns the ids of tasks holding fewer annotations
    than the store pulled from them, to be fetched and looked at (`forgotten` decides)."""
    listed: Any = client.tasks.list(project=project_id, fields="task_only",
                                    include="id,data,total_annotations", page_size=1000)
    there: dict[int, tuple[str | None, int]] = {
        int(t.id): ((t.data or {}).get("spinetrack_key"), int(t.total_annotations or 0))
        for t in listed if t.id is not None}
    with store.session() as s:
        rows = list(s.scalars(select(AnnotationTask).where(AnnotationTask.project_id == project_id,
                                                           AnnotationTask.task_id.is_not(None))))
        lost = [r for r in rows
                if there.get(int(r.task_id or 0), (None, 0))[0] != f"{r.instance_id}:{r.round}"]
        requeued, kept = _requeue(lost)
    if lost:
        found.requeued += requeued
        found.kept += kept
        found.notes.append(
            f"Label Studio project {project_id} at {conn.url} no longer has {len(lost)} of the store's "
            f"tasks (deleted there, or its database was reset): {kept} done keep their human labels "
            f"in the store; {requeued} open ones will be pushed again")
    live = _stored_annotations(store, [r for r in rows if r not in lost])
    return sorted(task for task, count in live.items() if there.get(task, (None, 0))[1] < count)


def _stored_annotations(store: Store, rows: list[AnnotationTask]) -> Counter[int]:
    """Label Studio annotations the store holds live, per task id (for the tasks of `rows`)."""
    by_instance = {r.instance_id: r for r in rows}
    revs = store.revisions_for(list(by_instance), sources=[RevisionSource.HUMAN])
    revoked = {r.supersedes for r in revs if r.status == RevisionStatus.REVOKED}
    annotations: dict[int, set[int]] = {}
    for rev in revs:
        where = (rev.provenance or {}).get("labelstudio", {})
        row = by_instance.get(rev.instance_id)
        if (row is None or not rev.accepted or rev.id in revoked or where.get("task") != row.task_id
                or rev.round != row.round):
            continue
        annotations.setdefault(int(row.task_id or 0), set()).add(int(where.get("annotation", 0)))
    return Counter({task: len(ids) for task, ids in annotations.items()})


# -- the annotations -----------------------------------------------------------------------------
def annotation_ids(store: Store, conn: Connection, project_id: int) -> dict[str, int]:
    """{"seen": highest annotation id stored, "forgotten_below": ids at or below it that Label
    Studio lost were forgotten, not deleted (0: no reset seen)}."""
    saved = store.sync_value(f"{IDS_KEY}:{conn.url}:{project_id}") or {}
    return {"seen": int(saved.get("seen", 0)), "forgotten_below": int(saved.get("forgotten_below", 0))}


def check_ids(store: Store, conn: Connection, project_id: int, tasks: Sequence[Mapping[str, Any]],
              found: Vanished) -> dict[str, int]:
    """An annotation id at or below the highest one pulled before that the store never stored
    means Label Studio hands out ids again: its database went back. From then on, annotations at
    or below that id that Label Studio lost are forgotten, not deleted."""
    ids = annotation_ids(store, conn, project_id)
    reused = sorted(i for i, instance in _old_ids(tasks, ids["seen"]).items()
                    if not _stored_for(store, instance, i))
    if reused and ids["forgotten_below"] < ids["seen"]:
        ids["forgotten_below"] = ids["seen"]
        store.set_sync_value(f"{IDS_KEY}:{conn.url}:{project_id}", ids)
        found.notes.append(
            f"Label Studio at {conn.url} hands out annotation ids it used before (id {reused[0]}, "
            f"{ids['seen']} seen already): its database went back to an older state; no human label "
            "in the store is taken back for an annotation Label Studio lost")
    return ids


def _old_ids(tasks: Sequence[Mapping[str, Any]], seen: int) -> dict[int, int]:
    """Annotation id -> instance, for the annotations of `tasks` with ids at or below `seen`."""
    out = {}
    for task in tasks:
        instance = (task.get("data") or {}).get("instance_id")
        for ann in task.get("annotations") or []:
            if instance is not None and int(ann["id"]) <= seen:
                out[int(ann["id"])] = int(instance)
    return out


def _stored_for(store: Store, instance_id: int, annotation: int) -> bool:
    """Whether the store pulled Label Studio annotation `annotation` for this instance before."""
    prefix = f"ls:{annotation}:"
    return any((rev.external_id or "").startswith(prefix)
               for rev in store.revisions_for([instance_id], sources=[RevisionSource.HUMAN]))


def record_ids(store: Store, conn: Connection, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> None:
    """Remember the highest annotation id pulled (once its annotations are stored)."""
    ids = annotation_ids(store, conn, project_id)
    ids["seen"] = max([ids["seen"], *(int(a["id"]) for t in tasks for a in t.get("annotations") or [])])
    store.set_sync_value(f"{IDS_KEY}:{conn.url}:{project_id}", ids)


def forgotten(rev: Revision, task: Mapping[str, Any], annotation: int, ids: Mapping[str, int]) -> bool:
    """Whether Label Studio forgot the stored annotation version `rev` (absent from `task`) rather
    than someone deleting it: the task is older than the version (deleting bumps the task's time),
    or the server reset its ids since."""
    if annotation <= ids.get("forgotten_below", 0):
        return True
    pulled = (rev.provenance or {}).get("labelstudio", {}).get("updated_at")
    return pulled is not None and task.get("updated_at") is not None and (
        _aware(task["updated_at"]) <= _aware(pulled))


# -- pushing again -------------------------------------------------------------------------------
def push_missing(store: Store, conn: Connection, client: LabelStudio | None = None) -> list[PushReport]:
    """Push every pending task again (lost in Label Studio, or an import a crash cut short), each in
    its own round with its own reason; what is there already is left alone (push is idempotent)."""
    with store.session() as s:
        rows = s.execute(select(AnnotationTask.round, AnnotationTask.reason, AnnotationTask.instance_id)
                         .where(AnnotationTask.task_id.is_(None)).order_by(AnnotationTask.id)).all()
    groups: dict[tuple[int, str], list[int]] = {}
    for round_, reason, instance_id in rows:
        groups.setdefault((int(round_), str(reason)), []).append(int(instance_id))
    reports = []
    for (round_, reason), ids in sorted(groups.items()):
        report = push(store, ids, round_, conn=conn, client=client, reason=reason)
        with store.session() as s:  # the rows now belong to the project they were pushed to
            for row in s.scalars(select(AnnotationTask).where(AnnotationTask.round == round_,
                                                              AnnotationTask.instance_id.in_(ids))):
                row.project_id = report.project_id
        reports.append(report)
    return reports


__all__ = ["PENDING", "Vanished", "check_ids", "forgotten", "project_gone", "push_missing", "reconcile_tasks",
           "record_ids"]
