"""The default OpenSim model: anatomy, markers, posing (real opensim, no mocks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.keypoints import NAMES
from schemas.render import OPTIONAL_BONES, REQUIRED_BONES
from synthetic.opensim_model import (
    LUMBAR_LEVELS,
    build_default_model,
    default_anatomy,
    expand_pose,
    landmark_names,
    lumbar_coordinate,
    lumbar_share,
    marker_positions,
    pose_state,
)


@pytest.fixture(scope="module")
def posed() -> tuple[object, object]:
    model = build_default_model(1.80, 80.0)
    state = model.initSystem()
    return model, state


def _lm(model, state, name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    return marker_positions(model, state, ["kp_" + name])[0]


def test_model_has_articulated_lumbar_spine_and_all_markers(posed) -> None:  # type: ignore[no-untyped-def]
    model, _ = posed
    joints = model.getJointSet()
    for joint_name, _body in LUMBAR_LEVELS:
        joint = joints.get(joint_name)
        assert joint.numCoordinates() == 3
    markers = model.getMarkerSet()
    for bone in REQUIRED_BONES + OPTIONAL_BONES:
        assert markers.contains("ue_" + bone)
    for name in NAMES:
        assert markers.contains("kp_" + name)
    assert model.getConstraintSet().getSize() == 0  # free levels by default (see the module docstring)
    coupled = build_default_model(1.80, 80.0, coupled_lumbar=True)
    assert coupled.getConstraintSet().getSize() == 15  # upper five levels x 3 rotations follow L5/S1


def test_standing_pose_has_human_proportions(posed) -> None:  # type: ignore[no-untyped-def]
    model, state = posed
    pose_state(model, state, {})
    h = 1.80
    assert _lm(model, state, "head")[1] == pytest.approx(h, rel=0.03)
    assert _lm(model, state, "left_heel")[1] == pytest.approx(0.0, abs=0.03)
    thigh = np.linalg.norm(_lm(model, state, "left_hip") - _lm(model, state, "left_knee"))
    assert thigh == pytest.approx(0.245 * h, rel=1e-6)
    # left is -Z in OpenSim ground, the spine chain climbs from sacrum to skull
    assert _lm(model, state, "left_shoulder")[2] < 0 < _lm(model, state, "right_shoulder")[2]
    chain = [
        "hip",
        "spine_01",
        "spine_02",
        "spine_03",
        "spine_04",
        "spine_05",
        "neck",
        "neck_02",
        "neck_03",
        "head",
    ]
    heights = [_lm(model, state, n)[1] for n in chain]
    assert heights == sorted(heights)
    # eyes in front of the ears, nose in front of the eyes
    assert _lm(model, state, "nose")[0] > _lm(model, state, "left_eye")[0] > _lm(model, state, "left_ear")[0]


def test_scaling_with_height_is_proportional() -> None:
    small = default_anatomy(1.5).marker_map.landmarks["head"].offset
    tall = default_anatomy(1.9).marker_map.landmarks["head"].offset
    assert tall[1] / small[1] == pytest.approx(1.9 / 1.5)


def test_lumbar_flexion_spreads_over_six_levels_and_keeps_constraints() -> None:
    model = build_default_model(1.80, 80.0, coupled_lumbar=True)
    state = model.initSystem()
    pose_state(model, state, {})
    t3_upright = _lm(model, state, "spine_05").copy()
    pose_state(model, state, {"lumbar_extension": -0.6})
    values = [
        model.getCoordinateSet().get(lumbar_coordinate(i, "extension")).getValue(state) for i in range(6)
    ]
    assert sum(values) == pytest.approx(-0.6)
    assert values == pytest.approx([-0.6 * s for s in lumbar_share("extension")])
    assert float(np.max(np.abs(state.getQErr().to_numpy()))) < 1e-9  # couplers satisfied exactly
    t3_bent = _lm(model, state, "spine_05")
    assert t3_bent[0] > t3_upright[0] + 0.1  # flexion brings T3 forward ...
    assert t3_bent[1] < t3_upright[1]  # ... and down
    assert expand_pose({"L5_S1_bending": 0.1})[lumbar_coordinate(5, "bending")] == pytest.approx(
        0.1 * lumbar_share("bending")[5] / lumbar_share("bending")[0]
    )


def test_pelvis_yaw_turns_the_body_about_vertical(posed) -> None:  # type: ignore[no-untyped-def]
    model, state = posed
    pose_state(model, state, {"pelvis_rotation": math.pi / 2})
    nose, hip = _lm(model, state, "nose"), _lm(model, state, "hip")
    # +90 deg about +Y turns forward (+X) into -Z
    assert nose[2] - hip[2] < -0.05
    assert abs(nose[0] - hip[0]) < 0.03


def test_unknown_coordinate_and_absurd_size_are_rejected(posed) -> None:  # type: ignore[no-untyped-def]
    model, state = posed
    with pytest.raises(KeyError, match="no_such_joint"):
        pose_state(model, state, {"no_such_joint": 1.0})
    with pytest.raises(ValueError, match="height"):
        build_default_model(17.5, 70)
    assert len(landmark_names()) == len(NAMES)


def test_capsules_cover_every_segment() -> None:
    anatomy = default_anatomy(1.75)
    bodies = {c.body for c in anatomy.capsules}
    model = build_default_model(1.75)
    names = {model.getBodySet().get(i).getName() for i in range(model.getBodySet().getSize())}
    assert bodies == names
    assert all(c.radius > 0 for c in anatomy.capsules)


def test_revision_2_puts_hip_and_clavicles_where_the_authors_do() -> None:
    new = default_anatomy(1.75).marker_map.landmarks
    old = default_anatomy(1.75, revision=1).marker_map.landmarks
    # the authors' Hip marker: ~9 cm behind and ~8.5 cm above the hip-joint midpoint (pelvis origin)
    assert new["hip"].body == "pelvis" and new["hip"].offset[0] == pytest.approx(-0.091, abs=0.005)
    assert new["hip"].offset[1] == pytest.approx(0.084, abs=0.005)
    assert old["hip"].offset == (0.0, 0.0, 0.0)
    # clavicle points near the sternal end: within 2 cm of the sternoclavicular joint (the body origin)
    near, mid = (float(np.linalg.norm(m["left_clavicle"].offset)) for m in (new, old))
    assert near < 0.02 < mid
    with pytest.raises(ValueError, match="revision"):
        default_anatomy(1.75, revision=7)


def test_anatomical_ranges_are_finite_and_clamped() -> None:
    import opensim as osim

    model = build_default_model(1.75, ranges="anatomical")
    cs = model.getCoordinateSet()
    knee = cs.get("knee_flexion_l")
    assert knee.get_clamped() and knee.getRangeMin() == pytest.approx(math.radians(-10))
    assert knee.getRangeMax() == pytest.approx(math.radians(160))
    assert cs.get(lumbar_coordinate(2, "rotation")).getRangeMax() == pytest.approx(math.radians(10))
    yaw = cs.get("pelvis_rotation")  # where a person faces is no joint limit
    assert not yaw.get_clamped() and yaw.getRangeMax() > 2 * math.pi
    assert cs.get("pelvis_tx").getMotionType() == osim.Coordinate.Translational
    wide = build_default_model(1.75)
    assert not wide.getCoordinateSet().get("knee_flexion_l").get_clamped()
