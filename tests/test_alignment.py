"""Scale + IK with real OpenSim: exact targets fit, wrong targets are flagged, Rajagopal2016 fits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import opensim as osim
import pytest

from schemas.errors import InputError
from schemas.keypoints import INDEX
from synthetic.alignment import fit_sequence
from synthetic.marker_map import load_marker_map, shipped_marker_map
from synthetic.opensim_model import (
    LUMBAR_LEVELS,
    bone_names,
    build_default_model,
    landmark_names,
    marker_positions,
    pose_state,
)

HEIGHT, MASS = 1.68, 61.0


def _pose(f: int) -> dict[str, float]:
    return {
        "pelvis_ty": 0.53 * HEIGHT - 0.04 * math.sin(f / 9) ** 2,
        "pelvis_tx": 0.01 * f,
        "pelvis_rotation": 2.8 + 0.3 * math.sin(f / 13),  # facing away from +X: the yaw search matters
        "lumbar_extension": -0.5 * math.sin(f / 10) ** 2,
        "lumbar_bending": 0.2 * math.sin(f / 8),
        "lumbar_rotation": 0.3 * math.sin(f / 11),
        "hip_flexion_l": 0.6 * math.sin(f / 7),
        "hip_flexion_r": -0.6 * math.sin(f / 7),
        "knee_flexion_l": 0.5 + 0.4 * math.sin(f / 6),
        "knee_flexion_r": 0.3,
        "shoulder_flexion_r": 0.8 * math.sin(f / 5),
        "elbow_flexion_r": 1.0,
        "elbow_flexion_l": 0.5,
        "shoulder_adduction_l": -0.4,
        "head_rotation": 0.4 * math.sin(f / 12),
        "neck_extension": -0.2,
    }


@pytest.fixture(scope="module")
def truth() -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Bones and true landmarks from forward kinematics of the default model (20 frames)."""
    model = build_default_model(HEIGHT, MASS)
    state = model.initSystem()
    names = list(bone_names())
    frames, landmarks = [], []
    for f in range(20):
        pose_state(model, state, _pose(f))
        frames.append(
            dict(zip(names, marker_positions(model, state, ["ue_" + n for n in names]), strict=True))
        )
        landmarks.append(marker_positions(model, state, landmark_names()))
    return frames, np.asarray(landmarks)


def test_exact_bones_recover_landmarks_within_millimetres(truth) -> None:  # type: ignore[no-untyped-def]
    frames, landmarks = truth
    result = fit_sequence(frames, HEIGHT, MASS)
    err = np.linalg.norm(result.landmarks - landmarks, axis=2)
    assert result.landmarks.shape == (20, 37, 3)
    assert result.rms_m.max() < 0.002
    assert float(np.median(err)) < 0.002
    assert err.max() < 0.01  # the head vertex, 18 cm from the nearest target, is the worst point
    assert not result.flagged.any()
    assert all(np.allclose(np.atleast_1d(v), 1.0, atol=0.01) for v in result.scale_factors.values())
    # the total lumbar flexion is recovered, not just the marker positions
    levels = [result.coordinate_names.index(f"{j}_extension") for j, _ in LUMBAR_LEVELS]
    assert result.coordinates[10, levels].sum() == pytest.approx(-0.5 * math.sin(1.0) ** 2, abs=0.03)


def test_scaling_follows_a_taller_subject(truth) -> None:  # type: ignore[no-untyped-def]
    frames, landmarks = truth
    grown = [{k: v * 1.1 for k, v in frame.items()} for frame in frames[:5]]
    result = fit_sequence(grown, HEIGHT, MASS)  # height says 1.68 m, bones say 1.85 m
    assert np.atleast_1d(result.scale_factors["femur_l"]) == pytest.approx(1.1, abs=0.01)
    assert result.rms_m.max() < 0.003
    err = np.linalg.norm(result.landmarks - landmarks[:5] * 1.1, axis=2)
    assert err.max() < 0.015


