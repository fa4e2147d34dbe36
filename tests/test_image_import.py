"""Photos and videos without annotations: people from BlazePose's detector, an ONNX detector or a
detections file; video frames grouped by video; bad input refused before anything is written.

The photos are the real samples (../shared/data/real_people, skipped when absent); the video is
made here with OpenCV from one of them; the ONNX detector is a tiny torch module with YOLOX's raw
output, exported here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from pipeline.active_learning.loop import candidates
from pipeline.active_learning.selection import Candidate, thin_near_duplicates
from pipeline.active_learning.selection import select as select_instances
from pipeline.intake.detectors import (
    BlazePoseBoxes,
    OnnxDetector,
    PersonBox,
    decode_end2end,
    decode_rfdetr,
    load_detector,
    yolox_grid,
)
from pipeline.intake.image_import import import_images
from pipeline.intake.media import Sampling, sampled
from pipeline.store import Store
from pipeline.store.models import Image, Instance
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS

ONE_PERSON = "coco/000000000785.jpg"  # one annotated person (test_coco.json, image 785)
NOBODY_FOUND = "000000197388.jpg"  # a crowd: BlazePose finds nobody there


@pytest.fixture(scope="module")
def blazepose() -> BlazePoseBoxes:
    return BlazePoseBoxes()


def _counts(store: Store) -> tuple[int, int]:
    with store.session() as s:
        return (int(s.scalar(select(func.count(Image.id))) or 0),
                int(s.scalar(select(func.count(Instance.id))) or 0))


def _iou(a: list[float], b: list[float]) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _people(store: Store) -> list[tuple[Image, Instance]]:
    with store.session() as s:
        return [(img, inst) for img, inst in s.execute(
            select(Image, Instance).join(Instance, Instance.image_id == Image.id).order_by(Instance.id))]


def test_photo_folder_without_json_imports_people_through_the_default_detector(
        store: Store, real_people: Path, blazepose: BlazePoseBoxes) -> None:
    out = import_images(store, [real_people / "coco"], detector=blazepose)
    assert out.box_source == "blazepose" and out.frames == 0
    assert out.images == 3 and out.instances == 3  # one person per image, the crowd photo none
    assert any(NOBODY_FOUND in line and "no person found" in line for line in out.skipped)
    assert sum("not an image or video" in line for line in out.skipped) == 4  # the folder's JSON files
    people = _people(store)
    assert len(people) == 3 and len({img.group_key for img, _ in people}) == 3  # a photo is its own group
    for img, inst in people:
        assert img.source == "real" and img.subset == "coco" and img.group_key.startswith("coco/")
        assert inst.meta["box_source"] == "detector" and inst.meta["detector"] == "blazepose"
        assert inst.key.startswith(f"det:{blazepose.sha256[:12]}:")
    truth = next(a["bbox"] for a in json.loads((real_people / "coco" / "test_coco.json").read_text())
                 ["annotations"] if a["image_id"] == 785)
    found = next(inst.meta["bbox"] for img, inst in people if img.meta["file_name"] == "000000000785.jpg")
    assert _iou(found, truth) >= 0.5
    again = import_images(store, [real_people / "coco"], detector=blazepose)
    assert again.images == 0 and again.instances == 0 and _counts(store) == (3, 3)
    assert sum("already in the store" in line for line in again.skipped) == 3


def _make_video(path: Path, photo: Path, *, fps: float = 10.0, with_person: int = 6, blank: int = 6) -> None:
    """`with_person` frames of the photo (shifted a pixel each, so no two are identical), then plain
    grey ones (of different greys)."""
    image = cv2.imread(str(photo))
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for k in range(with_person):
        writer.write(np.ascontiguousarray(np.roll(image[:h, :w], k, axis=1)))
    for k in range(blank):
        writer.write(np.full((h, w, 3), 60 + 20 * k, dtype=np.uint8))
    writer.release()


def test_a_video_imports_its_frames_grouped_by_video(store: Store, real_people: Path, tmp_path: Path,
                                                     blazepose: BlazePoseBoxes) -> None:
    video = tmp_path / "clip.mp4"
    _make_video(video, real_people / ONE_PERSON)
    out = import_images(store, [video], detector=blazepose, sampling=Sampling(every=2))
    assert (out.videos, out.frames, out.images, out.instances) == (1, 3, 0, 3)
    assert any("3 of 6 sampled frames without a person" in line for line in out.skipped)
    people = _people(store)
    assert {img.group_key for img, _ in people} == {"clip/video:clip.mp4"}
    assert sorted(img.frame_index for img, _ in people) == [0, 2, 4]
    for img, _ in people:
        assert img.meta["time_s"] == pytest.approx(img.frame_index / 10.0)
        assert img.meta["video"] == str(video.resolve()) and Path(img.path).suffix == ".jpg"
        assert Path(img.path).is_file() and str(store.home) in img.path  # the store's own copy


def test_frame_sampling_every_nth_or_per_second() -> None:
    def kept(sampling: Sampling, fps: float, frames: int) -> list[int]:
        out, next_time = [], 0.0
        for i in range(frames):
            keep, next_time = sampled(i, fps, sampling, next_time)
            if keep:
                out.append(i)
        return out

    assert kept(Sampling(every=3), 30.0, 10) == [0, 3, 6, 9]
    assert kept(Sampling(fps=2.0), 30.0, 61) == [0, 15, 30, 45, 60]
    assert kept(Sampling(fps=10.0), 25.0, 11) == [0, 3, 5, 8, 10]  # first frame at or after each 0.1 s
    with pytest.raises(InputError, match="--every"):
        Sampling(every=0)


class _TinyYolox(torch.nn.Module):
    """YOLOX's raw output (1, anchors, 5 + 1 class) for a 64x64 input: fixed rows, one person."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows[None] + 0.0 * x.mean()


