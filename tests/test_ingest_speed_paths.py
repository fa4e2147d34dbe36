"""The fast reading paths of the IK fit give what the one-by-one SWIG reads give (issue 11).

`PoseReader` (all markers and body poses from one transform per frame), `coordinate_q_indices`
(coordinates from one Q read), the one-call marker table and the native-library preload
(synthetic/opensim_runtime.py) are checked against the slow paths they replace, on real OpenSim.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import synthetic.opensim_runtime  # noqa: F401  (first, as the synthetic modules do)

# isort: split
import opensim as osim

from synthetic.alignment import _DT, _marker_table, fit_sequence
from synthetic.marker_map import BONE_PREFIX
from synthetic.opensim_builder import (
    PoseReader,
    body_fixed_xyz_matrices,
    body_transforms,
    build_default_model,
    coordinate_q_indices,
    marker_positions,
    pose_state,
    quaternion_matrices,
)

REPO = Path(__file__).resolve().parents[1]
POSES = [
    {},
    {"pelvis_rotation": 1.5707963, "pelvis_tilt": 0.3, "hip_flexion_r": 0.9, "lumbar_extension": -0.4},
    {"pelvis_rotation": -2.9, "pelvis_list": 1.5707963, "shoulder_flexion_l": 2.5, "elbow_flexion_l": 2.0,
     "head_rotation": 0.6, "knee_flexion_r": 1.8, "lumbar_rotation": 0.5},
]


@pytest.fixture(scope="module")
def model() -> osim.Model:
    return build_default_model(1.74, 68.0, ranges="anatomical")


def _names(model: osim.Model) -> tuple[list[str], list[str]]:
    ms, bs = model.getMarkerSet(), model.getBodySet()
    return ([ms.get(i).getName() for i in range(ms.getSize())],
            [bs.get(i).getName() for i in range(bs.getSize())])


def test_pose_reader_equals_marker_and_body_reads(model: osim.Model) -> None:
    state = model.initSystem()
    markers, bodies = _names(model)
    reader = PoseReader(model, markers, bodies)
    for pose in POSES:
        pose_state(model, state, pose)
        positions, rots, origins = reader.read(state)
        assert np.abs(positions - marker_positions(model, state, markers)).max() < 1e-9
        slow_rots, slow_origins = body_transforms(model, state, bodies)
        assert np.abs(rots - slow_rots).max() < 1e-9
        assert np.abs(origins - slow_origins).max() < 1e-9


def test_pose_reader_follows_markers_on_offset_frames(model: osim.Model) -> None:
    """A user model's marker may sit on an offset frame of a body, not on the body itself."""
    user = model.clone()
    femur = user.getBodySet().get("femur_r")
    placement = osim.Transform(osim.Rotation(0.7, osim.Vec3(0, 0, 1)), osim.Vec3(0.02, -0.1, 0.03))
    offset = osim.PhysicalOffsetFrame("femur_r_offset", femur, placement)
    femur.addComponent(offset)
    user.addMarker(osim.Marker("on_offset", offset, osim.Vec3(0.05, 0.01, -0.02)))
    user.finalizeConnections()
    state = user.initSystem()
    pose_state(user, state, POSES[2])
    names = ["on_offset", "ue_thigh_r"]
    positions, _, _ = PoseReader(user, names).read(state)
    assert np.abs(positions - marker_positions(user, state, names)).max() < 1e-9


def test_body_fixed_xyz_matrices_are_simbody_rotations_also_at_gimbal_lock() -> None:
    rng = np.random.default_rng(4)
    for k in range(60):
        rot = osim.Rotation()
        middle = math.pi / 2 * (1 if k % 2 else -1) if k % 3 == 0 else float(rng.uniform(-3, 3))
        rot.setRotationToBodyFixedXYZ(osim.Vec3(float(rng.uniform(-3, 3)), middle, float(rng.uniform(-3, 3))))
        mat = rot.asMat33()
        expected = np.array([[mat.get(r, c) for c in range(3)] for r in range(3)])
        angles = rot.convertRotationToBodyFixedXYZ().to_numpy()
        got = body_fixed_xyz_matrices(angles[None])[0]
        assert np.abs(got - expected).max() < 1e-12


