"""Neural annotators on real photos and held-out renders: body / feet / spine AP and persons/s.

Every annotator available here runs on the same images and ground-truth boxes, the demo's tiny
model (trained in this run, scaled down, or `--home/--model` to reuse a registered one) as the
baseline. Real sets: the samples of ../shared/data/real_people whose keypoints map into
SpineTrack's by index (coco, ochuman: COCO-17; halpe: first 26 = COCO-17 + feet; posetrack18:
COCO-17 slots without 1-2, which are head_bottom/head_top there). crowdpose, aic, mhp and mpii
do not map: they have no eyes/ears (and 14 or 16 points in other orders, head top and neck in
their own definitions), so a COCO-17 body AP on them would not be the same number.

The second part compares the two spine sources of the combined annotator on held-out renders
(9 spine points' error and spine AP): the prior from true body points, from noisy ones (5 % of
the box size), from BlazePose's body points, and the student's own spine; and on the real sets,
where no spine is labelled, how far each spine lies from the true torso axis (mid-hip to
mid-shoulder, from the real ground truth).

Usage: python bench/annotators.py [--iters 120] [--home DIR --model NAME] [--out PATH]
Writes bench/results/annotators.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import Run  # noqa: E402
from pipeline.annotators.base import Annotator, PersonPose  # noqa: E402
from pipeline.annotators.spine_prior import OUTPUT_IDS, SpinePrior, load_prior  # noqa: E402
from pipeline.coco_writer import coco_dataset, coco_image, coco_result  # noqa: E402
from pipeline.evaluate import evaluate_keypoints  # noqa: E402
from pipeline.intake.real_samples import NOT_MAPPED, REAL_SAMPLE_SETS, real_people_folder  # noqa: E402
from schemas.keypoints import INDEX, NUM_KEYPOINTS, PARTITIONS  # noqa: E402

REAL_PEOPLE = real_people_folder()
#: The real sample sets (pipeline/intake/real_samples.py) as (name, COCO file, image folder, keypoint slots
#: kept, why): every one whose keypoints map into SpineTrack's first points by index.
REAL_SETS = [sample.as_tuple() for sample in REAL_SAMPLE_SETS]
#: Points whose labels count here: the slots the halpe mapping keeps beyond COCO-17 are the
#: Halpe26 head/neck/hip (17-19), which are not SpineTrack's head top / C7 / sacrum: left out.
SCORED = tuple(range(17)) + tuple(range(20, 26))
HELD_OUT = [("mixed", 901, 24), ("reach", 902, 24), ("bend", 903, 16)]  # seeds nothing trains on
TRAIN = [("bend", 10, 40), ("twist", 11, 40), ("walk", 12, 40), ("squat", 13, 40), ("reach", 14, 40)]
PARTS = {name: PARTITIONS[name] for name in ("body", "feet", "spine")}
NOISE = 0.05  # of the box size (sqrt of its area), per coordinate


@dataclass
class EvalSet:
    name: str
    mapping: str
    images: list[dict[str, Any]] = field(default_factory=list)  # id, path, width, height, boxes, ann_ids
    annotations: list[dict[str, Any]] = field(default_factory=list)  # 37-point GT

    @property
    def persons(self) -> int:
        return sum(len(img["boxes"]) for img in self.images)

    def gt(self) -> dict[str, Any]:
        images = [coco_image(i["id"], str(i["path"]), i["width"], i["height"]) for i in self.images]
        return coco_dataset(images, self.annotations)


def _to_spinetrack(flat: list[float], slots: tuple[int, ...]) -> list[float]:
    src = np.asarray(flat, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((NUM_KEYPOINTS, 3))
    for i in slots:
        if i in SCORED:
            out[i] = src[i]
    out[out[:, 2] > 0, 2] = 2.0
    return [float(v) for v in out.ravel()]


def real_set(root: Path, name: str, coco: str, folder: str, slots: tuple[int, ...], why: str) -> EvalSet:
    data = json.loads((root / coco).read_text())
    out = EvalSet(name, why)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        kps = _to_spinetrack(ann["keypoints"], slots)
        if ann.get("iscrowd") or not any(kps[3 * i + 2] > 0 for i in range(NUM_KEYPOINTS)):
            continue
        box = [float(v) for v in ann["bbox"]]
        area = float(ann.get("area") or box[2] * box[3])
        by_image.setdefault(int(ann["image_id"]), []).append(
            {"id": len(out.annotations) + 1, "image_id": int(ann["image_id"]), "category_id": 1,
             "keypoints": kps, "bbox": box, "area": area, "iscrowd": 0,
             "num_keypoints": sum(1 for i in range(NUM_KEYPOINTS) if kps[3 * i + 2] > 0)})
        out.annotations.append(by_image[int(ann["image_id"])][-1])
    for img in data["images"]:
        anns = by_image.get(int(img["id"]))
        if anns:
            out.images.append({"id": int(img["id"]), "path": root / folder / img["file_name"],
                               "width": int(img["width"]), "height": int(img["height"]),
                               "boxes": [a["bbox"] for a in anns], "ann_ids": [a["id"] for a in anns]})
    return out


def render_set_eval(root: Path, specs: list[tuple[str, int, int]] | None = None) -> EvalSet:
    """Rendered sequences (motion, seed, frames; default HELD_OUT) as one evaluation set."""
    from synthetic.sample_set import SequenceSpec, render_set

    specs = HELD_OUT if specs is None else specs
    out = EvalSet("held-out-renders", "reference renderer, all 37 points; seeds "
                  + ", ".join(f"{m}-{s}" for m, s, _ in specs))
    for n, folder in enumerate(render_set(root, [SequenceSpec(*s) for s in specs])):
        gt = json.loads((folder / "ground_truth.json").read_text())
        offset = 100_000 * (n + 1)  # unique image ids across the folders
        anns: dict[int, list[dict[str, Any]]] = {}
        for ann in gt["annotations"]:
            anns.setdefault(ann["image_id"], []).append(ann)
        for img in gt["images"]:
            rows = []
            for ann in anns.get(img["id"], []):
                rows.append({"id": len(out.annotations) + 1, "image_id": offset + img["id"], "category_id": 1,
                             "keypoints": [float(v) for v in ann["keypoints"]],
                             "bbox": [float(v) for v in ann["bbox"]], "area": float(ann["area"]),
                             "iscrowd": 0, "num_keypoints": ann.get("num_keypoints", 37)})
                out.annotations.append(rows[-1])
            if rows:
                out.images.append({"id": offset + img["id"], "path": folder / img["file_name"],
                                   "width": img["width"], "height": img["height"],
                                   "boxes": [r["bbox"] for r in rows], "ann_ids": [r["id"] for r in rows]})
    return out


def run_annotator(annotator: Annotator, data: EvalSet) -> tuple[list[PersonPose], float]:
    paths = [img["path"] for img in data.images]
    start = time.perf_counter()
    poses = annotator.predict_many(paths, [img["boxes"] for img in data.images])
    return poses, time.perf_counter() - start


def results_of(poses: list[PersonPose], data: EvalSet) -> list[dict[str, Any]]:
    out = []
    for pose in poses:
        img = data.images[pose.image_index]
        out.append(coco_result(img["id"], pose.coco_keypoints(img["width"], img["height"]), pose.score))
    return out


def ap_table(gt: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float | None]:
    metrics = evaluate_keypoints(gt, results, PARTS)
    return {f"{name}_AP": (round(m.AP, 4) if m.num_gt > 0 else None) for name, m in metrics.items()}


# -- the spine study -----------------------------------------------------------------------------
def _body_unit(kps: np.ndarray) -> float:
    hips = kps[[INDEX["left_hip"], INDEX["right_hip"]], :2].mean(axis=0)
    shoulders = kps[[INDEX["left_shoulder"], INDEX["right_shoulder"]], :2].mean(axis=0)
    return float(np.linalg.norm(shoulders - hips))


def _has_torso(kps: np.ndarray) -> bool:
    ids = [INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    return bool((kps[ids, 2] > 0).all()) and _body_unit(kps) > 2.0


def spine_errors(pred: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, float]:
    """Mean error of the 9 spine points: pixels and body units (true mid-hip to mid-shoulder)."""
    px = [float(np.linalg.norm(p - t[list(OUTPUT_IDS), :2], axis=1).mean())
          for p, t in zip(pred, truth, strict=True)]
    units = [e / _body_unit(t) for e, t in zip(px, truth, strict=True)]
    return {"mean_px": round(float(np.mean(px)), 2), "mean_body_units": round(float(np.mean(units)), 4),
            "median_body_units": round(float(np.median(units)), 4), "persons": len(px)}


def spine_ap(data: EvalSet, spines: dict[int, np.ndarray]) -> float:
    """Spine AP of `spines` (annotation id -> (9, 2)) on the render set."""
    results = []
    by_id = {a["id"]: a for a in data.annotations}
    for ann_id, spine in spines.items():
        kps = np.zeros((NUM_KEYPOINTS, 3))
        kps[list(OUTPUT_IDS), :2] = spine
        kps[list(OUTPUT_IDS), 2] = 2.0
        results.append(coco_result(by_id[ann_id]["image_id"], [float(v) for v in kps.ravel()], 1.0))
    gt = {**data.gt(), "annotations": [a for a in data.annotations if a["id"] in spines]}
    return round(evaluate_keypoints(gt, results, {"spine": PARTITIONS["spine"]})["spine"].AP, 4)


def _pose_spine(pose: PersonPose) -> np.ndarray | None:
    ids = list(OUTPUT_IDS)
    return pose.keypoints[ids].copy() if pose.covered[ids].all() else None


def torso_axis_distance(spine: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance (body units) of spine points from the true torso axis: the segment from the
    true mid-hip to the true mid-shoulder, extended by half a unit past each end (sacrum below
    the hips, C1 above the shoulders). A spine that is not on the body is far from it."""
    hips = truth[[INDEX["left_hip"], INDEX["right_hip"]], :2].mean(axis=0)
    shoulders = truth[[INDEX["left_shoulder"], INDEX["right_shoulder"]], :2].mean(axis=0)
    axis = shoulders - hips
    unit = float(np.linalg.norm(axis))
    t = np.clip(((spine - hips) @ axis) / (unit * unit), -0.5, 1.5)
    nearest = hips + t[:, None] * axis
    return float(np.linalg.norm(spine - nearest, axis=1).mean() / unit)


