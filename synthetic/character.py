"""An independent character for the reference renderer: a UE5-mannequin-like skeleton of its own.

The renderer must not draw the model that ingest fits, or its accuracy figures only say that IK can
reproduce its own poses (issue 12). This character shares nothing with `synthetic.anatomy` or
OpenSim: its proportions are sampled per subject from anthropometric ranges (`sample_character`),
its spine is a chain of 24 vertebrae (L5..C1) on a sagittal curve of its own (lordosis, kyphosis
and cervical lordosis sampled), and trunk motion is spread over the vertebrae with ratios unlike the
fitting model's lumbar shares (thoracic and cervical levels move too; twist sits mostly in the
thorax). Its ground truth is computed from its own anatomy: vertebral bodies on its curve, its joint
centres, its sacrum, its skull (docs/landmarks.md).

What it takes from outside: a pose as the motions write it (`synthetic.motions`: joint names such as
``hip_flexion_l``, ``lumbar_extension`` = total trunk flexion), and the Unreal axis convention.
Everything is computed in a right-handed Y-up frame (X forward, Z right, metres) and converted to
Unreal centimetres by the caller (`synthetic.coords`).

Anthropometric ranges (fractions of standing height unless noted; Drillis & Contini 1966, Winter
2009, de Leva 1996, and for the spine Roussouly 2005 / Bernhardt 1989 sagittal angles):

===================== =============== =====================================================
quantity              range           note
===================== =============== =====================================================
height                1.52 - 1.95 m   uniform
BMI                   19 - 28         mass = BMI * height^2; radii grow with sqrt(BMI / 22)
thigh / shank         0.232 - 0.258   hip-knee, knee-ankle joint centres, independent
upper arm / forearm   0.176 - 0.196 / 0.136 - 0.156
hip joint half width  0.045 - 0.056   hip joint centres 16 - 19 cm apart at 1.75 m
shoulder half width   0.104 - 0.122   glenohumeral centres (biacromial ~ 0.23 H)
lumbar / thoracic /   0.093 - 0.110 / vertebral column segments, split into vertebrae by
cervical length       0.150 - 0.172 / anatomical relative body heights
                      0.052 - 0.064
lordosis / kyphosis / 40 - 62 deg /   sagittal curve angles
cervical lordosis     32 - 52 deg /
                      18 - 36 deg
foot (ankle-MTP)      0.078 - 0.090   horizontal
head (C0 to vertex)   0.094 - 0.106
===================== =============== =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from schemas.keypoints import NAMES

Vec = NDArray[np.float64]

#: The 24 vertebrae of the articulated column, from the sacrum up (L5 first, C1 last). Joint k sits
#: at the bottom of vertebra k (joint 0 = L5/S1, 5 = T12/L1, 17 = C7/T1, 23 = C1/C2); the skull
#: joint (C0/C1) is the top of C1.
VERTEBRAE: Final[tuple[str, ...]] = (
    "L5", "L4", "L3", "L2", "L1",
    *(f"T{n}" for n in range(12, 0, -1)),
    *(f"C{n}" for n in range(7, 0, -1)),
)
_V: Final[dict[str, int]] = {name: k for k, name in enumerate(VERTEBRAE)}
LUMBAR: Final[range] = range(0, 5)
THORACIC: Final[range] = range(5, 17)
CERVICAL: Final[range] = range(17, 24)
#: Relative vertebral body + disc heights (anatomical tables; only ratios within a region matter).
_RELATIVE_HEIGHT: Final[tuple[float, ...]] = (
    *(1.03, 1.02, 1.0, 0.97, 0.95),
    *(1.1, 1.07, 1.03, 1.0, 0.96, 0.92, 0.88, 0.85, 0.82, 0.79, 0.76, 0.74),
    *(0.95, 0.92, 0.9, 0.9, 0.92, 1.25, 0.9),
)


def _shares(weights: dict[int, float], total: float) -> NDArray[np.float64]:
    out = np.zeros(len(VERTEBRAE) + 1)  # last entry: the skull joint C0/C1
    s = sum(weights.values())
    for k, w in weights.items():
        out[k] = total * w / s
    return out


def _even(levels: range, total: float) -> dict[int, float]:
    return {k: total / len(levels) for k in levels}


#: How the character spreads each pose-level motion over its joints (fractions summing to 1).
#: Unlike the fitting model (six lumbar levels by White & Panjabi's ROM, rigid thorax and neck):
#: trunk flexion 80 % lumbar (more at L4/L5 and L5/S1) + 20 % thoracic; side bending 65 % lumbar
#: peaking mid-lumbar + 35 % thoracic; twist 30 % lumbar + 70 % thoracic (most in the lower
#: thorax); neck flexion over C7/T1..C2/C3; head rotation 55 % at C1/C2; head nod 60 % at C0/C1.
DISTRIBUTION: Final[dict[str, NDArray[np.float64]]] = {
    "lumbar_extension": _shares(
        {0: 0.26 * 0.8, 1: 0.24 * 0.8, 2: 0.2 * 0.8, 3: 0.16 * 0.8, 4: 0.14 * 0.8} | _even(THORACIC, 0.2), 1.0
    ),
    "lumbar_bending": _shares(
        {0: 0.1 * 0.65, 1: 0.18 * 0.65, 2: 0.24 * 0.65, 3: 0.25 * 0.65, 4: 0.23 * 0.65}
        | _even(THORACIC, 0.35),
        1.0,
    ),
    "lumbar_rotation": _shares(
        _even(LUMBAR, 0.3) | {k: 0.7 * (1.5 - (k - 5) / 11) / 12.0 for k in THORACIC}, 1.0
    ),
    "neck_extension": _shares(_even(range(17, 23), 1.0), 1.0),
    "neck_bending": _shares(_even(range(17, 23), 1.0), 1.0),
    "head_extension": _shares({24: 0.6, 23: 0.4}, 1.0),
    "head_bending": _shares({24: 0.7, 23: 0.3}, 1.0),
    "head_rotation": _shares({23: 0.55} | _even(range(17, 23), 0.45), 1.0),
}
_SPINE_DOF_AXIS: Final[dict[str, tuple[float, float, float]]] = {
    "extension": (0.0, 0.0, 1.0),
    "bending": (1.0, 0.0, 0.0),
    "rotation": (0.0, 1.0, 0.0),
}


def _rot(axis: tuple[float, float, float] | Vec, angle: float) -> Vec:
    """Rotation matrix about a unit axis (right-handed)."""
    x, y, z = (float(v) for v in axis)
    c, s = math.cos(angle), math.sin(angle)
    t = 1.0 - c
    return np.array(
        [
            [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
        ]
    )


@dataclass(frozen=True)
class Frame:
    """A rigid frame in the character's world: rotation R (columns = axes) and origin p (m)."""

    R: Vec
    p: Vec

    def at(self, local: Vec | tuple[float, ...]) -> Vec:
        return self.p + self.R @ np.asarray(local, dtype=np.float64)

    def child(self, offset: Vec | tuple[float, ...], rotation: Vec | None = None) -> Frame:
        return Frame(self.R if rotation is None else self.R @ rotation, self.at(offset))


