"""FiftyOne load speed: `load_into_fiftyone` (declared schema, batched writes) against the write path
it replaced, in the same run (issue 11: at least 1,500 samples/s; the old path gave ~170/s).

Fills a fresh store with N images (one labelled person and one model proposal each, tiny PNGs),
then times, in this process and against the same MongoDB:
- `now`: `annotation.fiftyone.load_into_fiftyone` end to end (store reads, documents built as
  plain dicts, one insert per batch, saved views), and its write step alone;
- `before`: the path it replaced: the same samples built as fo.Sample/fo.Keypoint objects
  (`build_samples`) and written with one `dataset.add_samples(samples, validate=False)`, FiftyOne
  inferring the schema sample by sample; build and write timed apart.

Usage: python bench/fiftyone_load.py [--images 3000]. Writes bench/results/fiftyone_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image as PILImage  # noqa: E402

from pipeline.store import Store  # noqa: E402
from pipeline.store.store import NewImage, NewLabel, NewRevision  # noqa: E402
from schemas.keypoints import NUM_KEYPOINTS  # noqa: E402


def fill(store: Store, folder: Path, images: int) -> None:
    folder.mkdir(parents=True)
    PILImage.new("RGB", (64, 48), (40, 90, 9)).save(folder / "template.png")
    kps = [v for i in range(NUM_KEYPOINTS) for v in (float(5 + i), float(4 + i % 30), 2)]
    labels, proposals = [], []
    for n in range(images):
        path = folder / f"{n:06d}.png"
        os.link(folder / "template.png", path)  # distinct paths, one file's bytes
        image = NewImage(path, source="synthetic" if n % 2 else "real", subset="bench",
                         group_key=f"g{n // 20}", width=64, height=48, frame_index=n % 20, sha256=f"{n:064x}")
        labels.append(NewLabel(image, "p0", revision=NewRevision(kps, [2, 2, 50, 40], source="synthetic")))
        proposals.append(NewLabel(image, "p0", revision=NewRevision(
            kps, [2, 2, 50, 40], source="pseudo", accepted=False, model_version="bench",
            uncertainty=(n % 97) / 97, scores=[0.5] * NUM_KEYPOINTS)))
    for start in range(0, images, 2000):
        store.add_labels(labels[start:start + 2000])
        store.add_labels(proposals[start:start + 2000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="spinetrack-bench-fo-"))
    result: dict[str, Any] = {"benchmark": "fiftyone_load", "images": args.images}
    try:
        home = work / "home"
        home.mkdir()
        store = Store(home=home)
        t = time.perf_counter()
        fill(store, work / "images", args.images)
        result["fill_s"] = round(time.perf_counter() - t, 2)

        from annotation.fiftyone import samples as fos
        from annotation.fiftyone.setup import fiftyone_module

        fo = fiftyone_module(home)
        fo.list_datasets()  # start the database before timing anything

        written: dict[str, float] = {}
        original = fos.insert_in_batches

        def timed_add(dataset: Any, batch: Any, **kw: Any) -> None:
            t0 = time.perf_counter()
            original(dataset, batch, **kw)
            written["s"] = time.perf_counter() - t0

        fos.insert_in_batches = timed_add  # type: ignore[assignment]
        t = time.perf_counter()
        dataset = fos.load_into_fiftyone(store, name="bench-now")
        total = time.perf_counter() - t
        fos.insert_in_batches = original  # type: ignore[assignment]
        assert len(dataset) == args.images
        result["now"] = {"total_s": round(total, 2), "samples_per_s": round(args.images / total),
                         "write_s": round(written["s"], 2),
                         "write_samples_per_s": round(args.images / written["s"])}

        labels = store.current_labels()
        predictions = fos.latest_predictions(store)
        t = time.perf_counter()
        samples = fos.build_samples(fo, labels, predictions)
        build = time.perf_counter() - t
        before = fo.Dataset("bench-before")
        t = time.perf_counter()
        before.add_samples(samples, validate=False, progress=False)  # the replaced write step
        write_before = time.perf_counter() - t
        assert len(before) == args.images
        result["before"] = {"build_s": round(build, 2), "write_s": round(write_before, 2),
                            "write_samples_per_s": round(args.images / write_before),
                            "samples_per_s_build_and_write": round(args.images / (build + write_before))}
        result["write_speedup"] = round(write_before / written["s"], 1)
        result["speedup_build_and_write"] = round((build + write_before) / total, 1)
        for name in ("bench-now", "bench-before"):
            fo.delete_dataset(name)
        store.engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2),
                              "note": "shared 2-core machine, several helpers working: numbers under load"}
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "platform": platform.platform()}
    out = REPO / "bench" / "results" / "fiftyone_load.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
