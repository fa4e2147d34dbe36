"""`train(teacher=...)`: the teacher's body targets on the pool's real images move the student.

Two tiny runs from the same seed on the same two renders and the same real COCO sample persons as
pool: one with BlazePose as a (hard-target) teacher, one without. The taught student's body points
on those real persons must lie measurably closer to the teacher's than the untaught one's.

Sized so that the teacher's targets are a large part of what the student sees (2 renders, 12
taught persons, 200 iterations at batch 8), and run on one torch thread so the float order is the
same on every machine. With 8 renders the taught share was small and the comparison flipped with
the thread count and the run (taught/untaught 0.155/0.168 on a fresh clone, against a bound of
0.9). Measured with this design: taught/untaught ratio 0.616 (seed 3, the test's), 0.728 and 0.661
(seeds 0, 1) on one thread, 0.687 and 0.668 (seeds 0, 1) on two; the bound of 0.85 leaves a
margin of 0.12 above the worst of those runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.annotators.base import PersonPose
from pipeline.store import Store

pytestmark = pytest.mark.slow

ITERS = 200
BATCH = 8
SEED = 3
#: taught / untaught distance must stay below this (measured 0.64-0.73: see the module docstring)
BOUND = 0.85


def _distance_to_teacher(student: list[PersonPose], teacher: list[PersonPose]) -> float:
    """Mean distance (box diagonals) of the student's body points to the teacher's confident ones."""
    out = []
    for s, t in zip(student, teacher, strict=True):
        body = [i for i in range(17) if t.covered[i] and t.confidence[i] >= 0.5]
        if body:
            diag = float(np.hypot(t.bbox[2], t.bbox[3]))
            out.append(float(np.linalg.norm(s.keypoints[body] - t.keypoints[body], axis=1).mean()) / diag)
    assert len(out) >= 5, "BlazePose should find most COCO sample persons"
    return float(np.mean(out))


def test_teacher_body_targets_pull_the_student_toward_the_teacher(tmp_path: Path, real_people: Path) -> None:
    from pipeline.annotators import load_annotator
    from pipeline.intake.real_import import import_coco
    from pipeline.model.train import train
    from synthetic.sample_set import SequenceSpec, render_set, store_ground_truth

    store = Store(home=tmp_path / "home")
    try:
        specs = [SequenceSpec("walk", 41, 1), SequenceSpec("bend", 42, 1)]
        for folder in render_set(tmp_path / "renders", specs):
            store_ground_truth(store, folder, tag="teacher-test")
        import_coco(store, real_people / "coco" / "test_coco.json", image_dir=real_people / "coco",
                    subset="real-coco", boxes_only=True)
        pairs = store.unlabelled_instances(image_source="real")
        pool = [inst.id for _, inst in pairs]
        assert len(pool) >= 10
        labels = store.current_labels()
        teacher = load_annotator("blazepose")
        taught = train(store, config="tiny", iters=ITERS, batch_size=BATCH, seed=SEED, labels=labels,
                       teacher=teacher, teacher_pool=pool, name="taught", threads=1)
        plain = train(store, config="tiny", iters=ITERS, batch_size=BATCH, seed=SEED, labels=labels,
                      name="plain", threads=1)
        from pipeline.model.registry import read_meta

        provenance = read_meta(store, taught.name)["provenance"]["teacher"]
        assert provenance["kind"] == "hard" and provenance["points"] > 50

        paths = [img.path for img, _ in pairs]
        boxes = [[inst.meta["bbox"]] for _, inst in pairs]
        reference = teacher.predict_many(paths, boxes)
        with_teacher = load_annotator(f"model:{taught.name}", store).predict_many(paths, boxes)
        without = load_annotator(f"model:{plain.name}", store).predict_many(paths, boxes)
        d_taught = _distance_to_teacher(with_teacher, reference)
        d_plain = _distance_to_teacher(without, reference)
        print(f"distance to the teacher: taught {d_taught:.4f}, untaught {d_plain:.4f}")
        assert d_taught < BOUND * d_plain, (d_taught, d_plain)
    finally:
        store.close()
