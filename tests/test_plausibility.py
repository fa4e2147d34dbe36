"""The pose prior (pipeline/active_learning/plausibility.py): body-frame features by hand,
invariances, and that it tells a folded or collapsed spine from the spines it was fitted on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.active_learning.plausibility import (
    FEATURE_POINTS,
    NUM_FEATURES,
    STATS_FILE,
    PosePrior,
    fit_mixture,
    fit_store_prior,
    mirrored,
    pose_features,
)
from pipeline.store import Store
from schemas.keypoints import INDEX, NUM_KEYPOINTS, SPINE_CHAIN

# body-frame template: x to the person's right, y up, unit = sacrum -> C7
_CHAIN_T = {"hip": 0.0, "spine_01": 0.12, "spine_02": 0.3, "spine_03": 0.5, "spine_04": 0.68,
            "spine_05": 0.88, "neck": 1.0, "neck_02": 1.12, "neck_03": 1.22}
_OTHER = {"head": (0.0, 1.5), "left_shoulder": (-0.35, 0.95), "right_shoulder": (0.35, 0.95),
          "left_hip": (-0.2, 0.0), "right_hip": (0.2, 0.0)}


def body_pose(rng: np.random.Generator, bend: float | None = None, noise: float = 0.02) -> np.ndarray:
    """A plausible pose in the body frame: a gently curved chain, shoulders above the hips."""
    b = rng.uniform(-0.08, 0.08) if bend is None else bend
    pts = np.zeros((NUM_KEYPOINTS, 2))
    for name, t in _CHAIN_T.items():
        pts[INDEX[name]] = (b * math.sin(math.pi * t), t)
    for name, xy in _OTHER.items():
        pts[INDEX[name]] = xy
    pts += rng.normal(0.0, noise, pts.shape)
    pts[INDEX["hip"]] = (0.0, 0.0)
    pts[INDEX["neck"]] = (pts[INDEX["neck"]][0], 1.0)
    return pts


def to_image(body: np.ndarray, scale: float, angle: float,
             offset: tuple[float, float]) -> tuple[np.ndarray, list[float]]:
    """Place a body-frame pose in an image (y down), with its box; v = 2 everywhere."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    xy = (body * [1.0, -1.0]) @ rot.T * scale + offset
    kps = np.concatenate([xy, np.full((NUM_KEYPOINTS, 1), 2.0)], axis=1)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = 0.1 * scale
    w, h = hi - lo + 2 * pad
    return kps, [float(lo[0] - pad), float(lo[1] - pad), float(w), float(h)]


