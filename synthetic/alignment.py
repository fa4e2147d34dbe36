"""Scale an OpenSim model to a subject and fit it to Unreal bones frame by frame with real OpenSim IK.

Pipeline for one actor of one sequence (all positions in OpenSim ground metres, see synthetic/coords.py):

1. Model: the default SpineTrack model built for the subject's height and mass
   (synthetic/opensim_model.py), or a user .osim plus a marker map (docs/opensim-marker-map.md).
   Forces are removed from user models: IK is kinematic and muscles only slow the state down.
2. Scale (`FitSettings.scaling`): "per_axis" (the default, as the SpineTrack authors' set-up): per
   body and body axis, the ratio of subject to model distances between bone pairs, a 20 % trimmed
   mean over the sequence after dropping the fastest 10 % of frames, still (frozen) frames and
   crouched frames (a bent knee shortens hip-ankle pairs); "isotropic_first_frames" (the old fit):
   one factor per body, the median over the first frames. Both drive ``Model.scale``, the call the
   ScaleTool makes.
3. IK: one ``InverseKinematicsSolver`` for the whole sequence, with anatomical joint ranges for the
   default model; optional graded bone weights and a coordinate task holding each lumbar level near
   neutral (the authors' choices, `FitSettings.authors()`; measured worse on exact bones, so off by
   default). Frame 0 starts from a root pose found by a yaw search (a local solver started facing
   the wrong way converges to a mirrored person); later frames ``track`` from the previous solution.
4. Quality: per-frame RMS and max distance between the bone markers and their targets. Frames above
   `rms_threshold_m` are re-solved from scratch once; if still above, they are flagged, not hidden.

`FitSettings.legacy()` is the fit before issue 12; bench/synthetic_fidelity.py measures both against
an independent character's truth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

import synthetic.opensim_runtime  # noqa: F401  (before opensim: binds its libraries to their own code)

# isort: split
import opensim as osim
from numpy.typing import ArrayLike, NDArray

from schemas.keypoints import NAMES
from synthetic.anatomy import (
    DEFAULT_MODEL_NAME,
    LATEST_REVISION,
    LUMBAR_DOFS,
    LUMBAR_LEVELS,
    default_anatomy,
    lumbar_coordinate,
)
from synthetic.marker_map import BONE_PREFIX, LANDMARK_PREFIX, MarkerMap, load_marker_map
from synthetic.opensim_builder import (
    PoseReader,
    _set_default_ranges,
    attach_markers,
    build_default_model,
    coordinate_q_indices,
    marker_positions,
    set_anatomical_ranges,
)

#: Frames whose bone-marker RMS residual exceeds this (m) are flagged.
DEFAULT_RMS_THRESHOLD_M = 0.02
#: IK convergence accuracy. Measured on exact targets (default model, 40 frames): 1e-5 -> landmark
#: error max 0.4 mm; 5e-5 -> 2 mm at ~2x the speed; 1e-4 -> 2.8 mm. See bench/alignment.py.
#: When tracking a 200-frame render of the independent character (issue 11, counted in Simbody's
#: objective), it barely changes the work: about 36 evaluations a frame at 1e-6 and 5e-5, 33 at
#: 1e-4 (landmarks then move by up to 5.6 mm), so it stays; a start extrapolated from the last two
#: frames needs ~27, but `track` always starts from the solver's last solution and a per-frame
#: `assemble` costs its set-up again (no faster, measured).
DEFAULT_ACCURACY = 5e-5
#: Frames used to measure segment lengths for scaling (their median).
DEFAULT_SCALE_FRAMES = 10
_DT = 0.01  # time step of the internal marker table; only the order matters
#: IK weights per bone (default 1). The eyes are the only targets that fix head yaw and roll, and sit
#: close to the head joint: a higher weight keeps the head vertex (18 cm away) within millimetres.
DEFAULT_BONE_WEIGHTS: dict[str, float] = {"eye_l": 5.0, "eye_r": 5.0}
#: Graded weights after the authors' IK set-up (../shared/SPINETRACK.md): hips and shoulders 2,
#: limbs and the pelvis 1, spine and neck 0.5, clavicles and head 0.3. The eyes keep 5: on bones
#: they are the only targets that fix head yaw (the authors' 0.1 was for noisy detected eyes).
#: Measured on the independent character (bench/synthetic_fidelity.py) they place the spine worse
#: than even weights: Unreal spine bones are exact, the authors' spine markers were detections.
AUTHORS_BONE_WEIGHTS: dict[str, float] = {
    "thigh_l": 2.0, "thigh_r": 2.0, "upperarm_l": 2.0, "upperarm_r": 2.0,
    "spine_01": 0.5, "spine_02": 0.5, "spine_03": 0.5, "spine_04": 0.5, "spine_05": 0.5,
    "neck_01": 0.5, "neck_02": 0.5, "clavicle_l": 0.3, "clavicle_r": 0.3, "head": 0.3,
    "eye_l": 5.0, "eye_r": 5.0,
}


@dataclass(frozen=True)
class FitSettings:
    """How `fit_sequence` scales and solves (see the module docstring)."""

    scaling: Literal["per_axis", "isotropic_first_frames"] = "per_axis"
    #: isotropic_first_frames: how many first frames; per_axis: fraction trimmed (both ends together)
    scale_frames: int = 10
    trim: float = 0.2
    drop_fastest: float = 0.1
    #: frames where hip-ankle is shorter than this fraction of thigh + shank count as crouched
    crouch_ratio: float = 0.93
    bone_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BONE_WEIGHTS))
    #: weight of the coordinate task holding each lumbar level rotation near 0 (0 = none). The
    #: authors hold L5/S1 near 0 (weight 1, with couplers); measured here it moves the spine
    #: landmarks away from the truth (bench/synthetic_fidelity.py), so it is off by default.
    lumbar_regularisation: float = 0.0
    #: "anatomical" bounds the default model's joints (JOINT_RANGES_DEG); "open" leaves +-4 pi
    ranges: Literal["anatomical", "open"] = "anatomical"
    accuracy: float = 5e-5
    #: anatomy revision of the default model built when no model is given (synthetic/anatomy.py)
    anatomy_revision: int = LATEST_REVISION

    @classmethod
    def authors(cls) -> FitSettings:
        """The improved fit with the authors' IK choices: graded weights and a lumbar task."""
        return cls(bone_weights=dict(AUTHORS_BONE_WEIGHTS), lumbar_regularisation=1e-3)

    @classmethod
    def legacy(cls) -> FitSettings:
        """The fit before issue 12: revision-1 anatomy, isotropic first-frame scaling, eyes-only
        weights, no lumbar task, open joint ranges."""
        return cls(scaling="isotropic_first_frames", bone_weights=dict(DEFAULT_BONE_WEIGHTS),
                   lumbar_regularisation=0.0, ranges="open", anatomy_revision=1)

    def as_dict(self) -> dict[str, object]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}

