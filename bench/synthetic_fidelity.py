"""How well do OpenSim-fitted synthetic labels place the landmarks of a character the fit did not make?

Usage: python bench/synthetic_fidelity.py [--subjects 3] [--frames 45] [--width 640 --height 360]

The reference renderer draws its independent UE5-like character (synthetic/character.py: own
proportions, own spine curve and motion distribution, truth from its own anatomy) doing every motion,
with 2 actors per sequence (so several subjects, and actors that occlude each other), depth as
OpenEXR and masks as 8-bit custom-stencil buffers. Each actor's Unreal bones are then fitted the way
ingest does, in several variants in the same run:

- ``current``: the fit before issue 12 (`FitSettings.legacy()`: anatomy revision 1, one isotropic
  scale per body from the first 10 frames, even weights, open joint ranges);
- ``improved``: the default now (`FitSettings()`: anatomy revision 2 with the authors' landmark
  definitions, per-axis scaling from a 20 % trimmed mean over filtered frames, anatomical ranges);
- ``authors_weights_lumbar_task``: improved + the authors' graded IK weights + lumbar coordinate task;
- ``open_ranges``: improved with +-4 pi joint ranges;
- ``coupled_lumbar``: improved on the model whose lumbar levels are tied by coupler constraints.

Reported per landmark group against the character's own truth: 3D error (mm) and 2D error in pixels
at the render size and at 1920x1080 (the same camera, intrinsics scaled), median / p95 / max over
points in front of the camera and inside the image; and, for the improved fit, the agreement of
ingest's visibility (fitted points + EXR depth + stencil mask, synthetic/visibility.py) with the
renderer's per-pixel truth (ground_truth.json v). Writes bench/results/synthetic_fidelity.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import Run  # type: ignore[import-not-found]
from numpy.typing import NDArray

from schemas.keypoints import NAMES
from synthetic.alignment import FitSettings, fit_sequence
from synthetic.camera import Camera
from synthetic.coords import opensim_to_unreal, unreal_to_opensim
from synthetic.motions import MOTIONS
from synthetic.opensim_builder import build_default_model
from synthetic.reader import read_sequence
from synthetic.renderer import GROUND_TRUTH_3D_FILE, GROUND_TRUTH_FILE, render_sequence
from synthetic.visibility import keypoint_visibility, self_occlusion

#: The paper's nine spine keypoints (../shared/SPINETRACK.md), sacrum to skull.
GROUPS: dict[str, tuple[str, ...]] = {
    "spine": (
        "hip",
        "spine_01",
        "spine_02",
        "spine_03",
        "spine_04",
        "spine_05",
        "neck",
        "neck_02",
        "neck_03",
    ),
    "head_top": ("head",),
    "face": ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),
    "body": tuple(
        n
        for n in NAMES
        if n.split("_", 1)[-1] in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
        and n.startswith(("left", "right"))
    ),
    "feet": tuple(n for n in NAMES if n.endswith(("toe", "heel"))),
    "extra": ("left_latissimus", "right_latissimus", "left_clavicle", "right_clavicle"),
}
FULL_HD = (1920, 1080)


def _stats(values: NDArray[np.float64]) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {}
    return {
        "median": round(float(np.median(v)), 3),
        "p95": round(float(np.percentile(v, 95)), 3),
        "max": round(float(v.max()), 3),
        "n": int(v.size),
    }


def _variants(height: float, mass: float) -> dict[str, tuple[FitSettings, Any]]:
    improved = FitSettings()
    return {
        "current": (FitSettings.legacy(), None),
        "improved": (improved, None),
        "authors_weights_lumbar_task": (FitSettings.authors(), None),
        "open_ranges": (dataclasses.replace(improved, ranges="open"), None),
        "coupled_lumbar": (
            improved,
            build_default_model(height, mass, coupled_lumbar=True, ranges="anatomical"),
        ),
    }


def _project(
    cams: list[Camera], points_ue: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(F, 37, 2) pixels and (F, 37) usable (in front, inside the image)."""
    uv = np.empty((*points_ue.shape[:2], 2))
    ok = np.empty(points_ue.shape[:2], dtype=bool)
    for f, cam in enumerate(cams):
        uv[f], depth = cam.project(points_ue[f])
        ok[f] = cam.in_image(uv[f]) & (depth > 0)
    return uv, ok