def _yolox_rows() -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """Rows with a person at cell (3, 2) of the stride-8 grid (centre 28, 20; 16 x 24 px), a weaker
    overlapping duplicate (NMS drops it) and a low-score row (the 0.7 threshold drops it)."""
    cells, _ = yolox_grid((64, 64))
    rows = torch.zeros(len(cells), 6)
    best = int(np.flatnonzero((cells[:, 0] == 3) & (cells[:, 1] == 2))[0])
    rows[best] = torch.tensor([0.5, 0.5, math.log(2.0), math.log(3.0), 0.9, 0.95])
    rows[best + 1] = torch.tensor([-0.4, 0.5, math.log(2.0), math.log(3.0), 0.85, 0.95])
    rows[best + 5] = torch.tensor([0.5, 0.5, math.log(2.0), math.log(3.0), 0.6, 0.9])
    return rows, (20.0, 8.0, 16.0, 24.0)


def _export(module: torch.nn.Module, path: Path, outputs: list[str]) -> Path:
    torch.onnx.export(module, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=outputs)
    return path


def test_an_onnx_detector_in_yolox_format_gives_the_boxes(store: Store, real_people: Path,
                                                           tmp_path: Path) -> None:
    rows, (x, y, w, h) = _yolox_rows()
    model = _export(_TinyYolox(rows), tmp_path / "tiny_yolox.onnx", ["output"])
    detector = load_detector(f"onnx:{model}")
    assert isinstance(detector, OnnxDetector) and detector.layout == "raw" and detector.family == "yolox"
    photo = real_people / ONE_PERSON  # 640 x 425: letterbox ratio 0.1
    out = import_images(store, [photo], detector=f"onnx:{model}")
    assert (out.images, out.instances, out.box_source) == (1, 1, "yolox:tiny_yolox.onnx")
    ((_, inst),) = _people(store)
    assert inst.meta["bbox"] == pytest.approx([x / 0.1, y / 0.1, w / 0.1, h / 0.1], abs=1e-3)
    assert inst.meta["bbox_score"] == pytest.approx(0.9 * 0.95, abs=1e-6)
    assert inst.meta["detector_sha256"] == detector.sha256


