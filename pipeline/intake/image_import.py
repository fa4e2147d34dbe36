"""Bring photos and videos that come without any annotation into the store, with person boxes.

`import_images` takes image files, folders (walked recursively, sorted) and video files (decoded
with OpenCV, every Nth frame or N frames per second; the video is the split group, each frame keeps
its index and time). Person boxes come from, in order of preference: a detections file (COCO
results, matched by `file_name` [+ `frame_index`] or by `image_id` = a numeric file stem), an ONNX
detector the user passes, or BlazePose's offline detector (one person per image;
pipeline/intake/detectors.py).

Everything is read, decoded and detected before anything is written, so a bad input (an unreadable
image or video, a detections file with an unknown keypoint layout, a file that is no detector)
leaves the store untouched. Images without a person are not registered (the summary says why);
an image already in the store with people keeps them and is not detected again; importing the
same inputs again adds nothing (images by content hash, people by detector and rank).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select

from pipeline import progress
from pipeline.intake.detectors import PersonBox, PersonDetector, load_detector
from pipeline.intake.media import InputFile, Sampling, collect_inputs, read_image, video_frames
from pipeline.intake.real_import import WRITE_BATCH, map_keypoints
from pipeline.store import Store, file_sha256
from pipeline.store.models import Image, Instance
from pipeline.store.objects import put_bytes
from pipeline.store.store import NewImage, NewLabel, chunked
from schemas.errors import InputError

#: Video frames are stored as JPEG at this quality (a tenth of PNG's size, re-encoding loss below
#: what the video codec already lost).
FRAME_SUFFIX = ".jpg"
FRAME_QUALITY = 95


@dataclass
class ImageImportSummary:
    images: int = 0  # still images registered (with at least one person)
    frames: int = 0  # video frames registered (with at least one person)
    videos: int = 0  # video files read
    instances: int = 0  # people found (or given by the detections file) in what was registered
    box_source: str = ""  # detections file, or the detector's name
    skipped: list[str] = field(default_factory=list)


@dataclass
class _Planned:
    """One image or frame to register, with the people found in it (nothing written yet)."""

    image: NewImage
    people: list[PersonBox]
    extra: list[dict[str, Any]]  # per person: what the detections file said besides the box
    frame_bytes: Path | None = None  # a staged video frame (becomes a store object when written)


# --------------------------------------------------------------------------------------------------
# A detections file (COCO results) for files that have no COCO image list
# --------------------------------------------------------------------------------------------------


@dataclass
class DetectionsFile:
    """People of a COCO results file, by (file name, frame index or None); `sha256` names the file."""

    path: Path
    sha256: str
    people: dict[tuple[str, int | None], list[tuple[int, PersonBox, dict[str, Any]]]]
    by_id: dict[int, list[tuple[int, PersonBox, dict[str, Any]]]]
    used: set[int] = field(default_factory=set)

    def lookup(self, item: InputFile, frame: int | None) -> list[tuple[int, PersonBox, dict[str, Any]]]:
        """The file's people for an image (or a video frame): by relative name, then base name,
        then (still images) `image_id` equal to a numeric file stem."""
        for name in (item.name, item.path.name):
            found = self.people.get((name, frame))
            if found is not None:
                return found
        if frame is None and item.path.stem.isdigit():
            return self.by_id.get(int(item.path.stem), [])
        return []


def read_detections(path: str | Path, *, min_score: float = 0.0) -> tuple[DetectionsFile, list[str]]:
    """Validate a COCO results list (image_id or file_name [+ frame_index], bbox, optional score,
    category_id and keypoints of a known layout); InputError naming the record otherwise."""
    path = Path(path).resolve()
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read JSON: {exc}") from exc
    if not isinstance(records, list):
        raise InputError(path, "expected a list of detections (COCO results format)")
    out = DetectionsFile(path, file_sha256(path), {}, {})
    skipped: list[str] = []
    for n, rec in enumerate(records):
        fld = f"[{n}]"
        if not isinstance(rec, Mapping) or "bbox" not in rec or not ("file_name" in rec or "image_id" in rec):
            raise InputError(path, "needs bbox and file_name or image_id", field=fld)
        if int(rec.get("category_id", 1)) != 1:
            skipped.append(f"{path}{fld}: category {rec.get('category_id')} is not person")
            continue
        box = _record_box(rec["bbox"], path, f"{fld}.bbox")
        score = float(rec.get("score", 1.0))
        if score < min_score:
            skipped.append(f"{path}{fld}: detection score {score:.3f} < {min_score}")
            continue
        extra: dict[str, Any] = {}
        if rec.get("keypoints"):
            extra["detection_keypoints"], extra["detection_layout"] = map_keypoints(
                list(rec["keypoints"]), str(path), f"{fld}.keypoints")
        entry = (n, PersonBox(box, score), extra)
        if "file_name" in rec:
            frame = int(rec["frame_index"]) if rec.get("frame_index") is not None else None
            out.people.setdefault((str(rec["file_name"]), frame), []).append(entry)
        else:
            out.by_id.setdefault(int(rec["image_id"]), []).append(entry)
    return out, skipped


def _record_box(value: Any, path: Path, fld: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(path, "bbox must be 4 numbers [x, y, w, h]", field=fld) from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise InputError(path, "bbox must be 4 finite numbers with width and height > 0", field=fld)
    return (x, y, w, h)


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------


def known_with_people(store: Store, digests: Sequence[str]) -> set[str]:
    """Which of these image hashes the store holds already with at least one person."""
    query = (select(Image.sha256, func.count(Instance.id)).join(Instance, Instance.image_id == Image.id)
             .group_by(Image.sha256))
    return {sha for sha, count in store.rows_in(query, Image.sha256, digests) if count}


class _Planner:
    """Phase one: read every input, find its people, stage video frames; writes nothing to the store."""

    def __init__(self, store: Store, subset: str, boxes: DetectionsFile | PersonDetector,
                 sampling: Sampling, staging: Path, summary: ImageImportSummary) -> None:
        self.store = store
        self.subset = subset
        self.boxes = boxes
        self.sampling = sampling
        self.staging = staging
        self.summary = summary
        self.seen: set[str] = set()
        self.planned: list[_Planned] = []

    def people(self, item: InputFile, frame: int | None, pixels: NDArray[np.uint8]
               ) -> tuple[list[PersonBox], list[dict[str, Any]]]:
        if isinstance(self.boxes, DetectionsFile):
            found = self.boxes.lookup(item, frame)
            self.boxes.used.update(n for n, _, _ in found)
            return [p for _, p, _ in found], [e for _, _, e in found]
        people = self.boxes.detect(pixels)
        return people, [{} for _ in people]

    def add_image(self, item: InputFile) -> None:
        pixels = read_image(item.path)
        sha = file_sha256(item.path)
        if self._known(sha, item.path):
            return
        people, extra = self.people(item, None, pixels)
        if not people:
            self.summary.skipped.append(f"{item.path}: no person found ({self.summary.box_source})")
            return
        height, width = pixels.shape[:2]
        image = NewImage(item.path, "real", self.subset, f"{self.subset}/{item.name}", width, height,
                         meta={"file_name": item.name}, sha256=sha)
        self.planned.append(_Planned(image, people, extra))

    def add_video(self, item: InputFile, advance: Any) -> None:
        video_sha = file_sha256(item.path)
        group = f"{self.subset}/video:{item.name}"
        sampled_count = empty = known = 0
        for frame in video_frames(item.path, self.sampling):
            advance(1)
            sampled_count += 1
            ok, encoded = cv2.imencode(FRAME_SUFFIX, frame.pixels, [cv2.IMWRITE_JPEG_QUALITY, FRAME_QUALITY])
            if not ok:
                raise InputError(item.path, f"cannot encode frame {frame.index} as JPEG")
            data = encoded.tobytes()
            sha = hashlib.sha256(data).hexdigest()
            if sha in self.seen or sha in known_with_people(self.store, [sha]):
                known += 1
                continue
            self.seen.add(sha)
            people, extra = self.people(item, frame.index, frame.pixels)
            if not people:
                empty += 1
                continue
            staged = self.staging / f"{sha}{FRAME_SUFFIX}"
            staged.write_bytes(data)
            height, width = frame.pixels.shape[:2]
            meta = {"video": str(item.path), "video_sha256": video_sha, "file_name": item.name,
                    "frame_index": frame.index, "time_s": frame.time_s, "fps": frame.fps}
            image = NewImage(staged, "real", self.subset, group, width, height,
                             frame_index=frame.index, meta=meta, sha256=sha)
            self.planned.append(_Planned(image, people, extra, frame_bytes=staged))
        if empty:
            self.summary.skipped.append(f"{item.path}: {empty} of {sampled_count} sampled frames without a "
                                        f"person ({self.summary.box_source})")
        if known:
            self.summary.skipped.append(f"{item.path}: {known} frames already in the store with people, "
                                        "or identical to an earlier frame")

    def _known(self, sha: str, path: Path) -> bool:
        if sha in self.seen or sha in known_with_people(self.store, [sha]):
            self.summary.skipped.append(f"{path}: already in the store with people (or imported twice)")
            return True
        self.seen.add(sha)
        return False


def _box_origin(boxes: DetectionsFile | PersonDetector) -> dict[str, str]:
    """Where an instance's box came from, as its meta records it (the sha256 also keys the instance)."""
    if isinstance(boxes, DetectionsFile):
        return {"box_source": "detections", "source_file": str(boxes.path), "source_sha256": boxes.sha256}
    return {"box_source": "detector", "detector": boxes.name, "detector_sha256": boxes.sha256}


