"""Human labels are labels (issue 22, items 1-3): an imported COCO person's points are accepted human
points with their origin, pseudo-labelling completes only the missing ones, releases carry both, the
manifest counts who placed what, and the teacher leaves a person's points alone.

The annotators here are stand-ins that place every point at a fixed spot of the box (no model to
load); the combined annotator runs with the shipped spine prior, so the completion's spine is
checked against the prior fed the person's own body points.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.active_learning.pseudo_label import external_id, pseudo_label
from pipeline.annotators.base import AnnotatorIdentity, BaseAnnotator, ImageInput, PersonPose
from pipeline.annotators.combined import CombinedAnnotator
from pipeline.annotators.spine_prior import load_prior
from pipeline.intake.real_import import import_coco, instance_key
from pipeline.release.build import create_release, reproduce_release
from pipeline.splits import assign_splits
from pipeline.store import Store
from schemas.enums import RevisionStatus
from schemas.keypoints import HALPE26_IDS, NUM_KEYPOINTS, SPINE_CHAIN
from schemas.point_sources import as_accepted

HUMAN, PSEUDO, ACCEPTED = "human", "pseudo", "pseudo-accepted"


class Fixed(BaseAnnotator):
    """Places the points it covers on a fixed grid inside the box, with one confidence for all."""

    def __init__(self, covers: Sequence[int], confidence: float = 0.9, name: str = "fixed") -> None:
        self.covers = tuple(covers)
        self.confidence = confidence
        self.identity = AnnotatorIdentity(name, "0" * 64, "onnx")

    def predict(self, image: ImageInput, boxes: Sequence[Sequence[float]]) -> list[PersonPose]:
        out = []
        for box in boxes:
            x, y, w, h = (float(v) for v in box)
            grid = np.stack([x + w * (0.1 + 0.8 * (np.arange(NUM_KEYPOINTS) % 6) / 5),
                             y + h * (0.1 + 0.8 * np.arange(NUM_KEYPOINTS) / NUM_KEYPOINTS)], axis=1)
            covered = np.zeros(NUM_KEYPOINTS, dtype=bool)
            covered[list(self.covers)] = True
            out.append(PersonPose(np.where(covered[:, None], grid, 0.0),
                                  np.where(covered, self.confidence, 0.0), covered,
                                  [self.identity.name if c else "" for c in covered],
                                  np.asarray(box, dtype=np.float64)))
        return out


def _file(real_people: Path) -> tuple[Path, dict[str, Any]]:
    coco = real_people / "coco" / "test_coco.json"
    return coco, json.loads(coco.read_text())


def _labelled(ann: dict[str, Any]) -> list[int]:
    return [i for i in range(17) if ann["keypoints"][3 * i + 2] > 0]


def _instances(store: Store) -> dict[str, int]:
    return {inst.key: inst.id for _, inst in store.instances()}


def test_imported_points_are_accepted_human_points_with_their_origin(store: Store, real_people: Path) -> None:
    coco, raw = _file(real_people)
    summary = import_coco(store, coco)
    people = [a for a in raw["annotations"] if _labelled(a)]
    assert (summary.instances, summary.human_revisions, summary.ground_truth_revisions) == (14, 12, 0)
    assert summary.human_points == sum(len(_labelled(a)) for a in people)
    assert len(store.unlabelled_instances()) == 2  # the two people the file gives no point
    assert len(store.incomplete_instances()) == 12  # no spine: to be completed

    ids = _instances(store)
    labels = {lab.instance_id: lab for lab in store.current_labels()}
    for ann in people:
        lab = labels[ids[instance_key(ann["id"])]]
        placed = _labelled(ann)
        assert lab.source == HUMAN and lab.annotator is None
        assert lab.sources_of_points() == [HUMAN if i in placed else "" for i in range(NUM_KEYPOINTS)]
        for i in placed:  # the file's numbers, to the bit
            assert lab.keypoints[3 * i:3 * i + 3] == [float(v) for v in ann["keypoints"][3 * i:3 * i + 3]]
        assert all(lab.keypoints[3 * i + 2] == 0 for i in range(NUM_KEYPOINTS) if i not in placed)
        [origin] = lab.provenance["human_points"]
        assert origin["file"] == str(coco) and origin["annotation_id"] == ann["id"]
        assert origin["points"] == placed and origin["layout"] == "coco17"
        assert store.human_points([lab.instance_id])[lab.instance_id].ids == placed

    again = import_coco(store, coco)
    assert (again.instances, again.human_revisions) == (14, 0)


def test_a_second_file_adds_its_points_to_the_same_people(store: Store, real_people: Path) -> None:
    coco, _ = _file(real_people)
    halpe = real_people / "halpe" / "test_halpe.json"
    import_coco(store, coco)
    import_coco(store, halpe, image_dir=real_people / "coco")
    raw = json.loads(halpe.read_text())
    ann = next(a for a in raw["annotations"] if sum(v > 0 for v in a["keypoints"][62:78:3]))
    inst = _instances(store)[instance_key(ann["id"])]
    [lab] = store.latest_labels(instance_ids=[inst])
    feet = [k for k in range(20, 26) if ann["keypoints"][3 * k + 2] > 0]
    assert feet and all(lab.sources_of_points()[k] == HUMAN for k in feet)
    origins = {Path(o["file"]).name: o["points"] for o in lab.provenance["human_points"]}
    assert set(feet) <= set(origins["test_halpe.json"])  # the later file's points win where both place one
    assert not set(origins.get("test_coco.json", [])) & set(origins["test_halpe.json"])
    assert len(store.instances()) == 14


def test_hidden_keeps_the_file_out_of_the_labels(store: Store, real_people: Path) -> None:
    coco, _ = _file(real_people)
    summary = import_coco(store, coco, hidden=True)
    assert (summary.ground_truth_revisions, summary.human_revisions) == (14, 0)
    assert len(store.unlabelled_instances()) == 14 and store.current_labels() == []
    assert store.incomplete_instances() == []
    from schemas.errors import InputError

    with pytest.raises(InputError, match="--hidden"):
        import_coco(store, coco, hidden=True, boxes_only=True)


def _accept(store: Store, instance_id: int, name: str) -> int | None:
    """What the round's auto-accept step writes for a confident proposal."""
    rev = store.latest_revisions([instance_id], sources=[PSEUDO], model_version=name)[instance_id]
    return store.add_revision(instance_id, rev.keypoints, rev.bbox, source=ACCEPTED, model_version=name,
                              uncertainty=rev.uncertainty, provenance={"from_revision": rev.id},
                              external_id=f"auto:test:{instance_id}",
                              point_sources=as_accepted(rev.point_sources))


