"""Synthetic ingest speed per core: today's code against the code before the issue-11 speed work, same run.

Usage: python bench/ingest.py [--frames 200] [--actors 1] [--seed 7] [--repeats 5] [--keep DIR]

Renders one sample with the reference renderer, then ingests it into fresh stores in separate
processes (so each loads OpenSim its own way, see synthetic/opensim_runtime.py), alternating:

- ``current``: the working tree;
- ``before``: the same tree with ``synthetic/`` as of commit BASELINE (the IK fit reading markers,
  bodies and coordinates one SWIG call at a time, OpenSim bound to the SWIG modules' template
  copies, the cell-by-cell marker table, PIL-decoded masks).

Each process ingests once outside the timing (imports, OpenSim start), then once timed (wall and
process CPU time: "per core", the ingest is single-threaded), then re-ingests the unchanged sequence,
then refits every actor to save its landmarks. The best (least CPU) of `--repeats` runs per variant is
reported with every run's CPU time (this machine is a VM whose CPU time per unit of work swings by up
to 1.6x between runs a minute apart, with no process of ours busy: the least is the quiet core).
The landmarks of the two variants are compared with each other and with the renderer's truth
(ground_truth_3d.npz: spine = bench/synthetic_fidelity.py's nine spine points). Writes
bench/results/ingest.json with the load average: on a shared machine wall times are pessimistic,
CPU times less so.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: The last commit before the issue-11 speed work on the ingest path (synthetic/ only).
BASELINE = "44963bd"
VARIANTS = ("before", "current")
#: The paper's nine spine keypoints, as bench/synthetic_fidelity.py groups them.
SPINE = ("hip", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck", "neck_02", "head")


def baseline_tree(workdir: Path) -> Path | None:
    """A folder holding ``synthetic/`` as of BASELINE, to put before the repository on sys.path."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", BASELINE, "synthetic"],
                                 capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    tree = workdir / f"tree-{BASELINE}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def worker(folder: Path, home: Path, out: Path, tree: Path | None) -> None:
    """One variant in this process: warm-up ingest, timed ingest, unchanged re-ingest, landmarks."""
    if tree is not None:
        sys.path.insert(0, str(tree))
    if str(REPO) not in sys.path:
        sys.path.insert(1 if tree is not None else 0, str(REPO))
    import synthetic.ingest as ingest_module
    from pipeline.store import Store

    # the ingest's own step timer is wall time; count each step's CPU time too, the same for both variants
    cpu_totals: dict[str, float] = {}
    wall_step = ingest_module._Timer.step

    @contextmanager
    def cpu_step(self: Any, key: str) -> Iterator[None]:
        start = time.process_time()
        try:
            with wall_step(self, key):
                yield
        finally:
            cpu_totals[key] = cpu_totals.get(key, 0.0) + time.process_time() - start

    ingest_module._Timer.step = cpu_step  # type: ignore[method-assign]
    # OpenSim's own solve, apart from the Python around it (alignment first: it loads OpenSim its way)
    import synthetic.alignment  # noqa: F401
    from bench.common import time_opensim_track

    def add_track(seconds: float) -> None:
        cpu_totals["opensim_track"] = cpu_totals.get("opensim_track", 0.0) + seconds

    time_opensim_track(add_track)

    if tree is not None:
        assert Path(ingest_module.__file__).is_relative_to(tree), "baseline synthetic/ not first on sys.path"
    warm = Store(home=home / "warm")
    ingest_module.ingest_sequence(warm, folder)  # OpenSim and the imports, once, outside the timing
    warm.close()
    store = Store(home=home / "timed")
    try:
        cpu_totals.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        summary = ingest_module.ingest_sequence(store, folder)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        step_cpu = dict(cpu_totals)
        track_cpu = step_cpu.pop("opensim_track", 0.0)
        start = time.perf_counter()
        again = ingest_module.ingest_sequence(store, folder)
        reingest = time.perf_counter() - start
    finally:
        store.close()
    seq = ingest_module.read_sequence(folder)
    landmarks = [
        ingest_module._fit_actor(seq, actor, residual_threshold_m=ingest_module.DEFAULT_RESIDUAL_THRESHOLD_M,
                                 model=None, marker_map=None).landmarks_ue
        for actor in seq.actor_ids
    ]
    np.save(out.with_suffix(".npy"), np.stack(landmarks, axis=1))  # (F, A, 37, 3) Unreal cm
    timing = summary.timing_s
    frames = summary.frames * summary.actors
    result = {
        "annotations": summary.annotations_added,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "frames_per_s_wall": round(frames / wall, 1),
        "frames_per_s_cpu": round(frames / cpu, 1),
        "frames_per_s_cpu_without_ik": round(frames / max(cpu - step_cpu.get("ik", 0.0), 1e-9), 1),
        "ik_ms_per_frame": round(1000 * step_cpu.get("ik", 0.0) / frames, 2),
        "opensim_track_cpu_s": round(track_cpu, 3),
        "opensim_track_ms_per_frame": round(1000 * track_cpu / max(frames - summary.actors, 1), 2),
        "share_of_cpu": {k: round(v / cpu, 4) for k, v in step_cpu.items()},
        "cpu_timing_s": {k: round(v, 3) for k, v in step_cpu.items()},
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "ik_rms_m": summary.ik_rms_m,
        "reingest_unchanged_s": round(reingest, 3),
        "reingest_status": again.status,
    }
    out.write_text(json.dumps(result, indent=1))


