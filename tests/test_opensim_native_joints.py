"""Native OpenSim joints in the default model: the CustomJoint model's coordinates and kinematics, exactly.

Issue 11: Simbody's Pin/Universal/Gimbal mobilizers are cheaper for IK than CustomJoint's
function-based one. The default model builds them (``joints="native"``); ``joints="custom"`` is the
model before, kept to compare against. Real OpenSim, no mocks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import synthetic.opensim_runtime  # noqa: F401  (before opensim: binds its libraries to their own code)

# isort: split
import opensim as osim

from synthetic.alignment import _apply_scale
from synthetic.anatomy import ANATOMY_REVISIONS
from synthetic.opensim_builder import (
    PoseReader,
    _body_fixed_xyz,
    _frame_turning_native_axes_onto,
    _native_joint,
    body_fixed_xyz_matrices,
    build_default_model,
    coordinate_q_indices,
)

#: Agreement asked of the two models' marker positions in ground (m); they agree to ~1e-15.
TOLERANCE_M = 1e-9


def _coordinates(model: osim.Model) -> list[tuple[str, int, float, float, float, bool]]:
    cs = model.getCoordinateSet()
    return [
        (c.getName(), int(c.getMotionType()), c.getDefaultValue(), c.getRangeMin(), c.getRangeMax(),
         c.get_clamped())
        for c in (cs.get(i) for i in range(cs.getSize()))
    ]


def _random_pose(model: osim.Model, state: osim.State, rng: np.random.Generator) -> list[float]:
    """Every coordinate drawn at random: rotations over the whole circle, translations over 2 m."""
    cs = model.getCoordinateSet()
    values = []
    for i in range(cs.getSize()):
        c = cs.get(i)
        rotational = c.getMotionType() == osim.Coordinate.Rotational
        value = float(rng.uniform(-math.pi, math.pi) if rotational else rng.uniform(-1.0, 1.0))
        c.setValue(state, value, False)
        values.append(value)
    model.realizePosition(state)
    return values


def _set_pose(model: osim.Model, state: osim.State, values: list[float]) -> None:
    cs = model.getCoordinateSet()
    for i, value in enumerate(values):
        cs.get(i).setValue(state, value, False)
    model.realizePosition(state)


def _markers_and_bodies(model: osim.Model) -> tuple[list[str], list[str]]:
    ms, bs = model.getMarkerSet(), model.getBodySet()
    markers = [ms.get(i).getName() for i in range(ms.getSize())]
    return markers, [bs.get(i).getName() for i in range(bs.getSize())]


def _largest_difference(
    custom: osim.Model, native: osim.Model, draws: int, seed: int
) -> tuple[float, float]:
    """Largest marker-position (m) and body-rotation differences over `draws` random poses."""
    s_custom, s_native = custom.initSystem(), native.initSystem()
    markers, bodies = _markers_and_bodies(custom)
    assert (markers, bodies) == _markers_and_bodies(native)
    read_custom, read_native = PoseReader(custom, markers, bodies), PoseReader(native, markers, bodies)
    rng = np.random.default_rng(seed)
    worst_m, worst_rot = 0.0, 0.0
    for _ in range(draws):
        values = _random_pose(custom, s_custom, rng)
        _set_pose(native, s_native, values)
        pos_c, rot_c, org_c = read_custom.read(s_custom)
        pos_n, rot_n, org_n = read_native.read(s_native)
        # one marker through OpenSim's own call too, not only through the reader
        ms_c, ms_n = custom.getMarkerSet(), native.getMarkerSet()
        direct = np.abs(ms_c.get(markers[-1]).getLocationInGround(s_custom).to_numpy()
                        - ms_n.get(markers[-1]).getLocationInGround(s_native).to_numpy()).max()
        worst_m = max(worst_m, float(np.abs(pos_c - pos_n).max()), float(np.abs(org_c - org_n).max()), direct)
        worst_rot = max(worst_rot, float(np.abs(rot_c - rot_n).max()))
    return worst_m, worst_rot


def test_default_model_uses_native_joints_below_the_root() -> None:
    model = build_default_model(1.75, 70.0)
    joints = model.getJointSet()
    kinds = {joints.get(i).getName(): joints.get(i).getConcreteClassName() for i in range(joints.getSize())}
    assert kinds["ground_pelvis"] == "CustomJoint"  # synthetic.alignment reads the root's axes
    assert {kinds[j] for j in ("L5_S1", "T12_L1", "C1_head", "shoulder_l", "hip_r")} == {"GimbalJoint"}
    assert {kinds[j] for j in ("C7_T1", "sternoclavicular_l", "sternoclavicular_r")} == {"UniversalJoint"}
    assert {kinds[j] for j in ("elbow_l", "knee_r", "ankle_l")} == {"PinJoint"}
    custom = build_default_model(1.75, 70.0, joints="custom")
    cj = custom.getJointSet()
    assert {cj.get(i).getConcreteClassName() for i in range(cj.getSize())} == {"CustomJoint", "WeldJoint"}


@pytest.mark.parametrize("ranges", ["open", "anatomical"])
def test_same_coordinates_ranges_and_q_layout(ranges: str) -> None:
    custom = build_default_model(1.80, 80.0, ranges=ranges, joints="custom")  # type: ignore[arg-type]
    native = build_default_model(1.80, 80.0, ranges=ranges, joints="native")  # type: ignore[arg-type]
    assert _coordinates(native) == _coordinates(custom)
    assert _markers_and_bodies(native) == _markers_and_bodies(custom)
    q_custom = coordinate_q_indices(custom, custom.initSystem())
    q_native = coordinate_q_indices(native, native.initSystem())
    assert q_custom is not None and q_native is not None
    assert q_native.tolist() == q_custom.tolist()


@pytest.mark.parametrize("revision", ANATOMY_REVISIONS)
def test_same_marker_positions_for_random_coordinates(revision: int) -> None:
    custom = build_default_model(1.68, 61.0, revision=revision, joints="custom")
    native = build_default_model(1.68, 61.0, revision=revision, joints="native")
    worst_m, worst_rot = _largest_difference(custom, native, draws=40, seed=revision)
    assert worst_m < TOLERANCE_M
    assert worst_rot < 1e-12


def test_same_kinematics_when_scaled_unevenly_and_coupled() -> None:
    """IK fits scaled models (per-axis factors): the joint frames' offsets must scale alike."""
    custom = build_default_model(1.90, 95.0, coupled_lumbar=True, joints="custom")
    native = build_default_model(1.90, 95.0, coupled_lumbar=True, joints="native")
    assert native.getConstraintSet().getSize() == custom.getConstraintSet().getSize() == 15
    rng = np.random.default_rng(11)
    _, bodies = _markers_and_bodies(custom)
    factors: dict[str, float | tuple[float, float, float]] = {
        b: (float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.8, 1.2)))
        for b in bodies
    }
    for model in (custom, native):
        _apply_scale(model, model.initSystem(), factors, 95.0)
    worst_m, worst_rot = _largest_difference(custom, native, draws=20, seed=5)
    assert worst_m < TOLERANCE_M
    assert worst_rot < 1e-12


