"""Pull annotators' work from Label Studio into the store as `human` revisions, incrementally.

Only tasks Label Studio changed since the cursor (SyncState) are fetched: saving an annotation bumps
its task's `updated_at`, which the Data Manager filter selects on. Listing asks for ids and times
only; the changed tasks (not those merely re-listed by the overlap window) are fetched in chunks.
Every annotation version is stored exactly once (`external_id = ls:<annotation id>:<updated_at>`),
so overlapping windows, re-runs and a pull interrupted by a crash or an unreachable server all
converge; the cursor only moves after a complete pull. Skipped (cancelled) tasks are stored as
`status="skipped"`, not accepted.

Credit: every revision carries the round whose push created the task (the task's `round`), however
late it arrives. Revocation: an annotation deleted in Label Studio (deleting bumps its task's
`updated_at`, so the next pull sees the task) or turned into a skip is answered with a superseding
`revoked` revision per stored version (`supersedes` names it): the history stays, the label is no
longer current (`Store.latest_labels` skips revoked revisions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from label_studio_sdk import LabelStudio
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annotation.labelstudio.agreement import DISAGREEMENT_BELOW, agreement_quality
from annotation.labelstudio.client import PROJECT_KEY, Connection, connect, reaching
from annotation.labelstudio.convert import from_result, keypoints_bbox, result_problem
from annotation.labelstudio.vanished import (
    Vanished,
    check_ids,
    forgotten,
    project_gone,
    reconcile_tasks,
    record_ids,
)
from annotation.labelstudio.view import task_view
from pipeline import progress
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Image, Instance, ReviewTag, utcnow
from schemas.enums import RevisionSource, RevisionStatus, TaskState
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS
from schemas.point_sources import placed_by_people

CURSOR_KEY = "labelstudio:pull"
DISAGREEMENT_TAG = "annotator-disagreement"
DM_DATETIME = "%Y-%m-%dT%H:%M:%S.%fZ"
#: Re-read this much before the cursor: transactions committing out of order cannot be missed.
OVERLAP = timedelta(seconds=5)
CHUNK = 200
FETCH = 200


@dataclass
class PullReport:
    project_id: int | None
    tasks_seen: int = 0
    stored: int = 0  # new human revisions (completed annotations)
    skipped: int = 0  # new skipped/cancelled annotations recorded
    already: int = 0  # annotation versions stored by an earlier pull
    revoked: int = 0  # stored versions taken back (annotation deleted or rejected in Label Studio)
    disagreements: list[int] = field(default_factory=list)  # instance ids sent to review
    foreign_tasks: int = 0  # tasks not made by push (no spinetrack_key): ignored
    cursor: str | None = None
    vanished: Vanished = field(default_factory=Vanished)  # what Label Studio lost; `notes`: one line each
    ids: dict[str, int] = field(default_factory=dict)  # annotation ids seen (vanished.check_ids)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _iso(value: Any) -> str:
    return _as_datetime(value).astimezone(UTC).strftime(DM_DATETIME)


def cursor_key(conn: Connection, project_id: int) -> str:
    return f"{CURSOR_KEY}:{conn.url}:{project_id}"


def stored_project(store: Store, conn: Connection) -> int | None:
    saved = store.sync_value(f"{PROJECT_KEY}:{conn.url}")
    return int(saved["project_id"]) if saved is not None else None


def _changed_task_versions(client: LabelStudio, project_id: int, after: datetime | None) -> dict[int, str]:
    """Task id -> updated_at of tasks changed after the cursor (ids and times only: cheap to list)."""
    query: dict[str, Any] = {"ordering": ["tasks:updated_at"]}
    if after is not None:
        query["filters"] = {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:updated_at",
                    "operator": "greater",
                    "type": "Datetime",
                    "value": (after - OVERLAP).astimezone(UTC).strftime(DM_DATETIME),
                }
            ],
        }
    pager: Any = client.tasks.list(
        project=project_id,
        fields="task_only",
        include="id,updated_at",
        query=json.dumps(query),
        page_size=1000,
    )
    return {int(t.id): _iso(t.updated_at) for t in pager if t.id is not None and t.updated_at is not None}


def _fetch_tasks(client: LabelStudio, project_id: int, task_ids: list[int]) -> list[dict[str, Any]]:
    """Full tasks with annotations, through the export endpoint (about twice as fast as the
    Data Manager's `fields=all` listing, measured on 1.23.2), in chunks of `FETCH`."""
    tasks: list[dict[str, Any]] = []
    for start in range(0, len(task_ids), FETCH):
        ids = task_ids[start : start + FETCH]
        body = b"".join(
            client.projects.exports.download_sync(
                id=project_id, export_type="JSON", download_all_tasks=True,
                request_options={"additional_query_parameters": {"ids[]": ids}},
            )
        )  # fmt: skip
        tasks.extend(json.loads(body or b"[]"))
    return tasks


def pull(
    store: Store,
    *,
    conn: Connection,
    client: LabelStudio | None = None,
    project_id: int | None = None,
    disagreement_below: float = DISAGREEMENT_BELOW,
) -> PullReport:
    """Store every annotation made or changed in Label Studio since the last pull. Safe to re-run."""
    client = client or connect(conn)
    project_id = project_id or stored_project(store, conn)
    report = PullReport(project_id=project_id)
    if project_id is None:
        return report
    key = cursor_key(conn, project_id)
    saved = store.sync_value(key)
    after = _as_datetime(saved["updated_after"]) if saved is not None else None
    seen: dict[str, str] = dict(saved.get("seen", {})) if saved is not None else {}
    emails: dict[int, str] = {}
    with reaching(conn.url):
        if project_gone(store, client, conn, project_id, report.vanished):
            return report  # its open tasks go to a new project at the next push; labels stay
        versions = _changed_task_versions(client, project_id, after)
        # tasks re-listed only because of the overlap window, unchanged since: nothing to fetch
        todo = sorted(tid for tid, at in versions.items() if seen.get(str(tid)) != at)
        # and tasks Label Studio lost annotations of, or lost altogether (vanished.py)
        todo = sorted(set(todo) | set(reconcile_tasks(store, client, conn, project_id, report.vanished)))
        tasks = _fetch_tasks(client, project_id, todo)
        _check_results(tasks, conn.url)  # a broken or hostile annotation stops the pull, nothing stored
        report.ids = check_ids(store, conn, project_id, tasks, report.vanished)
        if any(a.get("completed_by") is not None for t in tasks for a in t.get("annotations") or []):
            emails = {int(u.id): str(u.email) for u in client.users.list() if u.id is not None}
    report.tasks_seen = len(tasks)
    for start in progress.track(range(0, len(tasks), CHUNK), f"pull from Label Studio ({CHUNK} per step)"):
        chunk = tasks[start : start + CHUNK]
        stored_ids = [_external_id(a) for t in chunk for a in t.get("annotations") or []]
        for attempt in range(3):
            try:
                _store_chunk(store, chunk, stored_ids, emails, report, disagreement_below)
                break
            except IntegrityError:  # a concurrent pull (webhook + CLI) stored the same version first
                if attempt == 2:
                    raise
    record_ids(store, conn, project_id, tasks)
    if report.vanished.forgotten:
        report.vanished.notes.append(
            f"Label Studio at {conn.url} no longer has {report.vanished.forgotten} annotations the store "
            "pulled, on tasks older than them or after its database went back: nobody deleted them, "
            "the store keeps those human labels")
    newest = max([_as_datetime(at) for at in versions.values()] + ([after] if after else []), default=None)
    if newest is not None:
        report.cursor = _iso(newest)
        window = newest - OVERLAP
        seen.update({str(tid): at for tid, at in versions.items()})
        seen = {tid: at for tid, at in seen.items() if _as_datetime(at) >= window - OVERLAP}
        store.set_sync_value(key, {"updated_after": report.cursor, "seen": seen})
    return report


def _store_chunk(
    store: Store,
    chunk: list[Any],
    versions: list[str],
    emails: dict[int, str],
    report: PullReport,
    disagreement_below: float,
) -> None:
    """One transaction per chunk of tasks; annotation versions already stored are skipped cheaply."""
    counts = (report.stored, report.skipped, report.already, len(report.disagreements), report.revoked)
    try:
        known = store.stored_external_ids(versions)
        with store.session() as s:
            for task in chunk:
                anns = list(task.get("annotations") or [])
                revoked = _revoke_missing(store, s, task, report)
                if anns and not revoked and all(_external_id(a) in known for a in anns):
                    report.already += len(anns)  # seen by an earlier pull (overlap window, re-run)
                    continue
                _store_task(store, s, task, emails, report, disagreement_below)
    except Exception:
        report.stored, report.skipped, report.already = counts[:3]
        del report.disagreements[counts[3] :]
        report.revoked = counts[4]
        raise


def _check_results(tasks: list[dict[str, Any]], url: str) -> None:
    """Every fetched annotation can be read as a label, before anything is stored: one that cannot
    (a hostile or broken result, a missing id or time) is InputError naming the server, the task,
    the annotation and the field, and the store stays as it was."""
    for task in tasks:
        where = f"{url} task {task.get('id')}"
        anns = task.get("annotations") or []
        if not isinstance(anns, list):
            raise InputError(where, "annotations must be a list", field="annotations")
        data = task.get("data") or {}
        view = task_view(data, where) if "spinetrack_key" in data else None
        size = (int(data["width"]), int(data["height"])) if view is not None else None
        for n, ann in enumerate(anns):
            if not isinstance(ann, dict) or not isinstance(ann.get("id"), int) or "updated_at" not in ann:
                raise InputError(where, "an annotation needs an integer id and updated_at",
                                 field=f"annotations[{n}]")
            try:
                _as_datetime(ann["updated_at"])
            except (TypeError, ValueError):
                raise InputError(f"{where} annotation {ann['id']}", "not a time",
                                 field="updated_at") from None
            result = ann.get("result") or []
            problem = None if ann.get("was_cancelled") else result_problem(result, view, size)
            if problem is not None:
                raise InputError(f"{where} annotation {ann['id']}", problem[1], field=problem[0])


def _annotation_id(external_id: str | None) -> int | None:
    parts = (external_id or "").split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[0] == "ls" and parts[1].isdigit() else None


def _revoke_missing(store: Store, s: Session, task: dict[str, Any], report: PullReport) -> int:
    """Supersede the stored versions of this task's annotations that Label Studio no longer has live.

    An annotation is gone when it was deleted, or turned into a skip (`was_cancelled`). Every stored
    accepted version of it gets one `revoked` revision (idempotent by external id).
    """
    data = task.get("data") or {}
    if "spinetrack_key" not in data:
        return 0
    instance_id, round_ = int(data["instance_id"]), int(data["round"])
    live = {int(a["id"]) for a in task.get("annotations") or [] if not a.get("was_cancelled")}
    stored = store.revisions_for([instance_id], sources=[RevisionSource.HUMAN], round=round_, session=s)
    already = {r.supersedes for r in stored if r.status == RevisionStatus.REVOKED}
    count = 0
    for rev in stored:
        ann_id = _annotation_id(rev.external_id)
        if not rev.accepted or ann_id is None or ann_id in live or rev.id in already:
            continue
        if (rev.provenance or {}).get("labelstudio", {}).get("task") not in (None, task.get("id")):
            continue  # a version from another task of this instance and round (not expected)
        gone = {int(a["id"]) for a in task.get("annotations") or []}
        if ann_id not in gone and forgotten(rev, task, ann_id, report.ids):
            report.vanished.forgotten += 1  # Label Studio lost it; nobody deleted it
            continue
        store.add_revision(
            instance_id, list(rev.keypoints), list(rev.bbox), area=rev.area,
            source=RevisionSource.HUMAN, accepted=False, status=RevisionStatus.REVOKED,
            annotator=rev.annotator, round=rev.round, quality={}, supersedes=rev.id,
            provenance={"labelstudio": {"project": report.project_id, "task": task.get("id"),
                                        "annotation": ann_id,
                                        "why": "skipped" if ann_id in gone else "deleted"},
                        "revokes": rev.id},
            external_id=f"revoked:{rev.id}", session=s,
        )
        count += 1
    if count:
        report.revoked += count
    return count


def keep_given(keypoints: list[float], pre: list[float], given: list[int]) -> list[float]:
    """An annotation of a completion task with the points a person placed before exactly as stored:
    the task showed them read-only and asked for the rest (push.given_points); they stay the
    person's whatever came back for them."""
    out = list(keypoints)
    for i in given:
        out[3 * i:3 * i + 3] = [float(v) for v in pre[3 * i:3 * i + 3]]
    return out


def _origins(store: Store, s: Session, prefill: Any, given: list[int], annotator: str | None,
             annotation: int) -> list[dict[str, Any]]:
    """Where each point of a completed person's annotation comes from: the files the given points
    were imported from (the human revision the completion completed), the annotator the rest."""
    completes = (prefill.provenance or {}).get("completes")
    person = store.revision(int(completes), session=s) if completes is not None else None
    before = list((person.provenance or {}).get("human_points", [])) if person is not None else []
    if not before:
        before = [{"revision": completes, "points": given}]
    rest = [i for i in range(NUM_KEYPOINTS) if i not in given]
    return [*before, {"labelstudio_annotation": annotation, "annotator": annotator, "points": rest}]


def _external_id(ann: dict[str, Any]) -> str:
    return f"ls:{ann['id']}:{_iso(ann['updated_at'])}"


def _annotator(ann: dict[str, Any], emails: dict[int, str]) -> str | None:
    who = ann.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id"))
    if who is None:
        return None
    return emails.get(int(who), f"user:{who}")


def _store_task(
    store: Store, s: Session, task: Any, emails: dict[int, str], report: PullReport, disagreement_below: float
) -> None:
    data = task.get("data") or {}
    if "spinetrack_key" not in data:
        report.foreign_tasks += 1
        return
    annotations = list(task.get("annotations") or [])
    instance_id, round_ = int(data["instance_id"]), int(data["round"])
    inst = s.get(Instance, instance_id)
    if inst is None:
        report.foreign_tasks += 1
        return
    img = s.get(Image, inst.image_id)
    assert img is not None
    width, height = img.width, img.height
    row = s.scalar(
        select(AnnotationTask).where(
            AnnotationTask.instance_id == instance_id, AnnotationTask.round == round_
        )
    )
    prefill = (store.revision(row.prediction_revision_id, session=s)
               if row and row.prediction_revision_id else None)
    fallback_kp = list(prefill.keypoints) if prefill else [0.0] * (NUM_KEYPOINTS * 3)
    fallback_box = list(prefill.bbox) if prefill else None

    given = placed_by_people(prefill.point_sources if prefill is not None else None)  # a completion
    view = task_view(data)  # the crop the task showed (view.py), checked by _check_results
    parsed = {}
    for ann in annotations:
        if not ann.get("was_cancelled"):
            result = parsed[ann["id"]] = from_result(ann.get("result") or [], width, height, view)
            if prefill is not None:
                result.keypoints = keep_given(result.keypoints, prefill.keypoints, given)
    # agreement over each annotator's latest completed annotation of this task
    latest: dict[str | None, dict[str, Any]] = {}
    for ann in sorted(annotations, key=lambda a: _as_datetime(a["updated_at"])):
        if not ann.get("was_cancelled"):
            latest[_annotator(ann, emails)] = ann
    boxes = [parsed[a["id"]].bbox or fallback_box for a in latest.values()]
    area = max((b[2] * b[3] for b in boxes if b), default=float(width * height))
    quality = agreement_quality(
        [parsed[a["id"]].keypoints for a in latest.values()], area, disagreement_below
    )

    for ann in annotations:
        external_id = _external_id(ann)
        provenance: dict[str, Any] = {
            "labelstudio": {
                "project": report.project_id,
                "task": task.get("id"),
                "annotation": ann["id"],
                "created_at": ann.get("created_at"),
                "updated_at": ann.get("updated_at"),
                "lead_time_s": ann.get("lead_time"),
            }
        }
        if ann.get("was_cancelled"):
            rid = store.add_revision(
                instance_id, fallback_kp, fallback_box or [0.0, 0.0, 0.0, 0.0], source="human",
                accepted=False, status="skipped", annotator=_annotator(ann, emails), round=round_,
                provenance=provenance, external_id=external_id, session=s,
            )  # fmt: skip
            report.skipped += rid is not None
            report.already += rid is None
            continue
        result = parsed[ann["id"]]
        if given and prefill is not None:
            who = _annotator(ann, emails)
            provenance["human_points"] = _origins(store, s, prefill, given, who, ann["id"])
        bbox = result.bbox or fallback_box or keypoints_bbox(result.keypoints, width, height)
        rid = store.add_revision(
            instance_id, result.keypoints, bbox, source="human", annotator=_annotator(ann, emails),
            round=round_, quality={**quality, **result.notes}, provenance=provenance,
            external_id=external_id, session=s,
        )  # fmt: skip
        report.stored += rid is not None
        report.already += rid is None
    if row is not None:
        done = any(not a.get("was_cancelled") for a in annotations)
        state = TaskState.DONE if done else (TaskState.SKIPPED if annotations else TaskState.OPEN)
        if row.state != state and row.state != "pending":
            row.state = state
            row.updated_at = utcnow()
    if quality.get("disagreement"):
        open_tag = s.scalar(
            select(ReviewTag.id).where(
                ReviewTag.instance_id == instance_id,
                ReviewTag.tag == DISAGREEMENT_TAG,
                ReviewTag.pushed.is_(False),
            )
        )
        if open_tag is None:
            s.add(ReviewTag(instance_id=instance_id, tag=DISAGREEMENT_TAG, reviewer="labelstudio-pull"))
        report.disagreements.append(instance_id)