def test_end_to_end_and_rfdetr_outputs_decode_to_person_boxes() -> None:
    dets = np.array([[10, 20, 50, 80, 0.9], [0, 0, 5, 5, 0.2], [30, 30, 60, 60, 0.8]], dtype=np.float32)
    labels = np.array([0, 0, 3])
    (box,) = decode_end2end(dets, labels, ratio=0.5, min_score=0.3)
    assert box == PersonBox((20.0, 40.0, 80.0, 120.0), pytest.approx(0.9))
    boxes = np.array([[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]], dtype=np.float32)
    logits = np.full((2, 3), -10.0, dtype=np.float32)
    logits[0, 1] = 3.0  # person (COCO id 1)
    logits[1, 2] = 3.0  # another class
    (person,) = decode_rfdetr(boxes, logits, (200, 100), min_score=0.3)
    assert person.bbox == pytest.approx((80.0, 30.0, 40.0, 40.0))


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_input_names_the_file_and_writes_nothing(store: Store, real_people: Path, tmp_path: Path) -> None:
    photo = real_people / ONE_PERSON
    not_image = _write_text(tmp_path / "broken.jpg", "not a jpeg")
    not_video = _write_text(tmp_path / "broken.mp4", "not a video")
    with pytest.raises(InputError) as err:
        import_images(store, [photo, not_image], detector="onnx:/nonexistent.onnx")
    assert "/nonexistent.onnx" in str(err.value)
    for bad in (not_image, not_video):
        with pytest.raises(InputError) as err:
            import_images(store, [photo, bad], detections=_write_text(tmp_path / "d.json", "[]"))
        assert str(bad.resolve()) in str(err.value)
    five_points = [{"file_name": photo.name, "bbox": [1, 2, 30, 40], "score": 0.9, "keypoints": [1.0] * 15}]
    layout = _write_text(tmp_path / "five.json", json.dumps(five_points))
    with pytest.raises(InputError, match="5 keypoints") as err:
        import_images(store, [photo], detections=layout)
    assert str(layout) in str(err.value)
    not_detector = _write_text(tmp_path / "model.onnx", "not an onnx file")
    with pytest.raises(InputError, match="not an ONNX detector") as err:
        import_images(store, [photo], detector=f"onnx:{not_detector}")
    assert str(not_detector) in str(err.value)
    pose_like = _export(_TinyYolox(torch.zeros(17, 384)), tmp_path / "pose.onnx", ["simcc_x"])
    with pytest.raises(InputError, match="not a person detector") as err:
        import_images(store, [photo], detector=f"onnx:{pose_like}")
    assert str(pose_like) in str(err.value)
    assert _counts(store) == (0, 0)
    assert not (store.home / "objects").exists() or not any((store.home / "objects").rglob("*.*"))


