"""Store write throughput: one call per image/person/revision (three transactions) vs `add_labels`.

Writes N frames x 2 people with one revision each into a fresh SQLite store, first as ingest did
before the batched API (add_image, instance_id, add_revision: a transaction each), then through
`Store.add_labels` in batches, and prints labels/s and the ratio. Writes bench/results/store_writes.json.
Usage: python bench/store_writes.py [--frames 500] [--batch 200]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Run  # bench/ is sys.path[0] when run as a script; common puts the repo there

from pipeline.store import NewImage, NewLabel, NewRevision, Store

KEYPOINTS = [10.0, 20.0, 2.0] * 37


def _frames(n: int, tag: str) -> list[tuple[str, str]]:
    return [(f"/bench/{tag}/frame_{f:05d}.png", hashlib.sha256(f"{tag}:{f}".encode()).hexdigest())
            for f in range(n)]


def one_by_one(store: Store, frames: list[tuple[str, str]]) -> None:
    for f, (path, digest) in enumerate(frames):
        image = store.add_image(path, source="synthetic", subset="bench", group_key="seq", width=64,
                                height=48, frame_index=f, sha256=digest)
        for a in range(2):
            inst = store.instance_id(image, f"actor-{a}")
            store.add_revision(inst, KEYPOINTS, [0, 0, 5, 5], source="synthetic",
                               external_id=f"one:{digest[:16]}:{a}")


def batched(store: Store, frames: list[tuple[str, str]], batch: int) -> None:
    labels = [
        NewLabel(NewImage(path, "synthetic", "bench", "seq", 64, 48, frame_index=f, sha256=digest),
                 f"actor-{a}", None,
                 NewRevision(KEYPOINTS, [0, 0, 5, 5], source="synthetic",
                             external_id=f"bat:{digest[:16]}:{a}"))
        for f, (path, digest) in enumerate(frames) for a in range(2)
    ]
    for start in range(0, len(labels), batch):
        store.add_labels(labels[start : start + batch])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--batch", type=int, default=200, help="labels per add_labels call")
    args = parser.parse_args()
    run = Run()
    work = Path(tempfile.mkdtemp(prefix="spinetrack-bench-store-"))
    result: dict[str, Any] = {"frames": args.frames, "people_per_frame": 2, "batch": args.batch,
                              "database": "sqlite (WAL, one file)"}
    try:
        with Store.open(home=work) as store:
            for name, write in (("one_by_one", lambda fr: one_by_one(store, fr)),
                                ("add_labels", lambda fr: batched(store, fr, args.batch))):
                frames = _frames(args.frames, name)
                start = time.perf_counter()
                write(frames)
                seconds = time.perf_counter() - start
                result[name] = {"seconds": round(seconds, 3),
                                "labels_per_s": round(2 * args.frames / seconds, 1),
                                "frames_per_s": round(args.frames / seconds, 1)}
            again = time.perf_counter()
            batched(store, _frames(args.frames, "add_labels"), args.batch)  # all stored: a no-op
            result["add_labels_rerun_s"] = round(time.perf_counter() - again, 3)
            assert store.count_revisions() == 4 * args.frames
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["ratio"] = round(result["add_labels"]["labels_per_s"] / result["one_by_one"]["labels_per_s"], 1)
    out = run.write(result, "store_writes")
    print(f"one by one: {result['one_by_one']['frames_per_s']} frames/s; add_labels: "
          f"{result['add_labels']['frames_per_s']} frames/s ({result['ratio']}x); "
          f"load {result['load_average']}; wrote {out}")


if __name__ == "__main__":
    main()