BonesFrame = Mapping[str, ArrayLike]


@dataclass
class FitResult:
    """Per-frame output of `fit_sequence` (F frames)."""

    landmarks: NDArray[np.float64]  # (F, 37, 3) OpenSim ground, m, schemas.keypoints order
    rms_m: NDArray[np.float64]  # (F,) RMS bone-marker residual
    max_m: NDArray[np.float64]  # (F,) largest bone-marker residual
    worst_bone: list[str]  # (F,) bone with the largest residual
    flagged: NDArray[np.bool_]  # (F,) rms_m > threshold
    coordinate_names: list[str]
    coordinates: NDArray[np.float64]  # (F, C) model coordinates (rad / m)
    scale_factors: dict[str, float | tuple[float, float, float]]
    bones_used: list[str]
    rms_threshold_m: float
    warnings: list[str] = field(default_factory=list)
    #: (F, B, 3) fitted bone marker minus target (m), `bones_used` order
    bone_residuals_m: NDArray[np.float64] | None = None
    settings: FitSettings | None = None
    #: The fitted body's surface, for geometric self-occlusion (default model only, else None):
    #: capsule ends (F, C, 2, 3) in ground m, radii (C,) m, each capsule's body, and per landmark
    #: the bodies that do not hide it (its own, its joint neighbours, the trunk for trunk points).
    capsule_ends_m: NDArray[np.float64] | None = None
    capsule_radii_m: NDArray[np.float64] | None = None
    capsule_bodies: list[str] | None = None
    landmark_home: list[frozenset[str]] | None = None

    @property
    def frame_count(self) -> int:
        return int(self.landmarks.shape[0])


def _load_model(
    model: osim.Model | str | Path | None,
    height_m: float,
    mass_kg: float,
    marker_map: MarkerMap | str | Path | None,
    revision: int = LATEST_REVISION,
) -> tuple[osim.Model, MarkerMap | None]:
    if model is None:
        if marker_map is not None:
            raise ValueError("a marker map is only needed with a user model")
        return build_default_model(height_m, mass_kg, revision=revision), None
    mm = load_marker_map(marker_map) if isinstance(marker_map, str | Path) else marker_map
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"OpenSim model not found: {path}")
        loaded = osim.Model(str(path))
    else:
        loaded = model.clone()
    loaded.updForceSet().clearAndDestroy()
    if mm is not None:
        loaded.updMarkerSet().clearAndDestroy()
        attach_markers(loaded, mm)
    elif not loaded.getMarkerSet().contains(BONE_PREFIX + "pelvis"):
        raise ValueError(
            f"model {loaded.getName()!r} has no {BONE_PREFIX}* markers: pass a marker map "
            "(docs/opensim-marker-map.md)"
        )
    loaded.finalizeConnections()
    # Where a person stands and faces is not an anatomical limit: free the root joint (Rajagopal2016
    # clamps pelvis_rotation to +-90 deg, which would pin anyone facing away). Joint ranges stay.
    for coordinate in _root_coordinates(loaded)[0]:
        coordinate.set_clamped(False)
        coordinate.setRangeMin(-1e3)
        coordinate.setRangeMax(1e3)
    return loaded, mm