def test_pseudo_labelling_completes_only_the_missing_points_and_releases_keep_them(
        store: Store, real_people: Path, tmp_path: Path) -> None:
    coco, raw = _file(real_people)
    import_coco(store, coco)
    body = Fixed(HALPE26_IDS, confidence=0.2, name="body")  # unsure of everything, a person's points too
    annotator = CombinedAnnotator(body=body, prior=load_prior(None), student=None)
    result = pseudo_label(store, annotator, image_source="real")
    assert (result.candidates, result.written) == (14, 14)
    assert pseudo_label(store, annotator, image_source="real").written == 0  # idempotent

    name = annotator.identity.version
    ids = _instances(store)
    people = [a for a in raw["annotations"] if _labelled(a)]
    for ann in people:
        inst = ids[instance_key(ann["id"])]
        humans = store.human_points([inst])[inst]
        rev = store.latest_revisions([inst], sources=[PSEUDO])[inst]
        assert rev.external_id == external_id(name, inst, humans.revision_id) and not rev.accepted
        placed = _labelled(ann)
        for i in range(NUM_KEYPOINTS):
            if i in placed:  # the person's points as stored, to the bit
                assert rev.point_sources[i] == HUMAN
                assert rev.keypoints[3 * i:3 * i + 3] == humans.keypoints[3 * i:3 * i + 3]
            else:
                assert rev.point_sources[i] == (PSEUDO if rev.keypoints[3 * i + 2] > 0 else "")
        assert rev.quality["human_points"] == placed
        per_kp = rev.quality["uncertainty_parts"]["per_keypoint"]
        assert all(per_kp[i] == 0 for i in placed) and rev.quality["uncertainty_parts"]["points"] == 37 - len(
            placed)
        # the spine comes from the prior fed the person's body points, not the body model's
        if all(i in placed for i in (5, 6, 11, 12)):
            pose = body.predict("unused", [ann["bbox"]])[0]
            xy = pose.keypoints.copy()
            xy[placed] = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)[placed, :2]
            spine = annotator.prior.predict(xy)  # type: ignore[union-attr]
            got = np.asarray(rev.keypoints, dtype=float).reshape(NUM_KEYPOINTS, 3)[list(SPINE_CHAIN)]
            inside = got[:, 2] > 0  # a point outside the image is stored unlabelled
            assert inside.sum() >= 7 and np.allclose(got[inside, :2], spine[inside], atol=1e-6)
        # uncertainty counts the model's points only
        missing = [i for i in range(NUM_KEYPOINTS) if i not in placed]
        assert rev.quality["uncertainty_parts"]["confidence"] == pytest.approx(
            np.mean([1 - rev.scores[i] for i in missing]))
    nobody = [ids[instance_key(a["id"])] for a in raw["annotations"] if not _labelled(a)]
    plain = list(store.latest_revisions(nobody, sources=[PSEUDO]).values())
    assert len(plain) == 2 and all(r.point_sources is None for r in plain)  # nobody's points: all the model's

    # auto-accept completes the person's label; a model revision that moves a person's point does not
    first = ids[instance_key(people[0]["id"])]
    for ann in people:
        assert _accept(store, ids[instance_key(ann["id"])], name) is not None
    moved = store.latest_revisions([first], sources=[PSEUDO])[first]
    bad = list(moved.keypoints)
    bad[0] += 1.0
    refused = store.add_revision(first, bad, moved.bbox, source=ACCEPTED, model_version=name,
                                 point_sources=as_accepted(moved.point_sources), external_id="auto:bad")
    assert refused is not None and store.revision(refused).status == RevisionStatus.SUPERSEDED_BY_HUMAN  # type: ignore[union-attr]
    assert store.incomplete_instances() == []  # completed: out of the pool
    training = {lab.instance_id: lab for lab in store.current_labels()}  # what the student trains on
    completed = training[first]
    assert completed.source == ACCEPTED and completed.sources_of_points().count(HUMAN) == len(
        _labelled(people[0]))
    assert sum(completed.keypoints[3 * i + 2] > 0 for i in SPINE_CHAIN) >= 7

    # a synthetic label beside them, for the manifest's three kinds of points
    import cv2

    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.zeros((8, 8, 3), dtype=np.uint8))
    image = store.add_image(frame, source="synthetic", subset="renders", group_key="renders/seq",
                            width=8, height=8)
    store.add_revision(store.instance_id(image, "actor-0"), [1.0, 1.0, 2.0] * NUM_KEYPOINTS, [0, 0, 8, 8],
                       source="synthetic", external_id="synthetic:test")
    groups = {g: "train" for g in store.group_keys()}
    assign_splits(store, groups, pinned=groups)
    release = create_release(store, "1.0.0", copy_images=False)
    annotations = {a["id"]: a for a in json.loads((release.path / "annotations" / "train.json").read_text())[
        "annotations"]}
    human_total = accepted_total = 0
    for ann in people:
        out = annotations[ids[instance_key(ann["id"])]]
        placed = _labelled(ann)
        for i in placed:  # every imported point, to the bit
            assert out["keypoints"][3 * i:3 * i + 3] == ann["keypoints"][3 * i:3 * i + 3]
            assert out["spinetrack"]["point_sources"][i] == HUMAN
        assert sum(out["keypoints"][3 * i + 2] == 2 for i in SPINE_CHAIN) >= 7  # and the new points
        assert out["keypoints"] == pytest.approx(training[out["id"]].keypoints, abs=1e-3)
        human_total += len(placed)
        accepted_total += sum(1 for i in range(NUM_KEYPOINTS)
                              if i not in placed and out["keypoints"][3 * i + 2] > 0)
        assert {out["spinetrack"]["point_sources"][i] for i in range(NUM_KEYPOINTS) if i not in placed} <= {
            ACCEPTED, ""}
    synthetic = annotations[max(annotations)]
    assert "point_sources" not in synthetic["spinetrack"]  # one source: the annotation's own
    assert release.manifest.counts.point_sources == {
        "train": {HUMAN: human_total, ACCEPTED: accepted_total, "synthetic": NUM_KEYPOINTS},
        "val": {}, "test": {}}
    card = (release.path / "README.md").read_text()
    assert "### Point source" in card

    rebuilt = reproduce_release(store, "1.0.0", tmp_path / "rebuilt")
    for path in ("manifest.json", "README.md", "annotations/train.json"):
        assert (rebuilt / path).read_bytes() == (release.path / path).read_bytes()


