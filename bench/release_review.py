"""Release and review speed: publish, reproduce and verify a release; FiftyOne start-up, load, App.

Usage: python bench/release_review.py [--images 2000] [--frames-per-group 20] [--no-app]
Fills a fresh store with small PNGs (one labelled person each; half synthetic sequences, half real
videos), then times create_release (images hard-linked), reproduce_release, verify_release, the
FiftyOne import and MongoDB start (cold: new database folder; warm: existing folder, in a fresh
process each), load_into_fiftyone, sync_review_tags and the App's first HTTP answer on loopback.
Writes bench/results/release_review.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image as PILImage  # noqa: E402

from bench.common import Run  # noqa: E402
from pipeline.release.build import create_release, reproduce_release, verify_release  # noqa: E402
from pipeline.store import Store  # noqa: E402
from schemas.keypoints import NUM_KEYPOINTS  # noqa: E402

STARTUP_PROBE = (
    "import time; t = time.perf_counter(); import fiftyone as fo; t1 = time.perf_counter(); "
    "fo.list_datasets(); t2 = time.perf_counter(); print(round(t1 - t, 3), round(t2 - t1, 3))"
)


def fill(store: Store, workdir: Path, images: int, per_group: int) -> None:
    folder = workdir / "images"
    folder.mkdir()
    for n in range(images):
        synthetic = n < images // 2
        path = folder / f"{n:06d}.png"
        PILImage.new("RGB", (64, 48), (n % 256, (n // 256) % 256, 9)).save(path)
        group = f"{'seq' if synthetic else 'video'}-{n // per_group:05d}"
        image = store.add_image(path, source="synthetic" if synthetic else "real",
                                subset="train-unreal" if synthetic else "coco", group_key=group,
                                width=64, height=48, frame_index=n % per_group)
        inst = store.instance_id(image, "p0")
        kps = [v for i in range(NUM_KEYPOINTS) for v in (float(5 + i), float(4 + i % 30), 2)]
        store.add_revision(inst, kps, [2, 2, 50, 40], source="synthetic" if synthetic else "human",
                           annotator=None if synthetic else "bench", uncertainty=(n % 97) / 97)


def startup(db: Path) -> dict[str, float]:
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(db), "FIFTYONE_DO_NOT_TRACK": "true"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", STARTUP_PROBE], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    return {"import_s": float(out[-2]), "mongod_connect_s": float(out[-1]),
            "process_total_s": round(time.perf_counter() - start, 3)}


def run(images: int, per_group: int, app: bool, workdir: Path) -> dict[str, Any]:
    home = workdir / "home"
    os.environ["SPINETRACK_HOME"] = str(home)
    store = Store(home=home)
    t = time.perf_counter()
    fill(store, workdir, images, per_group)
    result: dict[str, Any] = {"images": images, "frames_per_group": per_group,
                              "fill_s": round(time.perf_counter() - t, 3)}
    t = time.perf_counter()
    rel = create_release(store, "1.0.0")
    result["release_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    reproduce_release(store, "1.0.0", workdir / "again")
    result["reproduce_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    result["verify_problems"] = len(verify_release(rel.path))
    result["verify_s"] = round(time.perf_counter() - t, 3)
    result["release_bytes"] = sum(f.bytes for f in rel.manifest.files if f.path.startswith("annotations/"))

    db = home / "fiftyone" / "db"
    result["fiftyone_cold"] = startup(db)  # a new database folder
    result["fiftyone_warm"] = startup(db)  # the folder exists
    from annotation.fiftyone_review import NEEDS_FIX, launch, load_into_fiftyone, sync_review_tags

    t = time.perf_counter()
    dataset = load_into_fiftyone(store)
    result["fiftyone_first_load_s"] = round(time.perf_counter() - t, 3)  # includes import + mongod
    t = time.perf_counter()
    dataset = load_into_fiftyone(store)
    result["fiftyone_reload_s"] = round(time.perf_counter() - t, 3)
    result["samples_per_s"] = round(len(dataset) / result["fiftyone_reload_s"], 1)
    for sample in dataset.limit(50):
        sample.tags.append(NEEDS_FIX)
        sample.save()
    t = time.perf_counter()
    result["tags_synced"] = len(sync_review_tags(store, dataset, reviewer="bench"))
    result["sync_s"] = round(time.perf_counter() - t, 3)
    if app:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        t = time.perf_counter()
        session = launch(dataset, port=port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as response:
            result["app_status"] = response.status
        result["app_first_http_s"] = round(time.perf_counter() - t, 3)
        session.close()
    dataset.delete()
    store.engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--frames-per-group", type=int, default=20)
    parser.add_argument("--no-app", action="store_true")
    parser.add_argument("--inner", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:  # the measuring process: its MongoDB stops when it exits
        result = run(args.images, args.frames_per_group, not args.no_app, args.inner)
        (args.inner / "result.json").write_text(json.dumps(result))
        return
    workdir = Path(tempfile.mkdtemp(prefix="spinetrack-bench-release-"))
    bench_run = Run()
    try:
        cmd = [sys.executable, __file__, "--inner", str(workdir), "--images", str(args.images),
               "--frames-per-group", str(args.frames_per_group)] + (["--no-app"] if args.no_app else [])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
        result = json.loads((workdir / "result.json").read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = bench_run.write(result, "release_review")
    n = result["images"]
    print(f"release of {n} instances: {result['release_s']:.2f} s, reproduce {result['reproduce_s']:.2f} s, "
          f"verify {result['verify_s']:.2f} s ({result['verify_problems']} problems)")
    cold, warm = result["fiftyone_cold"], result["fiftyone_warm"]
    print(f"FiftyOne import {cold['import_s']:.1f} s; MongoDB start+connect "
          f"cold {cold['mongod_connect_s']:.1f} s, warm {warm['mongod_connect_s']:.1f} s")
    print(f"load {n} samples: first {result['fiftyone_first_load_s']:.1f} s (with start-up), "
          f"reload {result['fiftyone_reload_s']:.1f} s ({result['samples_per_s']} samples/s); "
          f"sync {result['tags_synced']} tags {result['sync_s']:.2f} s")
    if "app_first_http_s" in result:
        print(f"App: HTTP {result['app_status']} after {result['app_first_http_s']:.1f} s")
    print(f"load average {result['load_average']} on {result['machine']['cpus']} cores; wrote {out}")


if __name__ == "__main__":
    main()
