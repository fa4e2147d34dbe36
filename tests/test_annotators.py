"""BlazePose, the combined annotator's per-point provenance and honest v=0 into the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.annotators import load_annotator, parse_spec
from pipeline.annotators.blazepose import BLAZEPOSE_COVERS, blazepose_status
from pipeline.evaluate import evaluate_keypoints, summary
from pipeline.intake.real_import import import_coco, map_keypoints
from pipeline.store import Store
from schemas.errors import InputError
from schemas.keypoints import BODY_IDS, INDEX, NUM_KEYPOINTS, SPINE_CHAIN

needs_blazepose = pytest.mark.skipif(not blazepose_status()["available"],
                                     reason=str(blazepose_status().get("reason")))


def _coco(real_people: Path) -> tuple[dict, list[Path], list[list[list[float]]]]:
    raw = json.loads((real_people / "coco" / "test_coco.json").read_text())
    gt = {**raw, "annotations": [{**a, "keypoints": map_keypoints(a["keypoints"], "f", "k")[0]}
                                 for a in raw["annotations"]]}
    files = [real_people / "coco" / img["file_name"] for img in raw["images"]]
    boxes = [[a["bbox"] for a in raw["annotations"] if a["image_id"] == img["id"]] for img in raw["images"]]
    return gt, files, boxes


def test_specs_parse_and_bad_ones_are_input_errors() -> None:
    assert parse_spec("onnx:/m/spinepose-s.onnx,flip").options == {"flip": "1"}
    assert parse_spec("mmpose:/c.py,/w.pth").paths == ("/c.py", "/w.pth")
    assert parse_spec("tiny-abc").kind == "model"
    assert parse_spec("combined:spine=student").options == {"spine": "student"}
    for bad in ("", "mmpose:/only.py", "combined:spine=guess", "blazepose:colour=red"):
        with pytest.raises(InputError):
            parse_spec(bad)


@needs_blazepose
def test_blazepose_body_ap_on_coco_samples(real_people: Path) -> None:
    gt, files, boxes = _coco(real_people)
    ann = load_annotator("blazepose")
    poses = ann.predict_many(files, boxes)
    assert len(poses) == 14
    for pose in poses:
        assert not pose.covered[[INDEX["head"], INDEX["neck"], *SPINE_CHAIN]].any()  # never invented
        assert set(np.flatnonzero(pose.covered)) <= set(BLAZEPOSE_COVERS)
    results = [{"image_id": gt["images"][p.image_index]["id"], "keypoints": p.coco_keypoints(),
                "score": p.score} for p in poses]
    body_ap = summary(evaluate_keypoints(gt, results))["body_AP"]
    assert body_ap >= 0.5, body_ap


@needs_blazepose
def test_combined_records_origin_per_point_and_stores_v0_for_uncovered(
        store: Store, real_people: Path) -> None:
    ann = load_annotator("combined", store)  # no model registered: no student
    assert ann.identity.kind == "combined" and [p.name for p in ann.identity.parts] == [
        "blazepose-full", "spine-prior"]
    import_coco(store, real_people / "coco" / "test_coco.json", boxes_only=True)
    from pipeline.active_learning.pseudo_label import pseudo_label

    result = pseudo_label(store, ann, image_source="real")
    assert result.written == 14 and result.model_version == ann.identity.version
    seen_prior = False
    for _img, inst in store.unlabelled_instances():
        rev = store.revisions(inst.id)[-1]
        kps = np.asarray(rev.keypoints).reshape(NUM_KEYPOINTS, 3)
        origin = rev.quality["origin"]
        assert rev.provenance["annotator"]["name"] == ann.identity.name
        for i in range(NUM_KEYPOINTS):
            if origin[i] == "":
                assert kps[i, 2] == 0 and i in rev.quality["uncovered"]
            elif kps[i, 2] == 0:
                assert i in rev.quality["outside_image"]
        if any(o == "blazepose-full" for o in origin):
            assert {origin[i] for i in BODY_IDS} == {"blazepose-full"}
            assert {origin[i] for i in SPINE_CHAIN} == {"spine-prior"}
            seen_prior = True
        for i in (INDEX["head"], INDEX["left_small_toe"], INDEX["left_clavicle"]):
            assert origin[i] == "" and kps[i, 2] == 0  # only a student covers these
        assert set(rev.quality["low_confidence"]) <= {i for i in range(NUM_KEYPOINTS)
                                                      if rev.scores[i] < 0.3}
    assert seen_prior
    from annotation.labelstudio.convert import to_result

    rev = store.revisions(store.unlabelled_instances()[0][1].id)[-1]
    labelled = {r["value"]["keypointlabels"][0] for r in to_result(rev.keypoints, rev.bbox, 640, 480)
                if r["type"] == "keypointlabels"}
    from schemas.keypoints import NAMES

    assert labelled == {NAMES[i] for i in range(NUM_KEYPOINTS) if rev.keypoints[3 * i + 2] > 0}
    assert "head" not in labelled


@needs_blazepose
def test_combined_takes_the_body_from_a_student_that_knows_bodies(store: Store, real_people: Path) -> None:
    """blaze37 carries BlazePose's network and crops like it: the combined annotator's body is then
    the student's own (one forward pass for both roles), the spine still the prior's; a student
    that does not know bodies (tiny) leaves the body to BlazePose; `body=blazepose` overrides."""
    from pipeline.model.predict import untrained_model
    from pipeline.model.registry import save_model

    for name, config in (("blaze37-t", "blaze37"), ("tiny-t", "tiny")):
        model = untrained_model(config)
        save_model(store, model, name=name, config_name=config, config=model.cfg, data_snapshot="s")
    _, files, boxes = _coco(real_people)
    knows = load_annotator("combined", store, student="blaze37-t")
    assert [p.name for p in knows.identity.parts] == ["spine-prior", "model:blaze37-t"]
    pose = knows.predict_many(files[:1], boxes[:1])[0]
    origins = {pose.origin[i] for i in BLAZEPOSE_COVERS}
    assert origins == {"model:blaze37-t"}
    assert {pose.origin[i] for i in SPINE_CHAIN if i not in BLAZEPOSE_COVERS} == {"spine-prior"}
    forced = load_annotator("combined:body=blazepose", store, student="blaze37-t")
    assert forced.identity.parts[0].name.startswith("blazepose")
    naive = load_annotator("combined", store, student="tiny-t")
    assert naive.identity.parts[0].name.startswith("blazepose")
