"""Reviewer tags back into the store: decisions as `review` revisions, other tags as ReviewTag rows.

`needs-fix` and `accept` on a labelled instance are a reviewer's decision: each becomes a `review`
revision through `pipeline.review_decisions.record_review_decision` (needs-fix also opens a
ReviewTag row, so `push --from-review` reopens the task, and keeps the instance out of releases; a
later accept clears that). Any other tag, and needs-fix on an instance that has only a model
proposal, becomes one ReviewTag row per instance and revision seen.
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from pipeline.review_decisions import record_review_decision
from pipeline.store import Store
from pipeline.store.models import Instance, ReviewTag
from schemas import enums

log = logging.getLogger(__name__)

#: The tag a reviewer puts on a sample or a label whose annotation must be corrected.
NEEDS_FIX = enums.ReviewTag.NEEDS_FIX
#: The tag that accepts a label (clears a needs-fix).
ACCEPT = enums.ReviewTag.ACCEPT
#: Tags that are decisions (stored as `review` revisions); accept wins when an instance has both.
DECISION_TAGS = (NEEDS_FIX, ACCEPT)
#: Label fields that carry `store_instance_id` (tags on any of them map back to the instance).
LABEL_FIELDS = ("ground_truth", "spine", "boxes", "predictions")


def tag_times(store: Store, tag: str | None = None) -> dict[tuple[int, str], datetime]:
    """(instance id, tag) -> time of the newest such row (of every tag, or of `tag`)."""
    q = select(ReviewTag.instance_id, ReviewTag.tag, func.max(ReviewTag.created_at)) \
        .group_by(ReviewTag.instance_id, ReviewTag.tag)
    if tag is not None:
        q = q.where(ReviewTag.tag == tag)
    with store.session() as s:
        return {(inst, name): at for inst, name, at in s.execute(q)}


def _labels_of(sample: Any, field: str) -> list[Any]:
    container = sample[field] if sample.has_field(field) else None
    if container is None:
        return []
    return list(container.detections if field == "boxes" else container.keypoints)


def tagged_instances(dataset: Any, tag: str = NEEDS_FIX) -> dict[int, int | None]:
    """instance id -> revision id the reviewer saw, for every label or sample tagged `tag`.

    A sample tag stands for every instance on it. The revision is that of the ground-truth label;
    None when only a model proposal was tagged (an instance with no label yet).
    """
    found: dict[int, int | None] = {}
    fields = [f for f in LABEL_FIELDS if dataset.has_sample_field(f)]

    def note(lab: Any, field: str) -> None:
        inst = int(lab.store_instance_id)
        rev = None if field == "predictions" else int(lab.store_revision_id)
        if found.get(inst) is None:
            found[inst] = rev

    for sample in dataset.match_tags(tag).select_fields(fields):
        for field in fields:
            for lab in _labels_of(sample, field):
                note(lab, field)
    for field in fields:
        for sample in dataset.select_labels(tags=tag, fields=field).select_fields(field):
            for lab in _labels_of(sample, field):
                note(lab, field)
    return found


def _write_tag_rows(store: Store, seen_by_tag: dict[str, dict[int, int | None]],
                    reviewer: str) -> list[ReviewTag]:
    """A ReviewTag row for each (instance, tag) not tagged since the revision seen; the rows created.

    Idempotent: syncing again adds nothing; a new row appears only when the instance was relabelled
    after its last tag and the reviewer tags the new label too (a new review, reopening the task).
    """
    created: list[ReviewTag] = []
    for tag, seen in seen_by_tag.items():
        if not seen:
            continue
        written = store.revision_times([r for r in seen.values() if r is not None])
        tagged_at = tag_times(store, tag)
        with store.session() as s:
            known = set(store.scalars_in(select(Instance.id), Instance.id, list(seen), session=s))
            for inst, rev in sorted(seen.items()):
                if inst not in known:
                    log.warning("tag %r on instance %s, which this store does not have: skipped", tag, inst)
                    continue
                last = tagged_at.get((inst, tag))
                if last is not None and (rev is None or last >= written[rev]):
                    continue
                row = ReviewTag(instance_id=inst, tag=tag, reviewer=reviewer, pushed=False)
                s.add(row)
                created.append(row)
    return created


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision stored by a sync: the `review` revision written for an instance."""

    instance_id: int
    decision: str
    revision_id: int


@dataclass
class ReviewSync:
    """What one sync wrote: review revisions (decisions) and ReviewTag rows (needs-fix reopens a task)."""

    decisions: list[Decision] = dataclasses.field(default_factory=list)
    tags: list[ReviewTag] = dataclasses.field(default_factory=list)


