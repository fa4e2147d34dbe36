"""Derive synthetic/marker_maps/rajagopal2016.json from the default model's anatomy (H = 1.70 m).

Run from the repository root: ``python synthetic/marker_maps/derive_rajagopal2016.py``.
Joint-centre bones and landmarks sit on the Rajagopal joint frames (femur, tibia, talus, toes,
humerus, ulna, hand origins). Trunk points are placed where the default model has them relative to
the hip and shoulder joint centres, sheared and stretched between the two so both joint levels match
(Rajagopal's shoulders sit ~3 cm higher and ~4 cm further back relative to the hips). Points
below Rajagopal's single back joint ride on the pelvis, points above it on the torso.
See docs/opensim-marker-map.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import opensim as osim
from numpy.typing import NDArray

from schemas.keypoints import NAMES
from schemas.render import OPTIONAL_BONES, REQUIRED_BONES
from synthetic.marker_map import MarkerMap, MarkerSpec, save_marker_map
from synthetic.opensim_model import build_default_model, marker_positions, pose_state

HEIGHT_M = 1.70
# Rajagopal2016 frames at the neutral pose (pelvis and torso frames are aligned there), metres
HIPMID_IN_PELVIS = np.array([-0.0563, -0.0785, 0.0])
TORSO_IN_PELVIS = np.array([-0.1007, 0.0815, 0.0])  # the "back" joint
GHMID_IN_TORSO = np.array([0.003, 0.372, 0.0])  # midpoint of the acromial joints
GHMID_IN_PELVIS = TORSO_IN_PELVIS + GHMID_IN_TORSO

#: bone / landmark suffix -> Rajagopal body holding that joint centre at its origin
JOINT_BODIES = {
    "thigh": "femur",
    "calf": "tibia",
    "foot": "talus",
    "ball": "toes",
    "upperarm": "humerus",
    "lowerarm": "ulna",
    "hand": "hand",
    "shoulder": "humerus",
    "elbow": "ulna",
    "wrist": "hand",
    "hip": "femur",
    "knee": "tibia",
    "ankle": "talus",
}


def _rounded(v: NDArray[np.float64] | tuple[float, ...]) -> tuple[float, float, float]:
    return (round(float(v[0]), 4), round(float(v[1]), 4), round(float(v[2]), 4))


def derive() -> MarkerMap:
    osim.Logger.setLevelString("error")
    model = build_default_model(HEIGHT_M, 70.0)
    state = model.initSystem()
    pose_state(model, state, {})

    def pos(name: str) -> NDArray[np.float64]:
        return marker_positions(model, state, [name])[0]

    hipmid = (pos("ue_thigh_l") + pos("ue_thigh_r")) / 2
    ghmid = (pos("ue_upperarm_l") + pos("ue_upperarm_r")) / 2

    def in_pelvis(p: NDArray[np.float64]) -> NDArray[np.float64]:
        """Default-model point -> Rajagopal pelvis frame: anchored at the hips, sheared and
        stretched so that the shoulder joints land on Rajagopal's (weight 0 at hip height, 1 at
        shoulder height and above)."""
        mismatch = GHMID_IN_PELVIS - (HIPMID_IN_PELVIS + ghmid - hipmid)
        w = float(np.clip((p[1] - hipmid[1]) / (ghmid[1] - hipmid[1]), 0.0, 1.0))
        return HIPMID_IN_PELVIS + (p - hipmid) + w * mismatch

    def trunk(p: NDArray[np.float64]) -> MarkerSpec:
        q = in_pelvis(p)
        if q[1] < TORSO_IN_PELVIS[1]:
            return MarkerSpec("pelvis", _rounded(q))
        return MarkerSpec("torso", _rounded(q - TORSO_IN_PELVIS))

    def joint(name: str) -> MarkerSpec | None:
        stem, _, side = name.rpartition("_")
        if side in ("l", "r") and stem in JOINT_BODIES:  # Unreal bones: thigh_l ...
            return MarkerSpec(f"{JOINT_BODIES[stem]}_{side}", (0.0, 0.0, 0.0))
        word, _, rest = name.partition("_")
        if word in ("left", "right") and rest in JOINT_BODIES:  # landmarks: left_knee ...
            return MarkerSpec(f"{JOINT_BODIES[rest]}_{word[0]}", (0.0, 0.0, 0.0))
        return None

    bones = {b: joint(b) or trunk(pos("ue_" + b)) for b in REQUIRED_BONES + OPTIONAL_BONES}
    landmarks: dict[str, MarkerSpec] = {}
    for n in NAMES:
        side = "l" if n.startswith("left_") else "r"
        medial = 1.0 if side == "l" else -1.0  # medial is +Z on the left foot, -Z on the right
        if n.endswith("_heel"):
            landmarks[n] = MarkerSpec(f"calcn_{side}", (-0.025, 0.005, 0.0))
        elif n.endswith("_big_toe"):
            landmarks[n] = MarkerSpec(f"toes_{side}", _rounded((0.06, -0.008, 0.018 * medial)))
        elif n.endswith("_small_toe"):
            landmarks[n] = MarkerSpec(f"toes_{side}", _rounded((0.03, -0.008, -0.045 * medial)))
        else:
            landmarks[n] = joint(n) or trunk(pos("kp_" + n))
    scale: dict[str, tuple[tuple[str, str], ...]] = {
        "pelvis": (("thigh_l", "thigh_r"),),
        "torso": (("spine_02", "neck_01"), ("spine_02", "head")),
    }
    for s in "lr":
        scale[f"femur_{s}"] = scale[f"patella_{s}"] = ((f"thigh_{s}", f"calf_{s}"),)
        scale[f"tibia_{s}"] = ((f"calf_{s}", f"foot_{s}"),)
        for body in ("talus", "calcn", "toes"):
            scale[f"{body}_{s}"] = ((f"foot_{s}", f"ball_{s}"),)
        scale[f"humerus_{s}"] = ((f"upperarm_{s}", f"lowerarm_{s}"),)
        for body in ("ulna", "radius", "hand"):
            scale[f"{body}_{s}"] = ((f"lowerarm_{s}", f"hand_{s}"),)
    return MarkerMap(model="Rajagopal2016", bones=bones, landmarks=landmarks, scale_segments=scale)


if __name__ == "__main__":
    save_marker_map(derive(), Path(__file__).resolve().parent / "rajagopal2016.json")
