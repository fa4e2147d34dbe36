"""Anatomy of the default SpineTrack OpenSim model, as numbers: no OpenSim objects here.

Segment lengths after Drillis & Contini and Winter, *Biomechanics and Motor Control of Human
Movement*; mass fractions after de Leva 1996; lumbar segmental range of motion after White &
Panjabi, *Clinical Biomechanics of the Spine*. Frames follow OpenSim's convention: X forward,
Y up, Z right (metres); every body's origin is its proximal joint centre. The builder that turns
these numbers into an ``osim.Model`` is `synthetic.opensim_builder`; the topology is described there.

Landmarks follow the SpineTrack authors' marker set where it says where a point sits
(../shared/SPINETRACK.md, docs/landmarks.md): ``hip`` is the posterior sacral point about 9 cm
behind and 8.5 cm above the hip-joint midpoint, the clavicle points sit near the sternal end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from schemas.keypoints import NAMES
from schemas.render import OPTIONAL_BONES, REQUIRED_BONES
from synthetic.marker_map import LANDMARK_PREFIX, MarkerMap, MarkerSpec

DEFAULT_MODEL_NAME: Final[str] = "spinetrack_default"
#: Reference height (m) the proportions below are written for; everything scales with height / this.
REFERENCE_HEIGHT_M: Final[float] = 1.75

#: Lumbar levels from the sacrum up: (joint name, child body name).
LUMBAR_LEVELS: Final[tuple[tuple[str, str], ...]] = (
    ("L5_S1", "lumbar5"),
    ("L4_L5", "lumbar4"),
    ("L3_L4", "lumbar3"),
    ("L2_L3", "lumbar2"),
    ("L1_L2", "lumbar1"),
    ("T12_L1", "thorax"),
)
LUMBAR_DOFS: Final[tuple[str, ...]] = ("extension", "bending", "rotation")
#: Segmental range of motion in degrees per level (White & Panjabi, representative values), same
#: order as LUMBAR_LEVELS. Each level takes its share of the total lumbar motion.
LUMBAR_ROM_DEG: Final[dict[str, tuple[float, ...]]] = {
    "extension": (17.0, 16.0, 15.0, 14.0, 12.0, 12.0),
    "bending": (3.0, 6.0, 8.0, 6.0, 6.0, 8.0),
    "rotation": (1.0, 2.0, 2.0, 2.0, 2.0, 2.0),
}


#: Posterior sacral point in the pelvis frame, fractions of height: the authors' Hip marker is
#: (-0.092, +0.085) m from their hip-joint midpoint for a 1.8 m-class model.
SACRAL_POINT: Final[tuple[float, float, float]] = (-0.052, 0.048, 0.0)
#: Clavicle landmark: this fraction of the way from the sternoclavicular to the shoulder joint.
CLAVICLE_FRACTION: Final[float] = 0.1
LATISSIMUS_LATERAL: Final[float] = 0.054
#: Anatomical joint ranges (degrees, min/max) with a margin for the motions: IK is bounded by
#: them (clamped) instead of +-4 pi. Lumbar levels: per level, about twice White & Panjabi's ROM.
JOINT_RANGES_DEG: Final[dict[str, tuple[float, float]]] = {
    "pelvis_tilt": (-90.0, 90.0),
    "pelvis_list": (-60.0, 60.0),
    "neck_extension": (-60.0, 60.0),
    "neck_bending": (-50.0, 50.0),
    "head_extension": (-50.0, 50.0),
    "head_bending": (-40.0, 40.0),
    "head_rotation": (-90.0, 90.0),
    "clavicle_elevation": (-25.0, 45.0),
    "clavicle_protraction": (-35.0, 35.0),
    "shoulder_flexion": (-90.0, 190.0),
    "shoulder_adduction": (-180.0, 60.0),
    "shoulder_rotation": (-100.0, 100.0),
    "elbow_flexion": (-10.0, 160.0),
    "hip_flexion": (-40.0, 140.0),
    "hip_adduction": (-50.0, 40.0),
    "hip_rotation": (-60.0, 60.0),
    "knee_flexion": (-10.0, 160.0),
    "ankle_dorsiflexion": (-60.0, 50.0),
    "lumbar_extension": (-25.0, 20.0),
    "lumbar_bending": (-15.0, 15.0),
    "lumbar_rotation": (-10.0, 10.0),
}


def joint_range_deg(coordinate: str) -> tuple[float, float] | None:
    """The range of a default-model coordinate (sides and lumbar levels share one entry)."""
    if coordinate in JOINT_RANGES_DEG:
        return JOINT_RANGES_DEG[coordinate]
    for dof in LUMBAR_DOFS:
        if coordinate.endswith("_" + dof) and coordinate.split("_" + dof)[0] in {j for j, _ in LUMBAR_LEVELS}:
            return JOINT_RANGES_DEG[f"lumbar_{dof}"]
    base = coordinate.rsplit("_", 1)[0] if coordinate[-2:] in ("_l", "_r") else coordinate
    return JOINT_RANGES_DEG.get(base)


def lumbar_share(dof: str) -> tuple[float, ...]:
    """Fraction of the total lumbar `dof` motion carried by each level (sums to 1)."""
    rom = LUMBAR_ROM_DEG[dof]
    total = sum(rom)
    return tuple(r / total for r in rom)


def lumbar_coordinate(level: int, dof: str) -> str:
    return f"{LUMBAR_LEVELS[level][0]}_{dof}"


#: Pose-level names (see `expand_pose`): the total lumbar motion, spread over the six levels.
LUMBAR_TOTALS: Final[tuple[str, ...]] = tuple(f"lumbar_{d}" for d in LUMBAR_DOFS)


@dataclass(frozen=True)
class Capsule:
    """A body-fixed capsule for the renderer: segment p0-p1 in the body frame (m), radius (m).

    `part` names the colour group (torso, head, left_arm, right_leg, ...).
    """

    body: str
    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    radius: float
    part: str


#: Relative vertebral body + disc heights (mean anatomical values, Busscher et al. 2010 style
#: tables; ratios within a region). Thoracic T12 first, cervical C7 first.
THORACIC_HEIGHTS: Final[tuple[float, ...]] = (
    1.1,
    1.07,
    1.03,
    1.0,
    0.96,
    0.92,
    0.88,
    0.85,
    0.82,
    0.79,
    0.76,
    0.74,
)
CERVICAL_HEIGHTS: Final[tuple[float, ...]] = (0.95, 0.92, 0.9, 0.9, 0.92, 1.25, 0.9)
#: Anatomy revisions: 1 = before issue 12 (evenly spaced vertebrae, hip at the hip-joint midpoint,
#: mid-clavicle points, head joint at the C1 centre); 2 = anatomical vertebral heights, the head
#: joint at C0/C1 (where the Unreal head bone sits) and the authors' landmark definitions.
ANATOMY_REVISIONS: Final[tuple[int, ...]] = (1, 2)
LATEST_REVISION: Final[int] = 2


def _cumulative_fraction(heights: Sequence[float], position: float) -> float:
    """Fraction of a region's length below `position`, counted in vertebrae from its bottom."""
    total = sum(heights)
    whole = math.floor(position)
    below = sum(heights[:whole])
    if whole < len(heights):
        below += (position - whole) * heights[whole]
    return below / total