def test_quaternion_matrices_are_simbody_rotations() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        axis = rng.normal(size=3)
        rot = osim.Rotation(float(rng.uniform(-math.pi, math.pi)), osim.Vec3(*axis))
        q = rot.convertRotationToQuaternion()
        mat = rot.asMat33()
        expected = np.array([[mat.get(r, c) for c in range(3)] for r in range(3)])
        got = quaternion_matrices(np.array([[q.get(i) for i in range(4)]]))[0]
        assert np.abs(got - expected).max() < 1e-12


def test_coordinates_from_one_q_read_equal_each_coordinate(model: osim.Model) -> None:
    state = model.initSystem()
    pose_state(model, state, POSES[2])
    before = state.getQ().to_numpy().copy()
    index = coordinate_q_indices(model, state)
    assert index is not None
    assert np.array_equal(state.getQ().to_numpy(), before)  # the probe restores Q
    cs = model.getCoordinateSet()
    each = np.array([cs.get(i).getValue(state) for i in range(cs.getSize())])
    assert np.abs(state.getQ().to_numpy()[index] - each).max() < 1e-12
    assert np.abs(each).max() > 0.5  # the pose is not all zeros: the check can fail


def _cell_by_cell_table(targets: np.ndarray, names: list[str]) -> osim.TimeSeriesTableVec3:
    """The marker table as it was built before issue 11: one Vec3 per cell."""
    table = osim.TimeSeriesTableVec3()
    labels = osim.StdVectorString()
    for n in names:
        labels.append(BONE_PREFIX + n)
    table.setColumnLabels(labels)
    nan = osim.Vec3(math.nan, math.nan, math.nan)
    for f in range(targets.shape[0]):
        row = osim.RowVectorVec3(len(names))
        for j in range(len(names)):
            p = targets[f, j]
            row[j] = osim.Vec3(float(p[0]), float(p[1]), float(p[2])) if np.all(np.isfinite(p)) else nan
        table.appendRow(f * _DT, row)
    return table


def _table_values(table: osim.TimeSeriesTableVec3) -> tuple[list[str], np.ndarray, np.ndarray]:
    out = np.empty((table.getNumRows(), table.getNumColumns(), 3))
    for r in range(table.getNumRows()):
        row = table.getRowAtIndex(r)
        for j in range(table.getNumColumns()):
            out[r, j] = row[j].to_numpy()
    times = np.array([table.getIndependentColumn()[k] for k in range(table.getNumRows())])
    return list(table.getColumnLabels()), times, out


def test_marker_table_in_one_call_equals_cell_by_cell() -> None:
    rng = np.random.default_rng(5)
    targets = rng.normal(size=(30, 6, 3))
    targets[4, 2] = np.nan
    targets[9, 5, 1] = np.nan  # one bad component blanks the whole target
    names = [f"bone{i}" for i in range(6)]
    fast_labels, fast_times, fast = _table_values(_marker_table(targets, names))
    slow_labels, slow_times, slow = _table_values(_cell_by_cell_table(targets, names))
    assert fast_labels == slow_labels
    assert np.array_equal(fast_times, slow_times)
    assert np.array_equal(np.isnan(fast), np.isnan(slow)) and np.isnan(fast[9, 5]).all()
    assert np.nanmax(np.abs(fast - slow)) == 0.0


