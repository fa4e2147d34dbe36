"""Coordinate mapping and the Unreal camera, against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic.camera import Camera, focal_from_hfov, look_at_rotation, rotator_matrix
from synthetic.coords import opensim_to_unreal, unreal_to_opensim

W, H = 320, 256  # hfov 90 -> f = 160 px, centre (160, 128)


def cam(**rotation: float) -> Camera:
    return Camera.from_hfov(W, H, 90.0, (0.0, 0.0, 0.0), rotation)


# -- coordinates ---------------------------------------------------------------------------
def test_unreal_to_opensim_hand_checked() -> None:
    # 1 m forward, 2 m right, 3 m up in Unreal -> OpenSim (forward, up, right) in metres
    np.testing.assert_allclose(unreal_to_opensim([100.0, 200.0, 300.0]), [1.0, 3.0, 2.0])
    # a head 170 cm above the ground is at OpenSim y = 1.7 m
    np.testing.assert_allclose(unreal_to_opensim([0.0, 0.0, 170.0]), [0.0, 1.7, 0.0])


def test_opensim_to_unreal_hand_checked() -> None:
    np.testing.assert_allclose(opensim_to_unreal([0.5, 1.7, -0.2]), [50.0, -20.0, 170.0])
    np.testing.assert_allclose(opensim_to_unreal([[1.0, 3.0, 2.0]]), [[100.0, 200.0, 300.0]])


def test_round_trip_keeps_shape() -> None:
    pts = np.random.default_rng(0).normal(size=(4, 5, 3)) * 100
    back = opensim_to_unreal(unreal_to_opensim(pts))
    assert back.shape == pts.shape
    np.testing.assert_allclose(back, pts)


def test_bad_shape_rejected() -> None:
    with pytest.raises(ValueError, match="last axis of size 3"):
        unreal_to_opensim([1.0, 2.0])


# -- rotator -------------------------------------------------------------------------------
def test_identity_rotator_axes() -> None:
    np.testing.assert_allclose(rotator_matrix(0, 0, 0), np.eye(3), atol=1e-12)


def test_yaw_90_looks_along_plus_y() -> None:
    m = rotator_matrix(0, 90, 0)
    np.testing.assert_allclose(m[0], [0, 1, 0], atol=1e-12)  # forward
    np.testing.assert_allclose(m[1], [-1, 0, 0], atol=1e-12)  # right
    np.testing.assert_allclose(m[2], [0, 0, 1], atol=1e-12)  # up


def test_pitch_90_looks_up() -> None:
    m = rotator_matrix(90, 0, 0)
    np.testing.assert_allclose(m[0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(m[2], [-1, 0, 0], atol=1e-12)  # image top points backwards


def test_forward_formula_matches_frotator_vector() -> None:
    p, y = 30.0, -40.0
    pr, yr = np.radians(p), np.radians(y)
    expected = [np.cos(pr) * np.cos(yr), np.cos(pr) * np.sin(yr), np.sin(pr)]
    np.testing.assert_allclose(rotator_matrix(p, y, 17.0)[0], expected, atol=1e-12)
    m = rotator_matrix(12.0, 34.0, 56.0)
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)


# -- projection ----------------------------------------------------------------------------
def test_focal_from_hfov() -> None:
    assert focal_from_hfov(320, 90.0) == pytest.approx(160.0)
    with pytest.raises(ValueError):
        focal_from_hfov(320, 180.0)


def test_project_identity_hand_checked() -> None:
    uv, depth = cam().project([[100, 0, 0], [100, 50, 0], [100, 0, 25], [200, 50, 25]])
    np.testing.assert_allclose(uv, [[160, 128], [240, 128], [160, 88], [200, 108]])
    np.testing.assert_allclose(depth, [100, 100, 100, 200])


def test_project_yaw_90() -> None:
    uv, depth = cam(yaw=90).project([[0, 100, 0], [-50, 100, 0]])
    np.testing.assert_allclose(uv, [[160, 128], [240, 128]], atol=1e-9)
    np.testing.assert_allclose(depth, [100, 100], atol=1e-9)


def test_project_pitch_90() -> None:
    uv, depth = cam(pitch=90).project([[0, 0, 100], [-30, 0, 100]])
    np.testing.assert_allclose(uv, [[160, 128], [160, 80]], atol=1e-9)
    np.testing.assert_allclose(depth, [100, 100], atol=1e-9)


def test_roll_rotates_the_image() -> None:
    # roll 90: a point above the optical axis appears left of centre, one to the right appears above
    uv, _ = cam(roll=90).project([[100, 0, 50], [100, 50, 0]])
    np.testing.assert_allclose(uv, [[80, 128], [160, 48]], atol=1e-9)


def test_translation_and_planar_depth() -> None:
    c = Camera.from_hfov(W, H, 90.0, (-100.0, 0.0, 50.0))
    uv, depth = c.project([[0, 100, 50]])
    np.testing.assert_allclose(uv, [[320, 128]])  # 45 degrees right: the right image edge
    np.testing.assert_allclose(depth, [100])  # planar, not the 141 cm Euclidean distance
    assert not c.in_image(uv)[0]  # u == W is outside
    assert c.in_image([[0.0, 0.0]])[0]


def test_behind_camera_is_nan_and_outside() -> None:
    uv, depth = cam().project([[-10, 0, 0]])
    assert np.isnan(uv).all() and depth[0] == -10
    assert not cam().in_image(uv)[0]


def test_explicit_intrinsics_record() -> None:
    rec = {"frame": 0, "fx": 200.0, "fy": 210.0, "cx": 150.0, "cy": 120.0,
           "location": [0, 0, 0], "rotation": {"pitch": 0, "yaw": 0, "roll": 0}}
    c = Camera.from_record(rec, W, H)
    uv, _ = c.project([[100, 10, 10]])
    np.testing.assert_allclose(uv, [[170, 99]])
    assert Camera.from_record(c.to_record(0), W, H) == c


def test_hfov_record_matches_from_hfov() -> None:
    rotation = {"pitch": 5.0, "yaw": 6.0, "roll": 7.0}
    rec = {"frame": 3, "hfov_deg": 60.0, "location": [1, 2, 3], "rotation": rotation}
    assert Camera.from_record(rec, W, H) == Camera.from_hfov(W, H, 60.0, (1, 2, 3), rotation)


def test_pixel_rays_hit_pixel_centres_at_planar_depth() -> None:
    c = Camera.from_hfov(W, H, 70.0, (10.0, -20.0, 150.0), {"pitch": -10, "yaw": 30, "roll": 5})
    rays = c.pixel_rays()
    assert rays.shape == (H, W, 3)
    for row, col in [(0, 0), (128, 160), (255, 319), (17, 201)]:
        point = np.asarray(c.location) + 250.0 * rays[row, col]
        uv, depth = c.project(point[None])
        np.testing.assert_allclose(uv[0], [col + 0.5, row + 0.5], atol=1e-9)
        assert depth[0] == pytest.approx(250.0)


def test_unproject_inverts_project() -> None:
    c = Camera.from_hfov(W, H, 70.0, (10.0, -20.0, 150.0), {"pitch": -10, "yaw": 30, "roll": 5})
    pts = np.array([[300.0, 50.0, 100.0], [250.0, -40.0, 160.0]])
    uv, depth = c.project(pts)
    np.testing.assert_allclose(c.unproject(uv, depth), pts, atol=1e-9)


def test_look_at_centres_target() -> None:
    loc, target = (0.0, 0.0, 160.0), (300.0, -200.0, 90.0)
    c = Camera.from_hfov(W, H, 60.0, loc, look_at_rotation(loc, target))
    uv, depth = c.project([target])
    np.testing.assert_allclose(uv, [[160, 128]], atol=1e-9)
    assert depth[0] == pytest.approx(np.linalg.norm(np.subtract(target, loc)))
