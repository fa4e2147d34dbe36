"""Synthetic labels are measured against a truth the fit did not make (issue 12).

The reference renderer's default character (synthetic/character.py) has its own anatomy; changing
the fitting model's anatomy must not change a single number of the truth, and the improved fit of
that character must meet the spine targets on a small render.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from schemas.keypoints import NAMES
from synthetic import anatomy
from synthetic.alignment import FitSettings, fit_sequence
from synthetic.coords import opensim_to_unreal, unreal_to_opensim
from synthetic.reader import read_sequence
from synthetic.renderer import GROUND_TRUTH_3D_FILE, GROUND_TRUTH_FILE, render_sequence

SPINE = ("hip", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck", "neck_02", "neck_03")


def _truth(folder: Path) -> tuple[np.ndarray, bytes, bytes]:
    return (
        np.load(folder / GROUND_TRUTH_3D_FILE)["landmarks_ue_cm"],
        (folder / GROUND_TRUTH_FILE).read_bytes(),
        (folder / "bones.jsonl").read_bytes(),
    )


def _distort_fitting_anatomy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other proportions, another sacral point and other vertebral heights for the fitting model."""
    monkeypatch.setattr(anatomy._Proportions, "thigh", 0.30)
    monkeypatch.setattr(anatomy._Proportions, "hip_half_width", 0.07)
    monkeypatch.setattr(anatomy._Proportions, "kyphosis", 0.04)
    monkeypatch.setattr(anatomy, "SACRAL_POINT", (-0.02, 0.02, 0.0))
    monkeypatch.setattr(anatomy, "THORACIC_HEIGHTS", (1.0,) * 12)


@pytest.mark.parametrize("character", ["mannequin", "opensim"])
def test_truth_does_not_come_from_the_fitting_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, character: str
) -> None:
    kwargs = {"frames": 2, "seed": 4, "motion": "bend", "width": 48, "height": 40, "character": character}
    before = _truth(render_sequence(tmp_path / "before", **kwargs))  # type: ignore[arg-type]
    _distort_fitting_anatomy(monkeypatch)
    after = _truth(render_sequence(tmp_path / "after", **kwargs))  # type: ignore[arg-type]
    same = np.array_equal(before[0], after[0]) and before[1:] == after[1:]
    # the independent character ignores the fitting model; the self-consistent mode is that model
    # (which shows the distortion is real: it moves the old mode's truth)
    assert same is (character == "mannequin")


@pytest.fixture(scope="module")
def bend(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_sequence(
        tmp_path_factory.mktemp("fid") / "bend", frames=24, seed=21, motion="bend", width=320, height=180
    )


def _errors(folder: Path, settings: FitSettings) -> tuple[np.ndarray, np.ndarray]:
    """(F, 37) 3D error (mm) and 2D error (px at the render size) of one fit."""
    seq = read_sequence(folder)
    subject = seq.info.subject
    bones = [
        {n: unreal_to_opensim(np.asarray(v)) for n, v in seq.bones[(f, 1)].bones.items()}
        for f in range(seq.frame_count)
    ]
    fit = fit_sequence(bones, subject.height_cm / 100, subject.mass_kg, settings=settings)
    ours = opensim_to_unreal(fit.landmarks)
    truth = np.load(folder / GROUND_TRUTH_3D_FILE)["landmarks_ue_cm"][:, 0]
    px = np.empty(truth.shape[:2])
    for f in range(seq.frame_count):
        cam = seq.camera(f)
        px[f] = np.linalg.norm(cam.project(ours[f])[0] - cam.project(truth[f])[0], axis=1)
    return np.linalg.norm(ours - truth, axis=2) * 10.0, px


def test_improved_fit_places_the_spine_of_an_independent_character(bend: Path) -> None:
    spine = [NAMES.index(n) for n in SPINE]
    mm, px = _errors(bend, FitSettings())
    assert np.median(mm[:, spine]) < 15.0
    assert np.median(px[:, spine]) < 1.0
    legacy_mm, _ = _errors(bend, FitSettings.legacy())
    assert np.median(mm[:, spine]) < np.median(legacy_mm[:, spine])
    # the legacy "hip" is the hip-joint midpoint, about 12 cm from the authors' sacral point
    hip = NAMES.index("hip")
    assert np.median(legacy_mm[:, hip]) > 60.0 > np.median(mm[:, hip])


def test_ground_truth_visibility_reflects_occlusion(bend: Path) -> None:
    gt = json.loads((bend / GROUND_TRUTH_FILE).read_text())
    v = np.array([a["keypoints"][2::3] for a in gt["annotations"]])
    assert {1, 2} <= set(np.unique(v).tolist())  # a bending person hides some of its own points


@pytest.mark.slow  # 30 small fits: every motion x every fit variant, to keep the bench runnable
def test_fidelity_bench_runs_and_reports_every_group(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import synthetic_fidelity as bench

    result = bench.run(subjects=1, frames=2, width=64, height=36, seed=3, actors=1, work=tmp_path)
    assert set(result["variants"]) == {"current", "improved", "authors_weights_lumbar_task", "open_ranges",
                                       "coupled_lumbar"}
    for variant in result["variants"].values():
        assert set(variant["groups"]) == set(bench.GROUPS)
        assert variant["groups"]["spine"]["mm_3d"]["n"] == 6 * 2 * 9
    assert 0.0 < result["occlusion"]["agreement"] <= 1.0
    assert set(result["targets"]) == {"spine_median_px_render_le_1", "spine_median_mm_le_15",
                                      "occlusion_agreement_ge_0.97"}


def test_fitted_surface_decides_self_occlusion_on_own_pixels() -> None:
    """A hip 25 cm behind its own belly: the depth test alone calls it hidden, the fitted body does not;
    an arm of the fitted body on the line of sight hides it; another actor's pixels still hide it."""
    from synthetic.visibility import keypoint_visibility, self_occlusion

    uv, z = np.array([[5.5, 5.5]]), np.array([325.0])
    depth = np.full((10, 10), 300.0, np.float32)
    own = np.ones((10, 10), np.int32)
    assert keypoint_visibility(uv, z, 10, 10, depth_buffer=depth, mask=own, actor_id=1)[0] == 1
    point = np.array([[325.0, 0.0, 0.0]])
    camera = np.zeros(3)
    arm = (np.array([[300.0, -20.0, 0.0]]), np.array([[300.0, 20.0, 0.0]]), np.array([5.0]))
    hidden_by_arm = self_occlusion(camera, point, *arm, ["humerus_l"], [frozenset({"pelvis", "femur_l"})])
    hidden_by_own = self_occlusion(camera, point, *arm, ["pelvis"], [frozenset({"pelvis", "femur_l"})])
    assert hidden_by_arm.tolist() == [True] and hidden_by_own.tolist() == [False]
    for hidden, want in ((hidden_by_own, 2), (hidden_by_arm, 1)):
        v = keypoint_visibility(uv, z, 10, 10, depth_buffer=depth, mask=own, actor_id=1, self_occluded=hidden)
        assert v[0] == want
    other = np.full((10, 10), 2, np.int32)  # another actor in front
    v = keypoint_visibility(uv, z, 10, 10, depth_buffer=depth, mask=other, actor_id=1,
                            self_occluded=hidden_by_own)
    assert v[0] == 1