def test_wrong_bones_give_large_residuals_and_flags(truth) -> None:  # type: ignore[no-untyped-def]
    frames, _ = truth
    broken = [dict(frame) for frame in frames[:8]]
    for f in (3, 4):
        broken[f]["hand_l"] = broken[f]["hand_l"] + np.array([0.0, 0.35, 0.2])  # hand torn off the arm
        broken[f]["foot_r"] = broken[f]["foot_r"] + np.array([0.3, 0.0, 0.0])
    result = fit_sequence(broken, HEIGHT, MASS, rms_threshold_m=0.02)
    assert list(np.flatnonzero(result.flagged)) == [3, 4]
    assert result.rms_m[3] > 0.025  # per-axis scaling saw the torn frames too (8 frames: nothing trimmed)
    assert result.max_m[3] > 0.1
    assert result.worst_bone[3] in ("hand_l", "foot_r")
    assert result.rms_m[[0, 1, 2, 5, 6, 7]].max() < 0.003  # neighbours are unaffected


def test_missing_optional_bones_are_reported(truth) -> None:  # type: ignore[no-untyped-def]
    frames, landmarks = truth
    no_eyes = [{k: v for k, v in frame.items() if not k.startswith("eye")} for frame in frames[:4]]
    del no_eyes[2]["hand_l"]  # a bone missing in one frame only: that frame fits without it
    result = fit_sequence(no_eyes, HEIGHT, MASS)
    assert result.rms_m.max() < 0.002
    assert "eye_l" not in result.bones_used
    assert any("eye_l" in w for w in result.warnings)
    hip = INDEX["hip"]
    assert np.linalg.norm(result.landmarks[:, hip] - landmarks[:4, hip], axis=1).max() < 0.005


def test_rajagopal_model_fits_with_the_shipped_marker_map(truth, rajagopal_model: Path) -> None:  # type: ignore[no-untyped-def]
    frames, landmarks = truth
    user = osim.Model(str(rajagopal_model))
    markers_before = user.getMarkerSet().getSize()
    result = fit_sequence(
        frames[:6], HEIGHT, MASS, model=user, marker_map=shipped_marker_map("rajagopal2016")
    )
    assert user.getMarkerSet().getSize() == markers_before  # the caller's model is untouched
    # a rigid trunk cannot bend like six lumbar joints (here up to 0.5 rad): centimetres, not millimetres
    assert result.rms_m.max() < 0.06
    err = np.linalg.norm(result.landmarks - landmarks[:6], axis=2)
    assert float(np.median(err)) < 0.03
    for name in ("left_knee", "right_ankle", "left_hip"):
        assert err[:, INDEX[name]].max() < 0.03
    assert np.atleast_1d(result.scale_factors["femur_l"]) == pytest.approx(1.0, abs=0.15)


def test_rajagopal_recovers_its_own_poses(rajagopal_model: Path) -> None:
    """Targets made by the Rajagopal model itself are fitted exactly (no model mismatch)."""
    osim.Logger.setLevelString("error")
    mm = shipped_marker_map("rajagopal2016")
    from synthetic.opensim_model import attach_markers

    model = osim.Model(str(rajagopal_model))
    model.updMarkerSet().clearAndDestroy()
    attach_markers(model, mm)
    state = model.initSystem()
    cs = model.getCoordinateSet()
    names = list(mm.bones)
    frames, truth_lm = [], []
    for f in range(4):
        cs.get("pelvis_rotation").setValue(state, 0.5 + 0.05 * f, False)
        cs.get("lumbar_extension").setValue(state, -0.2 - 0.03 * f, False)
        cs.get("hip_flexion_r").setValue(state, 0.3, False)
        cs.get("arm_flex_l").setValue(state, 0.6, False)
        cs.get("elbow_flex_l").setValue(state, 0.8, False)
        model.assemble(state)
        frames.append(
            dict(zip(names, marker_positions(model, state, ["ue_" + n for n in names]), strict=True))
        )
        truth_lm.append(marker_positions(model, state, landmark_names()))
    result = fit_sequence(frames, 1.70, 75.0, model=model, marker_map=mm, scale=False, accuracy=1e-5)
    assert result.rms_m.max() < 0.003
    assert np.linalg.norm(result.landmarks - np.asarray(truth_lm), axis=2).max() < 0.01