class _Proportions:
    """Segment geometry for one height: every length a fraction of the subject height."""

    def __init__(self, height_m: float, revision: int = LATEST_REVISION) -> None:
        if revision not in ANATOMY_REVISIONS:
            raise ValueError(f"unknown anatomy revision {revision}; known {ANATOMY_REVISIONS}")
        self.h = height_m
        self.revision = revision

    def __call__(self, *fractions: float) -> tuple[float, float, float]:
        x, y, z = (f * self.h for f in fractions)
        return (x, y, z)

    # joint offsets (child joint centre in the parent body frame), fractions of height -----------
    hip_half_width = 0.05  # hip joint centres ~17.5 cm apart at 1.75 m
    hip_height = 0.53  # standing hip joint centre above the floor
    l5s1 = (-0.012, 0.057, 0.0)  # sacral endplate: ~10 cm above, ~2 cm behind the femoral heads
    lumbar_level = 0.02  # one lumbar vertebra + disc (~3.5 cm)
    # sagittal offsets of each lumbar joint from the one below: the lordotic curve (L3 most anterior)
    lordosis = (0.006, 0.003, 0.0, -0.003, -0.005, -0.005)
    thoracic_length = 0.155  # T12/L1 to C7/T1
    c7t1_forward = 0.01
    kyphosis = 0.018  # backward bulge of the mid thoracic spine
    cervical_length = 0.058  # C7/T1 to the C1 (atlanto-axial) centre
    cervical_forward = 0.012
    cervical_lordosis = 0.008
    sc_joint = (0.055, 0.13, 0.015)  # sternoclavicular joint in the thorax frame (|z|)
    clavicle = (-0.045, 0.007, 0.09)  # SC -> glenohumeral centre in the clavicle frame (|z|)
    upper_arm = 0.186
    forearm = 0.146
    hand = 0.108
    thigh = 0.245
    shank = 0.246
    ankle_height = 0.039
    mtp = (0.074, -0.034, 0.0)  # ankle -> ball of the foot (MTP joints)

    def thoracic_point(self, t: float) -> tuple[float, float, float]:
        """Vertebral-body centre at fraction t of the thoracic spine (0 = T12/L1, 1 = C7/T1)."""
        x = -self.kyphosis * math.sin(math.pi * t) + self.c7t1_forward * t
        return self(x, self.thoracic_length * t, 0.0)

    def cervical_point(self, t: float) -> tuple[float, float, float]:
        """Vertebral-body centre at fraction t of the neck (0 = C7/T1, 1 = C1)."""
        x = self.cervical_forward * t + self.cervical_lordosis * math.sin(math.pi * t)
        return self(x, self.cervical_length * t, 0.0)

    def thoracic_level(self, vertebra: int) -> float:
        """Fraction t of the body centre of thoracic vertebra Tn (T12 lowest)."""
        if self.revision == 1:
            return (12.5 - vertebra) / 12.0
        return _cumulative_fraction(THORACIC_HEIGHTS, 12.5 - vertebra)

    def cervical_level(self, position: float) -> float:
        """Fraction t for a position counted in vertebrae above C7/T1.

        Revision 1: 6.5 even levels to the C1 centre (t = 1); revision 2: seven vertebrae with
        anatomical heights to the skull joint C0/C1 (t = 1).
        """
        if self.revision == 1:
            return position / 6.5
        return _cumulative_fraction(CERVICAL_HEIGHTS, position)


