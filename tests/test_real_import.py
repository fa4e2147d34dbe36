"""Importing real COCO / Halpe files: boxes on instances, hidden ground truth, idempotence, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.intake.real_import import import_coco, instance_key, map_keypoints
from pipeline.store import Store
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS


def test_coco_file_becomes_images_and_boxed_instances(store: Store, real_people: Path) -> None:
    coco = real_people / "coco" / "test_coco.json"
    raw = json.loads(coco.read_text())
    summary = import_coco(store, coco, keep_ground_truth=True)
    assert summary.images == len(raw["images"]) == 4
    assert summary.instances == len(raw["annotations"]) == 14
    assert summary.ground_truth_revisions == 14

    pool = store.unlabelled_instances(image_source="real")
    assert len(pool) == 14  # hidden ground truth is not accepted: still to label
    by_key = {inst.key: inst for _, inst in pool}
    first = raw["annotations"][0]
    inst = by_key[instance_key(first["id"])]
    assert inst.meta["bbox"] == first["bbox"]
    rev = store.revisions(inst.id)[0]
    assert rev.source == "import" and rev.accepted is False
    assert rev.keypoints[:51] == pytest.approx(
        [v if first["keypoints"][3 * (i // 3) + 2] > 0 else 0.0 for i, v in enumerate(first["keypoints"])]
    )
    assert rev.keypoints[51:] == [0.0] * (NUM_KEYPOINTS * 3 - 51)
    assert rev.area == pytest.approx(first["area"])
    assert store.current_labels(image_source="real") == []

    again = import_coco(store, coco, keep_ground_truth=True)
    assert again.ground_truth_revisions == 0
    assert len(store.unlabelled_instances()) == 14


def test_halpe_maps_feet_and_lands_on_the_same_people(store: Store, real_people: Path) -> None:
    import_coco(store, real_people / "coco" / "test_coco.json", boxes_only=True)
    summary = import_coco(store, real_people / "halpe" / "test_halpe.json",
                          image_dir=real_people / "coco", keep_ground_truth=True)
    assert summary.images == 4
    assert len(store.unlabelled_instances()) == 14  # same annotation ids: same instances
    raw = json.loads((real_people / "halpe" / "test_halpe.json").read_text())
    ann = next(a for a in raw["annotations"] if sum(v > 0 for v in a["keypoints"][60:78:3]))
    inst = next(i for _, i in store.unlabelled_instances() if i.key == instance_key(ann["id"]))
    rev = store.revisions(inst.id)[-1]
    assert rev.provenance["layout"] == "halpe136"
    for k in range(20, 26):  # feet: Halpe26 indices are SpineTrack indices
        if ann["keypoints"][3 * k + 2] > 0:
            assert rev.keypoints[3 * k : 3 * k + 2] == pytest.approx(ann["keypoints"][3 * k : 3 * k + 2])
    assert rev.keypoints[26 * 3 :] == [0.0] * ((NUM_KEYPOINTS - 26) * 3)


def test_detections_give_the_boxes(store: Store, real_people: Path) -> None:
    dets = real_people / "coco" / "test_coco_det_AP_H_56.json"
    raw = json.loads(dets.read_text())
    kept = [d for d in raw if d["score"] >= 0.5 and d.get("category_id", 1) == 1]
    summary = import_coco(store, real_people / "coco" / "test_coco.json", detections=dets,
                          min_detection_score=0.5)
    assert summary.instances == len(kept)
    boxes = sorted(tuple(i.meta["bbox"]) for _, i in store.unlabelled_instances())
    assert boxes == sorted(tuple(float(v) for v in d["bbox"]) for d in kept)


def test_bad_files_name_the_field_and_write_nothing(store: Store, tmp_path: Path, real_people: Path) -> None:
    raw = json.loads((real_people / "coco" / "test_coco.json").read_text())
    raw["annotations"][3]["bbox"] = [1, 2, -5, 4]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError) as err:
        import_coco(store, bad, image_dir=real_people / "coco")
    assert err.value.field == "annotations[3].bbox" and err.value.path == str(bad)

    raw = json.loads((real_people / "coco" / "test_coco.json").read_text())
    raw["images"][1]["file_name"] = "missing.jpg"
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="missing.jpg") as err:
        import_coco(store, bad, image_dir=real_people / "coco")
    assert err.value.field == "images[1].file_name"
    assert store.unlabelled_instances() == []

    with pytest.raises(InputError, match="keypoints"):
        map_keypoints([1.0] * 30, "f.json", "annotations[0].keypoints")