def test_axes_a_native_joint_cannot_turn_about_fall_back_to_a_custom_joint() -> None:
    turn = _frame_turning_native_axes_onto(((0, 0, 1), (-1, 0, 0), (0, -1, 0)))
    assert turn is not None
    np.testing.assert_array_equal(turn, [[0, -1, 0], [0, 0, -1], [1, 0, 0]])
    assert _frame_turning_native_axes_onto(((0, 0, -1),)) is not None
    assert _frame_turning_native_axes_onto(((1, 0, 0), (0, 0, 1), (0, 1, 0))) is None  # left-handed triple
    assert _frame_turning_native_axes_onto(((0.6, 0.8, 0.0),)) is None  # not a coordinate axis
    model = osim.Model()
    body = osim.Body("b", 1.0, osim.Vec3(0), osim.Inertia(0.1))
    model.addBody(body)
    joint = _native_joint("j", model.getGround(), (0, 0, 0), body, (("a", (1, 0, 0)), ("b", (0, 0, 1)),
                                                                     ("c", (0, 1, 0))))
    model.addJoint(joint)
    model.finalizeFromProperties()
    assert joint.getConcreteClassName() == "CustomJoint"
    assert [joint.get_coordinates(i).getName() for i in range(3)] == ["a", "b", "c"]


def test_frame_orientations_are_exact_for_every_turn_of_the_axes() -> None:
    """The offset frames' X-Y-Z angles rebuild every signed axis permutation (the 24 turns), also at
    gimbal lock, and random rotations."""
    from itertools import permutations, product

    turns = []
    for perm in permutations(range(3)):
        for signs in product((1.0, -1.0), repeat=3):
            mat = np.zeros((3, 3))
            for col, (row, sign) in enumerate(zip(perm, signs, strict=True)):
                mat[row, col] = sign
            if np.linalg.det(mat) > 0:
                turns.append(mat)
    assert len(turns) == 24
    angles = np.array([_body_fixed_xyz(m) for m in turns])
    np.testing.assert_allclose(body_fixed_xyz_matrices(angles), np.array(turns), atol=1e-15)
    rng = np.random.default_rng(3)
    random = body_fixed_xyz_matrices(rng.uniform(-math.pi, math.pi, (50, 3)))
    again = body_fixed_xyz_matrices(np.array([_body_fixed_xyz(m) for m in random]))
    np.testing.assert_allclose(again, random, atol=1e-12)
