"""Correction effort per Label Studio task on the COCO sample: people imported WITH their human body
points (the task shows them as given and asks for the rest) vs WITHOUT them (`--boxes-only`: the
model proposes all 37 points).

Each condition: a fresh store, `import_coco` (with or without the people's points), pseudo-labelling
with the annotator `--annotator` (default: combined, i.e. BlazePose body + the spine prior, no
student), `push` of every person with a proposal to its own real Label Studio server, the simulated
annotator (annotation/simulated_annotator.py) answering from the sample's own COCO-17 points, `pull`,
and `round_effort` (pipeline/active_learning/correction_effort.py): points the annotator had to
place or drag, points it deleted, per keypoint group. The sample's truth covers the 17 COCO body
points only, so the simulated annotator deletes every other proposed point (spine, feet, face):
`placed_or_moved` (the rule without deletions) is the comparable count, per group too. People
the file gives no point are left out of both (no truth to answer from).

    .venv/bin/python bench/correction_given.py [--annotator combined] [--seed 0]

Writes bench/results/correction_given.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation.labelstudio.client import connect, connection_of  # noqa: E402
from annotation.labelstudio.pull import pull  # noqa: E402
from annotation.labelstudio.push import push  # noqa: E402
from annotation.labelstudio.server import ls_version, media_root, start_server, stop_server  # noqa: E402
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks  # noqa: E402
from bench.common import Run  # noqa: E402
from pipeline.active_learning.correction_effort import EffortRule, round_effort  # noqa: E402
from pipeline.active_learning.pseudo_label import pseudo_label  # noqa: E402
from pipeline.annotators.spec import load_annotator  # noqa: E402
from pipeline.intake.real_import import import_coco, instance_key  # noqa: E402
from pipeline.store import Store  # noqa: E402
from schemas.errors import InputError  # noqa: E402
from schemas.keypoints import NUM_KEYPOINTS  # noqa: E402

COCO = REPO.parent / "shared" / "data" / "real_people" / "coco" / "test_coco.json"
ROUND = 1


def truth_of(coco: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Instance key -> (37 x (x, y, v) with the file's COCO-17 points, box), people with points only."""
    raw = json.loads(coco.read_text())
    out = {}
    for ann in raw["annotations"]:
        kps = [float(v) for v in ann.get("keypoints") or []]
        if len(kps) != 51:
            raise InputError(coco, f"annotation {ann.get('id')}: expected 17 COCO keypoints",
                             field="keypoints")
        if any(v > 0 for v in kps[2::3]):
            full = kps + [0.0] * (3 * NUM_KEYPOINTS - 51)
            out[instance_key(ann["id"])] = (full, [float(v) for v in ann["bbox"]])
    return out


def condition(work: Path, coco: Path, *, boxes_only: bool, spec: str, seed: int) -> dict[str, Any]:
    """One arm: import, pseudo-label, push, simulated annotation, pull, measured effort."""
    home = work / ("boxes-only" if boxes_only else "given")
    store = Store(home=home)
    import_coco(store, coco, boxes_only=boxes_only)
    truth_by_key = truth_of(coco)
    keys = {inst.id: inst.key for _, inst in store.instances()}
    truth = {iid: truth_by_key[key] for iid, key in keys.items() if key in truth_by_key}
    started = time.perf_counter()
    pseudo_label(store, load_annotator(spec, store), image_source="real", round=ROUND)
    label_s = time.perf_counter() - started
    proposals = store.latest_revisions(list(truth), sources=["pseudo"])
    server = start_server(home / "labelstudio", document_root=media_root(home))
    try:
        conn = connection_of(server)
        client = connect(conn)
        report = push(store, list(proposals), ROUND, conn=conn, client=client)
        sim = annotate_tasks(client, report.project_id, truth.get, profile=AnnotatorProfile(), seed=seed,
                             task_ids=list(report.task_ids.values()))
        pulled = pull(store, conn=conn, client=client)
    finally:
        stop_server(server)
    effort = round_effort(store, ROUND)
    placed = round_effort(store, ROUND, EffortRule(count_deletions=False))  # placed or dragged only
    given = {iid: sum(1 for s in (rev.point_sources or ()) if s == "human") for iid, rev in proposals.items()}
    tasks = max(effort.tasks, 1)
    return {
        "boxes_only": boxes_only,
        "people": len(truth), "tasks_pushed": len(report.task_ids), "tasks_annotated": len(sim.annotated),
        "pulled": pulled.stored, "pseudo_label_s": round(label_s, 2),
        "given_points_per_task": round(sum(given.values()) / max(len(given), 1), 2),
        "asked_points_per_task": round(NUM_KEYPOINTS - sum(given.values()) / max(len(given), 1), 2),
        "effort": effort.as_dict(),
        "placed_or_moved_per_task": round(placed.moved / tasks, 2),
        "placed_or_moved_by_group_per_task": {g: round(n / tasks, 2) for g, n in placed.by_group.items()},
        "deleted_per_task": round(effort.deleted / tasks, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coco", type=Path, default=COCO)
    parser.add_argument("--annotator", default="combined",
                        help="annotator spec (pipeline/annotators/spec.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="correction_given")
    args = parser.parse_args()
    if not args.coco.is_file():
        raise SystemExit(f"{args.coco}: the COCO sample is missing")
    run = Run()
    work = Path(tempfile.mkdtemp(prefix="spinetrack-correction-given-"))
    try:
        arms = {name: condition(work, args.coco, boxes_only=name == "boxes_only", spec=args.annotator,
                                seed=args.seed) for name in ("given", "boxes_only")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, arm in arms.items():
        print(f"{name:>10}: {arm['tasks_annotated']} tasks, given {arm['given_points_per_task']} points "
              f"a task, asked {arm['asked_points_per_task']}; placed or moved "
              f"{arm['placed_or_moved_per_task']} a task "
              f"(by group {arm['placed_or_moved_by_group_per_task']}), "
              f"deleted {arm['deleted_per_task']}")
    result = {
        "what": "correction effort per Label Studio task on the COCO sample, body points given vs "
                "--boxes-only",
        "coco": str(args.coco), "annotator": args.annotator, "seed": args.seed,
        "labelstudio": ls_version(),
        "truth": "the file's COCO-17 points (other points: deleted by the annotator)",
        "rule": "pipeline.active_learning.correction_effort.EffortRule() (OKS term < 0.8 = moved)",
        **arms,
    }
    print(f"wrote {run.write(result, args.out)}")


if __name__ == "__main__":
    main()
