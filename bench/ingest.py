"""Synthetic ingest speed, the batched store writes against the previous per-frame path, same run.

Usage: python bench/ingest.py [--frames 300] [--actors 1] [--seed 7] [--keep DIR]
Renders one sample with the reference renderer, then ingests it into two fresh stores: with today's
`synthetic.ingest` (one transaction per chunk of frames through `Store.add_labels`) and with the
module as it was at commit BASELINE (three transactions per frame: add_image, instance_id,
add_revision), loaded from git. Prints frames/s of wall time and of process CPU time ("per core":
the ingest is single-threaded) and the share of time per step, and writes bench/results/ingest.json.
The load average is recorded: on a shared machine wall times are pessimistic, CPU times less so.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from bench.common import Run  # noqa: E402
from pipeline.store import Store  # noqa: E402
from synthetic.ingest import ingest_sequence, model_identity  # noqa: E402
from synthetic.renderer import render_sequence  # noqa: E402

#: The last commit with the per-frame store writes (three transactions per frame).
BASELINE = "16d224c"


def baseline_module(workdir: Path) -> ModuleType | None:
    """synthetic/ingest.py as of BASELINE, importable beside today's (None outside a git checkout)."""
    try:
        code = subprocess.run(["git", "-C", str(REPO), "show", f"{BASELINE}:synthetic/ingest.py"],
                              capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    path = workdir / "ingest_baseline.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("ingest_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    module.model_identity = model_identity  # it hashes a file next to itself: use today's
    return module


def timed_ingest(ingest: Any, home: Path, folder: Path) -> dict[str, Any]:
    store = Store(home=home)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        summary = ingest(store, folder)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        store.close()
    timing = summary.timing_s
    total = timing["total"]
    frames = summary.frames * summary.actors
    return {
        "annotations": summary.annotations_added,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "frames_per_s_wall": round(frames / wall, 1),
        "frames_per_s_cpu": round(frames / cpu, 1),
        "frames_per_s_cpu_without_ik": round(frames / max(cpu - timing.get("ik", 0.0), 1e-9), 1),
        "share": {k: round(v / total, 4) for k, v in timing.items() if k != "total"},
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "ik_rms_m": summary.ik_rms_m,
    }


def run(frames: int, actors: int, seed: int, workdir: Path) -> dict[str, Any]:
    folder = workdir / "render"
    start = time.perf_counter()
    render_sequence(folder, frames=frames, seed=seed, actors=actors)
    result: dict[str, Any] = {"frames": frames, "actors": actors,
                              "render_s": round(time.perf_counter() - start, 3)}
    ingest_sequence(Store(home=workdir / "warm"), folder)  # OpenSim and the imports, once, outside the timing
    result["batched"] = timed_ingest(ingest_sequence, workdir / "home-batched", folder)
    legacy = baseline_module(workdir)
    if legacy is not None:
        result["baseline_per_frame"] = timed_ingest(legacy.ingest_sequence, workdir / "home-baseline", folder)
        base, new = result["baseline_per_frame"], result["batched"]
        result["ratio_wall"] = round(base["wall_s"] / new["wall_s"], 2)
        result["ratio_store_time"] = round(base["timing_s"]["store"] / max(new["timing_s"]["store"], 1e-9), 1)
    store = Store(home=workdir / "home-batched")
    start = time.perf_counter()
    again = ingest_sequence(store, folder)
    result["reingest_unchanged_s"] = round(time.perf_counter() - start, 3)
    result["reingest_status"] = again.status
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="spinetrack-bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench_run = Run()
    try:
        result = run(args.frames, args.actors, args.seed, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    out = bench_run.write(result, "ingest")
    for name in ("batched", "baseline_per_frame"):
        r = result.get(name)
        if r:
            print(f"{name:>18}: {r['frames_per_s_wall']:.0f} frames/s wall, "
                  f"{r['frames_per_s_cpu']:.0f} per CPU second "
                  f"({r['frames_per_s_cpu_without_ik']:.0f} without IK); "
                  f"store {r['timing_s']['store']:.2f} s, IK {r['timing_s'].get('ik', 0):.2f} s")
    if "ratio_wall" in result:
        print(f"batched vs per-frame: {result['ratio_wall']}x wall, "
              f"{result['ratio_store_time']}x less store time")
    print(f"load average {result['load_average']}; wrote {out}")


if __name__ == "__main__":
    main()
