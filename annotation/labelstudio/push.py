"""Push instances to Label Studio as tasks, with the model's current label as a pre-annotation.

One task per person, showing a crop of the image around that person (view.py: the person fills the
canvas, with a margin of context), the person's box drawn as a pre-annotated `person` rectangle; the
crop's place in the image is the task's `view` and coordinates cross it by an integer offset, so the
store keeps its own pixels exactly. Tasks go in with one bulk import call per batch.

Idempotent by construction: an AnnotationTask row (unique instance, round) is written BEFORE the
import as `pending`, then gets its Label Studio task id. Re-pushing the same (instance, round) never
creates a second task and never touches a task an annotator has worked on. A crash between the import
and recording its ids is repaired on the next push by matching the tasks' `spinetrack_key`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from label_studio_sdk import LabelStudio
from sqlalchemy import select

from annotation.labelstudio.client import Connection, configure_overlap, connect, ensure_project, reaching
from annotation.labelstudio.convert import prediction
from annotation.labelstudio.server import stage_media
from annotation.labelstudio.view import View, person_view, stage_view
from annotation.labelstudio.view import task_view as view_in_data
from pipeline import progress
from pipeline.review_decisions import settled_since_tagged
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Image, Instance, ReviewTag, Revision, utcnow
from schemas import enums
from schemas.errors import InputError
from schemas.keypoints import NAMES
from schemas.point_sources import placed_by_people

NEEDS_FIX = enums.ReviewTag.NEEDS_FIX
BATCH = 500


@dataclass
class PushReport:
    project_id: int
    created: list[int] = field(default_factory=list)  # instance ids that got a new task
    existing: list[int] = field(default_factory=list)  # already had a task this round: untouched
    reopened: list[int] = field(default_factory=list)  # review: existing task got a new pre-annotation
    task_ids: dict[int, int] = field(default_factory=dict)  # instance id -> Label Studio task id


def task_key(instance_id: int, round: int) -> str:
    return f"{instance_id}:{round}"


def image_url(image_path: str, document_root: str | None) -> str:
    """The local-files URL Label Studio serves an image under (relative to its document root)."""
    path = Path(image_path).resolve()
    root = Path(document_root or "/").resolve()
    if root not in path.parents or path.parent == root:
        raise InputError(
            str(path),
            f"image is not inside a sub-folder of Label Studio's document root {root} "
            "(LOCAL_FILES_DOCUMENT_ROOT); start the server with a document root above the data",
            field="path",
        )
    return f"/data/local-files/?d={path.relative_to(root).as_posix()}"


def _storage_dir(image_path: str, document_root: str | None) -> str:
    path = Path(image_path).resolve()
    root = Path(document_root or "/").resolve()
    return str(root / path.relative_to(root).parts[0])


def _ensure_storages(client: LabelStudio, project_id: int, dirs: set[str]) -> None:
    """Label Studio serves a local file only below a local-files storage of the project."""
    have = {str(s.path).rstrip("/") for s in client.import_storage.local.list(project=project_id)}
    for folder in sorted(dirs - have):
        client.import_storage.local.create(
            project=project_id, path=folder, title=f"spinetrack {Path(folder).name}", use_blob_urls=True
        )


def _prediction(rev: Revision, width: int, height: int, view: View | None = None) -> dict[str, Any]:
    if rev.scores:
        score: float | None = sum(rev.scores) / len(rev.scores)
    elif rev.uncertainty is not None:
        score = max(0.0, 1.0 - float(rev.uncertainty))
    else:
        score = None
    return prediction(rev.keypoints, rev.bbox, width, height, model_version=rev.model_version or rev.source,
                      score=score, scores=rev.scores, given=given_points(rev), view=view)


def given_points(rev: Revision | None) -> list[int]:
    """Points of a pre-annotation a person placed already (a completion of an imported COCO
    person, docs/pseudo-labelling.md): shown read-only, not asked for again."""
    return placed_by_people(rev.point_sources if rev is not None else None)


def _prefill(store: Store, s: Any, instance_ids: Sequence[int],
             sources: Sequence[str] | None) -> dict[int, Revision]:
    """Latest revision per instance to pre-annotate with (`pseudo` by default; any accepted for review)."""
    if sources is not None:
        return store.latest_revisions(instance_ids, sources=sources, session=s)
    return store.latest_revisions(instance_ids, accepted=True, session=s)


def _round_tasks(s: Any, round: int, instance_ids: Sequence[int]) -> dict[int, AnnotationTask]:
    """This round's tasks of the given instances, by instance id."""
    q = select(AnnotationTask).where(
        AnnotationTask.round == round, AnnotationTask.instance_id.in_(list(instance_ids))
    )
    return {t.instance_id: t for t in s.scalars(q)}