# de Leva (1996) mass fractions; the trunk split into pelvis, five lumbar bodies and thorax.
_MASS_FRACTIONS: Final[dict[str, float]] = {
    "pelvis": 0.1117,
    "lumbar": 0.1633 / 5,
    "thorax": 0.1596 - 0.005,
    "neck": 0.0694 * 0.25,
    "head": 0.0694 * 0.75,
    "clavicle": 0.0025,
    "humerus": 0.0271,
    "forearm": 0.0162,
    "hand": 0.0061,
    "femur": 0.1416,
    "tibia": 0.0433,
    "foot": 0.0137 * 0.8,
    "toes": 0.0137 * 0.2,
}


@dataclass(frozen=True)
class DefaultAnatomy:
    """Everything the default model is made of, for one height: joint centres, markers, capsules."""

    height_m: float
    mass_kg: float
    marker_map: MarkerMap
    capsules: tuple[Capsule, ...]


def default_anatomy(
    height_m: float = REFERENCE_HEIGHT_M, mass_kg: float = 70.0, revision: int = LATEST_REVISION
) -> DefaultAnatomy:
    """Marker placement and renderer capsules of the default model (no OpenSim objects)."""
    P = _Proportions(height_m, revision)
    h = height_m
    bones: dict[str, MarkerSpec] = {}
    marks: dict[str, MarkerSpec] = {}
    caps: list[Capsule] = []
    lumbar_top = [P(P.lordosis[i], P.lumbar_level, 0.0) for i in range(len(LUMBAR_LEVELS))]

    # pelvis: the Unreal pelvis bone sits in the middle of the pelvis, a few cm above the hip joints;
    # being off the inter-hip axis it makes pelvic tilt observable.
    bones["pelvis"] = MarkerSpec("pelvis", P(-0.01, 0.03, 0.0))
    # SpineTrack "hip" (sacrum): the authors' posterior sacral point, 9.2 cm behind and 8.5 cm above
    # the hip-joint midpoint at their model's size (docs/landmarks.md), not the hip-joint midpoint.
    marks["hip"] = MarkerSpec("pelvis", P(*SACRAL_POINT) if revision >= 2 else (0.0, 0.0, 0.0))
    caps.append(Capsule("pelvis", P(0.0, 0.01, -0.045), P(0.0, 0.01, 0.045), 0.062 * h, "torso"))
    caps.append(Capsule("pelvis", P(0.005, 0.04, 0.0), P(0.01, 0.055, 0.0), 0.075 * h, "torso"))

    # lumbar spine. Unreal spine_01 ~ L4/L5, spine_02 ~ L2/L3, spine_03 ~ T12/L1.
    bones["spine_01"] = MarkerSpec("lumbar4", (0.0, 0.0, 0.0))
    bones["spine_02"] = MarkerSpec("lumbar2", (0.0, 0.0, 0.0))
    half = tuple(0.5 * c for c in lumbar_top[0])
    # landmarks on the vertebral bodies: L5 and L3 body centres, L1's upper endplate (T12/L1).
    marks["spine_01"] = MarkerSpec("lumbar5", (half[0], half[1], half[2]))
    l3 = tuple(0.5 * c for c in lumbar_top[2])
    marks["spine_02"] = MarkerSpec("lumbar3", (l3[0], l3[1], l3[2]))
    marks["spine_03"] = MarkerSpec("lumbar1", lumbar_top[4])
    for i, (_, body) in enumerate(LUMBAR_LEVELS[:-1]):
        top = lumbar_top[i]
        # abdomen in front of the vertebral bodies, as two side-by-side capsules for an oval section
        for lr in (-1.0, 1.0):
            caps.append(
                Capsule(
                    body,
                    (0.035 * h, 0.0, lr * 0.03 * h),
                    (0.035 * h + top[0], top[1], lr * 0.03 * h),
                    0.062 * h,
                    "torso",
                )
            )

    # thorax. spine_04 ~ T7, spine_05 ~ T2 in the UE5 mannequin, neck_01 at C7/T1.
    bones["spine_03"] = MarkerSpec("thorax", (0.0, 0.0, 0.0))
    bones["spine_04"] = MarkerSpec("thorax", P.thoracic_point(P.thoracic_level(7)))
    bones["spine_05"] = MarkerSpec("thorax", P.thoracic_point(P.thoracic_level(2)))
    marks["spine_04"] = MarkerSpec("thorax", P.thoracic_point(P.thoracic_level(8)))
    marks["spine_05"] = MarkerSpec("thorax", P.thoracic_point(P.thoracic_level(3)))
    t8 = P.thoracic_point(P.thoracic_level(8))
    # latissimus (experimental), as the authors' marker: between T8 and T3 (about T6), 5.4 % of the
    # height lateral and 2 % behind the vertebral body line
    t6 = P.thoracic_point(P.thoracic_level(6))
    for lr, name in ((-1.0, "left_latissimus"), (1.0, "right_latissimus")):
        if revision >= 2:
            marks[name] = MarkerSpec("thorax", (t6[0] - 0.02 * h, t6[1], lr * LATISSIMUS_LATERAL * h))
        else:  # revision 1: lateral border of the back at T8 height
            marks[name] = MarkerSpec("thorax", (t8[0] - 0.005 * h, t8[1], lr * 0.075 * h))
    for lr in (-1.0, 1.0):
        caps.append(Capsule("thorax", P(0.035, 0.0, 0.03 * lr), P(0.03, 0.115, 0.05 * lr), 0.07 * h, "torso"))
    caps.append(Capsule("thorax", P(0.02, 0.13, -0.07), P(0.02, 0.13, 0.07), 0.045 * h, "torso"))
    c7t1 = P.thoracic_point(1.0)

    # neck and head
    bones["neck_01"] = MarkerSpec("neck", (0.0, 0.0, 0.0))
    bones["neck_02"] = MarkerSpec("neck", P.cervical_point(P.cervical_level(3.5)))
    marks["neck"] = MarkerSpec("neck", P.cervical_point(P.cervical_level(0.5)))  # C7 body
    marks["neck_02"] = MarkerSpec("neck", P.cervical_point(P.cervical_level(4.0)))  # C3/C4 disc
    c1 = P.cervical_point(1.0)  # the head joint: C1 centre (revision 1) or C0/C1 (revision 2)
    # C1 (atlas) body centre; in revision 1 it is the head joint centre itself
    marks["neck_03"] = MarkerSpec("neck", P.cervical_point(P.cervical_level(6.5)))
    caps.append(Capsule("neck", P(0.015, 0.0, 0.0), (c1[0] + 0.01 * h, c1[1], 0.0), 0.032 * h, "neck"))
    bones["head"] = MarkerSpec("head", (0.0, 0.0, 0.0))
    # face: eyes ~4 cm above and ~9 cm in front of C1, interpupillary distance ~6.3 cm; tragus just
    # above C1, at the side of the head; nose tip in front of the eyes; vertex on top of the skull.
    for lr, eye, ear, bone in (
        (-1.0, "left_eye", "left_ear", "eye_l"),
        (1.0, "right_eye", "right_ear", "eye_r"),
    ):
        marks[eye] = MarkerSpec("head", P(0.05, 0.04, 0.018 * lr))
        bones[bone] = marks[eye]
        marks[ear] = MarkerSpec("head", P(-0.002, 0.028, 0.043 * lr))
    marks["nose"] = MarkerSpec("head", P(0.064, 0.02, 0.0))
    marks["head"] = MarkerSpec("head", P(0.0, 0.103, 0.0))
    caps.append(Capsule("head", P(0.015, 0.035, 0.0), P(0.0, 0.06, 0.0), 0.05 * h, "head"))
    caps.append(Capsule("head", P(0.035, 0.0, 0.0), P(0.035, 0.025, 0.0), 0.03 * h, "head"))

    sides: tuple[tuple[str, float], ...] = (("l", -1.0), ("r", 1.0))
    # shoulder girdle and arms
    for side, s in sides:
        word = "left" if side == "l" else "right"
        arm = f"{word}_arm"
        cl = P(P.clavicle[0], P.clavicle[1], s * P.clavicle[2])
        bones[f"clavicle_{side}"] = MarkerSpec(f"clavicle_{side}", (0.0, 0.0, 0.0))
        # near the sternal end (the authors' marker: 2.5 cm from the midline): 10 % along the clavicle
        k = CLAVICLE_FRACTION if revision >= 2 else 0.5  # revision 1: mid-clavicle, 5 mm up
        marks[f"{word}_clavicle"] = MarkerSpec(
            f"clavicle_{side}", (k * cl[0], k * cl[1] + (0.005 * h if revision == 1 else 0.0), k * cl[2])
        )
        caps.append(Capsule(f"clavicle_{side}", (0.0, 0.0, 0.0), cl, 0.022 * h, "torso"))
        bones[f"upperarm_{side}"] = MarkerSpec(f"humerus_{side}", (0.0, 0.0, 0.0))
        marks[f"{word}_shoulder"] = MarkerSpec(f"humerus_{side}", (0.0, 0.0, 0.0))
        caps.append(Capsule(f"humerus_{side}", (0.0, 0.0, 0.0), P(0, -P.upper_arm, 0), 0.03 * h, arm))
        bones[f"lowerarm_{side}"] = MarkerSpec(f"forearm_{side}", (0.0, 0.0, 0.0))
        marks[f"{word}_elbow"] = MarkerSpec(f"forearm_{side}", (0.0, 0.0, 0.0))
        caps.append(Capsule(f"forearm_{side}", (0.0, 0.0, 0.0), P(0, -P.forearm, 0), 0.024 * h, arm))
        bones[f"hand_{side}"] = MarkerSpec(f"hand_{side}", (0.0, 0.0, 0.0))
        marks[f"{word}_wrist"] = MarkerSpec(f"hand_{side}", (0.0, 0.0, 0.0))
        caps.append(Capsule(f"hand_{side}", P(0, -0.01, 0), P(0, -0.075, 0), 0.022 * h, f"{word}_hand"))

    # legs and feet
    for side, s in sides:
        word = "left" if side == "l" else "right"
        leg = f"{word}_leg"
        bones[f"thigh_{side}"] = MarkerSpec(f"femur_{side}", (0.0, 0.0, 0.0))
        marks[f"{word}_hip"] = MarkerSpec(f"femur_{side}", (0.0, 0.0, 0.0))
        caps.append(Capsule(f"femur_{side}", P(0, 0, -0.008 * s), P(0, -P.thigh, 0), 0.045 * h, leg))
        bones[f"calf_{side}"] = MarkerSpec(f"tibia_{side}", (0.0, 0.0, 0.0))
        marks[f"{word}_knee"] = MarkerSpec(f"tibia_{side}", (0.0, 0.0, 0.0))
        caps.append(Capsule(f"tibia_{side}", (0.0, 0.0, 0.0), P(0, -P.shank, 0), 0.033 * h, leg))
        bones[f"foot_{side}"] = MarkerSpec(f"foot_{side}", (0.0, 0.0, 0.0))
        marks[f"{word}_ankle"] = MarkerSpec(f"foot_{side}", (0.0, 0.0, 0.0))
        # heel: back of the calcaneus, ~25% of the foot length behind the ankle, near the floor
        marks[f"{word}_heel"] = MarkerSpec(f"foot_{side}", P(-0.037, -0.030, 0.0))
        caps.append(
            Capsule(f"foot_{side}", P(-0.025, -0.022, 0.0), P(0.07, -0.026, 0.0), 0.018 * h, f"{word}_foot")
        )
        bones[f"ball_{side}"] = MarkerSpec(f"toes_{side}", (0.0, 0.0, 0.0))
        # toe tips: hallux on the medial side (towards the midline, -s), fifth toe lateral and shorter
        marks[f"{word}_big_toe"] = MarkerSpec(f"toes_{side}", P(0.041, -0.003, -0.012 * s))
        marks[f"{word}_small_toe"] = MarkerSpec(f"toes_{side}", P(0.024, -0.003, 0.024 * s))
        # toes: a medial capsule to the hallux tip and a lateral one to the fifth toe, so the toe tips
        # lie on the rendered surface
        caps.append(
            Capsule(
                f"toes_{side}",
                P(0.0, 0.0, -0.008 * s),
                P(0.036, -0.001, -0.012 * s),
                0.011 * h,
                f"{word}_foot",
            )
        )
        caps.append(
            Capsule(
                f"toes_{side}",
                P(-0.012, 0.0, 0.018 * s),
                P(0.02, -0.001, 0.022 * s),
                0.01 * h,
                f"{word}_foot",
            )
        )

    mm = MarkerMap(
        model="spinetrack-default",
        bones=bones,
        landmarks={name: marks[name] for name in NAMES},
        scale_segments=default_scale_segments(),
        axis_scale_segments=default_axis_scale_segments(),
    )
    _ = (lumbar_top, c7t1)
    return DefaultAnatomy(height_m, mass_kg, mm, tuple(caps))


