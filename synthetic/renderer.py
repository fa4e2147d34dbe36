"""The reference renderer: a render-contract folder made from the default OpenSim model.

It stands in for an Unreal exporter (docs/render-contract.md) so the whole pipeline can be run and
tested without Unreal: seeded subjects are posed through `synthetic.motions`, their body segments
(capsules of `synthetic.opensim_model`) are ray-cast through `synthetic.camera.Camera` - the same
camera ingest reads back - into RGB, planar depth and an actor-id mask, and the bone positions that
drove the pose are written as Unreal bones. Renders are made easy for a small pose model to learn:
left limbs blue/cyan, right limbs red/orange, shaded torso and head, a textured background.

``ground_truth.json`` (not part of the contract, ingest ignores it) holds the true 37 landmarks as
COCO keypoints: v=0 outside the image, v=1 when another body part or actor lies on the line of
sight, v=2 otherwise. The segments a landmark sits in (its own body, its joint neighbours, and the
trunk for trunk landmarks) do not occlude it: a spine point is "visible" from the front the way a
hip joint centre is in COCO. ``ground_truth_3d.npz`` holds the true landmarks in Unreal cm.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import opensim as osim
from numpy.typing import NDArray

from schemas.keypoints import NAMES, coco_category
from schemas.render import (
    BONES_FILE,
    CAMERAS_FILE,
    DEPTH_DIR,
    MASK_DIR,
    RGB_DIR,
    SCHEMA_VERSION,
    SEQUENCE_FILE,
    frame_name,
)
from synthetic.camera import Camera, look_at_rotation
from synthetic.coords import opensim_to_unreal
from synthetic.marker_map import BONE_PREFIX
from synthetic.motions import MOTIONS, WALK_RADIUS_M, MotionParams, motion_pose
from synthetic.opensim_model import (
    Capsule,
    body_transforms,
    bone_names,
    build_default_model,
    default_anatomy,
    landmark_names,
    marker_positions,
    pose_state,
)
from synthetic.raster import PixelRays, raycast, segment_hits

FPS: Final[float] = 30.0
GROUND_TRUTH_FILE: Final[str] = "ground_truth.json"
GROUND_TRUTH_3D_FILE: Final[str] = "ground_truth_3d.npz"
RENDERER_NAME: Final[str] = "spinetrack-reference-renderer 1.0 (OpenSim default model, capsule ray caster)"

#: Base colours (RGB) per part: left = cool colours, right = warm colours, so a tiny model can tell
#: left from right; torso colour comes from the actor's "shirt".
PART_COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "head": (226, 186, 152),
    "neck": (205, 160, 128),
    "left_arm": (50, 100, 230),
    "left_hand": (120, 170, 255),
    "right_arm": (230, 60, 50),
    "right_hand": (255, 150, 120),
    "left_leg": (30, 170, 190),
    "left_foot": (20, 110, 120),
    "right_leg": (235, 150, 30),
    "right_foot": (150, 90, 20),
}
SHIRTS: Final[tuple[tuple[int, int, int], ...]] = (
    (110, 150, 110),
    (150, 150, 150),
    (170, 160, 90),
    (120, 90, 140),
    (90, 130, 120),
    (200, 200, 190),
)
#: Bodies that form the trunk: they never occlude landmarks of one another.
TRUNK: Final[frozenset[str]] = frozenset(
    {"pelvis", "lumbar5", "lumbar4", "lumbar3", "lumbar2", "lumbar1", "thorax", "clavicle_l", "clavicle_r"}
)


@dataclass
class _Actor:
    """One posed subject: its model, geometry and motion."""

    actor_id: int
    subject_id: str
    height_m: float
    mass_kg: float
    model: osim.Model
    state: osim.State
    capsules: tuple[Capsule, ...]
    bodies: list[str]
    body_index: dict[str, int]
    home: list[frozenset[str]]  # per landmark: bodies that do not occlude it
    landmark_bodies: list[str]
    params: MotionParams
    shirt: tuple[int, int, int]


def _adjacency(model: osim.Model) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {}
    joints = model.getJointSet()
    for i in range(joints.getSize()):
        j = joints.get(i)
        parent = j.getParentFrame().findBaseFrame().getName()
        child = j.getChildFrame().findBaseFrame().getName()
        adj.setdefault(parent, set()).add(child)
        adj.setdefault(child, set()).add(parent)
    return adj


def _make_actor(actor_id: int, rng: np.random.Generator, origin: tuple[float, float]) -> _Actor:
    height = float(rng.uniform(1.52, 1.95))
    bmi = float(rng.uniform(19.0, 28.0))
    mass = round(bmi * height * height, 1)
    model = build_default_model(height, mass)
    state = model.initSystem()
    anatomy = default_anatomy(height, mass)
    capsules = anatomy.capsules
    bodies = sorted({c.body for c in capsules} | {s.body for s in anatomy.marker_map.landmarks.values()})
    adj = _adjacency(model)
    landmark_bodies = [anatomy.marker_map.landmarks[n].body for n in NAMES]
    home = []
    for body in landmark_bodies:
        allowed = {body} | adj.get(body, set())
        if allowed & TRUNK:
            allowed |= TRUNK
        home.append(frozenset(allowed))
    return _Actor(
        actor_id=actor_id,
        subject_id=f"subject-{actor_id:02d}",
        height_m=round(height, 3),
        mass_kg=mass,
        model=model,
        state=state,
        capsules=capsules,
        bodies=bodies,
        body_index={b: i for i, b in enumerate(bodies)},
        home=home,
        landmark_bodies=landmark_bodies,
        params=MotionParams.draw(rng, origin),
        shirt=SHIRTS[int(rng.integers(len(SHIRTS)))],
    )


@dataclass
class _Posed:
    bones_ue: NDArray[np.float64]  # (B, 3) cm
    landmarks_ue: NDArray[np.float64]  # (37, 3) cm
    cap_a: NDArray[np.float64]  # (C, 3) cm
    cap_b: NDArray[np.float64]
    radii: NDArray[np.float64]  # (C,) cm


_FOOT_BODIES: Final[frozenset[str]] = frozenset({"foot_l", "foot_r", "toes_l", "toes_r"})


def _pose_actor(actor: _Actor, t: float, motion: str) -> _Posed:
    pose = motion_pose(motion, t, actor.params)
    pose_state(actor.model, actor.state, pose)
    rots, origins = body_transforms(actor.model, actor.state, actor.bodies)
    idx = np.array([actor.body_index[c.body] for c in actor.capsules])
    local = np.array([[c.p0, c.p1] for c in actor.capsules])
    ends = np.einsum("nij,nkj->nki", rots[idx], local) + origins[idx][:, None, :]
    radii = np.array([c.radius for c in actor.capsules])
    # stand on the floor: lowest point of the feet at y = 0 (a pure pelvis_ty shift)
    feet = np.array([c.body in _FOOT_BODIES for c in actor.capsules])
    floor = float((ends[feet, :, 1] - radii[feet, None]).min())
    ends[..., 1] -= floor
    shift = np.array([0.0, floor, 0.0])
    bones = marker_positions(actor.model, actor.state, [BONE_PREFIX + n for n in bone_names()]) - shift
    marks = marker_positions(actor.model, actor.state, landmark_names()) - shift
    ue_ends = opensim_to_unreal(ends)
    return _Posed(
        bones_ue=opensim_to_unreal(bones),
        landmarks_ue=opensim_to_unreal(marks),
        cap_a=ue_ends[:, 0],
        cap_b=ue_ends[:, 1],
        radii=radii * 100.0,
    )


def _background(rng: np.random.Generator, width: int, height: int) -> NDArray[np.float32]:
    """Seeded smooth texture: a wall/floor split, low-frequency colour blobs and fine grain."""
    grey = rng.uniform(70, 180)
    base = grey + rng.uniform(-25, 25, size=3)  # mildly tinted grey: walls, not paint
    coarse = rng.normal(0.0, 14.0, size=(6, 8, 3)).astype(np.float32)
    blobs = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    # medium-scale texture (smooth, so PNG stays small and fast to write)
    fine = cv2.resize(
        rng.normal(0.0, 6.0, size=(max(height // 10, 2), max(width // 10, 2), 3)).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    horizon = int(height * rng.uniform(0.35, 0.6))
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = base
    floor = rng.uniform(0.55, 0.85)
    img[horizon:] *= floor
    img += np.asarray(blobs, dtype=np.float32) + np.asarray(fine, dtype=np.float32)
    return np.clip(img, 0, 255)


@dataclass(frozen=True)
class _CameraRig:
    hfov: float
    distance: float
    azimuth: float
    drift: float  # deg/s orbit
    cam_height: float  # cm
    target: tuple[float, float, float]  # Unreal cm
    roll: float

    def camera(self, t: float, width: int, height: int) -> Camera:
        az = math.radians(self.azimuth + self.drift * t)
        loc = (
            self.target[0] + self.distance * math.cos(az),
            self.target[1] + self.distance * math.sin(az),
            self.cam_height,
        )
        rot = look_at_rotation(loc, self.target)
        rot["roll"] = self.roll
        return Camera.from_hfov(width, height, self.hfov, loc, rot)


def _rig(rng: np.random.Generator, width: int, height: int, spread_m: float, walking: bool) -> _CameraRig:
    hfov = float(rng.uniform(45.0, 70.0))
    vfov = 2 * math.atan(math.tan(math.radians(hfov) / 2) * height / width)
    hf = math.radians(hfov)
    need_v = 1.1 / math.tan(vfov / 2)  # fit ~2.2 m of height
    need_h = (spread_m / 2 + 0.8) / math.tan(hf / 2)
    distance = max(need_v, need_h) * float(rng.uniform(0.95, 1.2)) + (WALK_RADIUS_M + 0.2 if walking else 0.0)
    # actors stand in a row along Unreal Y: with several, look across the row (azimuth near 0 or 180)
    azimuth = (
        float(rng.uniform(0.0, 360.0))
        if spread_m == 0
        else float(rng.uniform(-45, 45) + rng.choice([0, 180]))
    )
    return _CameraRig(
        hfov=hfov,
        distance=distance * 100.0,
        azimuth=azimuth,
        drift=float(rng.uniform(-4.0, 4.0)),
        cam_height=float(rng.uniform(60.0, 220.0)),
        target=(0.0, 0.0, float(rng.uniform(85.0, 105.0))),
        roll=float(rng.uniform(-3.0, 3.0)),
    )


def _shade(
    hits: Any,
    part_colour: NDArray[np.float32],
    background: NDArray[np.float32],
    light: NDArray[np.float64],
) -> NDArray[np.uint8]:
    idx = hits.index
    fg = idx >= 0
    img = background.copy()
    if fg.any():
        n = hits.normal[fg]
        lam = np.clip(n @ light.astype(np.float32), 0.0, 1.0)
        img[fg] = part_colour[idx[fg]] * (0.35 + 0.65 * lam)[:, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _visibility(
    camera: Camera,
    posed: list[_Posed],
    actors: list[_Actor],
    mask: NDArray[np.uint8],
) -> list[tuple[NDArray[np.float64], NDArray[np.int64]]]:
    """Per actor: projected landmarks (37, 2) and COCO visibility flags (37,)."""
    all_a = np.concatenate([p.cap_a for p in posed])
    all_b = np.concatenate([p.cap_b for p in posed])
    all_r = np.concatenate([p.radii for p in posed])
    owner = np.concatenate([np.full(len(p.radii), i) for i, p in enumerate(posed)])
    cap_body = [c.body for a in actors for c in a.capsules]
    origin = np.asarray(camera.location, dtype=np.float64)
    out: list[tuple[NDArray[np.float64], NDArray[np.int64]]] = []
    for i, (p, actor) in enumerate(zip(posed, actors, strict=True)):
        uv, depth = camera.project(p.landmarks_ue)
        inside = camera.in_image(uv) & (depth > 0)
        blocked = segment_hits(origin, p.landmarks_ue, all_a, all_b, all_r)
        v = np.zeros(len(NAMES), dtype=np.int64)
        for k in range(len(NAMES)):
            if not inside[k]:
                continue
            occluders = [
                j for j in np.flatnonzero(blocked[k]) if owner[j] != i or cap_body[j] not in actor.home[k]
            ]
            v[k] = 1 if occluders else 2
        out.append((uv, v))
    return out


def _bbox_from_mask(mask: NDArray[np.uint8], actor_id: int) -> tuple[list[float], float]:
    ys, xs = np.nonzero(mask == actor_id)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0], 0.0
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max() + 1) - x0, float(ys.max() + 1) - y0], float(xs.size)


def render_sequence(
    out_dir: Path,
    *,
    frames: int,
    seed: int,
    motion: str = "mixed",
    width: int = 320,
    height: int = 256,
    actors: int = 1,
) -> Path:
    """Render `frames` frames of `actors` seeded subjects doing `motion` into `out_dir` (contract layout).

    Deterministic for a seed. Returns `out_dir`.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose one of {', '.join(MOTIONS)}")
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if not 1 <= actors <= 8:
        raise ValueError("actors must be between 1 and 8")
    if width < 16 or height < 16:
        raise ValueError("image must be at least 16x16 pixels")
    osim.Logger.setLevelString("error")
    out_dir = Path(out_dir)
    # sequence.json is written last: until then the folder reads as incomplete, also on a re-render
    (out_dir / SEQUENCE_FILE).unlink(missing_ok=True)
    for sub in (RGB_DIR, DEPTH_DIR, MASK_DIR):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        # re-rendering into a folder of a longer run must not leave its extra frames behind
        for stale in (out_dir / sub).glob("[0-9]" * 6 + ".*"):
            if int(stale.stem) >= frames:
                stale.unlink()
    rng = np.random.default_rng(seed)
    walking = motion in ("walk", "mixed")
    spacing = 2 * WALK_RADIUS_M + 0.5 if walking else 1.3
    cast = [_make_actor(i + 1, rng, (0.0, (i - (actors - 1) / 2) * spacing)) for i in range(actors)]
    rig = _rig(rng, width, height, spacing * (actors - 1), walking=walking)
    background = _background(rng, width, height)
    light_az = float(rng.uniform(0, 2 * math.pi))
    light_el = float(rng.uniform(0.4, 1.1))
    colours: list[tuple[int, int, int]] = []
    for actor in cast:
        for c in actor.capsules:
            colours.append(actor.shirt if c.part == "torso" else PART_COLOURS[c.part])
    part_colour = np.asarray(colours, dtype=np.float32)

    sequence_id = f"synthetic-{motion}-seed{seed}"
    subjects = [
        {"id": a.subject_id, "height_cm": round(a.height_m * 100, 1), "mass_kg": a.mass_kg} for a in cast
    ]
    info = {
        "schema_version": SCHEMA_VERSION,
        "sequence_id": sequence_id,
        "fps": FPS,
        "image_width": width,
        "image_height": height,
        "units": "cm",
        "axes": "unreal",
        "subject": subjects[0],
        "subjects": subjects[1:],
        "actors": [{"id": a.actor_id, "subject_id": a.subject_id} for a in cast],
        "frame_count": frames,
        "renderer": RENDERER_NAME,
    }
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    truth3d = np.empty((frames, actors, len(NAMES), 3))
    bone_list = bone_names()
    rays: PixelRays | None = None
    # fast PNG settings (measured: RLE is both smaller and faster than zlib level 1 on these renders)
    png_rgb = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    png_mask = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    with (
        open(out_dir / CAMERAS_FILE, "w", encoding="utf-8") as cams,
        open(out_dir / BONES_FILE, "w", encoding="utf-8") as bones_fh,
    ):
        for f in range(frames):
            t = f / FPS
            camera = rig.camera(t, width, height)
            if rays is None:
                rays = PixelRays(camera)
            posed = [_pose_actor(a, t, motion) for a in cast]
            a_all = np.concatenate([p.cap_a for p in posed])
            b_all = np.concatenate([p.cap_b for p in posed])
            r_all = np.concatenate([p.radii for p in posed])
            hits = raycast(camera, a_all, b_all, r_all, rays)
            owner = np.concatenate(
                [np.full(len(p.radii), a.actor_id) for p, a in zip(posed, cast, strict=True)]
            )
            mask = np.where(hits.index >= 0, owner[np.maximum(hits.index, 0)], 0).astype(np.uint8)
            wobble = 0.15 * math.sin(0.3 * t + light_az)
            light = np.array(
                [
                    math.cos(light_el) * math.cos(light_az + wobble),
                    math.cos(light_el) * math.sin(light_az + wobble),
                    math.sin(light_el),
                ]
            )
            rgb = _shade(hits, part_colour, background, light)
            name = frame_name(f, ".png")
            cv2.imwrite(str(out_dir / RGB_DIR / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), png_rgb)
            cv2.imwrite(str(out_dir / MASK_DIR / name), mask, png_mask)
            np.save(out_dir / DEPTH_DIR / frame_name(f, ".npy"), hits.depth)
            cams.write(json.dumps(camera.to_record(f)) + "\n")
            image_id = f + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{RGB_DIR}/{name}",
                    "width": width,
                    "height": height,
                    "frame": f,
                }
            )
            for k, ((uv, vis), p, actor) in enumerate(
                zip(_visibility(camera, posed, cast, mask), posed, cast, strict=True)
            ):
                bones_fh.write(
                    json.dumps(
                        {
                            "frame": f,
                            "actor": actor.actor_id,
                            "bones": {
                                n: [round(float(c), 4) for c in xyz]
                                for n, xyz in zip(bone_list, p.bones_ue, strict=True)
                            },
                        }
                    )
                    + "\n"
                )
                truth3d[f, k] = p.landmarks_ue
                kps: list[float] = []
                for (u, v), flag in zip(uv, vis, strict=True):
                    if flag == 0:
                        kps += [0.0, 0.0, 0]
                    else:
                        kps += [round(float(u), 3), round(float(v), 3), int(flag)]
                bbox, area = _bbox_from_mask(mask, actor.actor_id)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "keypoints": kps,
                        "num_keypoints": int((vis > 0).sum()),
                        "bbox": bbox,
                        "area": area,
                        "iscrowd": 0,
                        "actor": actor.actor_id,
                    }
                )
    (out_dir / SEQUENCE_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    coco = {
        "info": {"description": f"ground truth of {sequence_id} ({RENDERER_NAME})", "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": [coco_category()],
    }
    (out_dir / GROUND_TRUTH_FILE).write_text(json.dumps(coco) + "\n", encoding="utf-8")
    np.savez_compressed(
        out_dir / GROUND_TRUTH_3D_FILE,
        landmarks_ue_cm=truth3d,
        actor_ids=np.array([a.actor_id for a in cast]),
        names=np.array(NAMES),
    )
    return out_dir