def _annotation_ids(data: EvalSet) -> dict[tuple[int, int], int]:
    """(image index, box index) -> ground-truth annotation id, as poses come back."""
    return {(i, b): aid for i, img in enumerate(data.images) for b, aid in enumerate(img["ann_ids"])}


def spine_study(renders: EvalSet, prior: SpinePrior, poses: dict[str, dict[str, list[PersonPose]]],
                real: list[EvalSet]) -> dict[str, Any]:
    truth_by_id = {a["id"]: np.asarray(a["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
                   for a in renders.annotations}
    ann_of = _annotation_ids(renders)
    usable = [aid for aid, k in truth_by_id.items() if _has_torso(k) and (k[list(OUTPUT_IDS), 2] > 0).all()]
    rng = np.random.default_rng(0)
    sources: dict[str, dict[int, np.ndarray]] = {"prior_true_body": {}, "prior_noisy_body": {}}
    box_of = {a["id"]: a["bbox"] for a in renders.annotations}
    for aid in usable:
        k = truth_by_id[aid]
        sources["prior_true_body"][aid] = prior.predict(k[:, :2])
        sigma = NOISE * math.sqrt(box_of[aid][2] * box_of[aid][3])
        sources["prior_noisy_body"][aid] = prior.predict(k[:, :2] + rng.normal(0, sigma, (NUM_KEYPOINTS, 2)))
    for label, annotator in (("prior_blazepose_body", "spine-prior"), ("student", "baseline")):
        sources[label] = {}
        for pose in poses[annotator]["held-out-renders"]:
            aid = ann_of[(pose.image_index, pose.box_index)]
            spine = _pose_spine(pose)
            if aid in usable and spine is not None:
                sources[label][aid] = spine
    out: dict[str, Any] = {"persons": len(usable), "noise": f"{NOISE} x sqrt(box area) per coordinate",
                           "renders": {}}
    for label, spines in sources.items():
        ids = sorted(spines)
        out["renders"][label] = {**spine_errors([spines[i] for i in ids], [truth_by_id[i] for i in ids]),
                                 "spine_AP": spine_ap(renders, spines),
                                 "coverage": round(len(ids) / len(usable), 3)}
    # the same two sources on the people of the renders both cover, for a like-for-like pair
    both = sorted(set(sources["prior_blazepose_body"]) & set(sources["student"]))
    out["renders_same_persons"] = {
        label: {**spine_errors([sources[label][i] for i in both], [truth_by_id[i] for i in both]),
                "spine_AP": spine_ap(renders, {i: sources[label][i] for i in both})}
        for label in ("prior_blazepose_body", "student")}
    floor = [torso_axis_distance(truth_by_id[i][list(OUTPUT_IDS), :2], truth_by_id[i]) for i in usable]
    out["torso_axis_reference"] = {
        "true_spine_on_renders": round(float(np.mean(floor)), 4),
        "note": "the true spine's own mean distance from the torso axis (it sits behind it, not on it)"}
    real_axis: dict[str, dict[str, Any]] = {}
    for data in real:
        truth = {a["id"]: np.asarray(a["keypoints"]).reshape(NUM_KEYPOINTS, 3) for a in data.annotations}
        ann = _annotation_ids(data)
        row: dict[str, Any] = {}
        for label, annotator in (("prior_blazepose_body", "spine-prior"), ("student", "baseline")):
            dists = []
            for pose in poses[annotator][data.name]:
                k = truth[ann[(pose.image_index, pose.box_index)]]
                spine = _pose_spine(pose)
                if spine is not None and _has_torso(k):
                    dists.append(torso_axis_distance(spine, k))
            row[label] = {"mean_body_units": round(float(np.mean(dists)), 4) if dists else None,
                          "persons": len(dists)}
        real_axis[data.name] = row
    out["real_torso_axis_distance"] = real_axis
    return out


# -- annotators ----------------------------------------------------------------------------------
def baseline_model(args: argparse.Namespace, work: Path) -> tuple[Any, str, dict[str, Any]]:
    """(store, registered model name, how it was made): trained here, scaled down, or reused."""
    from pipeline.store import Store

    if args.home and args.model:
        return Store(home=Path(args.home)), args.model, {"reused": args.model}
    from pipeline.model.train import train
    from synthetic.sample_set import SequenceSpec, render_set, store_ground_truth

    store = Store(home=work / "home")
    folders = render_set(work / "train-renders", [SequenceSpec(m, s, n) for m, s, n in TRAIN])
    count = sum(store_ground_truth(store, f, tag="bench") for f in folders)
    started = time.perf_counter()
    version = train(store, config="tiny", iters=args.iters, batch_size=args.batch, seed=0, threads=2)
    return store, version.name, {"trained_frames": count, "iters": args.iters, "batch_size": args.batch,
                                 "train_seconds": round(time.perf_counter() - started, 1),
                                 "sequences": [f"{m}-seed{s}" for m, s, _ in TRAIN],
                                 "note": "the demo's tiny model scaled down (demo: 300 iters on 250 frames "
                                         "ingested through OpenSim IK; here render ground truth)"}


def annotators(store: Any, model: str, work: Path, with_onnx: bool) -> dict[str, Annotator]:
    from pipeline.annotators import load_annotator

    out: dict[str, Annotator] = {
        "baseline": load_annotator(f"model:{model}", store, cache=False),
        "blazepose": load_annotator("blazepose"),
        "spine-prior": load_annotator("spine-prior"),
        "combined": load_annotator(f"combined:student={model}", store, cache=False),
        "combined:spine=student": load_annotator(f"combined:spine=student,student={model}", store,
                                                 cache=False),
    }
    if with_onnx:
        from pipeline.annotators.onnx import export_onnx
        from pipeline.model.registry import load_model

        path = export_onnx(load_model(store, model).module, work / "tiny.onnx")
        out["onnx(tiny export)"] = load_annotator(f"onnx:{path},flip")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=120, help="tiny baseline training iterations")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--home", help="reuse a SPINETRACK_HOME's registered model (with --model)")
    parser.add_argument("--model", help="registered model name in --home")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--out", default="annotators")
    args = parser.parse_args()
    bench = Run()
    import torch

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="spinetrack-bench-annotators-"))
    store, model, made = baseline_model(args, work)
    sets = [real_set(REAL_PEOPLE, *spec) for spec in REAL_SETS if (REAL_PEOPLE / spec[1]).is_file()]
    real = list(sets)
    sets.append(render_set_eval(work / "held-out"))
    runs = annotators(store, model, work, not args.no_onnx)
    table: dict[str, Any] = {}
    poses: dict[str, dict[str, list[PersonPose]]] = {}
    for label, annotator in runs.items():
        first = sets[0].images[0]
        annotator.predict_many([first["path"]], [first["boxes"][:1]])  # warm-up (lazy loads), not timed
        table[label] = {"identity": annotator.identity.as_json(), "covers": len(annotator.covers), "sets": {}}
        poses[label] = {}
        for data in sets:
            got, seconds = run_annotator(annotator, data)
            poses[label][data.name] = got
            row = {**ap_table(data.gt(), results_of(got, data)), "persons": data.persons,
                   "seconds": round(seconds, 2), "persons_per_s": round(data.persons / seconds, 2)}
            table[label]["sets"][data.name] = row
            print(f"{label:24s} {data.name:18s} " + "  ".join(
                f"{k} {v if v is not None else '-':>6}" for k, v in row.items() if k.endswith("AP"))
                + f"  {row['persons_per_s']:7.1f} persons/s")
    base = table["baseline"]["sets"]
    for label in table:
        for name, row in table[label]["sets"].items():
            row["speed_vs_baseline"] = round(row["persons_per_s"] / base[name]["persons_per_s"], 3)
    study = spine_study(sets[-1], load_prior(None), poses, real)
    print(json.dumps(study, indent=1))
    result = {
        "benchmark": "annotators",
        "baseline": {"model": model, **made},
        "torch_threads": torch.get_num_threads(),
        "sets": {d.name: {"images": len(d.images), "persons": d.persons, "mapping": d.mapping} for d in sets},
        "scored_points": "body = COCO-17 (0-16), feet = 20-25, spine = the 9 spine points (renders only); "
                         "ground-truth boxes, one prediction per person; uncovered points count as misses",
        "not_mapped": NOT_MAPPED,
        "annotators": table,
        "spine_sources": study,
        "note": "shared 2-core machine with other helpers' jobs running (see load_average); "
                "persons/s include image reading",
    }
    path = bench.write(result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
