"""The real sample formats without a COCO-17/Halpe layout: MPII's json, AI Challenger, CrowdPose,
MHP (and PoseTrack18's head points). Each imports from ../shared/data/real_people, each point lands
on the SpineTrack point it is (checked against the raw file by hand), points without a
counterpart stay absent, a shared keypoint count needs --layout, a re-import adds nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.intake.real_import import import_coco
from pipeline.intake.real_samples import LAYOUT_SAMPLE_SETS, RealSampleSet, import_sample, sample_sets
from pipeline.store import Store
from schemas.errors import InputError
from schemas.keypoints import INDEX, NUM_KEYPOINTS
from schemas.layouts import LAYOUTS

REPO = Path(__file__).resolve().parents[1]


def _labels(store: Store) -> dict[str, list[float]]:
    """Each imported person's keypoints by instance key."""
    return {lab.instance_key: lab.keypoints for lab in store.current_labels(image_source="real")}


def _on_image(store: Store, file_name: str) -> list[Any]:
    """The imported people of one image (MPII's keys count the people of an image)."""
    labels = store.current_labels(image_source="real")
    return [lab for lab in labels if lab.image_meta["file_name"] == file_name]


def _point(kps: list[float], name: str) -> list[float]:
    i = INDEX[name]
    return kps[3 * i:3 * i + 3]


def _labelled(kps: list[float]) -> set[str]:
    return {name for name, i in INDEX.items() if kps[3 * i + 2] > 0}


@pytest.mark.parametrize("sample", LAYOUT_SAMPLE_SETS, ids=[s.name for s in LAYOUT_SAMPLE_SETS])
def test_each_set_imports_its_people(sample: RealSampleSet, store: Store, real_people: Path) -> None:
    summary = import_sample(store, sample, real_people)
    assert summary.human_revisions == sample.people  # boxed people with >= 1 mapped labelled point
    labels = store.current_labels(image_source="real")
    assert len(labels) == sample.people
    layout = LAYOUTS[sample.layout or ""]
    allowed = {name for name in layout.to.values()}
    for lab in labels:
        assert _labelled(lab.keypoints) <= allowed  # nothing lands where the file has no such point
        assert lab.provenance["layout"] == sample.layout
        assert lab.bbox[2] > 0 and lab.bbox[3] > 0


def test_mpii_joints_land_on_their_points_with_mmpose_boxes(store: Store, real_people: Path) -> None:
    raw = json.loads((real_people / "mpii" / "test_mpii.json").read_text())
    summary = import_coco(store, real_people / "mpii" / "test_mpii.json")  # the format says MPII
    assert (summary.images, summary.instances, summary.human_revisions) == (5, 5, 5)
    first = raw[0]
    (label,) = _on_image(store, first["image"])
    assert label.instance_key == "mpii:0"
    kps = label.keypoints
    joints = first["joints"]
    # MPII joint i -> SpineTrack point, same coordinates (mmpose's mpii.py order)
    for i, name in ((0, "right_ankle"), (5, "left_ankle"), (9, "head"), (10, "right_wrist"),
                    (13, "left_shoulder")):
        assert _point(kps, name) == pytest.approx([*joints[i], 2.0])
    for name in ("hip", "neck", "neck_03", "nose", "left_eye", "left_ear", "spine_05"):
        assert _point(kps, name) == [0.0, 0.0, 0.0]  # pelvis, thorax, upper neck: no counterpart
    assert len(_labelled(kps)) == 13
    # mmpose's box: centre + 15 * scale px down, - 1 px (1-based), 200 * scale px square; clipped
    side = 200 * first["scale"]
    cx, cy = first["center"][0] - 1, first["center"][1] + 15 * first["scale"] - 1
    assert label.width == 1280 and label.height == 720  # read from the image file
    x0, y0 = max(cx - side / 2, 0), max(cy - side / 2, 0)
    x1, y1 = min(cx + side / 2, 1280), min(cy + side / 2, 720)
    assert label.bbox == pytest.approx([x0, y0, x1 - x0, y1 - y0])
    # a joint MPII leaves unannotated (joints_vis 0, at -1, -1) is absent, not at -1, -1
    (third,) = _on_image(store, raw[2]["image"])
    assert raw[2]["joints_vis"][0] == 0
    assert _point(third.keypoints, "right_ankle") == [0.0, 0.0, 0.0]