def test_an_older_manifest_keeps_its_bytes(store: Store) -> None:
    from schemas.manifest import Counts

    counts = Counts(splits={}, image_sources={}, subsets={}, revision_sources={}, rounds={},
                    keypoint_visibility={})
    assert "point_sources" not in counts.model_dump(mode="json")


def test_teacher_targets_skip_the_points_a_person_placed(
        store: Store, real_people: Path, tmp_path: Path) -> None:
    from pipeline.model.teacher_targets import TEACHER_ID_OFFSET, add_teacher_targets

    coco, raw = _file(real_people)
    import_coco(store, coco)
    ids = _instances(store)
    training = tmp_path / "train.json"
    training.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    teacher = Fixed(HALPE26_IDS, confidence=1.0, name="teacher")
    result = add_teacher_targets(store, training, sorted(ids.values()), annotator=teacher, identity={})
    assert result.kind == "hard" and result.instances == 14
    added = {a["id"] - TEACHER_ID_OFFSET: a for a in json.loads(training.read_text())["annotations"]}
    for ann in raw["annotations"]:
        weights = added[ids[instance_key(ann["id"])]]["keypoints"][2::3]
        placed = _labelled(ann)
        assert all(weights[i] == 0 for i in placed)  # the person's, never the teacher's
        assert all(weights[i] > 0 for i in HALPE26_IDS if i not in placed)  # the rest of the body

    soft = tmp_path / "soft.json"
    soft.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    result = add_teacher_targets(store, soft, sorted(ids.values()), annotator=None, identity={})
    assert result.instances == 2  # only the people nobody placed a point on


