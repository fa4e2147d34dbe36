"""A completion's Label Studio task (issue 22, item 2): the points a person placed are shown as
given (read-only regions, listed in the task data), only the missing ones are asked for.
Without a server: the prediction push sends (tests/test_labelstudio_roundtrip.py runs one)."""

from __future__ import annotations

from pathlib import Path

from pipeline.active_learning.pseudo_label import pseudo_label
from pipeline.intake.real_import import import_coco, instance_key
from pipeline.store import Store
from schemas.keypoints import NAMES, NUM_KEYPOINTS, SPINE_CHAIN
from tests.test_human_points import Fixed, _file, _instances, _labelled


def test_the_persons_points_are_locked_and_named(store: Store, real_people: Path) -> None:
    from annotation.labelstudio.push import _prediction, given_points

    coco, raw = _file(real_people)
    import_coco(store, coco)
    pseudo_label(store, Fixed(range(NUM_KEYPOINTS), confidence=0.9), image_source="real")
    ids = _instances(store)
    images = {inst.id: img for img, inst in store.instances()}
    for ann in raw["annotations"]:
        inst = ids[instance_key(ann["id"])]
        rev = store.latest_revisions([inst], sources=["pseudo"])[inst]
        assert given_points(rev) == _labelled(ann)
        result = _prediction(rev, images[inst].width, images[inst].height)["result"]
        locked = {r["value"]["keypointlabels"][0] for r in result
                  if r.get("readonly") and r["type"] == "keypointlabels"}
        assert locked == {NAMES[i] for i in _labelled(ann)}
        assert not locked & {NAMES[i] for i in SPINE_CHAIN}