def push(
    store: Store,
    instance_ids: Sequence[int],
    round: int,
    *,
    conn: Connection,
    reason: str = "uncertain",
    prefill_sources: Sequence[str] | None = ("pseudo",),
    client: LabelStudio | None = None,
    batch: int = BATCH,
    overlap: float | None = None,
) -> PushReport:
    """Create one Label Studio task per instance for `round` (never twice), pre-annotated with its prediction.

    `prefill_sources` picks the revision shown as pre-annotation (the latest `pseudo` one by default;
    None: the current accepted label). Instances with none get an empty task with just their image.
    `overlap` (0..1, None: leave as is) sets the share of tasks Label Studio gives to two annotators.
    """
    client = client or connect(conn)
    project_id = ensure_project(store, client, conn)
    if overlap is not None:
        with reaching(conn.url):
            configure_overlap(client, project_id, overlap)
    report = PushReport(project_id=project_id)
    wanted = list(dict.fromkeys(int(i) for i in instance_ids))
    with store.session() as s:
        if any(t.task_id is None for t in _round_tasks(s, round, wanted).values()):
            _recover_pending(store, client, conn, project_id, round)
    payload, dirs = _prepare(store, wanted, round, project_id, conn, reason, prefill_sources, report)
    if payload:
        _import(store, client, conn, project_id, round, payload, dirs, batch)
        _created(store, round, [iid for iid, _ in payload], report)
    return report


def _prepare(store: Store, wanted: list[int], round: int, project_id: int, conn: Connection, reason: str,
             prefill_sources: Sequence[str] | None,
             report: PushReport) -> tuple[list[tuple[int, dict[str, Any]]], set[str]]:
    """The tasks to import (instance id, task) and the storage folders they need; the instances
    with a task already go to `report.existing`. Records each new task's intent (`pending`) first:
    a crash after the import is recoverable."""
    with store.session() as s:
        rows = _round_tasks(s, round, wanted)
        for iid, t in rows.items():
            if t.task_id is not None:
                report.existing.append(iid)
                report.task_ids[iid] = t.task_id
        todo = [i for i in wanted if i not in rows or rows[i].task_id is None]
        found = _instances(s, todo)
        prefill = _prefill(store, s, todo, prefill_sources)
        boxes = store.instance_boxes([found[i][0] for i in todo if i not in prefill])
        payload: list[tuple[int, dict[str, Any]]] = []
        dirs: set[str] = set()
        for iid in todo:
            (inst, img), rev = found[iid], prefill.get(iid)
            task, folder = _task(inst, img, rev, boxes.get(iid, (None, ""))[0], round, reason, conn)
            payload.append((iid, task))
            dirs.add(folder)
            if iid not in rows:
                s.add(AnnotationTask(
                    instance_id=iid, round=round, project_id=project_id, state="pending", reason=reason,
                    prediction_revision_id=rev.id if rev is not None else None,
                ))  # fmt: skip
    return payload, dirs