def test_fit_residuals_agree_with_their_summary(model: osim.Model) -> None:
    """rms, max and worst bone are computed from the same read as the stored residual vectors."""
    state = model.initSystem()
    markers = [m for m in _names(model)[0] if m.startswith(BONE_PREFIX)]
    frames = []
    for f in range(8):
        pose_state(model, state, {"pelvis_ty": 0.9, "hip_flexion_l": 0.1 * f, "lumbar_bending": 0.03 * f,
                                  "pelvis_rotation": 0.2 + 0.05 * f})
        positions = marker_positions(model, state, markers)
        frames.append({m[len(BONE_PREFIX):]: p + 0.003 * np.sin(f + i) for i, (m, p)
                       in enumerate(zip(markers, positions, strict=True))})
    fit = fit_sequence(frames, 1.74, 68.0)
    assert fit.bone_residuals_m is not None
    dist = np.linalg.norm(fit.bone_residuals_m, axis=2)
    assert np.allclose(fit.rms_m, np.sqrt(np.mean(dist**2, axis=1)), rtol=0, atol=1e-12)
    assert np.allclose(fit.max_m, dist.max(axis=1), rtol=0, atol=1e-12)
    assert fit.worst_bone == [fit.bones_used[k] for k in dist.argmax(axis=1)]
    assert fit.rms_m.min() > 1e-4  # the noise is there: the residuals are not trivially zero


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is for Linux builds")
def test_native_libraries_load_once_and_first() -> None:
    """Preloaded, each OpenSim library is mapped once (no second copy), and the SWIG modules reuse it."""
    code = (
        "import os, collections, synthetic.opensim_runtime as r, opensim\n"
        "maps = collections.defaultdict(set)\n"
        "for line in open('/proc/self/maps'):\n"
        "    p = line.split()\n"
        "    if len(p) >= 6 and ('libosim' in p[5] or 'libSimTK' in p[5]):\n"
        "        maps[os.path.basename(p[5])].add(p[4])\n"
        "print(len(r.PRELOADED), max(len(v) for v in maps.values()), len(maps))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    preloaded, copies, libraries = map(int, out)
    assert preloaded >= 6
    assert copies == 1
    assert libraries >= preloaded


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "RGBA", "P"])
def test_png_reads_equal_pil(tmp_path: Path, mode: str) -> None:
    """The mask/depth PNG reader gives PIL's pixels and dtype for every PNG kind (grey via OpenCV)."""
    from PIL import Image

    from synthetic.reader import _png_header, _read_png

    rng = np.random.default_rng(1)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size=(12, 20), dtype=np.uint16))
    elif mode in ("RGB", "RGBA"):
        img = Image.fromarray(rng.integers(0, 255, size=(12, 20, len(mode)), dtype=np.uint8), mode)
    else:
        img = Image.fromarray(rng.integers(0, 5, size=(12, 20), dtype=np.uint8)).convert(mode)
    path = tmp_path / "x.png"
    img.save(path)
    with Image.open(path) as again:
        expected = np.asarray(again)
    got = _read_png(path, (20, 12))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)
    header = _png_header(path.read_bytes()[:26])
    assert header is not None and header[:2] == (20, 12)


def test_markers_attached_in_one_pass_give_the_same_model(tmp_path: Path) -> None:
    """attach_markers appends and finalizes once; the model is what Model.addMarker per marker gives."""
    from synthetic.anatomy import default_anatomy
    from synthetic.marker_map import LANDMARK_PREFIX

    fast = build_default_model(1.81, 77.0)
    slow = fast.clone()
    slow.updMarkerSet().clearAndDestroy()
    mm = default_anatomy(1.81, 77.0).marker_map
    bodies = slow.getBodySet()
    for prefix, specs in ((BONE_PREFIX, mm.bones), (LANDMARK_PREFIX, mm.landmarks)):
        for name, spec in specs.items():
            offset = osim.Vec3(*map(float, spec.offset))
            slow.addMarker(osim.Marker(prefix + name, bodies.get(spec.body), offset))
    slow.finalizeConnections()
    fast.printToXML(str(tmp_path / "fast.osim"))
    slow.printToXML(str(tmp_path / "slow.osim"))
    assert (tmp_path / "fast.osim").read_text() == (tmp_path / "slow.osim").read_text()
    assert fast.getMarkerSet().getSize() == len(mm.bones) + len(mm.landmarks)


def test_trim_mean_is_scipys_to_the_bit() -> None:
    from scipy.stats import trim_mean

    from synthetic.alignment import _trim_mean

    rng = np.random.default_rng(11)
    for n in (1, 2, 3, 7, 10, 57, 200):
        values = rng.normal(1.0, 0.3, size=n)
        for proportion in (0.0, 0.05, 0.1, 0.25):
            assert _trim_mean(values, proportion) == float(trim_mean(values, proportion))