def _write(store: Store, planned: list[_Planned], boxes: DetectionsFile | PersonDetector,
           summary: ImageImportSummary) -> None:
    """Phase two: video frames become store objects, then every image and its people in batches."""
    origin = _box_origin(boxes)
    key = f"det:{boxes.sha256[:12]}"
    labels: list[NewLabel] = []
    for item in planned:
        image = item.image
        if item.frame_bytes is not None:
            assert image.sha256 is not None
            obj = put_bytes(store.home, item.frame_bytes.read_bytes(), image.sha256, FRAME_SUFFIX)
            image = NewImage(obj, image.source, image.subset, image.group_key, image.width, image.height,
                             frame_index=image.frame_index, meta=image.meta, sha256=image.sha256)
            summary.frames += 1
        else:
            summary.images += 1
        for rank, (person, extra) in enumerate(zip(item.people, item.extra, strict=True)):
            meta = {"bbox": [float(v) for v in person.bbox], "bbox_score": float(person.score),
                    **origin, **extra}
            labels.append(NewLabel(image, f"{key}:{rank}", meta))
    for batch in chunked(labels, WRITE_BATCH):
        summary.instances += len(store.add_labels(batch))


def import_images(
    store: Store,
    paths: Sequence[str | Path],
    *,
    subset: str | None = None,
    detector: str | PersonDetector | None = None,
    detections: str | Path | None = None,
    min_score: float | None = None,
    sampling: Sampling | None = None,
    device: str = "cpu",
) -> ImageImportSummary:
    """Import image files, folders and videos with person boxes (see the module docstring).

    `detections` (a COCO results file) wins over `detector` (a spec: blazepose, onnx:PATH, ...,
    or a loaded detector; default blazepose). `subset` defaults to the first path's name; a still
    image's split group is itself, a video's frames share the video's group.
    """
    if not paths:
        raise InputError("PATH", "give at least one image, folder or video")
    inputs, skipped = collect_inputs(paths)
    summary = ImageImportSummary(skipped=skipped)
    boxes: DetectionsFile | PersonDetector
    if detections is not None:
        boxes, more = read_detections(detections, min_score=min_score or 0.0)
        summary.skipped += more
        summary.box_source = f"detections {boxes.path.name}"
    elif isinstance(detector, str) or detector is None:
        boxes = load_detector(detector, min_score=min_score, device=device)
        summary.box_source = boxes.name
    else:
        boxes = detector
        summary.box_source = boxes.name
    subset_name = subset or (Path(paths[0]).stem or "photos")
    sampling = sampling or Sampling()
    with tempfile.TemporaryDirectory(prefix="spinetrack-frames-") as tmp:
        planner = _Planner(store, subset_name, boxes, sampling, Path(tmp), summary)
        with progress.step("find people", total=None) as advance:
            for item in inputs:
                if item.video:
                    planner.add_video(item, advance)
                    summary.videos += 1
                else:
                    planner.add_image(item)
                    advance(1)
        if isinstance(boxes, DetectionsFile):
            unused = sum(len(v) for v in (*boxes.people.values(), *boxes.by_id.values())) - len(boxes.used)
            if unused:
                summary.skipped.append(f"{boxes.path}: {unused} detections name no imported image or frame")
        _write(store, planner.planned, boxes, summary)
    return summary