def default_axis_scale_segments() -> dict[str, dict[str, tuple[tuple[str, str], ...]]]:
    """Per body and axis (x, y, z of the body frame), the bone pairs that give that axis' factor.

    Lengths scale the long axis (y); widths (hip joints, shoulders) scale z. An axis left out takes
    the mean of the body's other factors (see `synthetic.alignment`).
    """
    out: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
        "pelvis": {"y": (("pelvis", "spine_01"),), "z": (("thigh_l", "thigh_r"),)},
        "thorax": {
            "x": (("spine_05", "clavicle_l"), ("spine_05", "clavicle_r")),
            "y": (("spine_03", "spine_04"), ("spine_03", "spine_05"), ("spine_03", "neck_01")),
            "z": (("clavicle_l", "clavicle_r"),),
        },
        "neck": {"y": (("neck_01", "head"),)},
        "head": {
            "x": (("head", "eye_l"), ("head", "eye_r")),
            "y": (("head", "eye_l"), ("head", "eye_r")),
            "z": (("eye_l", "eye_r"),),
        },
    }
    lumbar = (("spine_01", "spine_02"), ("spine_02", "spine_03"))
    for _, body in LUMBAR_LEVELS[:-1]:
        out[body] = {"y": lumbar}
    for s in ("l", "r"):
        out[f"clavicle_{s}"] = {"z": ((f"clavicle_{s}", f"upperarm_{s}"),)}
        out[f"humerus_{s}"] = {"y": ((f"upperarm_{s}", f"lowerarm_{s}"),)}
        out[f"forearm_{s}"] = {"y": ((f"lowerarm_{s}", f"hand_{s}"),)}
        out[f"hand_{s}"] = {"y": ((f"lowerarm_{s}", f"hand_{s}"),)}
        out[f"femur_{s}"] = {"y": ((f"thigh_{s}", f"calf_{s}"),)}
        out[f"tibia_{s}"] = {"y": ((f"calf_{s}", f"foot_{s}"),)}
        out[f"foot_{s}"] = {"x": ((f"foot_{s}", f"ball_{s}"),)}
        out[f"toes_{s}"] = {"x": ((f"foot_{s}", f"ball_{s}"),)}
    return out