def test_provenance_from_the_template_equals_the_model_dump(tmp_path: Path) -> None:
    """Every label's provenance is what SyntheticProvenance(...).model_dump(mode="json") gives."""
    from synthetic import ingest
    from synthetic.renderer import render_sequence
    from synthetic.visibility import VisibilityRule

    folder = tmp_path / "render"
    render_sequence(folder, frames=4, seed=3, actors=1, width=64, height=48)
    src = ingest._open(folder, None, None)
    actor = src.seq.actor_ids[0]
    fit = ingest._fit_actor(src.seq, actor, residual_threshold_m=0.02, model=None, marker_map=None)
    ctx = ingest._WriteContext(src, fit, VisibilityRule().as_dict(), {"python": "3"})
    labels = [
        ingest._FrameLabel(frame=f, actor=actor, keypoints=[], bbox=[0, 0, 1, 1], area=1.0, flagged=False,
                           rms_m=float(fit.rms_m[f]), max_m=float(fit.max_m[f]), worst_bone=fit.worst_bone[f])
        for f in range(4)
    ]
    made = [ingest._provenance(ctx, lab) for lab in labels]
    expected = [ingest._provenance_model(ctx, lab).model_dump(mode="json") for lab in labels]
    assert made == expected
    assert len({p["frame"] for p in made}) == 4  # the per-frame keys do change
    assert set(ingest._PER_FRAME_PROVENANCE) <= set(made[0])


def test_actor_window_and_coco_triplets_match_the_plain_loops() -> None:
    """The one-gather mask window and the vectorised COCO triplets give the loops' answers."""
    from synthetic.visibility import _actor_near, coco_keypoints

    rng = np.random.default_rng(7)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(3, 40, 2))
        mask = rng.integers(0, 4, (h, w)).astype(np.uint8)
        rows, cols = rng.integers(0, h, 37), rng.integers(0, w, 37)
        for radius in (0, 1, 2):
            expected = [any(mask[min(max(r + dr, 0), h - 1), min(max(c + dc, 0), w - 1)] == 2
                            for dr in range(-radius, radius + 1) for dc in range(-radius, radius + 1))
                        for r, c in zip(rows, cols, strict=True)]
            assert _actor_near(mask, rows, cols, 2, radius).tolist() == expected
        uv, vis = rng.normal(20, 30, (37, 2)), rng.integers(0, 3, 37).astype(np.int8)
        plain: list[float] = []
        for (x, y), v in zip(uv, vis, strict=True):
            plain.extend([float(x), float(y), float(v)] if v > 0 else [0.0, 0.0, 0.0])
        assert coco_keypoints(uv, vis) == plain


