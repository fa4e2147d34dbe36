"""The reference renderer: a render-contract folder made from an independent UE5-like character.

It stands in for an Unreal exporter (docs/render-contract.md) so the whole pipeline can be run and
tested without Unreal: seeded subjects are posed through `synthetic.motions`, their body segments
(capsules of `synthetic.character`, the default, or of the fitting model in the self-consistent
"opensim" mode) are ray-cast through `synthetic.camera.Camera` - the same camera ingest reads
back - into RGB, planar depth and an actor-id (or custom-stencil) mask, and the character's own
bones are written as Unreal bones. With the default character the truth is the character's
anatomy, never the OpenSim model that ingest fits (docs/reference-renderer.md). Renders are made
easy for a small pose model to learn: left limbs blue/cyan, right limbs red/orange, shaded torso
and head, a textured background.

``ground_truth.json`` (not part of the contract, ingest ignores it) holds the true 37 landmarks as
COCO keypoints: v=0 outside the image, v=1 when another body part or actor lies on the line of
sight, v=2 otherwise. The segments a landmark sits in (its own body, its joint neighbours, and the
trunk for trunk landmarks) do not occlude it: a spine point is "visible" from the front the way a
hip joint centre is in COCO. ``ground_truth_3d.npz`` holds the true landmarks in Unreal cm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import cv2
import numpy as np
from numpy.typing import NDArray

from pipeline.coco_writer import coco_annotation
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
from synthetic.anatomy import bone_names, default_anatomy, landmark_names
from synthetic.camera import Camera, look_at_rotation
from synthetic.character import home_segments, pose_character, sample_character
from synthetic.coords import opensim_to_unreal
from synthetic.marker_map import BONE_PREFIX
from synthetic.motions import MOTIONS, WALK_RADIUS_M, MotionParams, motion_pose
from synthetic.raster import PixelRays, RayCast, raycast, segment_hits
from synthetic.reader import write_depth

FPS: Final[float] = 30.0
GROUND_TRUTH_FILE: Final[str] = "ground_truth.json"
GROUND_TRUTH_3D_FILE: Final[str] = "ground_truth_3d.npz"
RENDERER_NAME: Final[str] = "spinetrack-reference-renderer 2.0 (capsule ray caster)"

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


CHARACTERS: Final[tuple[str, ...]] = ("mannequin", "opensim")
DEPTH_FORMATS: Final[tuple[str, ...]] = ("npy", "exr", "png")
MASK_FORMATS: Final[tuple[str, ...]] = ("actor_id", "stencil")
#: Custom-stencil value of actor k in stencil masks (Unreal's CustomDepth Stencil Value, 1..255):
#: deliberately not the actor id, so a reader that ignores the mapping fails a test.
STENCIL_STEP: Final[int] = 40


@dataclass
class _Posed:
    bones_ue: NDArray[np.float64]  # (B, 3) cm, in `bone_names()` order (NaN: the rig lacks it)
    landmarks_ue: NDArray[np.float64]  # (37, 3) cm
    cap_a: NDArray[np.float64]  # (C, 3) cm
    cap_b: NDArray[np.float64]
    radii: NDArray[np.float64]  # (C,) cm


@dataclass
class _Actor:
    """One subject: its geometry (capsule parts and segments), occlusion rules and motion.

    `pose_fn(t, motion)` gives the posed frame in OpenSim-style axes (m) before flooring.
    """

    actor_id: int
    subject_id: str
    height_m: float
    mass_kg: float
    cap_parts: list[str]
    cap_segments: list[str]
    foot_caps: NDArray[np.bool_]
    home: list[frozenset[str]]  # per landmark: segments that do not occlude it
    params: MotionParams
    shirt: tuple[int, int, int]
    pose_fn: Callable[[dict[str, float]], tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                                                NDArray[np.float64], NDArray[np.float64]]]


def _adjacency(model: Any) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {}
    joints = model.getJointSet()
    for i in range(joints.getSize()):
        j = joints.get(i)
        parent = j.getParentFrame().findBaseFrame().getName()
        child = j.getChildFrame().findBaseFrame().getName()
        adj.setdefault(parent, set()).add(child)
        adj.setdefault(child, set()).add(parent)
    return adj


_FOOT_BODIES: Final[frozenset[str]] = frozenset({"foot_l", "foot_r", "toes_l", "toes_r"})


def _opensim_actor(actor_id: int, rng: np.random.Generator, origin: tuple[float, float]) -> _Actor:
    """The self-consistent mode: the fitting model poses itself (an IK unit test, not an accuracy claim)."""
    from synthetic.opensim_builder import body_transforms, build_default_model, marker_positions, pose_state

    height = float(rng.uniform(1.52, 1.95))
    bmi = float(rng.uniform(19.0, 28.0))
    mass = round(bmi * height * height, 1)
    model = build_default_model(height, mass)
    state = model.initSystem()
    anatomy = default_anatomy(height, mass)
    capsules = anatomy.capsules
    bodies = sorted({c.body for c in capsules} | {s.body for s in anatomy.marker_map.landmarks.values()})
    body_index = {b: i for i, b in enumerate(bodies)}
    adj = _adjacency(model)
    home = []
    for name in NAMES:
        body = anatomy.marker_map.landmarks[name].body
        allowed = {body} | adj.get(body, set())
        if allowed & TRUNK:
            allowed |= TRUNK
        home.append(frozenset(allowed))
    idx = np.array([body_index[c.body] for c in capsules])
    local = np.array([[c.p0, c.p1] for c in capsules])
    radii = np.array([c.radius for c in capsules])
    bone_markers = [BONE_PREFIX + n for n in bone_names()]

    def pose_fn(pose: dict[str, float]) -> tuple[NDArray[np.float64], ...]:
        pose_state(model, state, pose)
        rots, origins = body_transforms(model, state, bodies)
        ends = np.einsum("nij,nkj->nki", rots[idx], local) + origins[idx][:, None, :]
        bones = marker_positions(model, state, bone_markers)
        marks = marker_positions(model, state, landmark_names())
        return bones, marks, ends[:, 0], ends[:, 1], radii

    return _Actor(
        actor_id=actor_id,
        subject_id=f"subject-{actor_id:02d}",
        height_m=round(height, 3),
        mass_kg=mass,
        cap_parts=[c.part for c in capsules],
        cap_segments=[c.body for c in capsules],
        foot_caps=np.array([c.body in _FOOT_BODIES for c in capsules]),
        home=home,
        params=MotionParams.draw(rng, origin),
        shirt=SHIRTS[int(rng.integers(len(SHIRTS)))],
        pose_fn=pose_fn,  # type: ignore[arg-type]
    )


def _mannequin_actor(actor_id: int, rng: np.random.Generator, origin: tuple[float, float]) -> _Actor:
    """The independent character (synthetic/character.py): its own skeleton, spine and truth."""
    character = sample_character(rng)
    capsules = character.capsules()
    names = bone_names()

    def pose_fn(pose: dict[str, float]) -> tuple[NDArray[np.float64], ...]:
        posed = pose_character(character, pose, capsules)
        bones = np.array([posed.bones.get(n, np.full(3, np.nan)) for n in names])
        return bones, posed.landmarks, posed.cap_a, posed.cap_b, posed.radii

    return _Actor(
        actor_id=actor_id,
        subject_id=f"subject-{actor_id:02d}",
        height_m=round(character.height_m, 3),
        mass_kg=character.mass_kg,
        cap_parts=[c.part for c in capsules],
        cap_segments=[c.segment for c in capsules],
        foot_caps=np.array([c.segment.startswith(("foot_", "ball_")) for c in capsules]),
        home=[home_segments(n) for n in NAMES],
        params=MotionParams.draw(rng, origin),
        shirt=SHIRTS[int(rng.integers(len(SHIRTS)))],
        pose_fn=pose_fn,  # type: ignore[arg-type]
    )


def _pose_actor(actor: _Actor, t: float, motion: str) -> _Posed:
    bones, marks, a, b, radii = actor.pose_fn(motion_pose(motion, t, actor.params))
    # stand on the floor: lowest point of the feet at y = 0 (a pure vertical shift)
    floor = float(min((a[actor.foot_caps, 1] - radii[actor.foot_caps]).min(),
                      (b[actor.foot_caps, 1] - radii[actor.foot_caps]).min()))
    shift = np.array([0.0, floor, 0.0])
    return _Posed(
        bones_ue=opensim_to_unreal(bones - shift),
        landmarks_ue=opensim_to_unreal(marks - shift),
        cap_a=opensim_to_unreal(a - shift),
        cap_b=opensim_to_unreal(b - shift),
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
    cap_body = [seg for a in actors for seg in a.cap_segments]
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
    character: str = "mannequin",
    depth_format: str = "npy",
    mask_format: str = "actor_id",
) -> Path:
    """Render `frames` frames of `actors` seeded subjects doing `motion` into `out_dir` (contract layout).

    `character` "mannequin" draws the independent UE5-like character (synthetic/character.py, the
    default and the accuracy benchmark's subject); "opensim" poses the fitting model itself (the
    self-consistent mode: a unit test of IK only). `depth_format` npy (float32 cm), exr (OpenEXR
    float32 cm, as Movie Render Queue writes) or png (uint16 mm); `mask_format` actor_id (8-bit
    actor ids) or stencil (8-bit custom-stencil values, mapped to actors in sequence.json).
    Deterministic for a seed. Returns `out_dir`.
    """
    _check_render_arguments(frames, motion, width, height, actors, character, depth_format, mask_format)
    if character == "opensim":
        _quiet_opensim()
    out_dir = Path(out_dir)
    _prepare_folder(out_dir, frames, depth_format)
    scene = _Scene.draw(seed, motion, width, height, actors, character)
    sequence_id = f"synthetic-{motion}-seed{seed}"
    info = _sequence_info(scene, sequence_id, frames, character, mask_format)
    truth = _GroundTruth(frames, actors)
    with (
        open(out_dir / CAMERAS_FILE, "w", encoding="utf-8") as cams,
        open(out_dir / BONES_FILE, "w", encoding="utf-8") as bones_fh,
    ):
        rays: PixelRays | None = None
        for f in range(frames):
            camera = scene.rig.camera(f / FPS, width, height)
            if rays is None:
                rays = PixelRays(camera)
            _render_frame(out_dir, scene, f, camera, rays, truth, cams, bones_fh,
                          depth_format=depth_format, mask_format=mask_format)
    (out_dir / SEQUENCE_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    truth.write(out_dir, sequence_id, scene.cast)
    return out_dir


def _check_render_arguments(
    frames: int, motion: str, width: int, height: int, actors: int, character: str, depth_format: str,
    mask_format: str,
) -> None:
    """Refuse a bad argument before the folder is touched, naming the choices."""
    if character not in CHARACTERS:
        raise ValueError(f"unknown character {character!r}; choose one of {', '.join(CHARACTERS)}")
    if depth_format not in DEPTH_FORMATS:
        raise ValueError(f"unknown depth_format {depth_format!r}; choose one of {', '.join(DEPTH_FORMATS)}")
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"unknown mask_format {mask_format!r}; choose one of {', '.join(MASK_FORMATS)}")
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose one of {', '.join(MOTIONS)}")
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if not 1 <= actors <= 8:
        raise ValueError("actors must be between 1 and 8")
    if width < 16 or height < 16:
        raise ValueError("image must be at least 16x16 pixels")


def _quiet_opensim() -> None:
    """Load OpenSim (only the "opensim" character needs it) and keep its log to errors."""
    import synthetic.opensim_runtime  # noqa: F401  (before opensim: see there)

    # isort: split
    import opensim as osim

    osim.Logger.setLevelString("error")


def _prepare_folder(out_dir: Path, frames: int, depth_format: str) -> None:
    """Make the frame folders and clear what a previous render would leave behind.

    sequence.json goes first: it is written last, so until then the folder reads as incomplete,
    also on a re-render; frames beyond `frames` and depth files of another format go too.
    """
    (out_dir / SEQUENCE_FILE).unlink(missing_ok=True)
    for sub in (RGB_DIR, DEPTH_DIR, MASK_DIR):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / sub).glob("[0-9]" * 6 + ".*"):
            other_format = sub == DEPTH_DIR and stale.suffix != f".{depth_format}"
            if int(stale.stem) >= frames or other_format:
                stale.unlink()


@dataclass
class _Scene:
    """What stays fixed over a sequence: the cast, the camera rig, the background and the light."""

    motion: str
    width: int
    height: int
    cast: list[_Actor]
    rig: _CameraRig
    background: NDArray[np.float32]
    light_az: float
    light_el: float
    part_colour: NDArray[np.float32]  # (C, 3) RGB of every capsule of every actor, in cast order

    @classmethod
    def draw(cls, seed: int, motion: str, width: int, height: int, actors: int, character: str) -> _Scene:
        """Draw the scene from `seed`; the order of the draws is part of what a seed renders."""
        rng = np.random.default_rng(seed)
        walking = motion in ("walk", "mixed")
        spacing = 2 * WALK_RADIUS_M + 0.5 if walking else 1.3
        make = _mannequin_actor if character == "mannequin" else _opensim_actor
        cast = [make(i + 1, rng, (0.0, (i - (actors - 1) / 2) * spacing)) for i in range(actors)]
        rig = _rig(rng, width, height, spacing * (actors - 1), walking=walking)
        background = _background(rng, width, height)
        light_az = float(rng.uniform(0, 2 * math.pi))
        light_el = float(rng.uniform(0.4, 1.1))
        colours: list[tuple[int, int, int]] = []
        for actor in cast:
            for part in actor.cap_parts:
                colours.append(actor.shirt if part == "torso" else PART_COLOURS[part])
        part_colour = np.asarray(colours, dtype=np.float32)
        return cls(motion, width, height, cast, rig, background, light_az, light_el, part_colour)

    def light(self, t: float) -> NDArray[np.float64]:
        """The light's direction at time `t`: it wobbles a little so shading is not constant."""
        wobble = 0.15 * math.sin(0.3 * t + self.light_az)
        return np.array(
            [
                math.cos(self.light_el) * math.cos(self.light_az + wobble),
                math.cos(self.light_el) * math.sin(self.light_az + wobble),
                math.sin(self.light_el),
            ]
        )