def test_the_round_accepts_completions_and_ranks_only_the_missing_points(
        store: Store, real_people: Path) -> None:
    from pipeline.active_learning.calibration import AcceptThreshold
    from pipeline.active_learning.loop import RoundContext, RoundSettings, candidates, step_auto_accept
    from pipeline.instance_sets import pool_instances

    coco, raw = _file(real_people)
    import_coco(store, coco)
    groups = {g: "train" for g in store.group_keys()}
    assign_splits(store, groups, pinned=groups)
    annotator = Fixed(range(NUM_KEYPOINTS), confidence=0.9)
    pseudo_label(store, annotator, image_source="real")
    name = annotator.identity.version
    pool = pool_instances(store)
    assert len(pool) == 14  # 12 to complete, 2 to label

    ids = _instances(store)
    by_id = {c.instance_id: c for c in candidates(store, name, pool)}
    for ann in raw["annotations"]:
        cand = by_id[ids[instance_key(ann["id"])]]
        assert list(cand.given) == _labelled(ann)
        assert cand.expected_effort == pytest.approx(float(np.sum(np.delete(
            cand.keypoint_uncertainty, list(cand.given)))))  # uncalibrated: the signal, theirs left out

    threshold = AcceptThreshold(1.0, 0.75, 0.9, 1.0, 1.0, 30)
    ctx = RoundContext(store, RoundSettings(), 1, push=lambda *a, **k: None, pull=lambda s: None,
                       state={"threshold": threshold.as_dict(), "annotator_version": name,
                              "start_model": name}, log=lambda line: None)
    assert step_auto_accept(ctx) == {"auto_accepted": 14}
    labels = {lab.instance_id: lab for lab in store.current_labels()}
    for ann in raw["annotations"]:
        lab = labels[ids[instance_key(ann["id"])]]
        placed = _labelled(ann)
        assert lab.source == ACCEPTED
        for i in placed:
            assert lab.keypoints[3 * i:3 * i + 3] == [float(v) for v in ann["keypoints"][3 * i:3 * i + 3]]
        assert {s for i, s in enumerate(lab.sources_of_points()) if i not in placed} <= {ACCEPTED, ""}
    assert pool_instances(store) == []



