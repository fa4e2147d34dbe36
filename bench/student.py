"""The default student (`blaze37`) beside its peers, all from one run, on this machine.

Peers, side by side on the same images and ground-truth boxes:
- `blazepose`: BlazePose through the mediapipe runtime (the body expert the student starts from);
- `blaze37-untrained`: the converted network with BlazePose's heatmap rows copied, before training;
- `blaze37`: the default student after `spinetrack train` (pipeline.model.train with its defaults)
  on the demo's synthetic sequences (render ground truth: the model is measured, not the ingest);
- `combined`: the combined annotator with that student;
- `tiny`: the from-scratch model as it was the default before (the same data, its own default budget).

Sets: body AP on every real sample set that maps to COCO-17 (bench/annotators.py REAL_SETS);
spine / feet / all-37 AP on held-out renders of motions and seeds (so characters) the student
never trained on; persons/s with torch and onnxruntime on one thread (`persons_per_s_one_core`).

Usage: python bench/student.py [--iters N] [--out student]   (writes bench/results/student.json)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.annotators import (  # noqa: E402
    REAL_PEOPLE,
    REAL_SETS,
    EvalSet,
    real_set,
    render_set_eval,
    results_of,
    run_annotator,
)
from bench.common import Run  # noqa: E402
from pipeline.evaluate import evaluate_keypoints  # noqa: E402
from schemas.keypoints import PARTITIONS  # noqa: E402

#: The demo's synthetic sequences (flows/demo.py SYNTHETIC): what `make demo` trains on.
TRAIN = [("mixed", 11, 60), ("bend", 12, 50), ("twist", 13, 50), ("walk", 14, 50), ("squat", 15, 40)]
#: Held out: a motion never trained on (reach) and unseen seeds (so unseen characters) of others.
HELD_OUT = [("reach", 901, 24), ("mixed", 902, 24), ("bend", 903, 16), ("walk", 904, 16)]
PARTS = {name: PARTITIONS[name] for name in ("all", "body", "feet", "spine")}


def ap(data: EvalSet, poses: list[Any]) -> dict[str, float | None]:
    metrics = evaluate_keypoints(data.gt(), results_of(poses, data), PARTS)
    return {f"{name}_AP": (round(m.AP, 4) if m.num_gt > 0 else None) for name, m in metrics.items()}


def train_students(work: Path, iters: int | None) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """A store with the demo's renders as labels, the real pool unlabelled, and both students."""
    from pipeline.intake.real_import import import_coco
    from pipeline.model.train import train
    from pipeline.store import Store
    from synthetic.sample_set import SequenceSpec, render_set, store_ground_truth

    store = Store(home=work / "home")
    folders = render_set(work / "train-renders", [SequenceSpec(*s) for s in TRAIN])
    frames = sum(store_ground_truth(store, f, tag="bench") for f in folders)
    for name, coco, folder in (("ochuman", "ochuman/test_ochuman.json", "ochuman"),
                               ("posetrack18", "posetrack18/annotations/test_posetrack18_val.json",
                                "posetrack18")):
        # the real pool whose people anchor the student's body knowledge: no labels imported, and
        # never the COCO sample, which is what body AP is measured on
        if (REAL_PEOPLE / coco).is_file():
            import_coco(store, REAL_PEOPLE / coco, image_dir=REAL_PEOPLE / folder, subset=f"pool-{name}",
                        boxes_only=True)
    pool = [inst.id for _, inst in store.unlabelled_instances(image_source="real")]
    made: dict[str, Any] = {"train_frames": frames, "pool_people": len(pool),
                            "sequences": [f"{m}-seed{s}" for m, s, _ in TRAIN]}
    names = {}
    for config in ("blaze37", "tiny"):
        started = time.perf_counter()
        version = train(store, config=config, iters=iters if config == "blaze37" else None, seed=0,
                        teacher_pool=pool)
        names[config] = version.name
        made[config] = {"name": version.name, "train_seconds": round(time.perf_counter() - started, 1),
                        "iters": json.loads(json.dumps(version.config))["train_cfg"]["max_iters"]}
    return store, names, made


def peers(store: Any, names: dict[str, str]) -> dict[str, Any]:
    from pipeline.annotators import load_annotator
    from pipeline.annotators.registered import in_memory_annotator
    from pipeline.model.predict import untrained_model

    return {
        "blazepose": load_annotator("blazepose"),
        "blaze37-untrained": in_memory_annotator(untrained_model("blaze37"), "blaze37-untrained",
                                                 runtime="onnx"),
        "blaze37": load_annotator(f"model:{names['blaze37']}", store, cache=False),
        "combined": load_annotator(f"combined:student={names['blaze37']}", store, cache=False),
        "tiny": load_annotator(f"model:{names['tiny']}", store, cache=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=None, help="blaze37 iterations (default: the config's)")
    parser.add_argument("--out", default="student")
    args = parser.parse_args()
    bench = Run()
    import torch

    work = Path(tempfile.mkdtemp(prefix="spinetrack-bench-student-"))
    store, names, made = train_students(work, args.iters)
    torch.set_num_threads(1)  # persons/s on one core
    sets = [real_set(REAL_PEOPLE, *spec) for spec in REAL_SETS if (REAL_PEOPLE / spec[1]).is_file()]
    sets.append(render_set_eval(work / "held-out", HELD_OUT))
    table: dict[str, Any] = {}
    for label, annotator in peers(store, names).items():
        first = sets[0].images[0]
        annotator.predict_many([first["path"]], [first["boxes"][:1]])  # warm-up, not timed
        rows: dict[str, Any] = {}
        persons = seconds = 0.0
        for data in sets:
            poses, took = run_annotator(annotator, data)
            rows[data.name] = {**ap(data, poses), "persons": data.persons, "seconds": round(took, 2)}
            persons += data.persons
            seconds += took
            scores = [f"{k} {v if v is not None else '-':>6}" for k, v in rows[data.name].items()
                      if k.endswith("AP")]
            print(f"{label:18s} {data.name:18s} " + "  ".join(scores), flush=True)
        renders = rows[sets[-1].name]
        table[label] = {
            "identity": annotator.identity.as_json(),
            "coco_body_ap": rows.get("coco", {}).get("body_AP"),
            "heldout_spine_ap": renders["spine_AP"],
            "heldout_feet_ap": renders["feet_AP"],
            "heldout_all_ap": renders["all_AP"],
            "persons_per_s_one_core": round(persons / seconds, 2),
            "sets": rows,
        }
    result = {
        "benchmark": "student",
        "trained": table["blaze37"],
        "peers": {k: v for k, v in table.items() if k != "blaze37"},
        "training": made,
        "sets": {d.name: {"images": len(d.images), "persons": d.persons, "mapping": d.mapping} for d in sets},
        "threads": {"training": "pipeline.model.train default (cores - 1)", "inference": 1},
        "note": "ground-truth boxes; persons/s include image reading and cropping; flip test on for the "
                "registered models (their config's default)",
    }
    path = bench.write(result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
