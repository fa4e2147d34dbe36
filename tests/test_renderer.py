"""The reference renderer writes a valid render-contract folder whose pixels agree with its geometry."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from schemas.keypoints import INDEX, NAMES
from schemas.render import load_bones, load_cameras, load_sequence_info
from synthetic.camera import Camera, focal_from_hfov
from synthetic.coords import opensim_to_unreal, unreal_to_opensim
from synthetic.motions import MOTIONS, MotionParams, motion_pose
from synthetic.raster import PixelRays, intersect_capsule, raycast
from synthetic.renderer import GROUND_TRUTH_3D_FILE, GROUND_TRUTH_FILE, render_sequence

W, H = 160, 128


@pytest.fixture(scope="module")
def two_actors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_sequence(
        tmp_path_factory.mktemp("r") / "seq", frames=6, seed=11, motion="mixed", width=W, height=H, actors=2
    )


def _read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    assert img is not None, path
    return np.asarray(img)


def test_folder_follows_the_render_contract(two_actors: Path) -> None:
    info = load_sequence_info(two_actors / "sequence.json")
    assert (info.image_width, info.image_height, info.frame_count) == (W, H, 6)
    assert [a.id for a in info.actors] == [1, 2]
    cameras = load_cameras(two_actors / "cameras.jsonl", info.frame_count)
    bones = load_bones(two_actors / "bones.jsonl", info.frame_count, [1, 2])
    assert len(cameras) == 6 and len(bones) == 12
    assert "eye_l" in bones[(0, 1)].bones
    for f in range(6):
        rgb = _read(two_actors / "rgb" / f"{f:06d}.png", cv2.IMREAD_COLOR)
        mask = _read(two_actors / "mask" / f"{f:06d}.png")
        depth = np.load(two_actors / "depth" / f"{f:06d}.npy")
        assert rgb.shape == (H, W, 3) and mask.shape == (H, W) and mask.dtype == np.uint8
        assert depth.shape == (H, W) and depth.dtype == np.float32
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert np.isinf(depth[mask == 0]).all() and np.isfinite(depth[mask > 0]).all()
        assert (mask == 1).sum() > 100 and (mask == 2).sum() > 100


def test_bones_and_landmarks_project_onto_their_actor(two_actors: Path) -> None:
    info = load_sequence_info(two_actors / "sequence.json")
    cameras = load_cameras(two_actors / "cameras.jsonl", info.frame_count)
    bones = load_bones(two_actors / "bones.jsonl", info.frame_count, [1, 2])
    gt = json.loads((two_actors / GROUND_TRUTH_FILE).read_text())
    truth3d = np.load(two_actors / GROUND_TRUTH_3D_FILE)["landmarks_ue_cm"]
    on_actor = total = 0
    for ann in gt["annotations"]:
        f = ann["image_id"] - 1
        cam = Camera.from_record(cameras[f].model_dump(), W, H)
        mask = _read(two_actors / "mask" / f"{f:06d}.png")
        depth = np.load(two_actors / "depth" / f"{f:06d}.npy")
        kps = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        uv, z = cam.project(truth3d[f, ann["actor"] - 1])
        for k in np.flatnonzero(kps[:, 2] > 0):
            assert kps[k, :2] == pytest.approx(uv[k], abs=1e-2)
        for k in np.flatnonzero(kps[:, 2] == 2):
            x, y = int(kps[k, 0]), int(kps[k, 1])
            total += 1
            if mask[y, x] == ann["actor"]:
                on_actor += 1
                # a visible landmark lies inside the body, behind the surface the camera sees
                # (within one pixel: a 2 px wide foot seen edge-on shows what is behind it)
                near = depth[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
                assert near.min() <= z[k] + 1.0, NAMES[k]
                assert z[k] - depth[y, x] < 40.0
        # the pelvis bone (its Unreal position) falls inside the actor's box
        puv, _ = cam.project(np.asarray([bones[(f, ann["actor"])].bones["pelvis"]]))
        x, y, w, h = ann["bbox"]
        assert x <= puv[0, 0] <= x + w and y <= puv[0, 1] <= y + h
        assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
    assert total > 0 and on_actor / total > 0.9


def test_same_seed_same_pixels_other_seed_other_pixels(tmp_path: Path) -> None:
    a = render_sequence(tmp_path / "a", frames=2, seed=5, motion="walk", width=64, height=48)
    b = render_sequence(tmp_path / "b", frames=2, seed=5, motion="walk", width=64, height=48)
    c = render_sequence(tmp_path / "c", frames=2, seed=6, motion="walk", width=64, height=48)
    for name in ("rgb/000001.png", "mask/000001.png", "depth/000001.npy", "bones.jsonl", "cameras.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "bones.jsonl").read_bytes() != (c / "bones.jsonl").read_bytes()
    # a shorter re-render into the same folder leaves no frames of the longer one behind
    render_sequence(a, frames=1, seed=5, motion="walk", width=64, height=48)
    assert sorted(p.name for p in (a / "rgb").iterdir()) == ["000000.png"]
    assert load_sequence_info(a / "sequence.json").frame_count == 1


@pytest.mark.parametrize("motion", MOTIONS)
def test_every_motion_renders_a_person_on_the_floor(tmp_path: Path, motion: str) -> None:
    out = render_sequence(tmp_path / motion, frames=1, seed=2, motion=motion, width=64, height=48)
    line = json.loads((out / "bones.jsonl").read_text().splitlines()[0])
    feet = [line["bones"][b][2] for b in ("foot_l", "foot_r", "ball_l", "ball_r")]
    assert 0.0 <= min(feet) < 15.0  # Unreal Z is up: the lowest foot bone is just above the floor
    mask = _read(out / "mask" / "000000.png")
    assert (mask == 1).any()


def test_motions_are_smooth() -> None:
    params = MotionParams.draw(np.random.default_rng(0))
    for motion in MOTIONS:
        poses = [motion_pose(motion, f / 30.0, params) for f in range(200)]
        for before, after in itertools.pairwise(poses):
            for key in set(before) & set(after):
                assert abs(after[key] - before[key]) < 0.25, (motion, key)


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="motion"):
        render_sequence(tmp_path, frames=1, seed=0, motion="moonwalk")
    with pytest.raises(ValueError, match="frames"):
        render_sequence(tmp_path, frames=0, seed=0)


def test_ray_caster_matches_the_analytic_sphere() -> None:
    """A capsule of zero length is a sphere: its depth at the image centre is distance - radius."""
    cam = Camera.from_hfov(33, 33, 60.0, (0.0, 0.0, 0.0), {"pitch": 0.0, "yaw": 0.0, "roll": 0.0})
    centre = np.array([[500.0, 0.0, 0.0]])
    hits = raycast(cam, centre, centre, np.array([50.0]), PixelRays(cam))
    assert hits.depth[16, 16] == pytest.approx(450.0, abs=0.05)
    assert hits.index[16, 16] == 0 and hits.index[0, 0] == -1
    assert hits.normal[16, 16] == pytest.approx([-1.0, 0.0, 0.0], abs=1e-3)
    # the silhouette radius in pixels matches the projected sphere
    f = focal_from_hfov(33, 60.0)
    half_width = (hits.index[16] == 0).sum() / 2
    assert half_width == pytest.approx(f * 50.0 / np.sqrt(500.0**2 - 50.0**2), abs=1.0)
    t = intersect_capsule(
        np.zeros(3),
        np.array([[1.0, 0.0, 0.0]]),
        np.array([300.0, -100.0, 0.0]),
        np.array([300.0, 100.0, 0.0]),
        20.0,
    )
    assert t[0] == pytest.approx(280.0)


def test_axis_swap_round_trip() -> None:
    p = np.array([[12.0, -3.0, 170.0]])
    assert opensim_to_unreal(unreal_to_opensim(p)) == pytest.approx(p)
    assert len(NAMES) == 37 and INDEX["hip"] == 19
