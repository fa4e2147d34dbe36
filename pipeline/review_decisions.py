"""A reviewer's decision on an instance (FiftyOne: accept / needs-fix) stored as a `review` revision.

The decision is a revision like any other (append-only, history kept): it copies the instance's
current label and says what the reviewer decided. `accept` confirms the label (the review revision
is accepted and becomes current); `needs-fix` is not accepted and opens a `needs-fix` review tag, so
`spinetrack push --from-review` re-opens the task. An instance whose newest person-made revision is
a needs-fix review is kept out of releases (the manifest lists it) until a later human correction
or an `accept` review.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.store import Store
from pipeline.store.models import ReviewTag
from schemas.enums import ReviewTag as ReviewDecision
from schemas.enums import RevisionSource
from schemas.errors import InputError

DECISIONS = (ReviewDecision.ACCEPT, ReviewDecision.NEEDS_FIX)


def record_review_decision(store: Store, instance_id: int, decision: str, reviewer: str | None) -> int | None:
    """Store a reviewer's decision; returns the review revision's id (None if an identical one exists).

    Repeating the same decision on the same label is a no-op (external id `review:<revision>:<decision>`).
    """
    if decision not in DECISIONS:
        raise InputError("decision", f"unknown review decision {decision!r}; expected one of "
                         f"{', '.join(DECISIONS)}", field="decision")
    current = store.latest_labels(instance_ids=[instance_id])
    if not current:
        raise InputError("instance_id", f"instance {instance_id} has no label to review", field="instance_id")
    label = current[0]
    accept = decision == ReviewDecision.ACCEPT
    rid = store.add_revision(
        instance_id, label.keypoints, label.bbox, source=RevisionSource.REVIEW, accepted=accept,
        area=label.area, annotator=reviewer, round=label.round,
        quality={"review": str(decision)}, provenance={"reviewed_revision": label.revision_id},
        external_id=f"review:{label.revision_id}:{decision}",
    )
    if rid is not None and not accept:
        with store.session() as s:
            s.add(ReviewTag(instance_id=instance_id, tag=ReviewDecision.NEEDS_FIX, reviewer=reviewer))
    return rid


def needs_fix_instances(store: Store, instance_ids: Sequence[int] | None = None) -> set[int]:
    """Instances whose newest person-made revision is a needs-fix review (kept out of releases)."""
    newest: dict[int, bool] = {}
    for iid, _rid, source, accepted, quality in store.person_revisions(instance_ids):
        if source == RevisionSource.REVIEW:
            newest[iid] = (quality or {}).get("review") == ReviewDecision.NEEDS_FIX
        elif accepted:
            newest[iid] = False  # a later human correction settles it
    return {iid for iid, open_ in newest.items() if open_}


def settled_since_tagged(store: Store, instance_ids: Sequence[int]) -> set[int]:
    """Instances among `instance_ids` whose needs-fix *review decision* a person has settled since (a
    later `accept` review or a correction). A bare needs-fix tag with no review revision (a tag on a
    proposal-only instance, or one written before decisions existed) is never settled this way."""
    ids = list(instance_ids)
    if not ids:
        return set()
    reviewed = store.instances_having(ids, sources=[RevisionSource.REVIEW])
    return reviewed - needs_fix_instances(store, list(reviewed))