def test_batched_frames_give_the_per_frame_answers() -> None:
    """The ingest's batch path (projection, self-occlusion, sampling, the rule, COCO triplets) equals
    one frame at a time through the public per-frame functions, on random scenes with other actors,
    props in the depth buffer and points behind the camera or outside the image."""
    from synthetic.camera import Camera
    from synthetic.visibility import (
        PixelSamples,
        VisibilityRule,
        coco_keypoints,
        coco_keypoints_frames,
        decide_visibility,
        keypoint_visibility,
        point_pixels,
        sample_pixels,
        self_occlusion,
    )

    rng = np.random.default_rng(11)
    frames, points, capsules, width, height = 6, 37, 9, 64, 48
    cams = [Camera(width=width, height=height, fx=60.0, fy=60.0, cx=32.0, cy=24.0,
                   location=(float(rng.normal(-300, 20)), float(rng.normal(0, 20)), 100.0),
                   pitch=float(rng.normal(0, 5)), yaw=float(rng.normal(0, 10)), roll=float(rng.normal(0, 3)))
            for _ in range(frames)]
    pts = rng.normal([0.0, 0.0, 100.0], [40.0, 60.0, 60.0], (frames, points, 3))
    pts[0, :3] = [[-400.0, 0.0, 100.0]] * 3  # behind the camera
    a = rng.normal([0.0, 0.0, 100.0], 40.0, (frames, capsules, 3))
    b = a + rng.normal(0.0, 20.0, (frames, capsules, 3))
    radii = rng.uniform(3.0, 12.0, capsules)
    bodies = [f"body{c}" for c in range(capsules)]
    home = [frozenset(rng.choice(bodies, 2, replace=False).tolist()) for _ in range(points)]
    rule = VisibilityRule(mask_radius_px=1)
    masks = [rng.choice([0, 1, 2], (height, width), p=[0.4, 0.4, 0.2]).astype(np.int32)
             for _ in range(frames)]
    depths = [np.where(rng.random((height, width)) < 0.2, np.inf, rng.uniform(150, 500, (height, width)))
              .astype(np.float32) for _ in range(frames)]

    uv, depth = Camera.project_frames(cams, pts)
    inside, rows, cols = point_pixels(uv, depth, width, height)
    locations = np.array([c.location for c in cams])
    hidden = self_occlusion(locations, pts, a, b, radii, bodies, home)
    samples = PixelSamples.stack([sample_pixels(rows[f], cols[f], depth_buffer=depths[f], mask=masks[f],
                                                actor_id=1, mask_radius_px=1) for f in range(frames)])
    vis = decide_visibility(inside, depth, samples, actor_id=1, rule=rule, self_occluded=hidden)
    triplets = coco_keypoints_frames(uv, vis)
    for f in range(frames):
        uv_f, depth_f = cams[f].project(pts[f])
        np.testing.assert_allclose(uv[f], uv_f, rtol=0, atol=1e-9)
        np.testing.assert_allclose(depth[f], depth_f, rtol=0, atol=1e-9)
        hidden_f = self_occlusion(cams[f].location, pts[f], a[f], b[f], radii, bodies, home)
        assert hidden[f].tolist() == hidden_f.tolist()
        vis_f = keypoint_visibility(uv_f, depth_f, width, height, depth_buffer=depths[f], mask=masks[f],
                                    actor_id=1, rule=rule, self_occluded=hidden_f)
        assert vis[f].tolist() == vis_f.tolist()
        assert triplets[f] == coco_keypoints(uv[f], vis[f])
    assert {0, 1, 2} <= set(vis.ravel().tolist())  # every outcome happens: the comparison means something
    assert hidden.any() and not hidden.all()


def test_mask_box_equals_the_numpy_box() -> None:
    from synthetic.visibility import bbox_from_mask

    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = np.zeros((int(rng.integers(1, 60)), int(rng.integers(1, 60))), dtype=np.int32)
        for actor in (1, 2):
            if rng.random() < 0.8:
                r0, c0 = int(rng.integers(0, mask.shape[0])), int(rng.integers(0, mask.shape[1]))
                mask[r0 : r0 + int(rng.integers(1, 20)), c0 : c0 + int(rng.integers(1, 20))] = actor
        hit = mask == 1
        got = bbox_from_mask(mask, 1)
        if not hit.any():
            assert got is None
            continue
        rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
        box = [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]
        assert got == (box, float(hit.sum()))


def test_depth_frames_read_like_np_load(tmp_path: Path) -> None:
    """Depth .npy frames after the first are read past its header bytes; a file with another header
    (dtype, shape) goes through np.load and is checked the same way; a truncated one is an InputError."""
    from schemas.errors import InputError
    from synthetic.reader import _NpyFrames

    reader = _NpyFrames((4, 5))
    rng = np.random.default_rng(0)
    arrays = [rng.random((4, 5)).astype(np.float32) for _ in range(3)] + [rng.random((4, 5))]  # then float64
    for i, arr in enumerate(arrays):
        np.save(tmp_path / f"{i}.npy", arr)
        got = reader.read(tmp_path / f"{i}.npy")
        assert got.dtype == arr.dtype and np.array_equal(got, arr) and got.flags.writeable
    assert reader.dtype == np.float64  # a new header replaces the kept one
    np.save(tmp_path / "wrong.npy", rng.random((5, 4)).astype(np.float32))
    with pytest.raises(InputError, match="expected float"):
        reader.read(tmp_path / "wrong.npy")
    data = (tmp_path / "0.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    with pytest.raises(InputError, match="unreadable depth array"):
        reader.read(tmp_path / "cut.npy")