def _bones_array(bones_per_frame: Sequence[BonesFrame], names: Sequence[str]) -> NDArray[np.float64]:
    """(F, B, 3) with NaN for bones a frame lacks."""
    out = np.full((len(bones_per_frame), len(names), 3), np.nan)
    for f, frame in enumerate(bones_per_frame):
        for b, name in enumerate(names):
            if name in frame:
                out[f, b] = np.asarray(frame[name], dtype=np.float64)
    return out


def _scale_set(
    model: osim.Model,
    state: osim.State,
    targets: NDArray[np.float64],
    names: list[str],
    segments: Mapping[str, Sequence[tuple[str, str]]],
    scale_frames: int,
) -> dict[str, float]:
    """Per-body scale factors: subject / model distance of the body's bone pairs (old, isotropic)."""
    model_pos = marker_positions(model, state, [BONE_PREFIX + n for n in names])
    index = {n: i for i, n in enumerate(names)}
    head = targets[:scale_frames]
    factors: dict[str, float] = {}
    for body, pairs in segments.items():
        ratios = []
        for a, b in pairs:
            if a not in index or b not in index:
                continue
            d_model = float(np.linalg.norm(model_pos[index[a]] - model_pos[index[b]]))
            d_subject = np.linalg.norm(head[:, index[a]] - head[:, index[b]], axis=1)
            d_subject = d_subject[np.isfinite(d_subject)]
            if d_model > 1e-6 and d_subject.size:
                ratios.append(float(np.median(d_subject)) / d_model)
        if ratios:
            factors[body] = float(np.mean(ratios))
    return factors


