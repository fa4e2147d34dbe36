"""Reviewer decisions are `review` revisions; an open needs-fix keeps an instance out of releases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from pipeline.release.build import create_release, reproduce_release
from pipeline.review_decisions import needs_fix_instances, record_review_decision, settled_since_tagged
from pipeline.store import Store
from pipeline.store.models import ReviewTag
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS


def _labelled(store: Store, tmp: Path, n: int) -> list[int]:
    ids = []
    for i in range(n):
        path = tmp / f"img{i}.png"
        PILImage.new("RGB", (64, 48), (i * 20, 10, 10)).save(path)
        image = store.add_image(path, source="real", subset="s", group_key=f"g{i}", width=64, height=48)
        inst = store.instance_id(image, "p0")
        kps = [v for k in range(NUM_KEYPOINTS) for v in (1.0 + k, 2.0 + i, 2.0)]
        store.add_revision(inst, kps, [1, 1, 40, 40], source="human", annotator="ann@x", round=1)
        ids.append(inst)
    return ids


def test_needs_fix_is_left_out_of_the_release_and_named_in_the_manifest(store: Store, tmp_path: Path) -> None:
    ids = _labelled(store, tmp_path, 4)
    assert record_review_decision(store, ids[0], "needs-fix", "rev@x") is not None
    assert record_review_decision(store, ids[0], "needs-fix", "rev@x") is None  # once
    record_review_decision(store, ids[1], "accept", "rev@x")
    record_review_decision(store, ids[2], "needs-fix", "rev@x")
    # a later human correction settles ids[2]'s needs-fix
    store.add_revision(ids[2], [1.0] * (NUM_KEYPOINTS * 3), [1, 1, 40, 40], source="human", round=2)
    assert needs_fix_instances(store) == {ids[0]}
    with store.session() as s:
        assert {t.instance_id for t in s.scalars(select(ReviewTag).where(ReviewTag.tag == "needs-fix"))} == {
            ids[0], ids[2]}  # so `push --from-review` reopens them
    release = create_release(store, "1.0.0", fractions={"train": 1.0, "val": 0.0, "test": 0.0})
    released = set(release.manifest.instance_revisions())
    assert ids[0] not in released and set(ids[1:]) <= released
    assert release.manifest.excluded_needs_fix == [ids[0]]
    on_disk = json.loads((release.path / "manifest.json").read_text())
    assert on_disk["excluded_needs_fix"] == [ids[0]]
    reproduce_release(store, "1.0.0", tmp_path / "again")  # byte-for-byte, exclusion included
    with pytest.raises(InputError):
        record_review_decision(store, ids[3], "maybe", "rev@x")


def test_an_accept_or_a_correction_since_a_needs_fix_settles_it_for_push_from_review(
        store: Store, tmp_path: Path) -> None:
    ids = _labelled(store, tmp_path, 3)
    for iid in ids:
        record_review_decision(store, iid, "needs-fix", "rev@x")
    record_review_decision(store, ids[0], "accept", "rev@x")  # the reviewer changed their mind
    store.add_revision(ids[1], [1.0] * (NUM_KEYPOINTS * 3), [1, 1, 40, 40], source="human", round=2)
    # ids[2] is still open; a proposal-only instance (no person-made revision) is never "settled"
    image = store.add_image(tmp_path / "img0.png", source="real", subset="s", group_key="g9", width=64,
                            height=48)
    proposal_only = store.instance_id(image, "p1")
    other = tmp_path / "other.png"
    PILImage.new("RGB", (64, 48), (200, 200, 10)).save(other)
    bare_tag = store.instance_id(store.add_image(other, source="real", subset="s", group_key="g8", width=64,
                                                 height=48), "p0")
    store.add_revision(bare_tag, [1.0] * (NUM_KEYPOINTS * 3), [1, 1, 40, 40], source="human", round=1)
    # a bare needs-fix tag (no review revision) on a labelled instance stays open for push --from-review
    assert settled_since_tagged(store, [*ids, proposal_only, bare_tag]) == {ids[0], ids[1]}
    assert settled_since_tagged(store, []) == set()