@dataclass(frozen=True)
class CapsuleSpec:
    """A capsule fixed to one of the character's frames; `segment` names its body part for occlusion."""

    frame: str
    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    radius: float
    part: str  # colour group (torso, head, left_arm, ...)
    segment: str


@dataclass(frozen=True)
class Character:
    """One subject's anatomy (metres, the pelvis frame at rest: X forward, Y up, Z right)."""

    height_m: float
    mass_kg: float
    hip_half_width: float
    thigh: float
    shank: float
    ankle_height: float
    ball: tuple[float, float]  # ankle -> MTP (x, y)
    heel: tuple[float, float]
    big_toe: tuple[float, float, float]  # from MTP, z towards the midline is negative * side
    small_toe: tuple[float, float, float]
    pelvis_bone: tuple[float, float]  # Unreal pelvis bone in the pelvis frame (x, y)
    sacral_point: tuple[float, float]  # posterior sacrum (the SpineTrack "hip")
    l5s1: tuple[float, float]  # L5/S1 disc centre (x, y)
    spine_offsets: tuple[tuple[float, float], ...]  # per vertebra: bottom joint -> top joint (x, y)
    sc_joint: tuple[float, float, float]  # on T2's frame (|z|)
    clavicle: tuple[float, float, float]  # SC -> glenohumeral (|z|)
    upper_arm: float
    forearm: float
    hand: float
    eye: tuple[float, float, float]  # skull frame (C0/C1), |z|
    ear: tuple[float, float, float]
    nose: tuple[float, float]
    vertex: float
    girth: float  # radius scale from BMI

    # -- rest geometry -------------------------------------------------------------------------
    def standing_height(self) -> float:
        """Vertex above the floor, standing at rest (what sequence.json reports)."""
        hip = self.ankle_height + self.shank + self.thigh
        top = self.l5s1[1] + sum(dy for _, dy in self.spine_offsets)
        return hip + top + self.vertex

    def capsules(self) -> tuple[CapsuleSpec, ...]:
        g, h = self.girth, self.height_m
        caps: list[CapsuleSpec] = []
        hw = self.hip_half_width
        caps.append(
            CapsuleSpec(
                "pelvis",
                (0.0, 0.02 * h, -0.8 * hw),
                (0.0, 0.02 * h, 0.8 * hw),
                0.06 * h * g,
                "torso",
                "pelvis",
            )
        )
        caps.append(
            CapsuleSpec(
                "pelvis", (-0.01 * h, 0.045 * h, 0.0), (0.0, 0.06 * h, 0.0), 0.072 * h * g, "torso", "pelvis"
            )
        )
        # abdomen and chest: side-by-side capsules riding on the vertebrae they surround
        for key, fwd, half, rad, length in (
            ("L3", 0.04, 0.03, 0.06, 0.03),
            ("L1", 0.045, 0.032, 0.06, 0.03),
            ("T10", 0.05, 0.035, 0.066, 0.04),
            ("T6", 0.05, 0.045, 0.066, 0.04),
        ):
            for lr in (-1.0, 1.0):
                caps.append(
                    CapsuleSpec(
                        key,
                        (fwd * h, 0.0, lr * half * h),
                        (fwd * h, length * h, lr * half * h),
                        rad * h * g,
                        "torso",
                        "lumbar" if key[0] == "L" else "thorax",
                    )
                )
        # the back (erector spinae, latissimus) behind and beside the mid-thoracic vertebrae
        for lr in (-1.0, 1.0):
            back0 = (-0.005 * h, -0.03 * h, lr * 0.035 * h)
            back1 = (-0.005 * h, 0.06 * h, lr * 0.035 * h)
            caps.append(CapsuleSpec("T8", back0, back1, 0.045 * h * g, "torso", "thorax"))
        caps.append(
            CapsuleSpec(
                "T2", (0.03 * h, 0.0, -0.07 * h), (0.03 * h, 0.0, 0.07 * h), 0.045 * h * g, "torso", "thorax"
            )
        )
        caps.append(
            CapsuleSpec(
                "C6", (0.012 * h, 0.0, 0.0), (0.015 * h, 0.045 * h, 0.0), 0.031 * h * g, "neck", "neck"
            )
        )
        caps.append(
            CapsuleSpec("skull", (0.015 * h, 0.02 * h, 0.0), (0.0, 0.055 * h, 0.0), 0.053 * h, "head", "head")
        )
        caps.append(
            CapsuleSpec(
                "skull", (0.038 * h, -0.005 * h, 0.0), (0.038 * h, 0.02 * h, 0.0), 0.03 * h, "head", "head"
            )
        )
        for side, s in (("l", -1.0), ("r", 1.0)):
            word = "left" if side == "l" else "right"
            cl = (self.clavicle[0], self.clavicle[1], s * self.clavicle[2])
            caps.append(
                CapsuleSpec(
                    f"clavicle_{side}", (0.0, 0.0, 0.0), cl, 0.021 * h * g, "torso", f"clavicle_{side}"
                )
            )
            caps.append(
                CapsuleSpec(
                    f"upperarm_{side}",
                    (0.0, 0.0, 0.0),
                    (0.0, -self.upper_arm, 0.0),
                    0.029 * h * g,
                    f"{word}_arm",
                    f"upperarm_{side}",
                )
            )
            caps.append(
                CapsuleSpec(
                    f"lowerarm_{side}",
                    (0.0, 0.0, 0.0),
                    (0.0, -self.forearm, 0.0),
                    0.023 * h * g,
                    f"{word}_arm",
                    f"lowerarm_{side}",
                )
            )
            caps.append(
                CapsuleSpec(
                    f"hand_{side}",
                    (0.0, -0.01 * h, 0.0),
                    (0.0, -self.hand * 0.7, 0.0),
                    0.021 * h,
                    f"{word}_hand",
                    f"hand_{side}",
                )
            )
            caps.append(
                CapsuleSpec(
                    f"thigh_{side}",
                    (0.0, 0.0, -0.008 * s * h),
                    (0.0, -self.thigh, 0.0),
                    0.046 * h * g,
                    f"{word}_leg",
                    f"thigh_{side}",
                )
            )
            caps.append(
                CapsuleSpec(
                    f"calf_{side}",
                    (0.0, 0.0, 0.0),
                    (0.0, -self.shank, 0.0),
                    0.033 * h * g,
                    f"{word}_leg",
                    f"calf_{side}",
                )
            )
            bx, by = self.ball
            hx, hy = self.heel
            caps.append(
                CapsuleSpec(
                    f"foot_{side}",
                    (hx + 0.008 * h, hy + 0.006 * h, 0.0),
                    (bx - 0.004 * h, by + 0.008 * h, 0.0),
                    0.018 * h,
                    f"{word}_foot",
                    f"foot_{side}",
                )
            )
            tx, ty, tz = self.big_toe
            caps.append(
                CapsuleSpec(
                    f"ball_{side}",
                    (0.0, 0.0, -0.008 * s * h),
                    (tx - 0.006 * h, ty, -s * tz),
                    0.011 * h,
                    f"{word}_foot",
                    f"ball_{side}",
                )
            )
            sx, sy, sz = self.small_toe
            caps.append(
                CapsuleSpec(
                    f"ball_{side}",
                    (-0.012 * h, 0.0, 0.018 * s * h),
                    (sx - 0.004 * h, sy, s * sz),
                    0.01 * h,
                    f"{word}_foot",
                    f"ball_{side}",
                )
            )
        return tuple(caps)