def scaling_frames(
    targets: NDArray[np.float64], names: list[str], settings: FitSettings
) -> NDArray[np.bool_]:
    """Frames fit for measuring segment lengths: not the fastest, not frozen, not crouched."""
    n = targets.shape[0]
    keep = np.ones(n, dtype=bool)
    if n < 5:
        return keep
    step = np.linalg.norm(np.diff(targets, axis=0), axis=2)  # (F-1, B)
    speed = np.nanmean(step, axis=1)
    speed = np.concatenate([speed[:1], speed])  # frame f: motion since f-1 (frame 0: as frame 1)
    keep &= speed > 1e-6  # frozen frames: an exporter that repeated a frame
    if settings.drop_fastest > 0:
        keep &= speed <= np.nanquantile(speed, 1.0 - settings.drop_fastest)
    index = {b: i for i, b in enumerate(names)}
    for s in ("l", "r"):
        hip, knee, ankle = (index.get(f"{b}_{s}") for b in ("thigh", "calf", "foot"))
        if hip is None or knee is None or ankle is None:
            continue
        direct = np.linalg.norm(targets[:, hip] - targets[:, ankle], axis=1)
        chain = np.linalg.norm(targets[:, hip] - targets[:, knee], axis=1) + np.linalg.norm(
            targets[:, knee] - targets[:, ankle], axis=1
        )
        with np.errstate(invalid="ignore"):
            keep &= ~(direct < settings.crouch_ratio * chain)
    if keep.sum() < max(3, n // 10):
        return np.ones(n, dtype=bool)  # a sequence that is all squats: use every frame
    return keep


def _robust(distances: NDArray[np.float64]) -> NDArray[np.float64]:
    """Drop gross outliers (a bone torn off in a few frames) before the trimmed mean: more than
    4 robust standard deviations (MAD, at least 1 % of the median) from the median."""
    if distances.size < 3:
        return distances
    med = float(np.median(distances))
    spread = max(1.4826 * float(np.median(np.abs(distances - med))), 0.01 * med)
    return distances[np.abs(distances - med) <= 4.0 * spread]


def _trim_mean(values: NDArray[np.float64], proportion: float) -> float:
    """`scipy.stats.trim_mean` of finite 1-D values, the same operations (so the same bits) without
    its argument-checking wrapper, which cost 1.4 ms a call (40 calls a sequence)."""
    lowercut = int(proportion * values.size)
    uppercut = values.size - lowercut
    if lowercut > uppercut:
        raise ValueError("Proportion too big.")
    kept = np.partition(values, (lowercut, uppercut - 1))[lowercut:uppercut]
    return float(np.mean(kept))


def _axis_scale_set(
    model: osim.Model,
    state: osim.State,
    targets: NDArray[np.float64],
    names: list[str],
    segments: Mapping[str, Mapping[str, Sequence[tuple[str, str]]]],
    settings: FitSettings,
) -> dict[str, tuple[float, float, float]]:
    """Per body (x, y, z) factors: trimmed mean of subject / model pair distances over good frames."""
    model_pos = marker_positions(model, state, [BONE_PREFIX + n for n in names])
    index = {n: i for i, n in enumerate(names)}
    frames = targets[scaling_frames(targets, names, settings)]
    out: dict[str, tuple[float, float, float]] = {}
    for body, per_axis in segments.items():
        axis_factor: dict[str, float] = {}
        for axis, pairs in per_axis.items():
            ratios = []
            for a, b in pairs:
                if a not in index or b not in index:
                    continue
                d_model = float(np.linalg.norm(model_pos[index[a]] - model_pos[index[b]]))
                d_subject = np.linalg.norm(frames[:, index[a]] - frames[:, index[b]], axis=1)
                d_subject = _robust(d_subject[np.isfinite(d_subject)])
                if d_model > 1e-6 and d_subject.size:
                    ratios.append(_trim_mean(d_subject, settings.trim / 2) / d_model)
            if ratios:
                axis_factor[axis] = float(np.mean(ratios))
        if axis_factor:
            mean = float(np.mean(list(axis_factor.values())))
            out[body] = (axis_factor.get("x", mean), axis_factor.get("y", mean), axis_factor.get("z", mean))
    return out


def _apply_scale(
    model: osim.Model,
    state: osim.State,
    factors: Mapping[str, float | tuple[float, float, float]],
    mass_kg: float,
) -> dict[str, float | tuple[float, float, float]]:
    """Scale every body (unlisted bodies by the median factor); returns the factors used."""
    flat = [v for f in factors.values() for v in (f if isinstance(f, tuple) else (f,))]
    default = float(np.median(flat)) if flat else 1.0
    used: dict[str, float | tuple[float, float, float]] = {}
    scale_set = osim.ScaleSet()
    bodies = model.getBodySet()
    for i in range(bodies.getSize()):
        name = bodies.get(i).getName()
        k = factors.get(name, default)
        used[name] = k
        kx, ky, kz = k if isinstance(k, tuple) else (k, k, k)
        sc = osim.Scale()
        sc.setName(name)
        sc.setSegmentName(name)
        sc.setScaleFactors(osim.Vec3(kx, ky, kz))
        sc.setApply(True)
        scale_set.cloneAndAppend(sc)
    model.scale(state, scale_set, True, mass_kg)
    return used


def _marker_table(targets: NDArray[np.float64], names: list[str]) -> osim.TimeSeriesTableVec3:
    """The IK targets as OpenSim's marker table: one (F, 3B) matrix packed into Vec3 columns.

    Built in one call rather than a Vec3 per cell (0.1 s for 200 frames); a target with any
    non-finite component is all NaN (OpenSim skips it). tests/test_ingest_speed_paths.py checks
    it against the cell-by-cell table.
    """
    frames = targets.shape[0]
    flat = np.array(targets, dtype=np.float64).reshape(frames, len(names), 3)
    flat[~np.all(np.isfinite(flat), axis=2)] = np.nan
    times = osim.StdVectorDouble()
    for f in range(frames):
        times.append(f * _DT)
    labels = osim.StdVectorString()
    for n in names:
        for axis in ("_x", "_y", "_z"):
            labels.append(BONE_PREFIX + n + axis)
    matrix = osim.Matrix.createFromMat(flat.reshape(frames, 3 * len(names)))
    table = osim.TimeSeriesTable(times, matrix, labels).packVec3()
    table.addTableMetaDataString("Units", "m")
    return table


def _root_coordinates(model: osim.Model) -> tuple[list[osim.Coordinate], osim.Coordinate | None]:
    """Coordinates of the joint attached to ground, and the one that yaws about ground Y (if any)."""
    joints = model.getJointSet()
    for i in range(joints.getSize()):
        joint = joints.get(i)
        if joint.getParentFrame().findBaseFrame().getName() != model.getGround().getName():
            continue
        coords = [joint.get_coordinates(k) for k in range(joint.numCoordinates())]
        yaw = None
        if joint.getConcreteClassName() == "CustomJoint":
            st = osim.CustomJoint.safeDownCast(joint).getSpatialTransform()
            for k in range(3):
                axis = st.getTransformAxis(k)
                v = axis.getAxis()
                coord_names = axis.getCoordinateNames()
                if coord_names.size() == 1 and abs(abs(v.get(1)) - 1.0) < 1e-9:
                    yaw = model.getCoordinateSet().get(coord_names.getValue(0))
        return coords, yaw
    raise ValueError(f"model {model.getName()!r} has no joint to ground")


def _initial_root_pose(
    model: osim.Model, state: osim.State, target: NDArray[np.float64], marker_names: list[str]
) -> None:
    """Place the root so the bone markers' centroid matches, trying yaws every 30 degrees."""
    coords, yaw = _root_coordinates(model)
    valid = np.all(np.isfinite(target), axis=1)
    names = [n for n, ok in zip(marker_names, valid, strict=True) if ok]
    tgt = target[valid]
    translations = [c for c in coords if c.getMotionType() == osim.Coordinate.Translational]
    for c in coords:
        c.setValue(state, c.getDefaultValue(), False)
    best: tuple[float, float] = (math.inf, 0.0)
    for angle in np.radians(np.arange(0.0, 360.0, 30.0)) if yaw is not None else [0.0]:
        if yaw is not None:
            yaw.setValue(state, float(angle), False)
        model.realizePosition(state)
        pos = marker_positions(model, state, names)
        centred = (pos - pos.mean(0)) - (tgt - tgt.mean(0))
        err = float(np.sum(centred**2))
        if err < best[0]:
            best = (err, float(angle))
    if yaw is not None:
        yaw.setValue(state, best[1], False)
    model.realizePosition(state)
    shift = tgt.mean(0) - marker_positions(model, state, names).mean(0)
    # translation coordinates of a root joint run along ground X, Y, Z in OpenSim models
    for axis, c in enumerate(translations[:3]):
        c.setValue(state, c.getValue(state) + float(shift[axis]), False)
    model.realizePosition(state)


#: Bodies of the default model's trunk: they never hide one another's landmarks (as in the renderer).
TRUNK_BODIES = frozenset(
    {"pelvis", "lumbar5", "lumbar4", "lumbar3", "lumbar2", "lumbar1", "thorax", "clavicle_l", "clavicle_r"}
)


@dataclass
class _FittedSurface:
    """The default model's capsules, scaled like the model, posed frame by frame."""

    bodies: list[str]
    local: NDArray[np.float64]  # (C, 2, 3) body frames, scaled
    radii: NDArray[np.float64]
    unique: list[str]
    index: NDArray[np.intp]
    home: list[frozenset[str]]
    ends: list[NDArray[np.float64]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        model: osim.Model,
        height_m: float,
        mass_kg: float,
        settings: FitSettings,
        factors: Mapping[str, float | tuple[float, float, float]],
    ) -> _FittedSurface:
        anatomy = default_anatomy(height_m, mass_kg, settings.anatomy_revision)
        bodies = [c.body for c in anatomy.capsules]
        k = np.array([np.broadcast_to(np.asarray(factors.get(b, 1.0), dtype=np.float64), 3) for b in bodies])
        local = np.array([[c.p0, c.p1] for c in anatomy.capsules]) * k[:, None, :]
        radii = np.array([c.radius for c in anatomy.capsules]) * k.mean(axis=1)
        unique = sorted(set(bodies))
        adjacency: dict[str, set[str]] = {}
        joints = model.getJointSet()
        for i in range(joints.getSize()):
            parent = joints.get(i).getParentFrame().findBaseFrame().getName()
            child = joints.get(i).getChildFrame().findBaseFrame().getName()
            adjacency.setdefault(parent, set()).add(child)
            adjacency.setdefault(child, set()).add(parent)
        home = []
        for name in NAMES:
            body = anatomy.marker_map.landmarks[name].body
            allowed = {body} | adjacency.get(body, set())
            if allowed & TRUNK_BODIES:
                allowed |= TRUNK_BODIES
            home.append(frozenset(allowed))
        index = np.array([unique.index(b) for b in bodies])
        return cls(bodies, local, radii, unique, index, home)

    def record(self, rots: NDArray[np.float64], origins: NDArray[np.float64]) -> None:
        """Pose the capsules with the rotations (U, 3, 3) and origins (U, 3) of `unique`'s bodies."""
        r, o = rots[self.index], origins[self.index]
        self.ends.append(np.einsum("nij,nkj->nki", r, self.local) + o[:, None, :])


def fit_sequence(
    bones_per_frame: Sequence[BonesFrame],
    height_m: float,
    mass_kg: float,
    model: osim.Model | str | Path | None = None,
    marker_map: MarkerMap | str | Path | None = None,
    *,
    rms_threshold_m: float = DEFAULT_RMS_THRESHOLD_M,
    accuracy: float = DEFAULT_ACCURACY,
    scale_frames: int = DEFAULT_SCALE_FRAMES,
    scale: bool = True,
    bone_weights: Mapping[str, float] | None = None,
    settings: FitSettings | None = None,
) -> FitResult:
    """Scale `model` to the subject and solve IK for every frame; see the module docstring.

    `bones_per_frame[f]` maps Unreal bone names to OpenSim ground positions (m) of frame f.
    `model` None builds the default SpineTrack model; a user model (object or .osim path) needs a
    `marker_map` unless it already carries ``ue_*``/``kp_*`` markers. The user's model object is
    never modified (a clone is fitted). `settings` (default `FitSettings()`) says how to scale and
    solve; `accuracy`, `scale_frames` and `bone_weights` override it when given explicitly.
    """
    if not bones_per_frame:
        raise ValueError("no frames to fit")
    settings = _settings_with(
        settings, accuracy=accuracy, scale_frames=scale_frames, bone_weights=bone_weights
    )
    osim.Logger.setLevelString("error")
    fitted, mm, is_default = _prepared_model(model, height_m, mass_kg, marker_map, settings)
    state = fitted.initSystem()
    names, targets, warnings = _usable_targets(fitted, bones_per_frame)

    factors: dict[str, float | tuple[float, float, float]] = {}
    if scale and mm is not None and (mm.scale_segments or mm.axis_scale_segments):
        measured = _measured_scale(fitted, state, targets, names, mm, settings)
        factors = _apply_scale(fitted, state, measured, mass_kg)
        state = fitted.initSystem()

    surface = _FittedSurface.of(fitted, height_m, mass_kg, settings, factors) if is_default else None
    tracker = _Tracker.of(fitted, state, targets, names, settings, surface, lumbar_task=is_default)
    frames = _FittedFrames(len(bones_per_frame), len(names), len(tracker.coord_names))
    for f in range(len(bones_per_frame)):
        positions, rots, origins, err, frame_rms = tracker.solve(f, rms_threshold_m)
        frames.add(f, positions, err, frame_rms, names, targets[f], tracker.coordinates())
        if surface is not None:
            surface.record(rots, origins)

    return FitResult(
        landmarks=frames.landmarks,
        rms_m=frames.rms,
        max_m=frames.worst,
        worst_bone=frames.worst_bone,
        flagged=frames.rms > rms_threshold_m,
        coordinate_names=tracker.coord_names,
        coordinates=frames.coords,
        scale_factors=factors,
        bones_used=names,
        rms_threshold_m=rms_threshold_m,
        warnings=warnings,
        bone_residuals_m=frames.residuals,
        settings=settings,
        capsule_ends_m=None if surface is None else np.asarray(surface.ends),
        capsule_radii_m=None if surface is None else surface.radii,
        capsule_bodies=None if surface is None else surface.bodies,
        landmark_home=None if surface is None else surface.home,
    )


def _settings_with(
    settings: FitSettings | None,
    *,
    accuracy: float,
    scale_frames: int,
    bone_weights: Mapping[str, float] | None,
) -> FitSettings:
    """`settings` (default `FitSettings()`) with the keyword arguments a caller gave explicitly
    (those that differ from their defaults): the older call style still wins over the settings."""
    settings = settings or FitSettings()
    if accuracy != DEFAULT_ACCURACY:
        settings = replace(settings, accuracy=accuracy)
    if scale_frames != DEFAULT_SCALE_FRAMES:
        settings = replace(settings, scale_frames=scale_frames)
    if bone_weights is not None:
        settings = replace(settings, bone_weights=dict(bone_weights))
    return settings


def _prepared_model(
    model: osim.Model | str | Path | None,
    height_m: float,
    mass_kg: float,
    marker_map: MarkerMap | str | Path | None,
    settings: FitSettings,
) -> tuple[osim.Model, MarkerMap | None, bool]:
    """The model to fit, its marker map and whether it is the default SpineTrack model.

    A default model (built here or passed in, e.g. the coupled variant) brings its own scale pairs
    and gets the joint ranges `settings` asks for; a user model keeps its own ranges.
    """
    fitted, mm = _load_model(model, height_m, mass_kg, marker_map, settings.anatomy_revision)
    is_default = fitted.getName() == DEFAULT_MODEL_NAME
    if mm is None and is_default:
        mm = default_anatomy(height_m, mass_kg).marker_map
    if is_default:
        if settings.ranges == "anatomical":
            set_anatomical_ranges(fitted)
        else:
            _set_default_ranges(fitted)
    return fitted, mm, is_default


def _usable_targets(
    model: osim.Model, bones_per_frame: Sequence[BonesFrame]
) -> tuple[list[str], NDArray[np.float64], list[str]]:
    """The bones the model has markers for and some frame carries, their (F, B, 3) targets (NaN
    where a frame lacks one), and a warning for each bone no frame carries: it is left out of IK
    and of the residuals, and the caller is told rather than left to find a bone missing."""
    marker_set = model.getMarkerSet()
    model_bones = [
        marker_set.get(i).getName()[len(BONE_PREFIX) :]
        for i in range(marker_set.getSize())
        if marker_set.get(i).getName().startswith(BONE_PREFIX)
    ]
    targets_all = _bones_array(bones_per_frame, model_bones)
    present = np.any(np.all(np.isfinite(targets_all), axis=2), axis=0)
    names = [n for n, ok in zip(model_bones, present, strict=True) if ok]
    warnings = [
        f"bone {n!r} absent in every frame; not used"
        for n, ok in zip(model_bones, present, strict=True)
        if not ok
    ]
    return names, targets_all[:, present], warnings


def _measured_scale(
    model: osim.Model,
    state: osim.State,
    targets: NDArray[np.float64],
    names: list[str],
    mm: MarkerMap,
    settings: FitSettings,
) -> dict[str, float | tuple[float, float, float]]:
    """Scale factors per body as `settings.scaling` measures them from the targets.

    per_axis: (x, y, z) factors over the frames fit for measuring (`scaling_frames`); bodies the
    per-axis table leaves out keep the isotropic pairs, measured over the same good frames.
    isotropic_first_frames: one factor per body over the first `settings.scale_frames` frames.
    """
    measured: dict[str, float | tuple[float, float, float]]
    if settings.scaling == "per_axis" and mm.axis_scale_segments:
        measured = dict(_axis_scale_set(model, state, targets, names, mm.axis_scale_segments, settings))
        good = targets[scaling_frames(targets, names, settings)]
        iso = _scale_set(model, state, good, names, mm.scale_segments, good.shape[0])
        measured |= {b: k for b, k in iso.items() if b not in measured}
    else:
        frames = settings.scale_frames
        measured = dict(_scale_set(model, state, targets, names, mm.scale_segments, frames))
    return measured


def _lumbar_task(
    model: osim.Model, state: osim.State, settings: FitSettings, *, is_default: bool
) -> osim.SimTKArrayCoordinateReference:
    """The coordinate task holding each lumbar level's rotations near neutral (empty when
    `settings.lumbar_regularisation` is 0 or the model is not the default one, whose levels these
    names are); coupled (dependent) coordinates are left to their couplers."""
    coordinate_refs = osim.SimTKArrayCoordinateReference()
    if settings.lumbar_regularisation > 0 and is_default:
        cs = model.getCoordinateSet()
        for level in range(len(LUMBAR_LEVELS)):
            for dof in LUMBAR_DOFS:
                name = lumbar_coordinate(level, dof)
                if cs.contains(name) and not cs.get(name).isDependent(state):
                    ref = osim.CoordinateReference(name, osim.Constant(0.0))
                    ref.setWeight(settings.lumbar_regularisation)
                    coordinate_refs.push_back(ref)
    return coordinate_refs


_Floats = NDArray[np.float64]


def _rms(err: NDArray[np.float64]) -> float:
    """RMS of the bone-marker distances a frame has targets for (NaN: no target)."""
    return float(np.sqrt(np.nanmean(err**2)))


@dataclass
class _Tracker:
    """One IK solver for the whole sequence and what it reads back from each frame's solution.

    `keep_alive` holds the OpenSim objects the solver was made from (marker weights and table,
    coordinate task) for as long as it runs.
    """

    model: osim.Model
    state: osim.State
    solver: osim.InverseKinematicsSolver
    targets: NDArray[np.float64]
    bone_markers: list[str]
    reader: PoseReader
    coord_names: list[str]
    q_index: NDArray[np.intp] | None
    keep_alive: tuple[object, ...]

    @classmethod
    def of(
        cls,
        model: osim.Model,
        state: osim.State,
        targets: NDArray[np.float64],
        names: list[str],
        settings: FitSettings,
        surface: _FittedSurface | None,
        *,
        lumbar_task: bool,
    ) -> _Tracker:
        """The solver with the bone targets and weights of `settings`; every frame's bone markers,
        landmarks and capsule bodies then come from one pose read per body (`PoseReader`)."""
        weights = osim.SetMarkerWeights()
        for n in names:
            weight = float(settings.bone_weights.get(n, 1.0))
            weights.cloneAndAppend(osim.MarkerWeight(BONE_PREFIX + n, weight))
        reference = osim.MarkersReference(_marker_table(targets, names), weights)
        coordinate_refs = _lumbar_task(model, state, settings, is_default=lumbar_task)
        solver = osim.InverseKinematicsSolver(model, reference, coordinate_refs, math.inf)
        solver.setAccuracy(settings.accuracy)
        coord_set = model.getCoordinateSet()
        coord_names = [coord_set.get(i).getName() for i in range(coord_set.getSize())]
        bone_markers = [BONE_PREFIX + n for n in names]
        landmark_markers = [LANDMARK_PREFIX + n for n in NAMES]
        reader = PoseReader(model, bone_markers + landmark_markers, surface.unique if surface else ())
        q_index = coordinate_q_indices(model, state)
        return cls(model, state, solver, targets, bone_markers, reader, coord_names, q_index,
                   (weights, reference, coordinate_refs))

    def solve(self, f: int, rms_threshold_m: float) -> tuple[_Floats, _Floats, _Floats, _Floats, float]:
        """Solve frame `f`: marker positions, body rotations and origins, bone-marker distances and
        their RMS. Frame 0 starts from the yaw search; later frames track the last solution."""
        self.state.setTime(f * _DT)
        if f == 0:
            _initial_root_pose(self.model, self.state, self.targets[0], self.bone_markers)
            self.solver.assemble(self.state)
        else:
            self.solver.track(self.state)
        positions, rots, origins, err = self._solved(f)
        frame_rms = _rms(err)
        if frame_rms > rms_threshold_m and f > 0:
            return self._restarted(f, frame_rms)
        return positions, rots, origins, err, frame_rms

    def _restarted(self, f: int, tracked_rms: float) -> tuple[_Floats, _Floats, _Floats, _Floats, float]:
        """Tracking can lose a fast or discontinuous motion: solve frame `f` again from scratch and
        keep whichever solution fits better. When the tracked one stays, the solver is put back on
        it, so the next frame tracks from the kept solution, not the restart."""
        previous = self.state.getQ().to_numpy().copy()  # getQ() is a view of the state: copy it
        _initial_root_pose(self.model, self.state, self.targets[f], self.bone_markers)
        self.solver.assemble(self.state)
        again = self._solved(f)
        if _rms(again[3]) < tracked_rms:
            positions, rots, origins, err = again
        else:
            self.state.setQ(osim.Vector.createFromMat(previous))
            self.solver.assemble(self.state)
            positions, rots, origins, err = self._solved(f)
        return positions, rots, origins, err, _rms(err)

    def _solved(self, f: int) -> tuple[_Floats, _Floats, _Floats, _Floats]:
        """Marker positions, body rotations and origins, bone-marker distances of the solution."""
        self.model.realizePosition(self.state)
        positions, rots, origins = self.reader.read(self.state)
        err = np.linalg.norm(positions[: len(self.bone_markers)] - self.targets[f], axis=1)
        return positions, rots, origins, np.where(np.isfinite(err), err, np.nan)

    def coordinates(self) -> NDArray[np.float64]:
        """The model's coordinates (CoordinateSet order) in the current solution: one read of Q
        when each coordinate is one generalized coordinate, else one call per coordinate."""
        if self.q_index is not None:
            return np.asarray(self.state.getQ().to_numpy()[self.q_index])
        coord_set = self.model.getCoordinateSet()
        return np.array([coord_set.get(i).getValue(self.state) for i in range(len(self.coord_names))])


class _FittedFrames:
    """The per-frame results of a fit, filled frame by frame (F frames, B bones, C coordinates)."""

    def __init__(self, n_frames: int, n_bones: int, n_coords: int) -> None:
        self.landmarks = np.empty((n_frames, len(NAMES), 3))
        self.rms = np.empty(n_frames)
        self.worst = np.empty(n_frames)
        self.worst_bone: list[str] = []
        self.coords = np.empty((n_frames, n_coords))
        self.residuals = np.empty((n_frames, n_bones, 3))

    def add(
        self,
        f: int,
        positions: NDArray[np.float64],
        err: NDArray[np.float64],
        frame_rms: float,
        names: list[str],
        target: NDArray[np.float64],
        coords: NDArray[np.float64],
    ) -> None:
        """Record frame `f`: `positions` holds the bone markers (`names` order), then the landmarks."""
        n_bones = len(names)
        self.rms[f] = frame_rms
        k = int(np.nanargmax(err))
        self.worst[f] = err[k]
        self.worst_bone.append(names[k])
        self.landmarks[f] = positions[n_bones:]
        self.residuals[f] = positions[:n_bones] - target
        self.coords[f] = coords
