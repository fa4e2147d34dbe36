"""Release speed at dataset scale: create_release of N labelled instances (default 60,000).

Usage: python bench/release_speed.py [--instances 60000] [--baseline-instances 10000]
Fills a fresh store through Store.add_labels (tiny PNGs, one file each), then times
`create_release` (images referenced, then copied = hard-linked), wall and CPU seconds, and, for
comparison in the same run:
- on the same store, the release code of PREVIOUS (pipeline/release/build.py before the bulk rounding
  and encoding, loaded from git; it runs on today's store reads), images referenced;
- on a smaller store, the release code of BASELINE (before any speed work), images copied.
Writes bench/results/release_speed.json with the load average (bench/common.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Run, module_at_commit  # bench/ is sys.path[0]: the repository goes on sys.path too
from PIL import Image as PILImage

from pipeline.release.build import create_release
from pipeline.store import Store
from pipeline.store.store import NewImage, NewLabel, NewRevision
from schemas.keypoints import NUM_KEYPOINTS

BASELINE = "16d224c"  # pipeline/release/build.py before the speed work
PREVIOUS = "44963bd"  # pipeline/release/build.py before the bulk rounding and encoding (11.7 s at 60,000)


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


def timed(fn: Any, store: Store, version: str, **kwargs: Any) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(store, version, **kwargs)
    return {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3)}


def run(instances: int, baseline_instances: int, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"instances": instances}
    store = Store(home=workdir / "home")
    start = time.perf_counter()
    fill(store, workdir / "images", instances)
    result["fill_s"] = round(time.perf_counter() - start, 2)
    referenced = timed(create_release, store, "1.0.0", copy_images=False)
    copied = timed(create_release, store, "2.0.0", copy_images=True)
    result["release_referenced_s"] = referenced["wall_s"]
    result["release_copied_s"] = copied["wall_s"]
    result["cpu_s"] = {"referenced": referenced["cpu_s"], "copied": copied["cpu_s"]}
    previous = module_at_commit(PREVIOUS, "pipeline/release/build.py", "release_previous", folder=workdir)
    if previous is not None:
        before = timed(previous.create_release, store, "3.0.0", copy_images=False)
        result["previous"] = {"commit": PREVIOUS, "release_referenced_s": before["wall_s"],
                              "cpu_s": before["cpu_s"],
                              "ratio_wall": round(before["wall_s"] / referenced["wall_s"], 2),
                              "ratio_cpu": round(before["cpu_s"] / referenced["cpu_s"], 2)}
    store.close()
    legacy = module_at_commit(BASELINE, "pipeline/release/build.py", "release_baseline", folder=workdir)
    if legacy is not None and baseline_instances:
        small = Store(home=workdir / "home-small")
        fill(small, workdir / "images-small", baseline_instances)
        result["baseline_instances"] = baseline_instances
        result["baseline_commit"] = BASELINE
        result["baseline_release_copied_s"] = timed(legacy.create_release, small, "1.0.0",
                                                    copy_images=True)["wall_s"]
        result["today_release_copied_same_store_s"] = timed(create_release, small, "2.0.0",
                                                            copy_images=True)["wall_s"]
        result["ratio_same_store"] = round(result["baseline_release_copied_s"]
                                           / result["today_release_copied_same_store_s"], 2)
        small.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=60000)
    parser.add_argument("--baseline-instances", type=int, default=10000)
    parser.add_argument("--out", default="release_speed", help="result name under bench/results/")
    args = parser.parse_args()
    bench = Run()
    workdir = Path(tempfile.mkdtemp(prefix="spinetrack-bench-release-"))
    try:
        result = run(args.instances, args.baseline_instances, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_note"] = "shared 2-core machine, other work running: wall times under load, CPU times too"
    out = bench.write(result, args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