def default_scale_segments() -> dict[str, tuple[tuple[str, str], ...]]:
    """For each body of the default model, bone pairs whose distance ratio gives its scale factor."""
    lumbar = (("pelvis", "spine_01"), ("spine_01", "spine_02"), ("spine_02", "spine_03"))
    out: dict[str, tuple[tuple[str, str], ...]] = {
        "pelvis": (("thigh_l", "thigh_r"), ("pelvis", "spine_01")),
        "thorax": (("spine_03", "neck_01"), ("clavicle_l", "clavicle_r")),
        "neck": (("neck_01", "head"),),
        "head": (("neck_01", "head"),),
    }
    for _, body in LUMBAR_LEVELS[:-1]:
        out[body] = lumbar
    for s in ("l", "r"):
        out[f"clavicle_{s}"] = ((f"clavicle_{s}", f"upperarm_{s}"),)
        out[f"humerus_{s}"] = ((f"upperarm_{s}", f"lowerarm_{s}"),)
        out[f"forearm_{s}"] = ((f"lowerarm_{s}", f"hand_{s}"),)
        out[f"hand_{s}"] = ((f"lowerarm_{s}", f"hand_{s}"),)
        out[f"femur_{s}"] = ((f"thigh_{s}", f"calf_{s}"),)
        out[f"tibia_{s}"] = ((f"calf_{s}", f"foot_{s}"),)
        out[f"foot_{s}"] = ((f"foot_{s}", f"ball_{s}"),)
        out[f"toes_{s}"] = ((f"foot_{s}", f"ball_{s}"),)
    return out


