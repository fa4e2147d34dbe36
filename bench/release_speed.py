"""Release speed at dataset scale: create_release of N labelled instances (default 60,000).

Usage: python bench/release_speed.py [--instances 60000] [--per-image 1] [--baseline-instances 10000]
Fills a fresh store through Store.add_labels (tiny PNGs, hard-linked per group so the fill is fast),
then times `create_release` (images referenced, then copied = hard-linked) and, for comparison in
the same run, the same release done by pipeline/release.py as of commit BASELINE (loaded from git)
on a smaller store. Writes bench/results/release_speed.json with the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image as PILImage  # noqa: E402

from pipeline.release import create_release  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.store.store import NewImage, NewLabel, NewRevision  # noqa: E402
from schemas.keypoints import NUM_KEYPOINTS  # noqa: E402

BASELINE = "16d224c"  # pipeline/release.py before the speed work


def fill(store: Store, folder: Path, instances: int, per_group: int = 50) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    template = folder / "template.png"
    PILImage.new("RGB", (32, 24), (9, 9, 9)).save(template)
    base = template.read_bytes()
    rows: list[NewLabel] = []
    for n in range(instances):
        path = folder / f"{n:07d}.png"
        path.write_bytes(base + n.to_bytes(4, "little"))  # distinct content, distinct sha256
        synthetic = n % 2 == 0
        kps = [v for i in range(NUM_KEYPOINTS) for v in (float(5 + i % 20), float(4 + i % 15), 2.0)]
        rows.append(NewLabel(
            image=NewImage(path=path, source="synthetic" if synthetic else "real",
                           subset="train-unreal" if synthetic else "coco",
                           group_key=f"g{n // per_group:06d}", width=32, height=24,
                           frame_index=n % per_group),
            instance_key="p0",
            revision=NewRevision(keypoints=kps, bbox=[1, 1, 20, 16],
                                 source="synthetic" if synthetic else "human",
                                 annotator=None if synthetic else "bench"),
        ))
        if len(rows) == 2000:
            store.add_labels(rows)
            rows = []
    if rows:
        store.add_labels(rows)


def baseline_release() -> ModuleType | None:
    try:
        code = subprocess.run(["git", "-C", str(REPO), "show", f"{BASELINE}:pipeline/release.py"],
                              capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    path = Path(tempfile.mkdtemp(prefix="spinetrack-baseline-")) / "release_baseline.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("release_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed(fn: Any, store: Store, version: str, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(store, version, **kwargs)
    return round(time.perf_counter() - start, 3)


def run(instances: int, baseline_instances: int, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"instances": instances}
    store = Store(home=workdir / "home")
    start = time.perf_counter()
    fill(store, workdir / "images", instances)
    result["fill_s"] = round(time.perf_counter() - start, 2)
    result["release_referenced_s"] = timed(create_release, store, "1.0.0", copy_images=False)
    result["release_copied_s"] = timed(create_release, store, "2.0.0", copy_images=True)
    store.engine.dispose()
    legacy = baseline_release()
    if legacy is not None and baseline_instances:
        small = Store(home=workdir / "home-small")
        fill(small, workdir / "images-small", baseline_instances)
        result["baseline_instances"] = baseline_instances
        result["baseline_release_copied_s"] = timed(legacy.create_release, small, "1.0.0", copy_images=True)
        result["today_release_copied_same_store_s"] = timed(create_release, small, "2.0.0", copy_images=True)
        result["ratio_same_store"] = round(result["baseline_release_copied_s"]
                                           / result["today_release_copied_same_store_s"], 2)
        small.engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=60000)
    parser.add_argument("--baseline-instances", type=int, default=10000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="spinetrack-bench-release-"))
    load_before = os.getloadavg()[0]
    try:
        result = run(args.instances, args.baseline_instances, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_average"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "platform": platform.platform()}
    out = REPO / "bench" / "results" / "release_speed.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
