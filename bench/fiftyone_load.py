"""FiftyOne load speed: `load_into_fiftyone` (declared schema, batched writes) against the write path
it replaced, in the same run (issue 11: at least 1,500 samples/s; the old path gave ~170/s).

Fills a fresh store with N images (one labelled person and one model proposal each, tiny PNGs),
then times, in this process and against the same MongoDB:
- `now`: `annotation.fiftyone.load_into_fiftyone` end to end (store reads, documents built as
  plain dicts, one insert per batch, saved views), and its write step alone;
- `before`: the path it replaced: the same samples built as fo.Sample/fo.Keypoint objects
  (`build_samples`) and written with one `dataset.add_samples(samples, validate=False)`, FiftyOne
  inferring the schema sample by sample; build and write timed apart.

Usage: python bench/fiftyone_load.py [--images 3000 10000] [--before-up-to 3000]. Writes
bench/results/fiftyone_load.json: the first size's figures at the top, every size under `runs`, with
the machine and its load average (bench/common.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Run  # bench/ is sys.path[0]: the repository goes on sys.path too
from PIL import Image as PILImage

from pipeline.store import Store
from pipeline.store.store import NewImage, NewLabel, NewRevision
from schemas.keypoints import NUM_KEYPOINTS


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


def measure(fo: Any, work: Path, images: int, *, with_before: bool) -> dict[str, Any]:
    """One size: a fresh store of `images` images, loaded the current way (and the old way)."""
    from annotation.fiftyone import samples as fos

    home = work / f"home-{images}"
    home.mkdir()
    store = Store(home=home)
    result: dict[str, Any] = {"images": images}
    t = time.perf_counter()
    fill(store, work / f"images-{images}", images)
    result["fill_s"] = round(time.perf_counter() - t, 2)

    written: dict[str, float] = {}
    original = fos.insert_in_batches

    def timed_add(dataset: Any, batch: Any, **kw: Any) -> None:
        t0 = time.perf_counter()
        original(dataset, batch, **kw)
        written["s"] = time.perf_counter() - t0

    fos.insert_in_batches = timed_add  # type: ignore[assignment]
    t = time.perf_counter()
    dataset = fos.load_into_fiftyone(store, name=f"bench-now-{images}")
    total = time.perf_counter() - t
    fos.insert_in_batches = original  # type: ignore[assignment]
    assert len(dataset) == images
    result["now"] = {"total_s": round(total, 2), "samples_per_s": round(images / total),
                     "write_s": round(written["s"], 2), "write_samples_per_s": round(images / written["s"])}
    fo.delete_dataset(dataset.name)
    if with_before:
        labels = store.current_labels()
        predictions = fos.latest_predictions(store)
        t = time.perf_counter()
        samples = fos.build_samples(fo, labels, predictions)
        build = time.perf_counter() - t
        before = fo.Dataset(f"bench-before-{images}")
        t = time.perf_counter()
        before.add_samples(samples, validate=False, progress=False)  # the replaced write step
        write_before = time.perf_counter() - t
        assert len(before) == images
        result["before"] = {"build_s": round(build, 2), "write_s": round(write_before, 2),
                            "write_samples_per_s": round(images / write_before),
                            "samples_per_s_build_and_write": round(images / (build + write_before))}
        result["write_speedup"] = round(write_before / written["s"], 1)
        result["speedup_end_to_end"] = round((build + write_before) / total, 1)
        fo.delete_dataset(before.name)
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[3000], help="sizes, one run each")
    parser.add_argument("--before-up-to", type=int, default=3000,
                        help="time the old path too at sizes up to this (it runs ~50 samples/s)")
    parser.add_argument("--out", default="fiftyone_load", help="result name under bench/results/")
    args = parser.parse_args()
    run = Run()
    work = Path(tempfile.mkdtemp(prefix="spinetrack-bench-fo-"))
    runs = []
    try:
        os.environ["FIFTYONE_DATABASE_DIR"] = str(work / "fiftyone-db")  # one database for every size
        from annotation.fiftyone.setup import fiftyone_module

        fo = fiftyone_module(work)
        fo.list_datasets()  # start the database before timing anything
        for images in args.images:
            runs.append(measure(fo, work, images, with_before=images <= args.before_up_to))
            print(runs[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {"benchmark": "fiftyone_load", **runs[0], "runs": runs,
                              "load_note": "shared 2-core machine, several helpers working: under load"}
    out = run.write(result, args.out)
    print(out.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