def _full_hd(cam: Camera) -> Camera:
    sx, sy = FULL_HD[0] / cam.width, FULL_HD[1] / cam.height
    return dataclasses.replace(
        cam,
        width=FULL_HD[0],
        height=FULL_HD[1],
        fx=cam.fx * sx,
        fy=cam.fy * sy,
        cx=cam.cx * sx,
        cy=cam.cy * sy,
    )


def run(
    subjects: int, frames: int, width: int, height: int, seed: int, actors: int, work: Path
) -> dict[str, Any]:
    index = {n: i for i, n in enumerate(NAMES)}
    errors: dict[str, dict[str, list[NDArray[np.float64]]]] = {}
    fit_time: dict[str, float] = {}
    vis_ours: list[NDArray[np.int8]] = []
    vis_depth_mask: list[NDArray[np.int8]] = []
    vis_truth: list[NDArray[np.int64]] = []
    render_s = 0.0
    sequences = []
    for s in range(subjects):
        for motion in MOTIONS:
            t0 = time.perf_counter()
            folder = render_sequence(
                work / f"{motion}-{s}",
                frames=frames,
                seed=seed + s,
                motion=motion,
                width=width,
                height=height,
                actors=actors,
                depth_format="exr",
                mask_format="stencil",
            )
            render_s += time.perf_counter() - t0
            seq = read_sequence(folder)
            truth_ue = np.load(folder / GROUND_TRUTH_3D_FILE)["landmarks_ue_cm"]  # (F, A, 37, 3)
            gt = json.loads((folder / GROUND_TRUTH_FILE).read_text())
            gt_v = {
                (a["image_id"] - 1, a["actor"]): np.asarray(a["keypoints"][2::3], dtype=np.int64)
                for a in gt["annotations"]
            }
            cams = [seq.camera(f) for f in range(seq.frame_count)]
            cams_hd = [_full_hd(c) for c in cams]
            depth = [seq.load_depth(f) for f in range(seq.frame_count)]
            masks = [seq.load_mask(f) for f in range(seq.frame_count)]
            for k, actor in enumerate(seq.actor_ids):
                subject = seq.info.subject_of(actor)
                sequences.append(
                    {
                        "motion": motion,
                        "seed": seed + s,
                        "actor": actor,
                        "height_cm": subject.height_cm,
                        "mass_kg": subject.mass_kg,
                    }
                )
                bones = [
                    {n: unreal_to_opensim(np.asarray(v)) for n, v in seq.bones[(f, actor)].bones.items()}
                    for f in range(seq.frame_count)
                ]
                truth = truth_ue[:, k]
                uv_t, ok_t = _project(cams, truth)
                uv_t_hd, ok_t_hd = _project(cams_hd, truth)
                h_m, mass = subject.height_cm / 100.0, subject.mass_kg
                for name, (settings, model) in _variants(h_m, mass).items():
                    t0 = time.perf_counter()
                    fit = fit_sequence(bones, h_m, mass, model=model, settings=settings)
                    fit_time[name] = fit_time.get(name, 0.0) + time.perf_counter() - t0
                    ours = opensim_to_unreal(fit.landmarks)
                    uv, ok = _project(cams, ours)
                    uv_hd, ok_hd = _project(cams_hd, ours)
                    e3 = np.linalg.norm(ours - truth, axis=2) * 10.0  # cm -> mm
                    e2 = np.where(ok & ok_t, np.linalg.norm(uv - uv_t, axis=2), np.nan)
                    e2hd = np.where(ok_hd & ok_t_hd, np.linalg.norm(uv_hd - uv_t_hd, axis=2), np.nan)
                    acc = errors.setdefault(name, {"mm": [], "px": [], "px_hd": []})
                    acc["mm"].append(e3)
                    acc["px"].append(e2)
                    acc["px_hd"].append(e2hd)
                    if name == "improved":
                        assert fit.capsule_ends_m is not None and fit.capsule_radii_m is not None
                        assert fit.capsule_bodies is not None and fit.landmark_home is not None
                        ends = opensim_to_unreal(fit.capsule_ends_m)
                        for f, cam in enumerate(cams):
                            p, z = cam.project(ours[f])
                            hidden = self_occlusion(
                                cam.location,
                                ours[f],
                                ends[f, :, 0],
                                ends[f, :, 1],
                                fit.capsule_radii_m * 100.0,
                                fit.capsule_bodies,
                                fit.landmark_home,
                            )
                            w, h = cam.width, cam.height
                            vis_ours.append(
                                keypoint_visibility(
                                    p,
                                    z,
                                    w,
                                    h,
                                    depth_buffer=depth[f],
                                    mask=masks[f],
                                    actor_id=actor,
                                    self_occluded=hidden,
                                )
                            )
                            vis_depth_mask.append(
                                keypoint_visibility(
                                    p, z, w, h, depth_buffer=depth[f], mask=masks[f], actor_id=actor
                                )
                            )
                            vis_truth.append(gt_v[(f, actor)])
    result: dict[str, Any] = {
        "setup": {
            "subjects_per_motion": subjects * actors,
            "actors_per_sequence": actors,
            "motions": list(MOTIONS),
            "frames": frames,
            "render_size": [width, height],
            "full_hd": list(FULL_HD),
            "character": "mannequin (synthetic/character.py)",
            "depth": "OpenEXR float32 cm",
            "mask": "8-bit custom stencil",
            "sequences": len(sequences),
            "actor_sequences": sequences,
        },
        "render_s": round(render_s, 2),
        "fit_s": {k: round(v, 2) for k, v in fit_time.items()},
        "variants": {},
    }
    for name, acc in errors.items():
        mm = np.concatenate(acc["mm"])
        px = np.concatenate(acc["px"])
        hd = np.concatenate(acc["px_hd"])
        groups = {}
        for group, members in GROUPS.items():
            cols = [index[m] for m in members]
            groups[group] = {
                "mm_3d": _stats(mm[:, cols].ravel()),
                "px_render": _stats(px[:, cols].ravel()),
                "px_1920x1080": _stats(hd[:, cols].ravel()),
            }
        per_landmark = {
            n: {
                "mm_3d_median": round(float(np.median(mm[:, i])), 2),
                "px_render_median": round(float(np.nanmedian(px[:, i])), 3),
            }
            for i, n in enumerate(NAMES)
        }
        result["variants"][name] = {"groups": groups, "per_landmark": per_landmark}
    truth_v = np.concatenate(vis_truth)
    occluded = truth_v == 1

    def agreement(ours_v: NDArray[np.int64]) -> dict[str, Any]:
        flagged = ours_v == 1
        return {
            "agreement": round(float((ours_v == truth_v).mean()), 4),
            "occluded_recall": round(float((ours_v[occluded] == 1).mean()), 4) if occluded.any() else None,
            "occluded_precision": round(float((truth_v[flagged] == 1).mean()), 4) if flagged.any() else None,
            "outside_agreement": round(float(((ours_v == 0) == (truth_v == 0)).mean()), 5),
        }

    result["occlusion"] = {
        "fit": "improved",
        "rule": "fitted body surface on the actor's own pixels + mask (other actors) + depth (elsewhere)",
        **agreement(np.concatenate(vis_ours).astype(np.int64)),
        "depth_and_mask_only": agreement(np.concatenate(vis_depth_mask).astype(np.int64)),
        "counts_truth": {
            "outside": int((truth_v == 0).sum()),
            "occluded": int(occluded.sum()),
            "visible": int((truth_v == 2).sum()),
        },
    }
    spine = result["variants"]["improved"]["groups"]["spine"]
    result["targets"] = {
        "spine_median_px_render_le_1": spine["px_render"]["median"] <= 1.0,
        "spine_median_mm_le_15": spine["mm_3d"]["median"] <= 15.0,
        "occlusion_agreement_ge_0.97": result["occlusion"]["agreement"] >= 0.97,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subjects", type=int, default=3, help="seeds per motion (each with --actors actors)"
    )
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--frames", type=int, default=45)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--out", default="synthetic_fidelity")
    args = parser.parse_args()
    bench = Run()
    with tempfile.TemporaryDirectory(prefix="spinetrack-fidelity-") as tmp:
        result = run(args.subjects, args.frames, args.width, args.height, args.seed, args.actors, Path(tmp))
    path = bench.write(result, args.out)
    brief = {
        k: {
            g: (v["groups"][g]["mm_3d"].get("median"), v["groups"][g]["px_render"].get("median"))
            for g in ("spine", "body", "face")
        }
        for k, v in result["variants"].items()
    }
    print(
        json.dumps(
            {
                "median (mm, px)": brief,
                "occlusion": result["occlusion"],
                "targets": result["targets"],
                "fit_s": result["fit_s"],
            },
            indent=1,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
