"""Reference renderer and OpenSim IK speed and accuracy.

Usage: python bench/synthetic_s1.py [--frames 500] [--seed 7] [--actors 1]

1. Renders `frames` frames (320x256, motion "mixed") and reports frames/s, wall and CPU time.
2. Fits the rendered bones with `fit_sequence` (default model, scale + IK) and reports IK frames/s
   and the residuals; the true landmarks (ground_truth_3d.npz) give the landmark error.
3. Repeats the IK on 60 frames for a few accuracy settings and the coupled-lumbar variant.
CPU time is reported next to wall time because CI machines are shared: CPU s/frame is what one
core costs. Writes bench/results/synthetic_s1.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import Run  # noqa: E402
from schemas.render import load_bones, load_sequence_info  # noqa: E402
from synthetic.alignment import DEFAULT_ACCURACY, fit_sequence  # noqa: E402
from synthetic.coords import opensim_to_unreal, unreal_to_opensim  # noqa: E402
from synthetic.opensim_model import build_default_model  # noqa: E402
from synthetic.renderer import GROUND_TRUTH_3D_FILE, render_sequence  # noqa: E402


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run(frames: int, seed: int, actors: int, workdir: Path) -> dict[str, Any]:
    folder = workdir / "render"
    _, wall, cpu = _timed(lambda: render_sequence(folder, frames=frames, seed=seed, actors=actors))
    render = {
        "frames": frames,
        "actors": actors,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "fps_wall": round(frames / wall, 2),
        "fps_cpu": round(frames / cpu, 2),
    }

    info = load_sequence_info(folder / "sequence.json")
    bones = load_bones(folder / "bones.jsonl", info.frame_count, [a.id for a in info.actors])
    truth = np.load(folder / GROUND_TRUTH_3D_FILE)["landmarks_ue_cm"]
    subject = info.subject_of(1)
    per_frame = [
        {k: unreal_to_opensim(np.asarray(v)) for k, v in bones[(f, 1)].bones.items()} for f in range(frames)
    ]
    height, mass = subject.height_cm / 100.0, subject.mass_kg

    def fit(n: int, **kw: Any) -> dict[str, Any]:
        result, wall, cpu = _timed(lambda: fit_sequence(per_frame[:n], height, mass, **kw))
        err_cm = np.linalg.norm(opensim_to_unreal(result.landmarks) - truth[:n, 0], axis=2)
        return {
            "frames": n,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "fps_wall": round(n / wall, 2),
            "fps_cpu": round(n / cpu, 2),
            "rms_mm": {
                "mean": round(float(result.rms_m.mean()) * 1000, 3),
                "max": round(float(result.rms_m.max()) * 1000, 3),
            },
            "landmark_err_mm": {
                "median": round(float(np.median(err_cm)) * 10, 3),
                "p95": round(float(np.percentile(err_cm, 95)) * 10, 3),
                "max": round(float(err_cm.max()) * 10, 3),
            },
            "flagged": int(result.flagged.sum()),
        }

    ik = fit(frames)
    variants = {}
    n = min(frames, 60)
    for acc in (1e-5, 5e-5, 1e-4):
        variants[f"accuracy={acc:g}"] = fit(n, accuracy=acc)
    coupled = build_default_model(height, mass, coupled_lumbar=True)
    variants["coupled_lumbar"] = fit(n, model=coupled)
    return {
        "render": render,
        "ik": {"accuracy": DEFAULT_ACCURACY, **ik},
        "ik_variants": variants,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--actors", type=int, default=1)
    args = parser.parse_args()
    bench_run = Run()
    with tempfile.TemporaryDirectory(prefix="spinetrack-bench-") as tmp:
        result = bench_run.annotate(run(args.frames, args.seed, args.actors, Path(tmp)))
    print(json.dumps(result, indent=1))
    bench_run.write(result, "synthetic_s1")


if __name__ == "__main__":
    main()