#: Segments of the trunk: they never occlude one another's landmarks (as a hip joint centre is
#: "visible" from the front in COCO).
TRUNK_SEGMENTS: Final[frozenset[str]] = frozenset({"pelvis", "lumbar", "thorax", "clavicle_l", "clavicle_r"})
#: Segment adjacency (the skeleton's hierarchy) for the occlusion truth.
SEGMENT_PARENT: Final[dict[str, str]] = {
    "lumbar": "pelvis",
    "thorax": "lumbar",
    "neck": "thorax",
    "head": "neck",
    **{f"clavicle_{s}": "thorax" for s in "lr"},
    **{f"upperarm_{s}": f"clavicle_{s}" for s in "lr"},
    **{f"lowerarm_{s}": f"upperarm_{s}" for s in "lr"},
    **{f"hand_{s}": f"lowerarm_{s}" for s in "lr"},
    **{f"thigh_{s}": "pelvis" for s in "lr"},
    **{f"calf_{s}": f"thigh_{s}" for s in "lr"},
    **{f"foot_{s}": f"calf_{s}" for s in "lr"},
    **{f"ball_{s}": f"foot_{s}" for s in "lr"},
}


def _landmark_segments() -> dict[str, str]:
    seg = {
        "nose": "head",
        "left_eye": "head",
        "right_eye": "head",
        "left_ear": "head",
        "right_ear": "head",
        "head": "head",
        "neck": "thorax",
        "hip": "pelvis",
        "neck_02": "neck",
        "neck_03": "neck",
        "spine_01": "lumbar",
        "spine_02": "lumbar",
        "spine_03": "lumbar",
        "spine_04": "thorax",
        "spine_05": "thorax",
        "left_latissimus": "thorax",
        "right_latissimus": "thorax",
        "left_clavicle": "clavicle_l",
        "right_clavicle": "clavicle_r",
    }
    for s, word in (("l", "left"), ("r", "right")):
        seg |= {
            f"{word}_shoulder": f"upperarm_{s}",
            f"{word}_elbow": f"lowerarm_{s}",
            f"{word}_wrist": f"hand_{s}",
            f"{word}_hip": f"thigh_{s}",
            f"{word}_knee": f"calf_{s}",
            f"{word}_ankle": f"foot_{s}",
            f"{word}_heel": f"foot_{s}",
            f"{word}_big_toe": f"ball_{s}",
            f"{word}_small_toe": f"ball_{s}",
        }
    return seg