def test_aic_and_crowdpose_orders(store: Store, real_people: Path) -> None:
    aic = json.loads((real_people / "aic" / "test_aic.json").read_text())
    import_coco(store, real_people / "aic" / "test_aic.json", layout="aic")
    ann = aic["annotations"][0]
    kps = _labels(store)[f"coco-ann:{ann['id']}"]
    flat = ann["keypoints"]
    # AIC: 0 right_shoulder, 3 left_shoulder, 12 head top; 13 neck has no counterpart
    assert _point(kps, "right_shoulder") == pytest.approx(flat[0:3])
    assert _point(kps, "left_shoulder") == pytest.approx(flat[9:12])
    assert _point(kps, "head") == pytest.approx(flat[36:39])
    assert flat[41] > 0 and _point(kps, "neck") == [0.0, 0.0, 0.0]

    crowd = json.loads((real_people / "crowdpose" / "test_crowdpose.json").read_text())
    import_coco(store, real_people / "crowdpose" / "test_crowdpose.json", layout="crowdpose")
    ann = crowd["annotations"][0]
    kps = _labels(store)[f"coco-ann:{ann['id']}"]
    flat = ann["keypoints"]
    # CrowdPose: 1 right_shoulder, 5 right_wrist, 12 head (top); 13 neck has no counterpart
    assert _point(kps, "right_shoulder") == pytest.approx(flat[3:6])
    assert _point(kps, "right_wrist") == pytest.approx(flat[15:18])
    assert _point(kps, "head") == pytest.approx(flat[36:39])
    assert flat[41] > 0 and _point(kps, "neck") == [0.0, 0.0, 0.0]


def test_mhp_is_mpii_order_and_posetrack_head_top_is_head(store: Store, real_people: Path) -> None:
    mhp = json.loads((real_people / "mhp" / "test_mhp.json").read_text())
    import_coco(store, real_people / "mhp" / "test_mhp.json", layout="mhp")
    ann = mhp["annotations"][0]
    kps = _labels(store)[f"coco-ann:{ann['id']}"]
    flat = ann["keypoints"]
    assert _point(kps, "right_ankle") == pytest.approx(flat[0:3])
    assert _point(kps, "head") == pytest.approx(flat[27:30])  # 9 Head-top
    assert _point(kps, "left_wrist") == pytest.approx(flat[45:48])
    assert flat[20] > 0 and _point(kps, "hip") == [0.0, 0.0, 0.0]  # 6 Pelvis

    (posetrack,) = sample_sets("posetrack18")
    raw = json.loads((real_people / posetrack.coco_file).read_text())
    import_coco(store, real_people / posetrack.coco_file, image_dir=real_people / posetrack.image_dir)
    ann = next(a for a in raw["annotations"] if a["keypoints"][5] > 0 and a["keypoints"][8] > 0)
    kps = _labels(store)[f"coco-ann:{ann['id']}"]
    assert _point(kps, "head") == pytest.approx(ann["keypoints"][6:9])  # 2 head_top
    assert _point(kps, "left_eye") == [0.0, 0.0, 0.0] == _point(kps, "right_eye")  # not eyes


def test_hidden_keeps_them_hidden_and_reimport_adds_nothing(store: Store, real_people: Path) -> None:
    for sample in LAYOUT_SAMPLE_SETS:
        import_sample(store, sample, real_people, hidden=True)
    assert store.current_labels(image_source="real") == []
    hidden = store.reference_revisions(sources=["import"], image_source="real")
    assert all(not rev.accepted for rev in hidden)
    assert {rev.provenance["layout"] for rev in hidden} == {s.layout for s in LAYOUT_SAMPLE_SETS}
    # every boxed person, including CrowdPose's one without a labelled point (its truth: none)
    assert len(hidden) == sum(s.people for s in LAYOUT_SAMPLE_SETS) + 1
    for sample in LAYOUT_SAMPLE_SETS:
        first = import_sample(store, sample, real_people)
        again = import_sample(store, sample, real_people)
        assert first.human_revisions == sample.people
        assert (again.human_revisions, again.ground_truth_revisions) == (0, 0)
        assert again.instances == first.instances
    assert len(store.current_labels(image_source="real")) == sum(s.people for s in LAYOUT_SAMPLE_SETS)