def test_detections_file_gives_the_boxes_by_file_name_and_frame(store: Store, real_people: Path,
                                                                tmp_path: Path) -> None:
    video = tmp_path / "walk.mp4"
    _make_video(video, real_people / ONE_PERSON, with_person=3, blank=0)
    records = [
        {"file_name": "000000000785.jpg", "bbox": [280, 45, 219, 347], "score": 0.95, "category_id": 1,
         "keypoints": [300.0, 80.0, 0.9] * 17},
        {"image_id": 40083, "bbox": [38, 111, 175, 175], "score": 0.8},
        {"file_name": "walk.mp4", "frame_index": 1, "bbox": [10, 10, 50, 90], "score": 0.7},
        {"file_name": "elsewhere.jpg", "bbox": [1, 1, 5, 5], "score": 0.9},
    ]
    detections = _write_text(tmp_path / "results.json", json.dumps(records))
    out = import_images(store, [real_people / ONE_PERSON, real_people / "coco" / "000000040083.jpg", video],
                        detections=detections, subset="mixed")
    assert (out.images, out.frames, out.instances) == (2, 1, 3)
    assert any("1 detections name no imported image" in line for line in out.skipped)
    people = {(img.meta["file_name"], img.frame_index): inst.meta for img, inst in _people(store)}
    assert people[("walk.mp4", 1)]["bbox"] == [10.0, 10.0, 50.0, 90.0]
    first = people[("000000000785.jpg", None)]
    assert first["box_source"] == "detections" and first["detection_layout"] == "coco17"
    assert len(first["detection_keypoints"]) == NUM_KEYPOINTS * 3
    # a round's candidates know the frame group and time, so selection can thin near-duplicates
    for _, inst in _people(store):
        store.add_revision(inst.id, [1.0] * NUM_KEYPOINTS * 3, inst.meta["bbox"], source="pseudo",
                           accepted=False, model_version="m", uncertainty=0.5)
    cands = {c.instance_id: c for c in candidates(store, "m", [inst.id for _, inst in _people(store)])}
    frame = next(inst.id for img, inst in _people(store) if img.frame_index == 1)
    assert cands[frame].group == "mixed/video:walk.mp4" and cands[frame].time_s == pytest.approx(0.1)
    assert sum(c.time_s is None and c.group is not None for c in cands.values()) == 2  # the photos


def _frame(iid: int, unc: float, t: float, box: tuple[float, ...], group: str | None = "v") -> Candidate:
    return Candidate(iid, unc, np.zeros(NUM_KEYPOINTS), np.array([1.0, float(iid)]), bbox=box,
                     group=group, time_s=t)


def test_selection_does_not_push_near_duplicate_frames() -> None:
    box, elsewhere = (100.0, 100.0, 50.0, 100.0), (300.0, 100.0, 50.0, 100.0)
    frames = [_frame(i, 0.5 + 0.01 * i, i * 0.125, box) for i in range(10)]  # 8 fps, one person
    frames.append(_frame(10, 0.1, 0.5, elsewhere))  # someone else in the same frames
    frames.append(_frame(11, 0.2, 0.5, box, group="other-video"))
    frames.append(_frame(12, 0.3, 0.5, box, group=None))  # a photo: never thinned
    kept = {c.instance_id for c in thin_near_duplicates(frames)}
    assert kept == {9, 4, 10, 11, 12}  # the most uncertain frame, then the first one over 0.5 s away
    for strategy in ("random", "uncertainty", "diversity"):
        chosen = select_instances(frames, 6, strategy)
        assert set(chosen) <= kept and len(chosen) == 5


@pytest.mark.slow  # the session's Prefect API (10-30 s) when no other test started it
def test_the_command_prints_a_json_summary_and_bad_input_is_one_line(
        prefect_harness: None, home: Path, real_people: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.app import app
    from flows.cli import _register
    from flows.console import PROJECT_ERROR_EXIT

    _register()
    photo = real_people / ONE_PERSON
    detections = _write_text(tmp_path / "results.json", json.dumps(
        [{"file_name": photo.name, "bbox": [280, 45, 219, 347], "score": 0.95}]))
    broken = _write_text(tmp_path / "broken.jpg", "not a jpeg")
    bad = CliRunner().invoke(app, ["import-images", str(photo), str(broken), "--detections", str(detections)])
    assert bad.exit_code == PROJECT_ERROR_EXIT  # refused before the flow starts
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(broken) in lines[0] and "Traceback" not in bad.output
    result = CliRunner().invoke(app, ["--json", "import-images", str(photo), str(real_people / "mpii"),
                                      "--detections", str(detections)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {"images", "frames", "instances", "skipped"} <= set(summary)
    assert (summary["images"], summary["frames"], summary["instances"]) == (1, 0, 1)
    assert sum("no person found" in line for line in summary["skipped"]) == 5  # mpii's, not in the file