LANDMARK_SEGMENT: Final[dict[str, str]] = _landmark_segments()


def home_segments(landmark: str) -> frozenset[str]:
    """Segments that do not occlude `landmark`: its own, its neighbours, and the trunk for trunk points."""
    own = LANDMARK_SEGMENT[landmark]
    allowed = {own} | {c for c, p in SEGMENT_PARENT.items() if p == own}
    if own in SEGMENT_PARENT:
        allowed.add(SEGMENT_PARENT[own])
    if allowed & TRUNK_SEGMENTS:
        allowed |= TRUNK_SEGMENTS
    return frozenset(allowed)


def sample_character(rng: np.random.Generator) -> Character:
    """A subject drawn from the ranges in the module docstring, scaled to its sampled height."""
    u = rng.uniform
    height = float(u(1.52, 1.95))
    bmi = float(u(19.0, 28.0))
    lumbar_len, thoracic_len, cervical_len = u(0.093, 0.110), u(0.150, 0.172), u(0.052, 0.064)
    lordosis, kyphosis, cervical = (math.radians(u(a, b)) for a, b in ((40, 62), (32, 52), (18, 36)))
    lengths = np.empty(len(VERTEBRAE))
    tilts = np.empty(len(VERTEBRAE))
    for region, total, curve in (
        (LUMBAR, lumbar_len, lordosis),
        (THORACIC, thoracic_len, -kyphosis),
        (CERVICAL, cervical_len, cervical),
    ):
        # mean anatomical heights, each vertebra varied by up to 6 % per subject
        rel = np.array([_RELATIVE_HEIGHT[k] for k in region]) * rng.uniform(0.94, 1.06, size=len(region))
        lengths[list(region)] = total * rel / rel.sum()
        # direction of the column (from vertical, + = forward going up) turns by `curve` over the region
        n = len(region)
        tilts[list(region)] = [curve / 2 - curve * (i + 0.5) / n for i in range(n)]
    # lean the whole column so the skull joint sits over the sacrum (+- 1 cm at 1.75 m)
    target = float(u(-0.006, 0.006))
    lean = 0.0
    for _ in range(20):
        x = float(np.sum(lengths * np.sin(tilts + lean)))
        dx = float(np.sum(lengths * np.cos(tilts + lean)))
        lean -= (x - target) / dx
    offsets = tuple(
        (float(ln * math.sin(t + lean)), float(ln * math.cos(t + lean)))
        for ln, t in zip(lengths, tilts, strict=True)
    )
    foot = u(0.078, 0.090)
    raw = Character(
        height_m=1.0,
        mass_kg=1.0,
        hip_half_width=u(0.045, 0.056),
        thigh=u(0.232, 0.258),
        shank=u(0.232, 0.258),
        ankle_height=u(0.036, 0.044),
        ball=(foot, -u(0.028, 0.034)),
        heel=(-u(0.034, 0.042), -u(0.032, 0.037)),
        big_toe=(u(0.036, 0.044), -0.003, u(0.009, 0.014)),
        small_toe=(u(0.020, 0.027), -0.003, u(0.021, 0.027)),
        pelvis_bone=(u(-0.016, -0.002), u(0.024, 0.036)),
        sacral_point=(-u(0.048, 0.056), u(0.044, 0.052)),
        l5s1=(-u(0.005, 0.02), u(0.050, 0.062)),
        spine_offsets=offsets,
        sc_joint=(u(0.040, 0.050), -u(0.0, 0.008), u(0.011, 0.016)),
        clavicle=(-u(0.018, 0.030), u(0.002, 0.010), 0.0),
        upper_arm=u(0.176, 0.196),
        forearm=u(0.136, 0.156),
        hand=u(0.10, 0.115),
        eye=(u(0.046, 0.054), u(0.034, 0.044), u(0.017, 0.019)),
        ear=(-u(0.0, 0.006), u(0.022, 0.030), u(0.040, 0.046)),
        nose=(u(0.060, 0.068), u(0.012, 0.022)),
        vertex=u(0.094, 0.106),
        girth=math.sqrt(bmi / 22.0),
    )
    shoulder_half = u(0.104, 0.122)
    clav_z = shoulder_half - raw.sc_joint[2]
    raw = _replace(raw, clavicle=(raw.clavicle[0], raw.clavicle[1], clav_z))
    k = height / raw.standing_height()
    return _scaled(raw, k, height, round(bmi * height * height, 1))


