"""The default person detector (BlazePose's, pipeline/intake/detectors.py): box recall and speed.

Recall at IoU 0.5 against the true boxes of the single-person sample photos (images of
../shared/data/real_people whose COCO-style file has exactly one person with a box; the same
image listed by several files counts once), for the box derivation the importer uses and the
alternatives it was chosen from (mediapipe's ROI square with and without its 1.25 margin, body
rectangles of other proportions). The sample is tiny, so the mean IoU is reported too, and the
same numbers on every sample photo where the detection is matched to its best-overlapping person
(BlazePose finds one person per image: recall there is not the point, box quality is).

Speed: model load, then images/s of `detect` (letterbox, network, decoding, box) over the sample
photos, and of `import_images` on their folders into a temporary store (reading, hashing, store
writes included; the detector loaded beforehand). The torch thread count is recorded.

Usage: python bench/detector.py [--repeat 3] [--out detector]
Writes bench/results/detector.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import Run  # noqa: E402
from pipeline.intake.detectors import BODY_LENGTH, BODY_WIDTH, BlazePoseBoxes, Box, rotated_box  # noqa: E402
from pipeline.intake.image_import import import_images  # noqa: E402
from pipeline.intake.media import read_image  # noqa: E402
from pipeline.model.blazepose_detector import ROI_SCALE  # noqa: E402
from pipeline.store import Store  # noqa: E402

REAL_PEOPLE = REPO.parent / "shared" / "data" / "real_people"
#: COCO-style files with person boxes, and the folder their file names are relative to.
SETS = [
    ("coco/test_coco.json", "coco"),
    ("ochuman/test_ochuman.json", "ochuman"),
    ("posetrack18/annotations/test_posetrack18_val.json", "posetrack18"),
    ("crowdpose/test_crowdpose.json", "crowdpose"),
    ("aic/test_aic.json", "aic"),
    ("mhp/test_mhp.json", "mhp"),
]
#: name -> (length, width) of the rectangle in units of |kp1 - kp0| (pipeline.intake.detectors.rotated_box).
DERIVATIONS: dict[str, tuple[float, float]] = {
    "body rectangle 2 x 1 (used)": (BODY_LENGTH, BODY_WIDTH),
    "mediapipe ROI square (x1.25)": (2 * ROI_SCALE, 2 * ROI_SCALE),
    "ROI square without margin": (2.0, 2.0),
    "body rectangle 2 x 0.8": (2.0, 0.8),
    "body rectangle 2 x 1.4": (2.0, 1.4),
    "body rectangle 2.4 x 1": (2.4, 1.0),
}


def iou(a: Box, b: list[float]) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def sample_photos(root: Path) -> list[dict[str, Any]]:
    """Every sample photo with its true person boxes (crowd regions left out), each image once."""
    photos: dict[Path, dict[str, Any]] = {}
    for coco, folder in SETS:
        data = json.loads((root / coco).read_text())
        boxes: dict[int, list[list[float]]] = {}
        for ann in data["annotations"]:
            if not ann.get("iscrowd") and ann.get("bbox"):
                boxes.setdefault(ann["image_id"], []).append([float(v) for v in ann["bbox"]])
        for img in data["images"]:
            path = root / folder / img["file_name"]
            if path.is_file() and boxes.get(img["id"]):
                photos.setdefault(path, {"path": path, "set": folder, "boxes": boxes[img["id"]]})
    return list(photos.values())


def box_quality(detector: BlazePoseBoxes, photos: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall at IoU 0.5 and mean IoU per derivation, on single-person photos and on all of them."""
    detections = []
    for photo in photos:
        image = read_image(photo["path"])
        dets = detector.detections(image)
        detections.append((photo, dets[0] if dets else None, (image.shape[1], image.shape[0])))
    out: dict[str, Any] = {}
    for name, (length, width) in DERIVATIONS.items():
        single: list[dict[str, Any]] = []
        matched: list[float] = []
        for photo, det, size in detections:
            box = rotated_box(det, length, width, size) if det is not None else None
            best = max((iou(box, truth) for truth in photo["boxes"]), default=0.0) if box else 0.0
            if len(photo["boxes"]) == 1:
                single.append({"image": f"{photo['set']}/{photo['path'].name}", "iou": round(best, 3)})
            if det is not None:
                matched.append(best)
        out[name] = {
            "single_person": {"images": len(single),
                              "recall_iou50": sum(s["iou"] >= 0.5 for s in single) / max(1, len(single)),
                              "mean_iou": round(float(np.mean([s["iou"] for s in single])), 3),
                              "per_image": single},
            "all_samples_matched": {
                "detections": len(matched),
                "share_iou50": round(sum(v >= 0.5 for v in matched) / max(1, len(matched)), 3),
                "mean_iou": round(float(np.mean(matched)), 3) if matched else None},
        }
    out["photos_without_detection"] = [f"{p['set']}/{p['path'].name}" for p, d, _ in detections if d is None]
    return out


def speed(detector: BlazePoseBoxes, photos: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    images = [read_image(p["path"]) for p in photos]
    detector.detect(images[0])  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        for image in images:
            detector.detect(image)
    detect_s = time.perf_counter() - start
    folders = sorted({p["path"].parent for p in photos})
    with tempfile.TemporaryDirectory(prefix="spinetrack-bench-detector-") as home, \
            Store(home=Path(home)) as store:
        start = time.perf_counter()
        summary = import_images(store, folders, detector=detector)
        import_s = time.perf_counter() - start
    read = summary.images + sum("no person found" in line for line in summary.skipped)
    return {"detect_images_per_s": round(repeat * len(images) / detect_s, 2),
            "detect_images": repeat * len(images),
            "import_images_per_s": round(read / import_s, 2), "import_images_read": read,
            "import_people": summary.instances, "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="detector")
    args = parser.parse_args()
    if not REAL_PEOPLE.is_dir():
        sys.exit(f"{REAL_PEOPLE} not present: the bench needs the sample photos")
    run = Run()
    start = time.perf_counter()
    detector = BlazePoseBoxes()
    load_s = time.perf_counter() - start
    photos = sample_photos(REAL_PEOPLE)
    result: dict[str, Any] = {
        "detector": "blazepose (pose_detection.tflite converted to PyTorch), one person per image",
        "box_derivation": f"rectangle centred on the hip point, {BODY_LENGTH} x |kp1 - kp0| along the body "
                          f"axis, {BODY_WIDTH} x across; axis-aligned bounds clipped to the image",
        "photos": len(photos),
        "single_person_photos": sum(len(p["boxes"]) == 1 for p in photos),
        "quality": box_quality(detector, photos),
        "speed": {"load_s": round(load_s, 2), **speed(detector, photos, args.repeat)},
        "cpus": os.cpu_count(),
    }
    print(run.write(result, args.out))
    used = result["quality"]["body rectangle 2 x 1 (used)"]["single_person"]
    print(f"recall@0.5 {used['recall_iou50']:.2f} on {used['images']} single-person photos, mean IoU "
          f"{used['mean_iou']}; {result['speed']['detect_images_per_s']} images/s")


if __name__ == "__main__":
    main()
