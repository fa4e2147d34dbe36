"""The default SpineTrack full-body OpenSim model, built in code with the opensim 4.6 API.

No geometry files or model files ship with the opensim wheel, so the model is assembled here from
anthropometric proportions of the subject's height (segment lengths after Drillis & Contini and
Winter, *Biomechanics and Motor Control of Human Movement*; mass fractions after de Leva 1996).

Frames follow OpenSim's convention: ground X forward, Y up, Z right (metres). Every body's origin is
its proximal joint centre, its Y axis runs distal -> proximal in the neutral standing pose.

Topology (joints in parentheses; coordinates are rotations in radians unless noted):

- ground -> pelvis (``ground_pelvis``: yaw about Y, tilt about Z, list about X, then tx, ty, tz in m)
- pelvis -> lumbar5 -> lumbar4 -> lumbar3 -> lumbar2 -> lumbar1 -> thorax: the articulated lumbar spine,
  joints ``L5_S1``, ``L4_L5``, ``L3_L4``, ``L2_L3``, ``L1_L2``, ``T12_L1`` with three rotations each
  (extension about Z, bending about X, rotation about Y). The sacrum is part of the pelvis.
  Poses given as total lumbar motion (``lumbar_extension`` ...) are spread over the six levels in
  proportion to the segmental range of motion (White & Panjabi, *Clinical Biomechanics of the Spine*),
  see `expand_pose`. ``coupled_lumbar=True`` additionally enforces that spread with
  coupler constraints, as the published OpenSim lumbar models do (Christophy 2012,
  Beaucage-Gauvreau 2019). It is off by default: measured on exact targets, IK with the couplers
  was 6x slower and *less* accurate (6 mm vs 1 mm landmark error) because the solver has to
  project onto the constraint manifold every iteration. The free levels are not all observable from
  one point per Unreal spine bone, but the landmarks are: they sit on or between observed joint
  centres, and `track` starts each frame from the previous solution, so unobserved directions
  (e.g. how axial twist is shared between levels) do not wander.
- thorax -> neck (``C7_T1``: extension, bending; C7..C2 as one segment) -> head (``C1_head``:
  extension, bending, rotation). Half of all cervical axial rotation happens at C1/C2, so the neck's
  axial rotation is given to the head joint: a single spine of points cannot observe twist of the
  neck segment itself.
- thorax -> clavicle_l/r (``sternoclavicular_*``: elevation, protraction) -> humerus (``shoulder_*``:
  flexion, adduction, rotation) -> forearm (``elbow_*``: flexion) -> hand (welded: wrist orientation
  is not observable from joint-centre bones).
- pelvis -> femur (``hip_*``: flexion, adduction, rotation) -> tibia (``knee_*``: flexion) -> foot
  (``ankle_*``: dorsiflexion) -> toes (welded at the metatarsophalangeal joint).

Markers: ``ue_<bone>`` at the joint centre each Unreal bone stands for (IK targets) and
``kp_<name>`` for each of the 37 SpineTrack landmarks (the outputs). Both come from one
`MarkerMap` so a user-supplied .osim is handled by the same code (see synthetic/marker_map.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import opensim as osim
from numpy.typing import NDArray

from schemas.keypoints import NAMES
from schemas.render import OPTIONAL_BONES, REQUIRED_BONES
from synthetic.marker_map import BONE_PREFIX, LANDMARK_PREFIX, MarkerMap, MarkerSpec

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


class _Proportions:
    """Segment geometry for one height: every length a fraction of the subject height."""

    def __init__(self, height_m: float) -> None:
        self.h = height_m

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

    @staticmethod
    def thoracic_level(vertebra: int) -> float:
        """Fraction t of the body centre of thoracic vertebra Tn (T12 lowest)."""
        return (12.5 - vertebra) / 12.0

    @staticmethod
    def cervical_level(position: float) -> float:
        """Fraction t for a position counted in vertebrae above C7/T1 (6.5 levels to C1)."""
        return position / 6.5


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


def _vec(v: Sequence[float]) -> osim.Vec3:
    return osim.Vec3(float(v[0]), float(v[1]), float(v[2]))


def _body(name: str, mass: float, length: float, radius: float) -> osim.Body:
    """A body with a solid-cylinder inertia about its centre (centre of mass half way down)."""
    ixx = mass * (3 * radius**2 + length**2) / 12.0
    iyy = 0.5 * mass * radius**2
    inertia = osim.Inertia(ixx, iyy, ixx)
    return osim.Body(name, mass, osim.Vec3(0, -length / 2.0, 0), inertia)


def _custom_joint(
    name: str,
    parent: osim.PhysicalFrame,
    location_in_parent: Sequence[float],
    child: osim.Body,
    rotations: Sequence[tuple[str, Sequence[float]]],
    translations: Sequence[str] = (),
) -> osim.CustomJoint:
    """CustomJoint with up to three rotations (body-fixed sequence) and optional ground translations."""
    st = osim.SpatialTransform()
    used_axes: list[tuple[float, float, float]] = []
    for i, (coord, axis) in enumerate(rotations):
        ta = st.updTransformAxis(i)
        names = osim.ArrayStr()
        names.append(coord)
        ta.setCoordinateNames(names)
        ta.setAxis(_vec(axis))
        ta.set_function(osim.LinearFunction(1.0, 0.0))
        used_axes.append((abs(axis[0]), abs(axis[1]), abs(axis[2])))
    # Unused rotation axes must still be independent of the used ones.
    spare = [a for a in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)) if a not in used_axes]
    for i in range(len(rotations), 3):
        ta = st.updTransformAxis(i)
        ta.setAxis(_vec(spare.pop(0)))
        ta.set_function(osim.Constant(0.0))
    for i, axis in enumerate(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))):
        ta = st.updTransformAxis(3 + i)
        ta.setAxis(_vec(axis))
        if i < len(translations):
            names = osim.ArrayStr()
            names.append(translations[i])
            ta.setCoordinateNames(names)
            ta.set_function(osim.LinearFunction(1.0, 0.0))
        else:
            ta.set_function(osim.Constant(0.0))
    zero = osim.Vec3(0, 0, 0)
    return osim.CustomJoint(name, parent, _vec(location_in_parent), zero, child, zero, zero, st)


def _weld(
    name: str, parent: osim.PhysicalFrame, location: Sequence[float], child: osim.Body
) -> osim.WeldJoint:
    zero = osim.Vec3(0, 0, 0)
    return osim.WeldJoint(name, parent, _vec(location), zero, child, zero, zero)


@dataclass(frozen=True)
class DefaultAnatomy:
    """Everything the default model is made of, for one height: joint centres, markers, capsules."""

    height_m: float
    mass_kg: float
    marker_map: MarkerMap
    capsules: tuple[Capsule, ...]


def default_anatomy(height_m: float = REFERENCE_HEIGHT_M, mass_kg: float = 70.0) -> DefaultAnatomy:
    """Marker placement and renderer capsules of the default model (no OpenSim objects)."""
    P = _Proportions(height_m)
    h = height_m
    bones: dict[str, MarkerSpec] = {}
    marks: dict[str, MarkerSpec] = {}
    caps: list[Capsule] = []
    lumbar_top = [P(P.lordosis[i], P.lumbar_level, 0.0) for i in range(len(LUMBAR_LEVELS))]

    # pelvis: the Unreal pelvis bone sits in the middle of the pelvis, a few cm above the hip joints;
    # being off the inter-hip axis it makes pelvic tilt observable.
    bones["pelvis"] = MarkerSpec("pelvis", P(-0.01, 0.03, 0.0))
    # Halpe26 "hip" is the midpoint of the hip joints (SpineTrack: sacrum midpoint, same place in 2D).
    marks["hip"] = MarkerSpec("pelvis", (0.0, 0.0, 0.0))
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
    # latissimus (experimental): the lateral border of the back, posterior axillary line, at T8 height
    for lr, name in ((-1.0, "left_latissimus"), (1.0, "right_latissimus")):
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
    c1 = P.cervical_point(1.0)
    marks["neck_03"] = MarkerSpec("neck", c1)  # C1 (atlas) = the head joint centre
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
        marks[f"{word}_clavicle"] = MarkerSpec(
            f"clavicle_{side}", (cl[0] / 2, cl[1] / 2 + 0.005 * h, cl[2] / 2)
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
    )
    _ = (lumbar_top, c7t1)
    return DefaultAnatomy(height_m, mass_kg, mm, tuple(caps))


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


def build_default_model(
    height_m: float = REFERENCE_HEIGHT_M, mass_kg: float = 70.0, *, coupled_lumbar: bool = False
) -> osim.Model:
    """The default SpineTrack full-body model for a subject of `height_m` and `mass_kg`.

    Standing neutral pose at all-zero coordinates except ``pelvis_ty`` (hip height), feet on the
    floor (y = 0). Carries ``ue_*`` bone markers and ``kp_*`` landmark markers.
    """
    if not (0.5 < height_m < 2.6):
        raise ValueError(f"height_m={height_m} is not a human height in metres")
    if not (5.0 < mass_kg < 400.0):
        raise ValueError(f"mass_kg={mass_kg} is not a human mass in kg")
    P = _Proportions(height_m)
    h = height_m
    anatomy = default_anatomy(height_m, mass_kg)
    model = osim.Model()
    model.setName(DEFAULT_MODEL_NAME)
    model.setGravity(osim.Vec3(0, -9.80665, 0))
    ground = model.getGround()

    def add(body: osim.Body, joint: osim.Joint) -> osim.Body:
        model.addBody(body)
        model.addJoint(joint)
        return body

    def mass(key: str) -> float:
        return _MASS_FRACTIONS[key] * mass_kg

    pelvis = _body("pelvis", mass("pelvis"), 0.1 * h, 0.07 * h)
    add(
        pelvis,
        _custom_joint(
            "ground_pelvis",
            ground,
            (0.0, 0.0, 0.0),
            pelvis,
            (("pelvis_rotation", (0, 1, 0)), ("pelvis_tilt", (0, 0, 1)), ("pelvis_list", (1, 0, 0))),
            ("pelvis_tx", "pelvis_ty", "pelvis_tz"),
        ),
    )
    parent: osim.Body = pelvis
    location = P(*P.l5s1)
    for i, (joint_name, body_name) in enumerate(LUMBAR_LEVELS):
        if body_name == "thorax":
            child = _body("thorax", mass("thorax"), P.thoracic_length * h, 0.1 * h)
        else:
            child = _body(body_name, mass("lumbar"), P.lumbar_level * h, 0.09 * h)
        rots = (
            (lumbar_coordinate(i, "extension"), (0, 0, 1)),
            (lumbar_coordinate(i, "bending"), (1, 0, 0)),
            (lumbar_coordinate(i, "rotation"), (0, 1, 0)),
        )
        add(child, _custom_joint(joint_name, parent, location, child, rots))
        parent = child
        location = P(P.lordosis[i], P.lumbar_level, 0.0)
    thorax = parent

    neck = _body("neck", mass("neck"), P.cervical_length * h, 0.04 * h)
    add(
        neck,
        _custom_joint(
            "C7_T1",
            thorax,
            P.thoracic_point(1.0),
            neck,
            (("neck_extension", (0, 0, 1)), ("neck_bending", (1, 0, 0))),
        ),
    )
    head = _body("head", mass("head"), 0.11 * h, 0.06 * h)
    add(
        head,
        _custom_joint(
            "C1_head",
            neck,
            P.cervical_point(1.0),
            head,
            (("head_extension", (0, 0, 1)), ("head_bending", (1, 0, 0)), ("head_rotation", (0, 1, 0))),
        ),
    )

    for side, s in (("l", -1.0), ("r", 1.0)):
        sc = P(P.sc_joint[0], P.sc_joint[1], s * P.sc_joint[2])
        clav = _body(f"clavicle_{side}", mass("clavicle"), 0.1 * h, 0.01 * h)
        # elevation about the forward axis (mirrored on the left so + is up on both sides)
        add(
            clav,
            _custom_joint(
                f"sternoclavicular_{side}",
                thorax,
                sc,
                clav,
                ((f"clavicle_elevation_{side}", (-s, 0, 0)), (f"clavicle_protraction_{side}", (0, -s, 0))),
            ),
        )
        gh = P(P.clavicle[0], P.clavicle[1], s * P.clavicle[2])
        hum = _body(f"humerus_{side}", mass("humerus"), P.upper_arm * h, 0.03 * h)
        add(
            hum,
            _custom_joint(
                f"shoulder_{side}",
                clav,
                gh,
                hum,
                (
                    (f"shoulder_flexion_{side}", (0, 0, 1)),
                    (f"shoulder_adduction_{side}", (s, 0, 0)),
                    (f"shoulder_rotation_{side}", (0, s, 0)),
                ),
            ),
        )
        fore = _body(f"forearm_{side}", mass("forearm"), P.forearm * h, 0.025 * h)
        add(
            fore,
            _custom_joint(
                f"elbow_{side}", hum, P(0, -P.upper_arm, 0), fore, ((f"elbow_flexion_{side}", (0, 0, 1)),)
            ),
        )
        hand = _body(f"hand_{side}", mass("hand"), P.hand * h, 0.02 * h)
        add(hand, _weld(f"wrist_{side}", fore, P(0, -P.forearm, 0), hand))

        hip = P(0.0, 0.0, s * P.hip_half_width)
        femur = _body(f"femur_{side}", mass("femur"), P.thigh * h, 0.05 * h)
        add(
            femur,
            _custom_joint(
                f"hip_{side}",
                pelvis,
                hip,
                femur,
                (
                    (f"hip_flexion_{side}", (0, 0, 1)),
                    (f"hip_adduction_{side}", (s, 0, 0)),
                    (f"hip_rotation_{side}", (0, s, 0)),
                ),
            ),
        )
        tibia = _body(f"tibia_{side}", mass("tibia"), P.shank * h, 0.035 * h)
        add(
            tibia,
            _custom_joint(
                f"knee_{side}", femur, P(0, -P.thigh, 0), tibia, ((f"knee_flexion_{side}", (0, 0, -1)),)
            ),
        )
        foot = _body(f"foot_{side}", mass("foot"), 0.1 * h, 0.03 * h)
        add(
            foot,
            _custom_joint(
                f"ankle_{side}", tibia, P(0, -P.shank, 0), foot, ((f"ankle_dorsiflexion_{side}", (0, 0, 1)),)
            ),
        )
        toes = _body(f"toes_{side}", mass("toes"), 0.04 * h, 0.012 * h)
        add(toes, _weld(f"mtp_{side}", foot, P(*P.mtp), toes))

    # lumbar coupling: every level above L5/S1 follows L5/S1 in proportion to its range of motion
    for dof in LUMBAR_DOFS if coupled_lumbar else ():
        share = lumbar_share(dof)
        for i in range(1, len(LUMBAR_LEVELS)):
            cc = osim.CoordinateCouplerConstraint()
            cc.setName(f"couple_{lumbar_coordinate(i, dof)}")
            names = osim.ArrayStr()
            names.append(lumbar_coordinate(0, dof))
            cc.setIndependentCoordinateNames(names)
            cc.setDependentCoordinateName(lumbar_coordinate(i, dof))
            cc.setFunction(osim.LinearFunction(share[i] / share[0], 0.0))
            model.addConstraint(cc)

    attach_markers(model, anatomy.marker_map)
    model.finalizeConnections()
    _set_default_ranges(model)
    model.getCoordinateSet().get("pelvis_ty").setDefaultValue(P.hip_height * h)
    return model


def _set_default_ranges(model: osim.Model) -> None:
    """Wide but finite ranges: IK must be free to follow any animation (no clamping)."""
    cs = model.getCoordinateSet()
    for i in range(cs.getSize()):
        c = cs.get(i)
        if c.getMotionType() == osim.Coordinate.Translational:
            c.setRangeMin(-100.0)
            c.setRangeMax(100.0)
        else:
            c.setRangeMin(-4 * math.pi)
            c.setRangeMax(4 * math.pi)
        c.set_clamped(False)


def attach_markers(model: osim.Model, marker_map: MarkerMap) -> None:
    """Add ``ue_<bone>`` and ``kp_<landmark>`` markers described by `marker_map` to `model`."""
    bodies = model.getBodySet()
    for prefix, specs in ((BONE_PREFIX, marker_map.bones), (LANDMARK_PREFIX, marker_map.landmarks)):
        for name, spec in specs.items():
            if not bodies.contains(spec.body):
                raise ValueError(f"marker map names body {spec.body!r} that model {model.getName()!r} lacks")
            marker = osim.Marker(prefix + name, bodies.get(spec.body), _vec(spec.offset))
            model.addMarker(marker)


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


def pose_state(model: osim.Model, state: osim.State, pose: Mapping[str, float]) -> osim.State:
    """Set coordinates from `pose` (see `expand_pose`), others to their defaults; realize positions.

    Values are written directly (no assembly): coupled coordinates are computed by `expand_pose`, so
    the state satisfies the default model's constraints exactly. Unknown names raise KeyError.
    """
    values = expand_pose(pose)
    cs = model.getCoordinateSet()
    for name in values:
        if not cs.contains(name):
            raise KeyError(f"model {model.getName()!r} has no coordinate {name!r}")
    for i in range(cs.getSize()):
        c = cs.get(i)
        c.setValue(state, values.get(c.getName(), c.getDefaultValue()), False)
    model.realizePosition(state)
    return state


def marker_positions(model: osim.Model, state: osim.State, names: Iterable[str]) -> NDArray[np.float64]:
    """Ground positions (N, 3) in metres of the named markers (full marker names, e.g. ``kp_nose``)."""
    ms = model.getMarkerSet()
    rows = [ms.get(n).getLocationInGround(state).to_numpy() for n in names]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def landmark_names() -> tuple[str, ...]:
    """Marker names of the 37 landmarks, in schemas.keypoints order."""
    return tuple(LANDMARK_PREFIX + n for n in NAMES)


def bone_names(include_optional: bool = True) -> tuple[str, ...]:
    """Unreal bone names the model carries markers for (required first)."""
    return REQUIRED_BONES + (OPTIONAL_BONES if include_optional else ())


def body_transforms(
    model: osim.Model, state: osim.State, bodies: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Rotation matrices (N, 3, 3) and origins (N, 3) of bodies in ground, for the renderer."""
    bs = model.getBodySet()
    rots = np.empty((len(bodies), 3, 3))
    origins = np.empty((len(bodies), 3))
    for i, name in enumerate(bodies):
        tr = bs.get(name).getTransformInGround(state)
        mat = tr.R().asMat33()
        rots[i] = [[mat.get(r, c) for c in range(3)] for r in range(3)]
        origins[i] = tr.p().to_numpy()
    return rots, origins


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