def _replace(c: Character, **changes: object) -> Character:
    from dataclasses import replace

    return replace(c, **changes)  # type: ignore[arg-type]


def _scaled(c: Character, k: float, height: float, mass: float) -> Character:
    """Every length times k (fractions of height -> metres)."""

    def s(v: object) -> object:
        if isinstance(v, tuple):
            return tuple(s(x) for x in v)
        return float(v) * k  # type: ignore[arg-type]

    lengths = {
        f: s(getattr(c, f)) for f in c.__dataclass_fields__ if f not in ("height_m", "mass_kg", "girth")
    }
    return _replace(c, height_m=height, mass_kg=mass, **lengths)


@dataclass
class CharacterPose:
    """One posed frame in the character's world (m): Unreal bones, the 37 landmarks, capsules."""

    bones: dict[str, Vec]
    landmarks: Vec  # (37, 3) schemas.keypoints order
    cap_a: Vec  # (C, 3)
    cap_b: Vec
    radii: Vec  # (C,)


def _spine_angles(pose: Mapping[str, float]) -> dict[str, NDArray[np.float64]]:
    """Per joint (24 vertebral joints + the skull joint) extension, bending and rotation (rad)."""
    out: dict[str, NDArray[np.float64]] = {dof: np.zeros(len(VERTEBRAE) + 1) for dof in _SPINE_DOF_AXIS}
    for key, shares in DISTRIBUTION.items():
        value = float(pose.get(key, 0.0))
        if value:
            out[key.split("_", 1)[1]] += shares * value
    return out