def run_variant(name: str, folder: Path, workdir: Path, tree: Path | None, index: int) -> dict[str, Any]:
    out = workdir / f"{name}-{index}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(folder),
               "--home", str(workdir / f"home-{name}-{index}"), "--out", str(out)]
    if tree is not None:
        command += ["--tree", str(tree)]
    subprocess.run(command, check=True, timeout=900, env={**os.environ, "PYTHONPATH": ""})
    result: dict[str, Any] = json.loads(out.read_text())
    result["landmarks_file"] = str(out.with_suffix(".npy"))
    return result


def _stats(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    return {"median": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3),
            "max": round(float(values.max()), 3)}


def landmark_comparison(folder: Path, files: dict[str, str]) -> dict[str, Any]:
    """Landmarks of the variants against each other and against the renderer's truth (mm)."""
    from schemas.keypoints import NAMES

    fitted = {name: np.load(path) for name, path in files.items()}
    truth = np.load(folder / "ground_truth_3d.npz")["landmarks_ue_cm"]
    spine = [NAMES.index(n) for n in SPINE]
    out: dict[str, Any] = {}
    if len(fitted) == 2:
        a, b = (fitted[v] for v in VARIANTS)
        out["current_vs_before_mm"] = _stats(10.0 * np.linalg.norm(a - b, axis=-1).ravel())
    out["error_vs_truth_mm"] = {
        name: {"spine": _stats(10.0 * np.linalg.norm(lm - truth, axis=-1)[..., spine].ravel()),
               "all": _stats(10.0 * np.linalg.norm(lm - truth, axis=-1).ravel())}
        for name, lm in fitted.items()
    }
    return out


def run(frames: int, actors: int, seed: int, repeats: int, workdir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from synthetic.renderer import render_sequence

    folder = workdir / "render"
    start = time.perf_counter()
    render_sequence(folder, frames=frames, seed=seed, actors=actors)
    result: dict[str, Any] = {"frames": frames, "actors": actors, "baseline_commit": BASELINE,
                              "render_s": round(time.perf_counter() - start, 3)}
    tree = baseline_tree(workdir)
    names = [v for v in VARIANTS if v == "current" or tree is not None]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in names}
    for index in range(repeats):
        for name in names:  # alternating, so a change in the machine's load hits both
            runs[name].append(run_variant(name, folder, workdir, tree if name == "before" else None, index))
    for name, results in runs.items():
        best = min(results, key=lambda r: r["cpu_s"])
        best["cpu_s_all_runs"] = [r["cpu_s"] for r in results]
        result[name] = best
    result["landmarks"] = landmark_comparison(folder, {n: result[n].pop("landmarks_file") for n in names})
    for name in names:
        for r in runs[name]:
            r.pop("landmarks_file", None)
    if "before" in result:
        before, now = result["before"], result["current"]
        result["ratio_cpu"] = round(before["cpu_s"] / now["cpu_s"], 2)
        result["ratio_wall"] = round(before["wall_s"] / now["wall_s"], 2)
        result["ratio_ik_cpu"] = round(before["cpu_timing_s"]["ik"] / max(now["cpu_timing_s"]["ik"], 1e-9), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.home, args.out, args.tree)
        return

    sys.path.insert(0, str(REPO))
    from bench.common import Run

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="spinetrack-bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench_run = Run()
    try:
        result = run(args.frames, args.actors, args.seed, args.repeats, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    out = bench_run.write(result, "ingest")
    for name in VARIANTS:
        r = result.get(name)
        if r:
            cpu = r["cpu_timing_s"]
            print(f"{name:>8}: {r['frames_per_s_cpu']:.0f} frames per CPU second "
                  f"({r['frames_per_s_wall']:.0f}/s wall, {r['frames_per_s_cpu_without_ik']:.0f} per CPU s "
                  f"without IK); CPU s: IK {cpu['ik']:.2f} ({r['ik_ms_per_frame']} ms/frame, OpenSim track "
                  f"{r['opensim_track_ms_per_frame']} ms/frame), store "
                  f"{cpu['store']:.2f}, read {cpu['read']:.2f}, projection {cpu['projection']:.2f}; "
                  f"CPU s of each run {r['cpu_s_all_runs']}")
    if "ratio_cpu" in result:
        print(f"current vs before: {result['ratio_cpu']}x per CPU second, {result['ratio_wall']}x wall, "
              f"{result['ratio_ik_cpu']}x IK CPU time")
    print(f"landmarks: {json.dumps(result['landmarks'])}")
    print(f"load average {result['load_average']}; wrote {out}")


if __name__ == "__main__":
    main()