# -- posing -----------------------------------------------------------------------------------
def expand_pose(pose: Mapping[str, float]) -> dict[str, float]:
    """Turn pose-level names into model coordinates.

    ``lumbar_extension|bending|rotation`` (total lumbar motion, rad) become the six coupled level
    coordinates; every other key passes through unchanged. Explicit level coordinates win.
    """
    out: dict[str, float] = {}
    for dof in LUMBAR_DOFS:
        key = f"lumbar_{dof}"
        if key in pose:
            for i, share in enumerate(lumbar_share(dof)):
                out[lumbar_coordinate(i, dof)] = share * float(pose[key])
    for key, value in pose.items():
        if key not in LUMBAR_TOTALS:
            out[key] = float(value)
    # dependent lumbar levels must agree with L5/S1 even if only L5/S1 was given
    for dof in LUMBAR_DOFS:
        base = lumbar_coordinate(0, dof)
        if base in out:
            shares = lumbar_share(dof)
            for i in range(1, len(LUMBAR_LEVELS)):
                out[lumbar_coordinate(i, dof)] = out[base] * shares[i] / shares[0]
    return out


def landmark_names() -> tuple[str, ...]:
    """Marker names of the 37 landmarks, in schemas.keypoints order."""
    return tuple(LANDMARK_PREFIX + n for n in NAMES)


def bone_names(include_optional: bool = True) -> tuple[str, ...]:
    """Unreal bone names the model carries markers for (required first)."""
    return REQUIRED_BONES + (OPTIONAL_BONES if include_optional else ())


def capsules_in_ground(
    capsules: Sequence[Capsule],
    rots: NDArray[np.float64],
    origins: NDArray[np.float64],
    body_index: Mapping[str, int],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Capsule endpoints (N, 2, 3) in ground metres from body transforms."""
    idx = np.array([body_index[c.body] for c in capsules])
    local = np.array([[c.p0, c.p1] for c in capsules])  # (N, 2, 3)
    world = np.einsum("nij,nkj->nki", rots[idx], local) + origins[idx][:, None, :]
    return world, np.array([c.radius for c in capsules])


def builtin_model_files() -> tuple[Path, ...]:
    """The source files that define the built-in model (for provenance hashes; no OpenSim import).

    synthetic/opensim_model.py only re-exports these two, so hashing it would miss anatomy changes.
    """
    here = Path(__file__).resolve().parent
    return (here / "anatomy.py", here / "opensim_builder.py")
