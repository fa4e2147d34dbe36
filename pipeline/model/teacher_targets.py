"""What a teacher annotator contributes to training: the body points of the pool's real images.

The pool's real images have no human label; the student has only seen renders. A teacher teaches
it real bodies without people in the loop, in one of two ways, per the teacher's kind:

* soft targets, where the teacher has them (a SimCC torch model: a registered model, an mmpose
  checkpoint): the pool's crops join the training set with no hard label (all weights 0) and the
  frozen teacher runs on the same augmented crops every step (`SpineTrackPoseEstimator`), its SimCC
  distributions distilled into the student's on the teacher's body points (KL, losses.py);
* hard targets otherwise (BlazePose, ONNX, the combined annotator): the teacher labels each pool
  person once before training and its body points join the training set as targets weighted by
  the teacher's confidence (mmpose drops a target whose weight is below 0.5, so only confident
  points teach). Non-body points are left unlabelled (weight 0).

Body points: COCO-17 and the feet (0-25), as far as the teacher covers them, and never a point a
person placed: an imported COCO person trains on its own 17 body points (its label is in the
training set), the teacher adds only what the person did not place (`Store.human_points`); a
soft teacher distils on every body point of a crop, so people with placed points are not its crops.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.coco_writer import annotation_from_parts, coco_image
from pipeline.instance_sets import pool_instances
from pipeline.store import Store
from schemas.keypoints import HALPE26_IDS, NUM_KEYPOINTS

#: Annotation ids of teacher targets start here (clear of the store's instance ids in the export).
TEACHER_ID_OFFSET = 1_000_000_000


@dataclass
class TeacherTargets:
    kind: str  # "soft" | "hard"
    instances: int
    points: int  # hard: body points with a weight; soft: 0
    teacher: dict[str, Any]
    ids: tuple[int, ...] = ()  # annotation ids added to the training file

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "instances": self.instances, "points": self.points,
                "teacher": self.teacher}


def default_pool(store: Store) -> list[int]:
    """The active-learning pool's real instances (unlabelled, `train` groups, never tasked)."""
    return pool_instances(store, "real")


def _pool_rows(store: Store, instance_ids: Sequence[int]) -> list[tuple[int, Any, list[float]]]:
    wanted = set(instance_ids)
    pairs = [(img, inst) for img, inst in store.unlabelled_instances(incomplete=True) if inst.id in wanted]
    boxes = store.instance_boxes([inst for _, inst in pairs])
    return [(inst.id, img, boxes[inst.id][0]) for img, inst in pairs if inst.id in boxes]


def add_teacher_targets(store: Store, coco_path: Path, instance_ids: Sequence[int], *,
                        annotator: Any | None, identity: dict[str, Any]) -> TeacherTargets:
    """Append the pool's persons to the training COCO file at `coco_path`: without labels for a soft
    (online SimCC) teacher (`annotator` None), with the annotator's body points as confidence-
    weighted targets otherwise (see the module docstring)."""
    soft = annotator is None
    data = json.loads(coco_path.read_text())
    images = {img["id"]: img for img in data["images"]}
    rows = _pool_rows(store, instance_ids)
    people = store.human_points([instance_id for instance_id, _, _ in rows])
    body = [i for i in HALPE26_IDS if annotator is not None and i in set(annotator.covers)]
    poses = {} if annotator is None else {
        n: p for n, p in enumerate(annotator.predict_many([img.path for _, img, _ in rows],
                                                          [[box] for _, _, box in rows]))
    }
    points = 0
    added: list[int] = []
    for n, (instance_id, img, box) in enumerate(rows):
        keypoints = np.zeros((NUM_KEYPOINTS, 3))
        if soft and instance_id in people:
            continue  # its body points are a person's: distilling would teach the teacher's instead
        if not soft:
            pose = poses.get(n)
            if pose is None:
                continue
            inside = pose.inside(img.width, img.height)
            placed = people[instance_id].placed if instance_id in people else [False] * NUM_KEYPOINTS
            for i in body:
                if inside[i] and not placed[i]:  # a person's point is the person's
                    keypoints[i, :2] = pose.keypoints[i]
                    keypoints[i, 2] = float(np.clip(pose.confidence[i], 0.0, 1.0))
            if not (keypoints[:, 2] >= 0.5).any():
                continue
            points += int((keypoints[:, 2] >= 0.5).sum())
        images.setdefault(img.id, coco_image(img.id, str(Path(img.path).resolve()), img.width, img.height))
        # the flags are the teacher's confidence (weights), not COCO's 0/1/2: built from parts; soft
        # samples carry no hard label, and num_keypoints 1 keeps mmpose from dropping them
        data["annotations"].append(annotation_from_parts(
            TEACHER_ID_OFFSET + instance_id, img.id, [round(float(v), 4) for v in keypoints.ravel()],
            max(1, int((keypoints[:, 2] > 0).sum())), [float(v) for v in box], float(box[2] * box[3])))
        added.append(TEACHER_ID_OFFSET + instance_id)
    data["images"] = list(images.values())
    coco_path.write_text(json.dumps(data))
    return TeacherTargets("soft" if soft else "hard", len(added), points, identity, tuple(added))


def repeat_annotations(coco_path: Path, ids: Sequence[int], share: float) -> float:
    """Repeat the annotations `ids` of a training file until they are about `share` of it (an
    epoch then draws them that often); returns the share reached. Copies get fresh ids."""
    data = json.loads(coco_path.read_text())
    wanted = set(ids)
    chosen = [a for a in data["annotations"] if a["id"] in wanted]
    others = len(data["annotations"]) - len(chosen)
    if not chosen or others == 0 or not 0 < share < 1:
        return len(chosen) / max(1, len(data["annotations"]))
    copies = max(1, round(share * others / ((1 - share) * len(chosen))))
    next_id = max(a["id"] for a in data["annotations"]) + 1
    for _ in range(copies - 1):
        for ann in chosen:
            data["annotations"].append({**ann, "id": next_id})
            next_id += 1
    coco_path.write_text(json.dumps(data))
    return copies * len(chosen) / (others + copies * len(chosen))