def random_label(rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    return to_image(body_pose(rng), rng.uniform(60, 160), rng.uniform(-0.3, 0.3),
                    (rng.uniform(100, 400), rng.uniform(150, 300)))


@pytest.fixture(scope="module")
def prior() -> PosePrior:
    rng = np.random.default_rng(0)
    return PosePrior.fit([random_label(rng) for _ in range(300)], components=3)


def test_features_in_the_body_frame_by_hand() -> None:
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[INDEX["hip"], :2] = (100, 200)
    kps[INDEX["neck"], :2] = (100, 100)  # straight up in the image: torso length 100
    kps[INDEX["spine_03"], :2] = (110, 150)  # halfway up, 10 px to the image's right
    f = pose_features(kps, [50, 50, 100, 100])  # box scale sqrt(100 * 100) = 100
    assert f is not None and f.shape == (NUM_FEATURES,)
    k = FEATURE_POINTS.index(INDEX["spine_03"])
    # up = (0, -1); right = (up_y, -up_x) = (-1, 0): 10 px to the image right = -0.1, 0.5 up
    assert f[2 * k] == pytest.approx(-0.1) and f[2 * k + 1] == pytest.approx(0.5)
    assert f[-1] == pytest.approx(math.log(100 / 100))
    kps[INDEX["neck"], :2] = (100, 200)  # sacrum and C7 on one pixel: no frame
    assert pose_features(kps, [50, 50, 100, 100]) is None


def test_features_ignore_position_scale_and_rotation() -> None:
    body = body_pose(np.random.default_rng(1))
    a, _ = to_image(body, 80, 0.0, (200, 200))
    b, _ = to_image(body, 160, 0.7, (50, 400))
    # boxes scaled with the person: the log(torso / box scale) feature agrees too
    fa, fb = pose_features(a, [0, 0, 160, 200]), pose_features(b, [9, 9, 320, 400])
    assert fa is not None and fb is not None and np.allclose(fa, fb, atol=1e-9)


def test_mirroring_twice_is_the_identity_and_swaps_sides() -> None:
    kps, _ = random_label(np.random.default_rng(2))
    m = mirrored(kps)
    assert np.allclose(m[INDEX["left_shoulder"], 0], -kps[INDEX["right_shoulder"], 0])
    assert np.allclose(mirrored(m), kps)


def test_held_out_plausible_poses_score_as_typical(prior: PosePrior) -> None:
    rng = np.random.default_rng(7)
    scores = [prior.score(*random_label(rng)).implausibility for _ in range(200)]
    # fitted and held-out poses come from one distribution: their implausibility is about uniform
    assert 0.3 < float(np.mean(scores)) < 0.7
    assert float(np.mean(np.asarray(scores) > 0.99)) < 0.1


def test_a_folded_spine_is_implausible_and_blamed_on_its_points(prior: PosePrior) -> None:
    rng = np.random.default_rng(8)
    body = body_pose(rng)
    good, box = to_image(body, 100, 0.1, (250, 250))
    folded_body = body.copy()
    lumbar = [INDEX[n] for n in ("spine_01", "spine_02", "spine_03")]
    folded_body[lumbar, 0] += 0.45  # the lumbar spine bulges half a torso out of the back
    folded, _ = to_image(folded_body, 100, 0.1, (250, 250))
    ok, bad = prior.score(good, box), prior.score(folded, box)
    assert bad.nll > ok.nll + 10 and bad.implausibility == 1.0 and ok.implausibility < 0.99
    blamed = np.argsort(-bad.per_keypoint)[:3]
    assert set(blamed.tolist()) == set(lumbar)
    assert bad.per_keypoint[INDEX["left_shoulder"]] < 0.9 and bad.per_keypoint[INDEX["nose"]] == 0.0
    # a mirrored person is still a person (the prior is fitted on mirror images too)
    mirror = prior.score(mirrored(good), box)
    assert mirror.implausibility < 0.99


def test_a_collapsed_skeleton_is_fully_implausible(prior: PosePrior) -> None:
    kps = np.full((NUM_KEYPOINTS, 3), 50.0)
    s = prior.score(kps, [0, 0, 100, 100])
    assert math.isinf(s.nll) and s.implausibility == 1.0
    assert (s.per_keypoint[list(SPINE_CHAIN)] == 1.0).all()


def test_fit_needs_labelled_spines_and_skips_the_rest() -> None:
    rng = np.random.default_rng(3)
    unlabelled = [random_label(rng) for _ in range(40)]
    for kps, _ in unlabelled:
        kps[INDEX["spine_02"], 2] = 0  # spine_02 not labelled: unusable
    with pytest.raises(ValueError, match="every spine point labelled"):
        PosePrior.fit(unlabelled)


def test_save_and_load_give_the_same_scores(prior: PosePrior, tmp_path: Path) -> None:
    again = PosePrior.load(prior.save(tmp_path / "prior.json"))
    kps, box = random_label(np.random.default_rng(4))
    assert again.score(kps, box).nll == pytest.approx(prior.score(kps, box).nll)


def test_mixture_finds_two_separated_clusters() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(-3, 0.3, (200, 2)), rng.normal(3, 0.3, (100, 2))])
    weights, means, _covs = fit_mixture(x, 2, seed=0)
    order = np.argsort(means[:, 0])
    assert weights[order] == pytest.approx([2 / 3, 1 / 3], abs=0.02)
    assert means[order].ravel() == pytest.approx([-3, -3, 3, 3], abs=0.15)


def test_store_prior_fits_on_synthetic_train_labels_only(store: Store, tmp_path: Path) -> None:
    from PIL import Image as PILImage

    from pipeline.splits import assign_splits

    rng = np.random.default_rng(11)
    for group, count in (("render-train", 20), ("render-val", 4)):
        for n in range(count):
            path = tmp_path / f"{group}-{n}.png"
            PILImage.new("RGB", (8, 8), (n, 0, 0)).save(path)
            img = store.add_image(path, source="synthetic", subset="train-unreal", group_key=group,
                                  width=640, height=480)
            kps, box = random_label(rng)
            store.add_revision(store.instance_id(img, "actor-1"), kps.ravel().tolist(), box,
                               source="synthetic")
    pinned = {"render-train": "train", "render-val": "val"}
    assign_splits(store, pinned, pinned=pinned)
    prior = fit_store_prior(store)
    assert prior is not None and prior.count == 2 * 20  # 20 train labels and their mirror images
    assert (store.home / STATS_FILE).is_file()
    assert fit_store_prior(store, min_instances=100) is not None  # too few now: the saved file
