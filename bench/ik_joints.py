"""IK of the default model with native joints against CustomJoints, and with open joint ranges, same run.

Usage: python bench/ik_joints.py [--frames 200] [--seed 7] [--repeats 3]

Renders one actor with the reference renderer (the same sample as bench/ingest.py) and fits it with
`fit_sequence` (scaling + IK, anatomical ranges unless named ``open``) in one process, alternating:

- ``custom_anatomical``: every joint a CustomJoint (the model before issue 11, ``joints="custom"``);
- ``native_anatomical``: the default model now (Gimbal/Universal/Pin below the root);
- ``native_open`` / ``custom_open``: the same with +-4 pi ranges (Simbody's LBFGS instead of LBFGSB;
  an option measured for issue 11, not the default: the anatomical ranges keep the spine's p95 error
  down, bench/synthetic_fidelity.py).

Reports the best (least CPU) fit of `--repeats` per variant and OpenSim's own `track` CPU time; the
landmarks of native and custom models against each other, set beside the solver's own spread (the
custom model refitted with every target moved by 1e-12 m: how far LBFGSB's stopping point moves with
rounding), and every variant against the renderer's truth. Writes bench/results/ik_joints.json.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import Run  # type: ignore[import-not-found]
from numpy.typing import NDArray

VARIANTS: dict[str, tuple[str, str]] = {
    "custom_anatomical": ("custom", "anatomical"),
    "native_anatomical": ("native", "anatomical"),
    "native_open": ("native", "open"),
    "custom_open": ("custom", "open"),
}
#: The paper's nine spine keypoints, as bench/synthetic_fidelity.py groups them.
SPINE = ("hip", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck", "neck_02", "head")


def _stats(mm: NDArray[np.float64]) -> dict[str, float]:
    mm = mm[np.isfinite(mm)]
    return {"median": round(float(np.median(mm)), 3), "p95": round(float(np.percentile(mm, 95)), 3),
            "max": round(float(mm.max()), 3)}


def run(frames: int, seed: int, repeats: int, workdir: Path) -> dict[str, Any]:
    import synthetic.alignment as alignment
    import synthetic.opensim_builder as builder
    from bench.common import time_opensim_track
    from schemas.keypoints import NAMES
    from synthetic.coords import opensim_to_unreal, unreal_to_opensim
    from synthetic.ingest import read_sequence
    from synthetic.renderer import render_sequence

    render_sequence(workdir, frames=frames, seed=seed, actors=1)
    seq = read_sequence(workdir)
    actor = seq.actor_ids[0]
    subject = seq.info.subject_of(actor)
    bones = []
    for f in range(seq.frame_count):
        frame = seq.bones[(f, actor)].bones
        bones.append(dict(zip(frame, unreal_to_opensim(list(frame.values())), strict=True)))
    truth = np.load(workdir / "ground_truth_3d.npz")["landmarks_ue_cm"][:, 0]

    track_cpu = [0.0]

    def add_track(seconds: float) -> None:
        track_cpu[0] += seconds

    time_opensim_track(add_track)
    build = builder.build_default_model

    def fit(joints: str, ranges: str, targets: list[dict[str, Any]]) -> tuple[float, float, Any]:
        alignment.build_default_model = functools.partial(build, joints=joints)  # type: ignore[assignment,arg-type]
        try:
            track_cpu[0] = 0.0
            start = time.process_time()
            fitted = alignment.fit_sequence(targets, subject.height_cm / 100.0, subject.mass_kg,
                                            settings=alignment.FitSettings(ranges=ranges))  # type: ignore[arg-type]
            return time.process_time() - start, track_cpu[0], fitted
        finally:
            alignment.build_default_model = build

    fit("native", "anatomical", bones)  # OpenSim's start-up, outside the timing
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    landmarks: dict[str, NDArray[np.float64]] = {}
    for _ in range(repeats):
        for name, (joints, ranges) in VARIANTS.items():
            cpu, track, fitted = fit(joints, ranges, bones)
            runs[name].append((cpu, track))
            landmarks[name] = np.asarray(opensim_to_unreal(fitted.landmarks), dtype=np.float64)
    rng = np.random.default_rng(seed)
    moved = [{k: np.asarray(v) + rng.normal(0.0, 1e-12, 3) for k, v in b.items()} for b in bones]
    landmarks["custom_anatomical_moved_1e-12"] = np.asarray(
        opensim_to_unreal(fit("custom", "anatomical", moved)[2].landmarks), dtype=np.float64)

    def apart_mm(a: str, b: str) -> dict[str, float]:
        return _stats(10.0 * np.linalg.norm(landmarks[a] - landmarks[b], axis=-1).ravel())

    spine = [NAMES.index(n) for n in SPINE]
    tracked = frames - 1  # the first frame is assembled, the others tracked
    result: dict[str, Any] = {"frames": frames, "seed": seed, "repeats": repeats, "variants": {}}
    for name, measured in runs.items():
        cpu, track = min(measured)
        error = 10.0 * np.linalg.norm(landmarks[name] - truth, axis=-1)
        result["variants"][name] = {
            "fit_cpu_s": round(cpu, 3), "fit_frames_per_cpu_s": round(frames / cpu, 1),
            "opensim_track_cpu_s": round(track, 3),
            "opensim_track_ms_per_frame": round(1000 * track / tracked, 2),
            "cpu_s_all_runs": [round(c, 3) for c, _ in measured],
            "error_vs_truth_mm": {"spine": _stats(error[:, spine].ravel()), "all": _stats(error.ravel())},
        }
    variants = result["variants"]
    result["ratio_fit_cpu_native_vs_custom"] = round(
        variants["custom_anatomical"]["fit_cpu_s"] / variants["native_anatomical"]["fit_cpu_s"], 2)
    result["ratio_fit_cpu_open_vs_anatomical_native"] = round(
        variants["native_anatomical"]["fit_cpu_s"] / variants["native_open"]["fit_cpu_s"], 2)
    result["landmarks_mm"] = {
        "native_vs_custom": apart_mm("native_anatomical", "custom_anatomical"),
        "custom_vs_custom_targets_moved_1e-12_m": apart_mm("custom_anatomical_moved_1e-12",
                                                           "custom_anatomical"),
        "native_open_vs_native_anatomical": apart_mm("native_open", "native_anatomical"),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="ik_joints")
    args = parser.parse_args()
    bench_run = Run()
    with tempfile.TemporaryDirectory(prefix="spinetrack-bench-ik-joints-") as tmp:
        result = run(args.frames, args.seed, args.repeats, Path(tmp) / "render")
    out = bench_run.write(result, args.out)
    for name, v in result["variants"].items():
        print(f"{name:>18}: fit {v['fit_frames_per_cpu_s']:.0f} frames per CPU s (OpenSim track "
              f"{v['opensim_track_ms_per_frame']} ms/frame); spine error median/p95 "
              f"{v['error_vs_truth_mm']['spine']['median']}/{v['error_vs_truth_mm']['spine']['p95']} mm; "
              f"CPU s {v['cpu_s_all_runs']}")
    print(f"native vs custom: {result['ratio_fit_cpu_native_vs_custom']}x; open vs anatomical (native): "
          f"{result['ratio_fit_cpu_open_vs_anatomical_native']}x; landmarks mm: {result['landmarks_mm']}")
    print(f"load average {result['load_average']}; wrote {out}")


if __name__ == "__main__":
    main()
