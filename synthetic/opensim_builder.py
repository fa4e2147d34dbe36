"""Build the default SpineTrack full-body OpenSim model from `synthetic.anatomy` (opensim 4.6 API).

No geometry files or model files ship with the opensim wheel, so the model is assembled in code.

Topology (joints in parentheses; coordinates are rotations in radians unless noted):

- ground -> pelvis (``ground_pelvis``: yaw about Y, tilt about Z, list about X, then tx, ty, tz in m)
- pelvis -> lumbar5 -> lumbar4 -> lumbar3 -> lumbar2 -> lumbar1 -> thorax: the articulated lumbar spine,
  joints ``L5_S1``, ``L4_L5``, ``L3_L4``, ``L2_L3``, ``L1_L2``, ``T12_L1`` with three rotations each
  (extension about Z, bending about X, rotation about Y). The sacrum is part of the pelvis.
  Poses given as total lumbar motion (``lumbar_extension`` ...) are spread over the six levels in
  proportion to the segmental range of motion, see `synthetic.anatomy.expand_pose`.
  ``coupled_lumbar=True`` additionally enforces that spread with coupler constraints, as the
  published OpenSim lumbar models do (Christophy 2012, Beaucage-Gauvreau 2019); bench/synthetic_fidelity.py
  measures coupled against free levels.
- thorax -> neck (``C7_T1``: extension, bending; C7..C2 as one segment) -> head (``C1_head``:
  extension, bending, rotation). Half of all cervical axial rotation happens at C1/C2, so the neck's
  axial rotation is given to the head joint.
- thorax -> clavicle_l/r (``sternoclavicular_*``: elevation, protraction) -> humerus (``shoulder_*``:
  flexion, adduction, rotation) -> forearm (``elbow_*``: flexion) -> hand (welded).
- pelvis -> femur (``hip_*``: flexion, adduction, rotation) -> tibia (``knee_*``: flexion) -> foot
  (``ankle_*``: dorsiflexion) -> toes (welded at the metatarsophalangeal joint).

Joint types: the root is a CustomJoint; every other joint with rotations is the native OpenSim joint
that turns about the same axes in the same order (Gimbal for three rotations, Universal for two, Pin
for one), its frames turned so its own X/Y/Z axes lie on the anatomical ones: the CustomJoint model's
coordinates and kinematics (to ~1e-15 m, tests/test_opensim_native_joints.py) at about half of IK's
cost (bench/results/ingest.json). ``joints="custom"`` builds the CustomJoint model of before.

Markers: ``ue_<bone>`` at the joint centre each Unreal bone stands for (IK targets) and
``kp_<name>`` for each of the 37 SpineTrack landmarks (the outputs), both from one `MarkerMap`.
Joint ranges: `synthetic.anatomy.JOINT_RANGES_DEG` (anatomical, with a margin) or wide open
(``ranges="open"``, the old behaviour).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

import synthetic.opensim_runtime  # noqa: F401  (before opensim: binds its libraries to their own code)

# isort: split
import opensim as osim
from numpy.typing import NDArray

from synthetic.anatomy import (
    _MASS_FRACTIONS,
    DEFAULT_MODEL_NAME,
    LATEST_REVISION,
    LUMBAR_DOFS,
    LUMBAR_LEVELS,
    REFERENCE_HEIGHT_M,
    _Proportions,
    default_anatomy,
    expand_pose,
    joint_range_deg,
    lumbar_coordinate,
    lumbar_share,
)
from synthetic.marker_map import BONE_PREFIX, LANDMARK_PREFIX, MarkerMap


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


def _frame_turning_native_axes_onto(axes: Sequence[Sequence[float]]) -> NDArray[np.float64] | None:
    """Rotation C whose columns send the native joint's axes onto `axes`; None if no proper one exists.

    With the joint's parent and child frames both turned by C, the native joint's rotation R(q)
    about its own axes becomes C R(q) C^T between the bodies: the same body-fixed sequence about
    `axes`, coordinate by coordinate. Only signed coordinate axes are accepted, so C is exact.
    """
    cols = [np.asarray(a, dtype=np.float64) for a in axes]
    for c in cols:
        if sorted(np.abs(c).tolist()) != [0.0, 0.0, 1.0]:
            return None
    if len(cols) == 1:  # Pin turns about Z: any proper frame whose Z is the axis
        z = cols[0]
        x = np.roll(np.abs(z), 1)  # another coordinate axis (Z -> X, X -> Y, Y -> Z)
        cols = [x, np.asarray(np.cross(z, x), dtype=np.float64), z]
    elif len(cols) == 2:
        cols.append(np.asarray(np.cross(cols[0], cols[1]), dtype=np.float64))
    mat = np.column_stack(cols)
    if not np.array_equal(np.abs(mat) @ np.ones(3), np.ones(3)) or round(float(np.linalg.det(mat))) != 1:
        return None
    return mat


def _body_fixed_xyz(mat: NDArray[np.float64]) -> tuple[float, float, float]:
    """Body-fixed X-Y-Z angles of a rotation matrix (an offset frame's ``orientation``)."""
    b = math.asin(max(-1.0, min(1.0, float(mat[0, 2]))))
    if abs(mat[0, 2]) < 1.0:
        return math.atan2(-mat[1, 2], mat[2, 2]), b, math.atan2(-mat[0, 1], mat[0, 0])
    return math.atan2(mat[2, 1], mat[1, 1]), b, 0.0  # gimbal lock: all of the turn in the first angle


def _native_joint(
    name: str,
    parent: osim.PhysicalFrame,
    location_in_parent: Sequence[float],
    child: osim.Body,
    rotations: Sequence[tuple[str, Sequence[float]]],
) -> osim.Joint:
    """The `_custom_joint` of `rotations` as a Pin, Universal or Gimbal joint (same coordinates, kinematics).

    Simbody's specialised mobilizers are cheaper to evaluate than CustomJoint's function-based one
    (issue 11: IK evaluates the model's kinematics about 36 times a frame). Falls back to the
    CustomJoint where no native joint turns about the same axes in the same order.
    """
    turn = _frame_turning_native_axes_onto([axis for _coord, axis in rotations])
    if turn is None:
        return _custom_joint(name, parent, location_in_parent, child, rotations)
    orientation = _vec(_body_fixed_xyz(turn))
    loc = _vec(location_in_parent)
    zero = osim.Vec3(0, 0, 0)
    kind = {1: osim.PinJoint, 2: osim.UniversalJoint, 3: osim.GimbalJoint}[len(rotations)]
    joint = kind(name, parent, loc, orientation, child, zero, orientation)
    for i, (coord, _axis) in enumerate(rotations):
        joint.upd_coordinates(i).setName(coord)
    return joint


def _weld(
    name: str, parent: osim.PhysicalFrame, location: Sequence[float], child: osim.Body
) -> osim.WeldJoint:
    zero = osim.Vec3(0, 0, 0)
    return osim.WeldJoint(name, parent, _vec(location), zero, child, zero, zero)


def build_default_model(
    height_m: float = REFERENCE_HEIGHT_M,
    mass_kg: float = 70.0,
    *,
    coupled_lumbar: bool = False,
    ranges: Literal["anatomical", "open"] = "open",
    revision: int = LATEST_REVISION,
    joints: Literal["native", "custom"] = "native",
) -> osim.Model:
    """The default SpineTrack full-body model for a subject of `height_m` and `mass_kg`.

    Standing neutral pose at all-zero coordinates except ``pelvis_ty`` (hip height), feet on the
    floor (y = 0). Carries ``ue_*`` bone markers and ``kp_*`` landmark markers. `joints` "native"
    builds the joints below the pelvis as Pin/Universal/Gimbal joints, "custom" all as CustomJoints
    (the model before issue 11): the same coordinates and kinematics (tests/test_opensim_native_joints.py),
    the native ones cheaper for IK.
    """
    if not (0.5 < height_m < 2.6):
        raise ValueError(f"height_m={height_m} is not a human height in metres")
    if not (5.0 < mass_kg < 400.0):
        raise ValueError(f"mass_kg={mass_kg} is not a human mass in kg")
    P = _Proportions(height_m, revision)
    h = height_m
    anatomy = default_anatomy(height_m, mass_kg, revision)
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

    # The root keeps its CustomJoint: its yaw/translation axes are what synthetic.alignment reads to
    # place the model, and no native joint turns Y-Z-X then translates along ground X, Y, Z.
    rotary = _native_joint if joints == "native" else _custom_joint
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
        add(child, rotary(joint_name, parent, location, child, rots))
        parent = child
        location = P(P.lordosis[i], P.lumbar_level, 0.0)
    thorax = parent

    neck = _body("neck", mass("neck"), P.cervical_length * h, 0.04 * h)
    add(
        neck,
        rotary(
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
        rotary(
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
            rotary(
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
            rotary(
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
            rotary(
                f"elbow_{side}", hum, P(0, -P.upper_arm, 0), fore, ((f"elbow_flexion_{side}", (0, 0, 1)),)
            ),
        )
        hand = _body(f"hand_{side}", mass("hand"), P.hand * h, 0.02 * h)
        add(hand, _weld(f"wrist_{side}", fore, P(0, -P.forearm, 0), hand))

        hip = P(0.0, 0.0, s * P.hip_half_width)
        femur = _body(f"femur_{side}", mass("femur"), P.thigh * h, 0.05 * h)
        add(
            femur,
            rotary(
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
            rotary(
                f"knee_{side}", femur, P(0, -P.thigh, 0), tibia, ((f"knee_flexion_{side}", (0, 0, -1)),)
            ),
        )
        foot = _body(f"foot_{side}", mass("foot"), 0.1 * h, 0.03 * h)
        add(
            foot,
            rotary(
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
    if ranges == "anatomical":
        set_anatomical_ranges(model)
    else:
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


def set_anatomical_ranges(model: osim.Model) -> None:
    """Bound every rotational coordinate of the default model by `JOINT_RANGES_DEG` (clamped).

    The root yaw and translations stay free: where a person stands and faces is not a joint limit.
    """
    _set_default_ranges(model)
    cs = model.getCoordinateSet()
    for i in range(cs.getSize()):
        c = cs.get(i)
        limits = joint_range_deg(c.getName())
        if limits is None or c.getMotionType() == osim.Coordinate.Translational:
            continue
        c.setRangeMin(math.radians(limits[0]))
        c.setRangeMax(math.radians(limits[1]))
        c.set_clamped(True)


def attach_markers(model: osim.Model, marker_map: MarkerMap) -> None:
    """Add ``ue_<bone>`` and ``kp_<landmark>`` markers described by `marker_map` to `model`.

    Appended to the marker set and finalized once: ``Model.addMarker`` re-finalizes the whole
    model per marker (a third of the default model's build time); the model's XML is the same.
    """
    bodies = model.getBodySet()
    markers = model.updMarkerSet()
    for prefix, specs in ((BONE_PREFIX, marker_map.bones), (LANDMARK_PREFIX, marker_map.landmarks)):
        for name, spec in specs.items():
            if not bodies.contains(spec.body):
                raise ValueError(f"marker map names body {spec.body!r} that model {model.getName()!r} lacks")
            markers.adoptAndAppend(osim.Marker(prefix + name, bodies.get(spec.body), _vec(spec.offset)))
    model.finalizeFromProperties()


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


class PoseReader:
    """Ground positions of many markers and poses of bodies, from one transform read per base frame.

    Reading marker by marker through SWIG (`marker_positions`: a name lookup and three calls each)
    and rotations element by element (`body_transforms`: twelve calls a body) cost about 1.5 ms a
    fitted frame (90 markers, 16 bodies). A marker is fixed in its parent frame's base frame, so one
    rotation (as body-fixed X-Y-Z angles: one Vec3) and origin per base frame and numpy give every
    position. The model's marker locations and frame offsets are read when the reader is made:
    make it after scaling. Equal to `marker_positions` and `body_transforms` to 1e-9
    (tests/test_ingest_speed_paths.py).
    """

    def __init__(self, model: osim.Model, markers: Sequence[str], bodies: Sequence[str] = ()) -> None:
        self._model = model  # the frames below belong to it
        frames: dict[str, osim.Frame] = {}
        marker_frame: list[str] = []
        offsets = []
        ms = model.getMarkerSet()
        for name in markers:
            marker = ms.get(name)
            parent = marker.getParentFrame()
            base = parent.findBaseFrame()
            key = base.getAbsolutePathString()
            frames.setdefault(key, base)
            marker_frame.append(key)
            offsets.append(parent.findTransformInBaseFrame().shiftFrameStationToBase(marker.get_location())
                           .to_numpy())
        bs = model.getBodySet()
        body_keys = []
        for name in bodies:
            body = bs.get(name)
            key = body.getAbsolutePathString()
            frames.setdefault(key, body)
            body_keys.append(key)
        keys = list(frames)
        self._frames = [frames[k] for k in keys]
        self._marker_frame = np.array([keys.index(k) for k in marker_frame], dtype=np.intp)
        self._body_frame = np.array([keys.index(k) for k in body_keys], dtype=np.intp)
        self._offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 3)

    def frame_poses(self, state: osim.State) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Rotations (K, 3, 3) and origins (K, 3) in ground of every base frame; positions realized."""
        angles = np.empty((len(self._frames), 3))
        origins = np.empty((len(self._frames), 3))
        for i, frame in enumerate(self._frames):
            tr = frame.getTransformInGround(state)
            angles[i] = tr.R().convertRotationToBodyFixedXYZ().to_numpy()
            origins[i] = tr.p().to_numpy()
        return body_fixed_xyz_matrices(angles), origins

    def read(
        self, state: osim.State
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Marker positions (M, 3), body rotations (N, 3, 3) and origins (N, 3), in ground (m)."""
        rots, origins = self.frame_poses(state)
        r = rots[self._marker_frame]
        positions = np.einsum("mij,mj->mi", r, self._offsets) + origins[self._marker_frame]
        return positions, rots[self._body_frame], origins[self._body_frame]


def body_fixed_xyz_matrices(angles: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation matrices (K, 3, 3) of body-fixed X-Y-Z angles (K, 3), Simbody's convention.

    Simbody's conversion to these angles is exact also at gimbal lock (reconstruction error below
    1e-15, tests/test_ingest_speed_paths.py), and one Vec3 is the cheapest read of a rotation.
    """
    c1, c2, c3 = np.cos(angles).T
    s1, s2, s3 = np.sin(angles).T
    out = np.empty((angles.shape[0], 3, 3))
    out[:, 0, 0] = c2 * c3
    out[:, 0, 1] = -c2 * s3
    out[:, 0, 2] = s2
    out[:, 1, 0] = s1 * s2 * c3 + c1 * s3
    out[:, 1, 1] = c1 * c3 - s1 * s2 * s3
    out[:, 1, 2] = -s1 * c2
    out[:, 2, 0] = s1 * s3 - c1 * s2 * c3
    out[:, 2, 1] = c1 * s2 * s3 + s1 * c3
    out[:, 2, 2] = c1 * c2
    return out


def quaternion_matrices(quats: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation matrices (K, 3, 3) of unit quaternions (K, 4) in Simbody's (w, x, y, z) order."""
    w, x, y, z = quats.T
    out = np.empty((quats.shape[0], 3, 3))
    out[:, 0, 0] = 1 - 2 * (y * y + z * z)
    out[:, 0, 1] = 2 * (x * y - z * w)
    out[:, 0, 2] = 2 * (x * z + y * w)
    out[:, 1, 0] = 2 * (x * y + z * w)
    out[:, 1, 1] = 1 - 2 * (x * x + z * z)
    out[:, 1, 2] = 2 * (y * z - x * w)
    out[:, 2, 0] = 2 * (x * z - y * w)
    out[:, 2, 1] = 2 * (y * z + x * w)
    out[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return out


def coordinate_q_indices(model: osim.Model, state: osim.State) -> NDArray[np.intp] | None:
    """Per coordinate (CoordinateSet order), its index in ``state.getQ()``; None if not one each.

    Found by writing distinct values into Q and reading every coordinate once (a coordinate's value
    is one generalized coordinate of its mobilizer); Q is restored. Reading Q once a frame then
    replaces one SWIG lookup and call per coordinate.
    """
    saved = state.getQ().to_numpy().copy()
    probe = 0.001 * (np.arange(saved.size, dtype=np.float64) + 1.0)
    state.setQ(osim.Vector.createFromMat(probe))
    cs = model.getCoordinateSet()
    values = np.array([cs.get(i).getValue(state) for i in range(cs.getSize())])
    state.setQ(osim.Vector.createFromMat(saved))
    index = np.rint(values / 0.001 - 1.0).astype(np.intp)
    if index.size and (index.min() < 0 or index.max() >= saved.size or not np.allclose(probe[index], values)):
        return None
    return index


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