def _wanted_decisions(seen_by_tag: dict[str, dict[int, int | None]]) -> dict[int, tuple[str, int]]:
    """instance id -> (decision, revision seen) for labelled instances; accept wins over needs-fix
    (a reviewer accepts after flagging; a reloaded dataset shows the open needs-fix again)."""
    wanted: dict[int, tuple[str, int]] = {}
    for tag in DECISION_TAGS:
        for inst, rev in seen_by_tag.get(tag, {}).items():
            if rev is not None:
                wanted[inst] = (str(tag), rev)
    return wanted


def _record_decisions(store: Store, wanted: dict[int, tuple[str, int]], reviewer: str) -> list[Decision]:
    """Write each wanted decision unless it is already the instance's latest one on the same label.

    A label is identified by the revision a review copied (`provenance.reviewed_revision`, followed
    back), so an accept (whose review revision becomes the current label) still matches the label
    the reviewer saw, and a second sync writes nothing. A label relabelled since the reviewer saw it
    is skipped: the decision was about a label that is no longer current.
    """
    if not wanted:
        return []
    current = {lab.instance_id: lab.revision_id for lab in store.latest_labels(instance_ids=list(wanted))}
    reviews = store.revisions_for(list(wanted), sources=[enums.RevisionSource.REVIEW])
    reviewed_of = {r.id: int((r.provenance or {})["reviewed_revision"]) for r in reviews
                   if (r.provenance or {}).get("reviewed_revision") is not None}

    def base(rid: int) -> int:
        while rid in reviewed_of:
            rid = reviewed_of[rid]
        return rid

    latest: dict[int, tuple[str, int]] = {}
    for r in reviews:  # ordered by id: the last one per instance wins
        latest[r.instance_id] = (str((r.quality or {}).get("review")), base(r.id))
    decisions = []
    for inst, (decision, seen) in sorted(wanted.items()):
        if inst not in current:
            log.warning("%s on instance %s, which has no current label in this store: skipped",
                        decision, inst)
            continue
        if base(current[inst]) != base(seen):
            log.warning("%s on instance %s: relabelled since revision %s was reviewed; skipped "
                        "(review the current label)", decision, inst, seen)
            continue
        if latest.get(inst) == (decision, base(seen)):
            continue
        rid = record_review_decision(store, inst, decision, reviewer)
        if rid is not None:
            decisions.append(Decision(inst, decision, rid))
    return decisions


def sync_review(
    store: Store,
    dataset: Any,
    *,
    tags: Sequence[str] = DECISION_TAGS,
    reviewer: str | None = None,
) -> ReviewSync:
    """Pull a reviewer's tags from `dataset` into the store (see the module docstring).

    Idempotent: a second sync of the same dataset writes nothing. A tag on an instance the store
    does not have is logged and skipped.
    """
    reviewer = reviewer or os.environ.get("SPINETRACK_REVIEWER") or getpass.getuser()
    seen_by_tag = {str(tag): tagged_instances(dataset, tag) for tag in dict.fromkeys(tags)}
    with store.session() as s:
        known = set(store.scalars_in(select(Instance.id), Instance.id,
                                     {i for seen in seen_by_tag.values() for i in seen}, session=s))
    for tag, seen in seen_by_tag.items():
        for inst in sorted(set(seen) - known):
            log.warning("tag %r on instance %s, which this store does not have: skipped", tag, inst)
            del seen[inst]
    wanted = _wanted_decisions(seen_by_tag)
    with store.session() as s:
        last_tag_id = s.scalar(select(func.max(ReviewTag.id))) or 0
    decisions = _record_decisions(store, wanted, reviewer)
    # tag rows for what is not a decision: other tags, needs-fix on proposal-only instances
    rest = {tag: {i: r for i, r in seen.items() if not (tag in DECISION_TAGS and r is not None)}
            for tag, seen in seen_by_tag.items() if tag != ACCEPT}
    _write_tag_rows(store, rest, reviewer)
    with store.session() as s:  # every row this sync opened, the decisions' needs-fix included
        created = list(s.scalars(select(ReviewTag).where(ReviewTag.id > last_tag_id,
                                                         ReviewTag.reviewer == reviewer)
                                 .order_by(ReviewTag.id)))
    return ReviewSync(decisions=decisions, tags=created)


def sync_review_tags(
    store: Store,
    dataset: Any,
    *,
    tags: Sequence[str] = DECISION_TAGS,
    reviewer: str | None = None,
) -> list[ReviewTag]:
    """`sync_review`, returning only the ReviewTag rows it created (the Label Studio side's work)."""
    return sync_review(store, dataset, tags=tags, reviewer=reviewer).tags