def _instances(s: Any, ids: list[int]) -> dict[int, tuple[Instance, Image]]:
    """Each instance with its image; InputError naming the ids the store does not have."""
    found = {
        inst.id: (inst, img)
        for inst, img in s.execute(
            select(Instance, Image).join(Image, Image.id == Instance.image_id).where(Instance.id.in_(ids))
        )
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise InputError("instance_ids", f"unknown instance ids {missing[:10]}", field="instance_ids")
    return found


def view_for(img: Image, rev: Revision | None, box: Sequence[float] | None, conn: Connection) -> View | None:
    """The crop a task shows (view.py): around the pre-annotation (its box and points), else the
    instance's box; None (the whole image) when Label Studio's document root is not known here."""
    if not conn.document_root:
        return None
    if rev is not None:
        return person_view(rev.keypoints, rev.bbox, img.width, img.height)
    return person_view(None, box, img.width, img.height)


def _shown(img: Image, view: View | None, conn: Connection) -> str:
    """The file Label Studio serves for the task: the crop, else the image staged into the media
    folder (the only folder served), else the store's file (a server whose root is unknown)."""
    if not conn.document_root:
        return img.path
    if view is not None:
        return str(stage_view(img.path, img.sha256, view, conn.document_root))
    return str(stage_media(img.path, img.sha256, conn.document_root))


def _task(inst: Instance, img: Image, rev: Revision | None, box: Sequence[float] | None, round: int,
          reason: str, conn: Connection) -> tuple[dict[str, Any], str]:
    """One task's JSON (data and, with a revision, its prediction) and its storage folder."""
    view = view_for(img, rev, box, conn)
    shown = _shown(img, view, conn)
    data: dict[str, Any] = {
        "image": image_url(shown, conn.document_root), "spinetrack_key": task_key(inst.id, round),
        "instance_id": inst.id, "instance_key": inst.key, "image_id": img.id, "round": round,
        "reason": reason, "width": img.width, "height": img.height,
    }
    if view is not None:
        data["view"] = view.as_data()
    task: dict[str, Any] = {"data": data}
    if rev is not None:
        task["predictions"] = [_prediction(rev, img.width, img.height, view)]
        if given_points(rev):  # a completion: these are the person's, place only the rest
            data["given_points"] = [NAMES[i] for i in given_points(rev)]
    return task, _storage_dir(shown, conn.document_root)


def _import(store: Store, client: LabelStudio, conn: Connection, project_id: int, round: int,
            payload: list[tuple[int, dict[str, Any]]], dirs: set[str], batch: int) -> None:
    """Bulk-import the tasks, `batch` a call, and record their Label Studio ids."""
    with reaching(conn.url):
        _ensure_storages(client, project_id, dirs)
        for start in progress.track(range(0, len(payload), batch), f"push to Label Studio ({batch} a batch)"):
            chunk = payload[start : start + batch]
            resp = client.projects.import_tasks(
                id=project_id,
                request=[t for _, t in chunk],  # type: ignore[misc]  # plain dicts: the SDK accepts them
                return_task_ids=True,
            )
            ids = list(getattr(resp, "task_ids", None) or [])
            if len(ids) != len(chunk):  # cannot pair ids with instances: repair by key instead
                _recover_pending(store, client, conn, project_id, round)
                continue
            _record(store, round, {iid: tid for (iid, _), tid in zip(chunk, ids, strict=True)})


def _created(store: Store, round: int, todo: list[int], report: PushReport) -> None:
    with store.session() as s:
        for t in s.scalars(
            select(AnnotationTask).where(AnnotationTask.round == round, AnnotationTask.instance_id.in_(todo))
        ):
            if t.task_id is not None:
                report.created.append(t.instance_id)
                report.task_ids[t.instance_id] = t.task_id


def _record(store: Store, round: int, task_ids: dict[int, int]) -> None:
    with store.session() as s:
        for t in s.scalars(
            select(AnnotationTask).where(
                AnnotationTask.round == round, AnnotationTask.instance_id.in_(list(task_ids))
            )
        ):
            t.task_id = task_ids[t.instance_id]
            t.state = "open"
            t.updated_at = utcnow()


def _recover_pending(
    store: Store, client: LabelStudio, conn: Connection, project_id: int, round: int
) -> None:
    """Pair pending rows with tasks already in Label Studio (an import whose ids were never recorded)."""
    by_key: dict[str, int] = {}
    with reaching(conn.url):
        task: Any
        for task in client.tasks.list(project=project_id, fields="task_only", page_size=1000):
            key = (task.data or {}).get("spinetrack_key")
            if key is not None and task.id is not None:
                by_key.setdefault(str(key), int(task.id))
    with store.session() as s:
        pending = s.scalars(
            select(AnnotationTask).where(AnnotationTask.round == round, AnnotationTask.task_id.is_(None))
        )
        ids = {t.instance_id: by_key[task_key(t.instance_id, round)] for t in pending
               if task_key(t.instance_id, round) in by_key}  # fmt: skip
    if ids:
        _record(store, round, ids)


def _shown_view(client: LabelStudio, task_id: int) -> View | None:
    """The crop an existing task shows (its data's `view`): a new prediction goes on the same crop,
    so the annotation already on the task and the new prediction share one frame."""
    task: Any = client.tasks.get(id=str(task_id))
    return view_in_data(task.data or {}, f"task {task_id}")


def push_from_review(
    store: Store, round: int, *, conn: Connection, client: LabelStudio | None = None
) -> PushReport:
    """Re-open instances a reviewer tagged `needs-fix` (not yet pushed), with the current label prefilled.

    An instance without a task this round gets a new one; one that has a task gets the current label
    as a new prediction on it (the annotator updates the annotation; the next pull stores the update).
    Tags are marked pushed only after Label Studio accepted the work.
    """
    client = client or connect(conn)
    with store.session() as s:
        tags = list(
            s.scalars(select(ReviewTag).where(ReviewTag.tag == NEEDS_FIX, ReviewTag.pushed.is_(False)))
        )
        tag_ids = [t.id for t in tags]
        instance_ids = list(dict.fromkeys(t.instance_id for t in tags))
    # a reviewer who accepted (or a person who corrected) since the tag settled it: nothing to re-open
    settled = settled_since_tagged(store, instance_ids)
    instance_ids = [i for i in instance_ids if i not in settled]
    with store.session() as s:
        existing = {
            t.instance_id: (t.task_id, t.project_id)
            for t in s.scalars(
                select(AnnotationTask).where(
                    AnnotationTask.round == round,
                    AnnotationTask.instance_id.in_(instance_ids),
                    AnnotationTask.task_id.is_not(None),
                )
            )
        }
        prefill = _prefill(store, s, instance_ids, None)
        sizes = {
            inst.id: (img.width, img.height)
            for inst, img in s.execute(
                select(Instance, Image)
                .join(Image, Image.id == Instance.image_id)
                .where(Instance.id.in_(instance_ids))
            )
        }
    new_ids = [i for i in instance_ids if i not in existing]
    report = push(store, new_ids, round, conn=conn, reason="review", prefill_sources=None, client=client)
    with reaching(conn.url):
        for iid, (task_id, _project) in existing.items():
            rev = prefill.get(iid)
            if rev is not None and task_id is not None:
                width, height = sizes[iid]
                pred = _prediction(rev, width, height, _shown_view(client, task_id))
                client.predictions.create(
                    task=task_id, result=pred["result"], score=pred.get("score"),
                    model_version=f"review:{pred['model_version']}",
                )  # fmt: skip
            report.reopened.append(iid)
            if task_id is not None:
                report.task_ids[iid] = task_id
    with store.session() as s:
        for t in s.scalars(
            select(AnnotationTask).where(
                AnnotationTask.round == round, AnnotationTask.instance_id.in_(list(existing))
            )
        ):
            t.state = "reopened"
            t.reason = "review"
            t.updated_at = utcnow()
        for tag in s.scalars(select(ReviewTag).where(ReviewTag.id.in_(tag_ids))):
            tag.pushed = True
    return report
