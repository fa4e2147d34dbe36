"""Prediction speed: `pipeline.model.predict` (batched across images) against mmpose's
`inference_topdown` called once per image, on the same model, boxes and flip test.

Usage: python bench/predict.py [--device cpu|cuda] [--configs tiny rtmpose-s] [--images 40]
Prints persons/s and images/s and writes bench/results/predict.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import Run  # noqa: E402
from pipeline.model.predict import predict, untrained_model  # noqa: E402

SAMPLES = REPO.parent / "shared" / "data" / "real_people" / "coco"


def _workload(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`count` real images (the COCO samples, repeated) with their annotated person boxes."""
    import cv2

    raw = json.loads((SAMPLES / "test_coco.json").read_text())
    base: list[tuple[np.ndarray, np.ndarray]] = []
    for img in raw["images"]:
        boxes = np.array([a["bbox"] for a in raw["annotations"] if a["image_id"] == img["id"]])
        base.append((np.asarray(cv2.imread(str(SAMPLES / img["file_name"]))), boxes))
    items = [base[i % len(base)] for i in range(count)]
    return [i for i, _ in items], [b for _, b in items]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_times(runs: dict[str, Any], device: str, repeat: int) -> dict[str, float]:
    """Best wall time of each run; the runs are interleaved round by round so that a change in
    machine load (shared CI runners) hits all of them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(repeat):
        for label, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[label] = min(best[label], time.perf_counter() - start)
    return best


def bench_config(name: str, device: str, count: int, repeat: int) -> dict[str, Any]:
    from mmpose.apis import inference_topdown

    model = untrained_model(name, device=device)
    model.test_cfg["flip_test"] = True  # type: ignore[index,operator]
    images, boxes = _workload(count)
    persons = sum(len(b) for b in boxes)

    def mmpose_per_image() -> None:
        with torch.no_grad():
            for img, b in zip(images, boxes, strict=True):
                inference_topdown(model, img, b, bbox_format="xywh")

    runs = {
        "mmpose_inference_topdown_per_image": mmpose_per_image,
        "predict_batch1": lambda: predict(model, images, boxes, batch_size=1, flip_test=True),
        "predict_batch32": lambda: predict(model, images, boxes, batch_size=32, flip_test=True),
    }
    result: dict[str, Any] = {"images": count, "persons": persons, "flip_test": True}
    for label, seconds in _best_times(runs, device, repeat).items():
        result[label] = {
            "seconds": round(seconds, 4),
            "persons_per_s": round(persons / seconds, 2),
            "images_per_s": round(count / seconds, 2),
        }
        print(f"{name:10s} {label:36s} {persons / seconds:8.1f} persons/s  {count / seconds:8.1f} images/s")
    base = result["mmpose_inference_topdown_per_image"]["persons_per_s"]
    for label in ("predict_batch1", "predict_batch32"):
        result[label]["speedup_vs_mmpose"] = round(result[label]["persons_per_s"] / base, 2)
        print(f"{name:10s} {label} / inference_topdown = {result[label]['speedup_vs_mmpose']:.2f}x")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["tiny", "rtmpose-s"])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "predict.json")
    args = parser.parse_args()
    bench_run = Run()
    report: dict[str, Any] = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "torch_threads": torch.get_num_threads(),
        "note": "untrained weights: speed does not depend on them; boxes from real_people/coco",
        "configs": {},
    }
    for name in args.configs:
        report["configs"][name] = bench_config(name, args.device, args.images, args.repeat)
    bench_run.write(report, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
