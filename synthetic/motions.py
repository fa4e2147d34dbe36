"""Smooth, seeded motions of the default OpenSim model: the poses behind the synthetic renders.

Each motion is a function of time returning a pose (coordinate name -> value, see
`synthetic.opensim_model.expand_pose`). Parameters (amplitudes, tempo, phase, side) are drawn once
per actor from a seeded generator, so a seed fixes the whole sequence. ``mixed`` chains the others
with one-second cross-fades; blending in coordinate space keeps the motion smooth because every
coordinate is a continuous function of time. Root height is not set here: the renderer puts the
lowest point of the feet on the floor after posing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

MOTIONS: Final[tuple[str, ...]] = ("bend", "twist", "walk", "squat", "reach", "mixed")
_BASIC: Final[tuple[str, ...]] = ("bend", "twist", "walk", "squat", "reach")
#: Walkers circle their spot; actors further apart than twice this never collide.
WALK_RADIUS_M: Final[float] = 1.0
Pose = dict[str, float]


@dataclass(frozen=True)
class MotionParams:
    """Per-actor motion parameters drawn from the sequence seed."""

    amplitude: float  # 0.6 .. 1.0 of each motion's full range
    tempo: float  # cycles per second of the main movement
    phase: float  # radians
    side: float  # -1 left, +1 right (reach, twist direction)
    heading: float  # initial facing (pelvis yaw, rad)
    origin: tuple[float, float]  # (x, z) ground position of the actor's area, m
    sway: tuple[float, ...]  # small idle movements: phases of head/arm sway
    schedule: tuple[tuple[str, float], ...] = field(default=())  # for mixed: (motion, duration s)

    @classmethod
    def draw(cls, rng: np.random.Generator, origin: tuple[float, float] = (0.0, 0.0)) -> MotionParams:
        schedule = []
        for _ in range(12):
            schedule.append((str(rng.choice(_BASIC)), float(rng.uniform(2.5, 4.5))))
        return cls(
            amplitude=float(rng.uniform(0.6, 1.0)),
            tempo=float(rng.uniform(0.25, 0.45)),
            phase=float(rng.uniform(0, 2 * math.pi)),
            side=float(rng.choice([-1.0, 1.0])),
            heading=float(rng.uniform(-math.pi, math.pi)),
            origin=origin,
            sway=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, size=6)),
            schedule=tuple(schedule),
        )


def _smooth01(t: float, p: MotionParams) -> float:
    """0 -> 1 -> 0 raised-cosine cycle at the motion tempo."""
    return 0.5 - 0.5 * math.cos(2 * math.pi * p.tempo * t + p.phase)


def _idle(t: float, p: MotionParams) -> Pose:
    """Neutral stance with small natural sway so no two frames are identical."""
    s = p.sway
    return {
        "pelvis_rotation": p.heading,
        "pelvis_tx": p.origin[0],
        "pelvis_tz": p.origin[1],
        "neck_extension": 0.05 * math.sin(0.7 * t + s[0]),
        "head_rotation": 0.15 * math.sin(0.4 * t + s[1]),
        "head_extension": 0.05 * math.sin(0.5 * t + s[2]),
        "shoulder_adduction_l": -0.12 + 0.04 * math.sin(0.6 * t + s[3]),
        "shoulder_adduction_r": -0.12 + 0.04 * math.sin(0.6 * t + s[4]),
        "elbow_flexion_l": 0.25 + 0.1 * math.sin(0.5 * t + s[5]),
        "elbow_flexion_r": 0.25 + 0.1 * math.sin(0.5 * t + s[0]),
        "shoulder_flexion_l": 0.05,
        "shoulder_flexion_r": 0.05,
    }


def bend(t: float, p: MotionParams) -> Pose:
    """Forward bend: lumbar flexion plus anterior pelvic tilt, legs vertical, arms hanging."""
    pose = _idle(t, p)
    k = _smooth01(t, p) * p.amplitude
    tilt = 0.7 * k
    lumbar = 0.75 * k
    pose.update(
        {
            "pelvis_tilt": -tilt,
            "hip_flexion_l": tilt,
            "hip_flexion_r": tilt,
            "lumbar_extension": -lumbar,
            "lumbar_bending": 0.1 * p.side * k,
            "shoulder_flexion_l": tilt + lumbar * 0.9,
            "shoulder_flexion_r": tilt + lumbar * 0.9,
            "neck_extension": 0.3 * k,
            "knee_flexion_l": 0.1 * k,
            "knee_flexion_r": 0.1 * k,
        }
    )
    return pose


def twist(t: float, p: MotionParams) -> Pose:
    """Axial trunk rotation with arms held out and a side bend, head following the trunk."""
    pose = _idle(t, p)
    w = math.sin(2 * math.pi * p.tempo * t + p.phase) * p.amplitude
    pose.update(
        {
            "lumbar_rotation": 0.6 * w,
            "lumbar_bending": 0.25 * math.sin(2 * math.pi * p.tempo * 0.5 * t + p.phase),
            "head_rotation": 0.5 * w,
            "shoulder_adduction_l": -1.1,
            "shoulder_adduction_r": -1.1,
            "shoulder_flexion_l": 0.3,
            "shoulder_flexion_r": 0.3,
            "elbow_flexion_l": 0.6,
            "elbow_flexion_r": 0.6,
            "clavicle_elevation_l": 0.1,
            "clavicle_elevation_r": 0.1,
        }
    )
    return pose


def walk(t: float, p: MotionParams) -> Pose:
    """Walking around a 1 m circle: counter-swinging arms and legs, knee flexion in swing."""
    pose = _idle(t, p)
    speed, radius = 0.7 * p.amplitude + 0.2, WALK_RADIUS_M
    heading = p.heading + speed * t / radius
    # centre of the circle so that the walker starts at `origin`
    cx = p.origin[0] - radius * math.sin(p.heading)
    cz = p.origin[1] - radius * math.cos(p.heading)
    stride = 2 * math.pi * 0.9 * t + p.phase
    swing = math.sin(stride)
    pose.update(
        {
            "pelvis_rotation": heading,
            "pelvis_tx": cx + radius * math.sin(heading),
            "pelvis_tz": cz + radius * math.cos(heading),
            "pelvis_list": 0.05 * math.sin(stride),
            "lumbar_rotation": -0.15 * swing,
            "hip_flexion_l": 0.45 * swing,
            "hip_flexion_r": -0.45 * swing,
            "knee_flexion_l": 0.1 + 0.55 * max(0.0, math.sin(stride + 1.2)),
            "knee_flexion_r": 0.1 + 0.55 * max(0.0, math.sin(stride + 1.2 + math.pi)),
            "ankle_dorsiflexion_l": 0.15 * math.sin(stride - 0.5),
            "ankle_dorsiflexion_r": -0.15 * math.sin(stride - 0.5),
            "shoulder_flexion_l": -0.4 * swing,
            "shoulder_flexion_r": 0.4 * swing,
            "elbow_flexion_l": 0.4 + 0.2 * max(0.0, -swing),
            "elbow_flexion_r": 0.4 + 0.2 * max(0.0, swing),
        }
    )
    return pose


def squat(t: float, p: MotionParams) -> Pose:
    """Squat: hips, knees and ankles flex together, trunk leans forward, arms reach out front."""
    pose = _idle(t, p)
    k = _smooth01(t, p) * p.amplitude
    knee = 1.9 * k
    ankle = 0.5 * k
    hip = knee - ankle + 0.2 * k  # keeps the trunk over the feet
    pose.update(
        {
            "hip_flexion_l": hip,
            "hip_flexion_r": hip,
            "hip_adduction_l": -0.15 * k,
            "hip_adduction_r": -0.15 * k,
            "knee_flexion_l": knee,
            "knee_flexion_r": knee,
            "ankle_dorsiflexion_l": ankle,
            "ankle_dorsiflexion_r": ankle,
            "pelvis_tilt": -0.45 * k,
            "lumbar_extension": -0.2 * k,
            "shoulder_flexion_l": 1.4 * k,
            "shoulder_flexion_r": 1.4 * k,
            "elbow_flexion_l": 0.2,
            "elbow_flexion_r": 0.2,
        }
    )
    # move the pelvis back so the centre of mass stays over the feet (along the facing direction)
    back = -0.25 * k
    pose["pelvis_tx"] += back * math.cos(p.heading)
    pose["pelvis_tz"] -= back * math.sin(p.heading)
    return pose


def reach(t: float, p: MotionParams) -> Pose:
    """Overhead and sideways reach with one arm, side-bending and rotating the trunk towards it."""
    pose = _idle(t, p)
    k = _smooth01(t, p) * p.amplitude
    side = "r" if p.side > 0 else "l"
    other = "l" if side == "r" else "r"
    pose.update(
        {
            f"shoulder_flexion_{side}": 2.6 * k,
            f"shoulder_adduction_{side}": -0.5 * k,
            f"elbow_flexion_{side}": 0.25 * (1 - k),
            f"clavicle_elevation_{side}": 0.25 * k,
            f"shoulder_adduction_{other}": -0.3 * k - 0.1,
            "lumbar_bending": -0.35 * p.side * k,
            "lumbar_rotation": 0.25 * p.side * k,
            "lumbar_extension": 0.15 * k,
            "head_extension": 0.25 * k,
            "head_rotation": 0.3 * p.side * k,
            f"hip_adduction_{side}": 0.1 * k,
        }
    )
    return pose


_FUNCTIONS: Final[dict[str, Callable[[float, MotionParams], Pose]]] = {
    "bend": bend,
    "twist": twist,
    "walk": walk,
    "squat": squat,
    "reach": reach,
}
_FADE_S: Final[float] = 1.0


def _blend(a: Pose, b: Pose, w: float) -> Pose:
    keys = set(a) | set(b)
    return {k: (1 - w) * a.get(k, 0.0) + w * b.get(k, 0.0) for k in keys}


def _mixed(t: float, p: MotionParams) -> Pose:
    """Chain the basic motions of the schedule; the last one repeats if the sequence is long."""
    start = 0.0
    schedule = list(p.schedule) or [("bend", 3.0)]
    i = 0
    while True:
        name, duration = schedule[i % len(schedule)]
        if t < start + duration or i > 10_000:
            break
        start += duration
        i += 1
    local = t - start
    # each segment runs its motion with time since its own start, so walks start where they are
    pose = _FUNCTIONS[name](local, _segment_params(p, i))
    if i > 0 and local < _FADE_S:
        prev_name, prev_duration = schedule[(i - 1) % len(schedule)]
        prev = _FUNCTIONS[prev_name](prev_duration + local, _segment_params(p, i - 1))
        w = 0.5 - 0.5 * math.cos(math.pi * local / _FADE_S)
        pose = _blend(prev, pose, w)
    return pose


def _segment_params(p: MotionParams, i: int) -> MotionParams:
    """Segment i of a mixed sequence starts each motion at its rest phase, facing the same way."""
    return MotionParams(
        amplitude=p.amplitude,
        tempo=p.tempo,
        phase=0.0,
        side=p.side if i % 2 == 0 else -p.side,
        heading=p.heading,
        origin=p.origin,
        sway=p.sway,
    )


def motion_pose(motion: str, t: float, params: MotionParams) -> Pose:
    """The pose of `motion` at time `t` seconds for an actor with `params`."""
    if motion == "mixed":
        return _mixed(t, params)
    if motion not in _FUNCTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose one of {', '.join(MOTIONS)}")
    return _FUNCTIONS[motion](t, params)