def pose_character(
    c: Character, pose: Mapping[str, float], capsules: tuple[CapsuleSpec, ...]
) -> CharacterPose:
    """Forward kinematics of `c` in `pose` (see `synthetic.motions`); the feet are not floored here."""
    g = pose.get
    root_R = (
        _rot((0, 1, 0), g("pelvis_rotation", 0.0))
        @ _rot((0, 0, 1), g("pelvis_tilt", 0.0))
        @ _rot((1, 0, 0), g("pelvis_list", 0.0))
    )
    hip_y = c.ankle_height + c.shank + c.thigh
    pelvis = Frame(root_R, np.array([g("pelvis_tx", 0.0), hip_y, g("pelvis_tz", 0.0)]))
    frames: dict[str, Frame] = {"pelvis": pelvis}
    angles = _spine_angles(pose)
    bottoms: list[Vec] = []
    below = pelvis
    offset: tuple[float, ...] = (c.l5s1[0], c.l5s1[1], 0.0)
    for k, name in enumerate(VERTEBRAE):
        # the character's own joint order: twist, then side bend, then flexion
        r = (
            _rot(_SPINE_DOF_AXIS["rotation"], angles["rotation"][k])
            @ _rot(_SPINE_DOF_AXIS["bending"], angles["bending"][k])
            @ _rot(_SPINE_DOF_AXIS["extension"], angles["extension"][k])
        )
        frame = below.child(offset, r)
        frames[name] = frame
        bottoms.append(frame.p)
        below = frame
        dx, dy = c.spine_offsets[k]
        offset = (dx, dy, 0.0)
    r_skull = (
        _rot((0, 1, 0), angles["rotation"][24])
        @ _rot((1, 0, 0), angles["bending"][24])
        @ _rot((0, 0, 1), angles["extension"][24])
    )
    skull = below.child(offset, r_skull)
    frames["skull"] = skull

    def body_centre(name: str) -> Vec:
        dx, dy = c.spine_offsets[_V[name]]
        return frames[name].at((dx / 2, dy / 2, 0.0))

    bones: dict[str, Vec] = {
        "pelvis": pelvis.at((c.pelvis_bone[0], c.pelvis_bone[1], 0.0)),
        "spine_01": frames["L4"].p,
        "spine_02": frames["L2"].p,
        "spine_03": frames["T12"].p,
        "spine_04": body_centre("T7"),
        "spine_05": body_centre("T2"),
        "neck_01": frames["C7"].p,
        "neck_02": body_centre("C4"),
        "head": skull.p,
    }
    lm: dict[str, Vec] = {
        "hip": pelvis.at((c.sacral_point[0], c.sacral_point[1], 0.0)),
        "spine_01": body_centre("L5"),
        "spine_02": body_centre("L3"),
        "spine_03": frames["T12"].p,
        "spine_04": body_centre("T8"),
        "spine_05": body_centre("T3"),
        "neck": body_centre("C7"),
        "neck_02": frames["C3"].p,
        "neck_03": body_centre("C1"),
        "head": skull.at((0.0, c.vertex, 0.0)),
        "nose": skull.at((c.nose[0], c.nose[1], 0.0)),
    }
    t6 = body_centre("T6")
    h = c.height_m
    for side, s in (("l", -1.0), ("r", 1.0)):
        word = "left" if side == "l" else "right"
        lm[f"{word}_eye"] = bones[f"eye_{side}"] = skull.at((c.eye[0], c.eye[1], s * c.eye[2]))
        lm[f"{word}_ear"] = skull.at((c.ear[0], c.ear[1], s * c.ear[2]))
        lm[f"{word}_latissimus"] = t6 + frames["T6"].R @ np.array([-0.02 * h, 0.0, s * 0.054 * h])
        # shoulder girdle on T2, as the ribs carry it
        sc = frames["T2"].at((c.sc_joint[0], c.sc_joint[1], s * c.sc_joint[2]))
        clav_r = _rot((-s, 0, 0), g(f"clavicle_elevation_{side}", 0.0)) @ _rot(
            (0, -s, 0), g(f"clavicle_protraction_{side}", 0.0)
        )
        clav = Frame(frames["T2"].R @ clav_r, sc)
        frames[f"clavicle_{side}"] = clav
        cl = np.array([c.clavicle[0], c.clavicle[1], s * c.clavicle[2]])
        lm[f"{word}_clavicle"] = clav.at(0.1 * cl)
        arm_r = (
            _rot((0, 0, 1), g(f"shoulder_flexion_{side}", 0.0))
            @ _rot((s, 0, 0), g(f"shoulder_adduction_{side}", 0.0))
            @ _rot((0, s, 0), g(f"shoulder_rotation_{side}", 0.0))
        )
        upper = clav.child(cl, arm_r)
        lower = upper.child((0.0, -c.upper_arm, 0.0), _rot((0, 0, 1), g(f"elbow_flexion_{side}", 0.0)))
        hand = lower.child((0.0, -c.forearm, 0.0))
        frames |= {f"upperarm_{side}": upper, f"lowerarm_{side}": lower, f"hand_{side}": hand}
        bones |= {
            f"clavicle_{side}": sc,
            f"upperarm_{side}": upper.p,
            f"lowerarm_{side}": lower.p,
            f"hand_{side}": hand.p,
        }
        lm |= {f"{word}_shoulder": upper.p, f"{word}_elbow": lower.p, f"{word}_wrist": hand.p}
        leg_r = (
            _rot((0, 0, 1), g(f"hip_flexion_{side}", 0.0))
            @ _rot((s, 0, 0), g(f"hip_adduction_{side}", 0.0))
            @ _rot((0, s, 0), g(f"hip_rotation_{side}", 0.0))
        )
        thigh = pelvis.child((0.0, 0.0, s * c.hip_half_width), leg_r)
        calf = thigh.child((0.0, -c.thigh, 0.0), _rot((0, 0, -1), g(f"knee_flexion_{side}", 0.0)))
        foot = calf.child((0.0, -c.shank, 0.0), _rot((0, 0, 1), g(f"ankle_dorsiflexion_{side}", 0.0)))
        ball = foot.child((c.ball[0], c.ball[1], 0.0))
        frames |= {f"thigh_{side}": thigh, f"calf_{side}": calf, f"foot_{side}": foot, f"ball_{side}": ball}
        bones |= {
            f"thigh_{side}": thigh.p,
            f"calf_{side}": calf.p,
            f"foot_{side}": foot.p,
            f"ball_{side}": ball.p,
        }
        lm |= {
            f"{word}_hip": thigh.p,
            f"{word}_knee": calf.p,
            f"{word}_ankle": foot.p,
            f"{word}_heel": foot.at((c.heel[0], c.heel[1], 0.0)),
            f"{word}_big_toe": ball.at((c.big_toe[0], c.big_toe[1], -s * c.big_toe[2])),
            f"{word}_small_toe": ball.at((c.small_toe[0], c.small_toe[1], s * c.small_toe[2])),
        }
    a = np.array([frames[cs.frame].at(cs.p0) for cs in capsules])
    b = np.array([frames[cs.frame].at(cs.p1) for cs in capsules])
    radii = np.array([cs.radius for cs in capsules])
    return CharacterPose(
        bones=bones, landmarks=np.array([lm[n] for n in NAMES]), cap_a=a, cap_b=b, radii=radii
    )