@pytest.mark.parametrize(("layout", "error"), [
    (None, "14 keypoints fit aic and crowdpose: pass --layout aic|crowdpose"),
    ("crowdpose", "the file names aic's points, not crowdpose's"),
    ("mpii", "14 keypoints, but layout mpii has 16"),
    ("nonsense", "unknown layout 'nonsense'"),
])
def test_wrong_or_missing_layout_is_refused(layout: str | None, error: str, store: Store,
                                            real_people: Path) -> None:
    with pytest.raises(InputError, match=error.replace("|", r"\|")):
        import_coco(store, real_people / "aic" / "test_aic.json", layout=layout)
    assert store.current_labels() == [] and store.unlabelled_instances() == []


def _mutated_mpii(real_people: Path, tmp_path: Path, change: Any) -> Path:
    raw = json.loads((real_people / "mpii" / "test_mpii.json").read_text())
    change(raw)
    out = tmp_path / "test_mpii.json"
    out.write_text(json.dumps(raw))
    return out


@pytest.mark.parametrize(("change", "field"), [
    (lambda raw: raw[1].pop("scale"), "[1]"),
    (lambda raw: raw[2]["joints"].pop(), "[2].joints"),
    (lambda raw: raw[0].update(joints_vis=[1] * 15), "[0].joints_vis"),
    (lambda raw: raw[3].update(scale=-1), "[3].scale"),
    (lambda raw: raw[4].update(center=["a", 2]), "[4].center"),
    (lambda raw: raw[0].update(image="missing.jpg"), "[0].image"),
])
def test_bad_mpii_names_the_field(change: Any, field: str, store: Store, real_people: Path,
                                  tmp_path: Path) -> None:
    bad = _mutated_mpii(real_people, tmp_path, change)
    with pytest.raises(InputError) as err:
        import_coco(store, bad, image_dir=real_people / "mpii")
    assert err.value.field == field
    assert store.unlabelled_instances() == [] and store.current_labels() == []


def test_cli_refuses_a_shared_count_in_one_line(tmp_path: Path, real_people: Path) -> None:
    env = {**os.environ, "SPINETRACK_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("SPINETRACK_DB_URL", None)
    aic = real_people / "aic" / "test_aic.json"
    done = subprocess.run([sys.executable, "-m", "flows.cli", "import-real", str(aic)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    lines = [x for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, lines)
    assert str(aic) in lines[0] and "annotations[0].keypoints" in lines[0] and "--layout" in lines[0]
    done = subprocess.run([sys.executable, "-m", "flows.cli", "--json", "import-real", str(aic),
                           "--layout", "aic"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert (out["images"], out["instances"], out["human_revisions"]) == (3, 9, 9)


def test_every_layout_maps_onto_distinct_spinetrack_points() -> None:
    for layout in LAYOUTS.values():
        targets = [j for _, j in layout.pairs()]
        assert len(targets) == len(set(targets)), layout.name
        assert all(0 <= j < NUM_KEYPOINTS for j in targets)
        assert not set(layout.to) & set(layout.unmapped), layout.name  # mapped or explained, not both
        named = set(layout.names)
        assert named == set(layout.to) | (named & set(layout.unmapped)), layout.name  # every point said


def test_coco_wholebody_feet_land_on_spinetrack_feet(store: Store, real_people: Path) -> None:
    coco = real_people / "coco" / "test_keypoint_partition_metric.json"  # 133 points per person
    raw = json.loads(coco.read_text())
    import_coco(store, coco, layout="coco-wholebody")
    ann = raw["annotations"][0]
    kps = _labels(store)[f"coco-ann:{ann['id']}"]
    flat = ann["keypoints"]
    for slot, name in ((17, "left_big_toe"), (18, "left_small_toe"), (19, "left_heel"),
                       (20, "right_big_toe"), (21, "right_small_toe"), (22, "right_heel"),
                       (0, "nose"), (16, "right_ankle")):
        assert _point(kps, name) == pytest.approx(flat[3 * slot:3 * slot + 3])
    assert _labelled(kps) <= set(LAYOUTS["coco-wholebody"].to.values())