def test_a_completion_tasks_pull_keeps_the_persons_points(store: Store, real_people: Path) -> None:
    """Without a server: the annotation of a completion task as the pull stores it (Label Studio's
    own round trip is tests/test_labelstudio_roundtrip.py)."""
    from annotation.labelstudio.convert import to_result
    from annotation.labelstudio.pull import PullReport, _store_task
    from pipeline.active_learning.correction_effort import moved_keypoints
    from pipeline.store.models import AnnotationTask

    coco, raw = _file(real_people)
    import_coco(store, coco)
    pseudo_label(store, Fixed(range(NUM_KEYPOINTS), confidence=0.9), image_source="real")
    ann = next(a for a in raw["annotations"] if len(_labelled(a)) == 17)
    inst = _instances(store)[instance_key(ann["id"])]
    rev = store.latest_revisions([inst], sources=[PSEUDO])[inst]
    [image] = [img for img, i in store.instances() if i.id == inst]

    # the annotator drags the spine (and, were the lock ignored, a given point too)
    final = list(rev.keypoints)
    final[0] += 7.0
    for i in SPINE_CHAIN:
        final[3 * i + 1] += 60.0
    with store.session() as s:
        s.add(AnnotationTask(instance_id=inst, round=1, task_id=5, prediction_revision_id=rev.id,
                             state="open"))
    task = {"id": 5, "data": {"spinetrack_key": "k", "instance_id": inst, "round": 1},
            "annotations": [{"id": 9, "updated_at": "2026-12-07T10:00:00Z", "was_cancelled": False,
                             "completed_by": {"email": "a@example.org"},
                             "result": to_result(final, rev.bbox, image.width, image.height)}]}
    with store.session() as s:
        _store_task(store, s, task, {}, PullReport(1), 0.5)
    [label] = store.latest_labels(instance_ids=[inst])
    assert label.source == HUMAN and label.annotator == "a@example.org"
    for i in range(17):  # the imported points, as imported
        assert label.keypoints[3 * i:3 * i + 3] == [float(v) for v in ann["keypoints"][3 * i:3 * i + 3]]
    for i in SPINE_CHAIN:
        assert label.keypoints[3 * i + 1] == pytest.approx(final[3 * i + 1], abs=1e-3)
    files = [o for o in label.provenance["human_points"] if "file" in o]
    assert files[0]["points"] == list(range(17))
    assert label.provenance["human_points"][-1]["annotator"] == "a@example.org"
    moved = moved_keypoints(rev.keypoints, label.keypoints, area=label.area)
    assert not moved[:17].any() and moved[list(SPINE_CHAIN)].all()
