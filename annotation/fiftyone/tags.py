"""Reviewer tags back into the store: one ReviewTag row per tagged instance and revision seen."""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from pipeline.store import Store
from pipeline.store.models import Instance, ReviewTag, Revision
from schemas import enums

log = logging.getLogger(__name__)

#: The tag a reviewer puts on a sample or a label whose annotation must be corrected.
NEEDS_FIX = enums.ReviewTag.NEEDS_FIX
#: Label fields that carry `store_instance_id` (tags on any of them map back to the instance).
LABEL_FIELDS = ("ground_truth", "spine", "boxes", "predictions")


def revision_times(store: Store, revision_ids: Sequence[int]) -> dict[int, datetime]:
    """revision id -> when it was written."""
    q = select(Revision.id, Revision.created_at)
    return {rid: at for rid, at in store.rows_in(q, Revision.id, sorted(set(revision_ids)))}


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


def sync_review_tags(
    store: Store,
    dataset: Any,
    *,
    tags: Sequence[str] = (NEEDS_FIX,),
    reviewer: str | None = None,
) -> list[ReviewTag]:
    """Write a ReviewTag row for each instance a reviewer tagged; returns the rows it created.

    Idempotent: one row per instance and tag for the revision the reviewer saw. Syncing again adds
    nothing; a new row appears only when the instance was relabelled after its last tag and the
    reviewer tags the new label too (that is a new review, and reopens the task again).
    """
    reviewer = reviewer or os.environ.get("SPINETRACK_REVIEWER") or getpass.getuser()
    created: list[ReviewTag] = []
    for tag in tags:
        seen = tagged_instances(dataset, tag)
        if not seen:
            continue
        written = revision_times(store, [r for r in seen.values() if r is not None])
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
