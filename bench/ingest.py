"""Synthetic ingest speed: render a sample with the reference renderer, ingest it into a fresh store.

Usage: python bench/ingest.py [--frames 500] [--actors 1] [--seed 7] [--keep DIR]
Prints frames/s and the share of ingest time spent in IK, projection (+visibility, bbox) and I/O
(folder read + hashing + depth/mask loading, store writes), and writes bench/results/ingest.json.
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

from pipeline.store import Store  # noqa: E402
from synthetic.ingest import ingest_sequence  # noqa: E402
from synthetic.renderer import render_sequence  # noqa: E402


def run(frames: int, actors: int, seed: int, workdir: Path) -> dict[str, Any]:
    folder = workdir / "render"
    start = time.perf_counter()
    render_sequence(folder, frames=frames, seed=seed, actors=actors)
    render_s = time.perf_counter() - start

    store = Store(home=workdir / "home")
    start = time.perf_counter()
    summary = ingest_sequence(store, folder)
    ingest_s = time.perf_counter() - start
    start = time.perf_counter()
    again = ingest_sequence(store, folder)
    reingest_s = time.perf_counter() - start
    store.engine.dispose()

    timing = summary.timing_s
    io = timing.get("read", 0.0) + timing.get("store", 0.0)
    total = timing["total"]
    return {
        "frames": frames,
        "actors": actors,
        "annotations": summary.annotations_added,
        "render_s": round(render_s, 3),
        "ingest_s": round(ingest_s, 3),
        "frames_per_s": round(frames / ingest_s, 2),
        "annotations_per_s": round(summary.annotations_added / ingest_s, 2),
        "share": {
            "ik": round(timing.get("ik", 0.0) / total, 4),
            "projection": round(timing.get("projection", 0.0) / total, 4),
            "io": round(io / total, 4),
            "io_read": round(timing.get("read", 0.0) / total, 4),
            "io_store": round(timing.get("store", 0.0) / total, 4),
        },
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "reingest_unchanged_s": round(reingest_s, 3),
        "reingest_status": again.status,
        "ik_rms_m": summary.ik_rms_m,
        "flagged": summary.flagged,
        "visibility": summary.visibility,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="spinetrack-bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args.frames, args.actors, args.seed, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
    }
    out = REPO / "bench" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    share = result["share"]
    print(
        f"ingest: {result['frames']} frames x {result['actors']} actor(s) in {result['ingest_s']:.1f} s "
        f"= {result['frames_per_s']:.1f} frames/s (render {result['render_s']:.1f} s)"
    )
    print(
        f"time share: IK {share['ik']:.0%}, projection {share['projection']:.0%}, "
        f"I/O {share['io']:.0%} (read {share['io_read']:.0%}, store {share['io_store']:.0%})"
    )
    print(f"IK RMS (m): {result['ik_rms_m']}")
    print(f"re-ingest, unchanged: {result['reingest_unchanged_s']:.2f} s ({result['reingest_status']})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