def _sequence_info(
    scene: _Scene, sequence_id: str, frames: int, character: str, mask_format: str
) -> dict[str, Any]:
    """sequence.json: what an Unreal exporter writes about the sequence, its subjects and actors
    (with stencil masks, the stencil value that stands for each actor)."""
    cast = scene.cast
    subjects = [
        {"id": a.subject_id, "height_cm": round(a.height_m * 100, 1), "mass_kg": a.mass_kg} for a in cast
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "sequence_id": sequence_id,
        "fps": FPS,
        "image_width": scene.width,
        "image_height": scene.height,
        "units": "cm",
        "axes": "unreal",
        "subject": subjects[0],
        "subjects": subjects[1:],
        "actors": [
            {"id": a.actor_id, "subject_id": a.subject_id}
            | ({"stencil": a.actor_id * STENCIL_STEP} if mask_format == "stencil" else {})
            for a in cast
        ],
        "frame_count": frames,
        "renderer": f"{RENDERER_NAME}; character={character}",
        "rig": "ue5_mannequin",
    }


class _GroundTruth:
    """The true landmarks gathered frame by frame: COCO images and annotations, and 3-D points."""

    def __init__(self, frames: int, actors: int) -> None:
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.truth3d = np.empty((frames, actors, len(NAMES), 3))

    def add_image(self, f: int, name: str, width: int, height: int) -> int:
        """Record frame `f`'s image; returns its COCO image id (frame + 1)."""
        image_id = f + 1
        self.images.append(
            {
                "id": image_id,
                "file_name": f"{RGB_DIR}/{name}",
                "width": width,
                "height": height,
                "frame": f,
            }
        )
        return image_id

    def add_person(
        self,
        f: int,
        k: int,
        image_id: int,
        posed: _Posed,
        actor: _Actor,
        projected: tuple[NDArray[np.float64], NDArray[np.int64]],
        mask: NDArray[np.uint8],
    ) -> None:
        """Record the `k`-th actor of frame `f`: its 3-D landmarks and its COCO annotation (points
        outside the image as 0, 0, 0 as COCO has them; the box and area from the actor's mask)."""
        uv, vis = projected
        self.truth3d[f, k] = posed.landmarks_ue
        kps: list[float] = []
        for (u, v), flag in zip(uv, vis, strict=True):
            if flag == 0:
                kps += [0.0, 0.0, 0]
            else:
                kps += [round(float(u), 3), round(float(v), 3), int(flag)]
        bbox, area = _bbox_from_mask(mask, actor.actor_id)
        self.annotations.append(coco_annotation(len(self.annotations) + 1, image_id, kps, bbox, area=area,
                                                extra={"actor": actor.actor_id}))

    def write(self, out_dir: Path, sequence_id: str, cast: list[_Actor]) -> None:
        """ground_truth.json (COCO) and ground_truth_3d.npz (Unreal cm): not part of the contract."""
        coco = {
            "info": {"description": f"ground truth of {sequence_id} ({RENDERER_NAME})", "version": "1.0"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [coco_category()],
        }
        (out_dir / GROUND_TRUTH_FILE).write_text(json.dumps(coco) + "\n", encoding="utf-8")
        np.savez_compressed(
            out_dir / GROUND_TRUTH_3D_FILE,
            landmarks_ue_cm=self.truth3d,
            actor_ids=np.array([a.actor_id for a in cast]),
            names=np.array(NAMES),
        )


#: Fast PNG settings (measured: RLE is both smaller and faster than zlib level 1 on these renders).
_PNG_RGB: Final[list[int]] = [
    cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE
]
_PNG_MASK: Final[list[int]] = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def _render_frame(
    out_dir: Path,
    scene: _Scene,
    f: int,
    camera: Camera,
    rays: PixelRays,
    truth: _GroundTruth,
    cams: TextIO,
    bones_fh: TextIO,
    *,
    depth_format: str,
    mask_format: str,
) -> None:
    """Pose the cast at frame `f`, cast the rays, write the frame's images, camera and bones, and
    add its people to `truth`."""
    t = f / FPS
    posed = [_pose_actor(a, t, scene.motion) for a in scene.cast]
    hits, mask = _cast_rays(camera, rays, posed, scene.cast)
    rgb = _shade(hits, scene.part_colour, scene.background, scene.light(t))
    name = frame_name(f, ".png")
    _write_images(out_dir, f, name, rgb, mask, hits.depth, depth_format=depth_format, mask_format=mask_format)
    cams.write(json.dumps(camera.to_record(f)) + "\n")
    image_id = truth.add_image(f, name, scene.width, scene.height)
    bone_list = bone_names()
    for k, (projected, p, actor) in enumerate(
        zip(_visibility(camera, posed, scene.cast, mask), posed, scene.cast, strict=True)
    ):
        bones_fh.write(_bones_line(f, actor, p, bone_list))
        truth.add_person(f, k, image_id, p, actor, projected, mask)


def _cast_rays(
    camera: Camera, rays: PixelRays, posed: list[_Posed], cast: list[_Actor]
) -> tuple[RayCast, NDArray[np.uint8]]:
    """Ray-cast every actor's capsules at once: the hits (nearest capsule, depth, normal) and the
    actor-id mask they give (0: background)."""
    a_all = np.concatenate([p.cap_a for p in posed])
    b_all = np.concatenate([p.cap_b for p in posed])
    r_all = np.concatenate([p.radii for p in posed])
    hits = raycast(camera, a_all, b_all, r_all, rays)
    owner = np.concatenate(
        [np.full(len(p.radii), a.actor_id) for p, a in zip(posed, cast, strict=True)]
    )
    mask = np.where(hits.index >= 0, owner[np.maximum(hits.index, 0)], 0).astype(np.uint8)
    return hits, mask


def _write_images(
    out_dir: Path,
    f: int,
    name: str,
    rgb: NDArray[np.uint8],
    mask: NDArray[np.uint8],
    depth: NDArray[np.float32],
    *,
    depth_format: str,
    mask_format: str,
) -> None:
    """Write frame `f`'s RGB, mask and depth in the formats asked for."""
    cv2.imwrite(str(out_dir / RGB_DIR / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _PNG_RGB)
    if mask_format == "stencil":
        # what a post-process material writing CustomStencil to an 8-bit PNG gives: grey RGB
        stencil = (mask.astype(np.int64) * STENCIL_STEP).astype(np.uint8)
        grey = np.repeat(stencil[..., None], 3, axis=2)
        cv2.imwrite(str(out_dir / MASK_DIR / name), grey, _PNG_MASK)
    else:
        cv2.imwrite(str(out_dir / MASK_DIR / name), mask, _PNG_MASK)
    write_depth(out_dir / DEPTH_DIR / frame_name(f, f".{depth_format}"), depth)


def _bones_line(f: int, actor: _Actor, posed: _Posed, bone_list: Sequence[str]) -> str:
    """One bones.jsonl line: the actor's Unreal bones in cm (those its rig has) at frame `f`."""
    return (
        json.dumps(
            {
                "frame": f,
                "actor": actor.actor_id,
                "bones": {
                    n: [round(float(c), 4) for c in xyz]
                    for n, xyz in zip(bone_list, posed.bones_ue, strict=True)
                    if np.all(np.isfinite(xyz))
                },
            }
        )
        + "\n"
    )