def test_marker_map_errors_name_file_and_field(tmp_path: Path) -> None:
    good = json.loads(
        (Path(__file__).resolve().parents[1] / "synthetic/marker_maps/rajagopal2016.json").read_text()
    )
    bad = dict(good, bones={k: v for k, v in good["bones"].items() if k != "hand_l"})
    path = tmp_path / "map.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match="hand_l") as info:
        load_marker_map(path)
    assert info.value.field == "bones" and info.value.path == str(path)
    bad = dict(good)
    bad["landmarks"] = dict(good["landmarks"], nose={"body": "torso", "offset": [0, "x", 0]})
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError) as info:
        load_marker_map(path)
    assert info.value.field == "landmarks.nose.offset"
    wrong_body = dict(good, bones=dict(good["bones"], pelvis={"body": "no_such_body", "offset": [0, 0, 0]}))
    path.write_text(json.dumps(wrong_body))
    with pytest.raises(ValueError, match="no_such_body"):
        fit_sequence([{}], 1.7, 70, model=build_default_model(), marker_map=path)


def test_scaling_frames_drop_fast_frozen_and_crouched_frames() -> None:
    from synthetic.alignment import FitSettings, scaling_frames

    model = build_default_model(HEIGHT, MASS)
    state = model.initSystem()
    names = list(bone_names())
    targets = []
    for f in range(20):
        knee = 1.6 if f == 12 else 0.2  # frame 12 crouches
        pose = {"pelvis_ty": 0.9, "pelvis_tx": 0.01 * f, "knee_flexion_l": knee, "knee_flexion_r": knee}
        pose_state(model, state, pose)
        targets.append(marker_positions(model, state, ["ue_" + n for n in names]))
    arr = np.asarray(targets)
    arr[5] = arr[4]  # an exporter repeated a frame
    arr[8:] += np.array([0.5, 0.0, 0.0])  # a jump: frame 8 is the fastest
    keep = scaling_frames(arr, names, FitSettings())
    assert not keep[5] and not keep[8] and not keep[12]
    assert keep.sum() >= 15


def test_lumbar_task_pulls_the_levels_towards_neutral(truth) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from synthetic.alignment import FitSettings

    frames, _ = truth
    free = fit_sequence(frames[:6], HEIGHT, MASS)
    held = fit_sequence(frames[:6], HEIGHT, MASS, settings=replace(FitSettings(), lumbar_regularisation=1.0))
    levels = [free.coordinate_names.index(f"{j}_bending") for j, _ in LUMBAR_LEVELS]
    assert np.abs(held.coordinates[:, levels]).sum() < 0.5 * np.abs(free.coordinates[:, levels]).sum()
    assert held.rms_m.mean() > free.rms_m.mean()  # it is a trade-off against the bones, not free


def test_anatomical_ranges_bound_the_solution() -> None:
    """A knee bent backwards in the targets stays within the anatomical range, unlike open ranges."""
    from synthetic.alignment import FitSettings
    from synthetic.anatomy import JOINT_RANGES_DEG

    model = build_default_model(HEIGHT, MASS)
    state = model.initSystem()
    names = list(bone_names())
    frames = []
    for f in range(3):
        pose_state(model, state, {"pelvis_ty": 0.9, "knee_flexion_l": -0.6 - 0.01 * f})  # hyperextended
        positions = marker_positions(model, state, ["ue_" + n for n in names])
        frames.append(dict(zip(names, positions, strict=True)))
    bounded = fit_sequence(frames, HEIGHT, MASS)
    knee = bounded.coordinate_names.index("knee_flexion_l")
    assert bounded.coordinates[:, knee].min() >= math.radians(JOINT_RANGES_DEG["knee_flexion"][0]) - 1e-6
    from dataclasses import replace

    open_fit = fit_sequence(frames, HEIGHT, MASS, settings=replace(FitSettings(), ranges="open"))
    assert open_fit.coordinates[:, knee].max() < -0.5
