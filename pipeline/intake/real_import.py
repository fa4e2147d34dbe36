"""Bring real images with person boxes and the keypoints people placed from a COCO-style file into the store.

Human labels are labels: the points a file labels (v > 0) become an accepted `human` revision of
that person, the rest of the 37 left for pseudo-labelling to complete (`point_sources` says which
point is whose, `provenance["human_points"]` which file placed which points). Each point maps
through its layout's table (schemas/layouts.py: only to the SpineTrack point it really is); the
layout is `layout` when given, else the one the keypoint count names (17 COCO, 26 Halpe26, 133
COCO-WholeBody, 136 Halpe, 37 SpineTrack; a 17-point file whose category names PoseTrack18's
points is PoseTrack18). 14 (AI Challenger, CrowdPose) and 16 (MPII, MHP) need `layout`. MPII's
own json (a list of people with joints, center, scale) is read by `mpii_format`. A second file on
the same people (Halpe after COCO) adds its points to theirs: where both label a point, the later
file's wins.

`hidden` (benchmarks) keeps the file's keypoints as `import` revisions with accepted=False instead:
hidden ground truth that benchmarks can score pseudo-labels against, never a label that training
or selection sees as done. `boxes_only` ignores them.

The whole file is validated before anything is written, so a bad file leaves the store untouched;
importing the same file again adds nothing (images by content hash, instances by annotation id,
revisions by external id).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image as PILImage

from pipeline.intake import mpii_format
from pipeline.store import Store, file_sha256
from pipeline.store.store import HumanPoints, NewImage, NewLabel, NewRevision, chunked
from schemas.enums import RevisionSource
from schemas.errors import InputError
from schemas.keypoint_array import KeypointArray
from schemas.keypoints import NUM_KEYPOINTS
from schemas.layouts import BY_COUNT, LAYOUTS, Layout, layout_named_by, layouts_with
from schemas.point_sources import NONE

#: Keypoint counts a file may have without saying its layout, and the layout each names.
KNOWN_LAYOUTS: dict[int, str] = dict(BY_COUNT)
#: People written per store transaction.
WRITE_BATCH = 1000


@dataclass
class ImportSummary:
    images: int = 0
    instances: int = 0
    human_revisions: int = 0  # people whose placed points became accepted human labels
    human_points: int = 0  # points of the file in those labels
    ground_truth_revisions: int = 0  # hidden ones (`hidden`)
    skipped: list[str] = field(default_factory=list)


N = TypeVar("N", int, float)

@dataclass(frozen=True)
class _Origin:
    """The file people's points come from."""

    path: Path
    sha256: str

    def external_id(self, kind: str, annotation_id: int) -> str:
        digest = hashlib.sha256(f"{self.sha256}:{annotation_id}".encode()).hexdigest()[:16]
        return f"{kind}:{digest}"


@dataclass(frozen=True)
class _Person:
    ann_index: int
    annotation_id: int
    bbox: list[float]
    keypoints: list[float] | None  # 37 triplets, already mapped
    layout: str | None
    score: float | None
    area: float | None = None  # the file's area (COCO: segmentation area), OKS's scale
    key: str | None = None  # the instance key, where not a COCO annotation id's (MPII)
    meta: dict[str, Any] = field(default_factory=dict)  # more for the instance's meta


def instance_key(annotation_id: int | str) -> str:
    """Instance key of a COCO annotation. COCO-family files that share annotation ids (COCO and
    Halpe on val2017) describe the same person, so they land on the same instance."""
    return f"coco-ann:{annotation_id}"


@dataclass(frozen=True)
class FileLayout:
    """What a file says about its points: the layout asked for and the point names it lists."""

    layout: str | None = None  # `--layout`, None: from the count
    names: tuple[str, ...] | None = None  # the person category's `keypoints` names
    names_field: str = "categories"


def resolve_layout(count: int, where: str, fld: str, given: FileLayout) -> Layout:
    """The layout of an annotation with `count` points: the one asked for, else the only one with
    that count. The file's own point names break a tie only where the count names a layout
    already (PoseTrack18's 17), and refuse a `--layout` whose points they contradict."""
    named = layout_named_by(given.names) if given.names and len(given.names) == count else None
    if given.layout is not None:
        chosen = LAYOUTS[given.layout]
        if chosen.count != count:
            raise InputError(where, f"{count} keypoints, but layout {chosen.name} has {chosen.count}",
                             field=fld)
        if named is not None and named.pairs() != chosen.pairs():
            raise InputError(where, f"the file names {named.name}'s points, not {chosen.name}'s",
                             field=given.names_field)
        return chosen
    if count in BY_COUNT:
        return named if named is not None else LAYOUTS[BY_COUNT[count]]
    options = layouts_with(count)
    if options:
        raise InputError(where, f"{count} keypoints fit {' and '.join(options)}: pass --layout "
                                f"{'|'.join(options)}", field=fld)
    raise InputError(where, f"{count} keypoints: expected one of {sorted(KNOWN_LAYOUTS)} (COCO, "
                            "Halpe, SpineTrack) or --layout", field=fld)


def map_keypoints(values: list[float], where: str, fld: str,
                  given: FileLayout | None = None) -> tuple[list[float], str]:
    """Map a flat keypoint list onto the 37 SpineTrack triplets through its layout's table
    (zeros where the file has no such point); returns them and the layout's name."""
    if len(values) % 3:
        raise InputError(where, f"keypoints length {len(values)} is not a multiple of 3", field=fld)
    count = len(values) // 3
    layout = resolve_layout(count, where, fld, given or FileLayout())
    try:
        source = np.asarray(values, dtype=np.float64).reshape(count, 3)
    except (TypeError, ValueError):
        raise InputError(where, "keypoints must be numbers", field=fld) from None
    pairs = np.asarray(layout.pairs(), dtype=np.int64).reshape(-1, 2)
    bad = np.flatnonzero(~np.isfinite(source[pairs[:, 0]]).all(axis=1))
    if bad.size:
        raise InputError(where, f"keypoint {int(pairs[bad[0], 0])} is not finite", field=fld)
    mapped = source[pairs[:, 0]]
    out = KeypointArray.zeros()
    # mmpose-style scores > 0 count as labelled; unlabelled points keep no position
    flags = np.where(mapped[:, 2] >= 2, 2.0, np.where(mapped[:, 2] > 0, 1.0, 0.0))
    out.data[pairs[:, 1], :2] = np.where(flags[:, None] > 0, mapped[:, :2], 0.0)
    out.data[pairs[:, 1], 2] = flags
    return out.data.ravel().tolist(), layout.name


def _number(value: Any, kind: type[N], where: str, fld: str) -> N:
    """`value` as an int or a finite float; InputError naming the field otherwise."""
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(where, f"must be a number, got {value!r}"[:200], field=fld) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise InputError(where, f"must be finite, got {value!r}", field=fld)
    return number


def _box(value: Any, where: str, fld: str) -> list[float]:
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        raise InputError(where, "bbox must be 4 numbers [x, y, w, h]", field=fld) from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise InputError(where, "bbox must be 4 finite numbers [x, y, w, h]", field=fld)
    if box[2] <= 0 or box[3] <= 0:
        raise InputError(where, f"bbox width and height must be > 0, got {box[2:]}", field=fld)
    return box


def _check_image(file: Path, size: tuple[int, int], path: Path, fld: str) -> None:
    """The image file is whole (PIL's verify: chunk CRCs, no decoding) and has the size the COCO
    file gives, which every label of it is measured in."""
    if size[0] <= 0 or size[1] <= 0:
        raise InputError(path, f"width and height must be > 0, got {size}", field=f"{fld}.width")
    try:
        with PILImage.open(file) as image:
            found = image.size
            image.verify()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(file, f"unreadable image: {exc}", field=f"{fld}.file_name") from None
    if found != size:
        raise InputError(path, f"width, height {size} differ from the image file's {found}",
                         field=f"{fld}.width")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read JSON: {exc}") from exc


def _images(data: Mapping[str, Any], path: Path, image_dir: Path) -> dict[int, dict[str, Any]]:
    images: dict[int, dict[str, Any]] = {}
    raw = data.get("images")
    if not isinstance(raw, list):
        raise InputError(path, "missing the 'images' list", field="images")
    for n, img in enumerate(raw):
        fld = f"images[{n}]"
        try:
            image_id, name = int(img["id"]), str(img["file_name"])
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"needs id, file_name, width, height ({exc})", field=fld) from None
        file = image_dir / name
        if not file.is_file():
            raise InputError(path, f"image file not found: {file}", field=f"{fld}.file_name")
        if image_id in images:
            raise InputError(path, f"duplicate image id {image_id}", field=f"{fld}.id")
        _check_image(file, (width, height), path, fld)
        images[image_id] = {"id": image_id, "file_name": name, "width": width, "height": height,
                            "file": file, "video": img.get("vid_id", img.get("video_id"))}
    return images


def _people(
    path: Path, records: list[Any], image_ids: set[int], *, detections: bool, min_score: float,
    given: FileLayout | None = None,
) -> tuple[dict[int, list[_Person]], list[str]]:
    people: dict[int, list[_Person]] = {}
    skipped: list[str] = []
    where = str(path)
    for n, ann in enumerate(records):
        fld = f"[{n}]" if detections else f"annotations[{n}]"
        if not isinstance(ann, Mapping) or "image_id" not in ann or "bbox" not in ann:
            raise InputError(where, "needs image_id and bbox", field=fld)
        image_id = _number(ann["image_id"], int, where, f"{fld}.image_id")
        if image_id not in image_ids:
            raise InputError(where, f"unknown image_id {image_id}", field=f"{fld}.image_id")
        if _number(ann.get("category_id", 1), int, where, f"{fld}.category_id") != 1:
            skipped.append(f"{fld}: category {ann.get('category_id')} is not person")
            continue
        if _number(ann.get("iscrowd", 0), int, where, f"{fld}.iscrowd"):
            skipped.append(f"{fld}: crowd region")
            continue
        box = _box(ann["bbox"], where, f"{fld}.bbox")
        score = _number(ann["score"], float, where, f"{fld}.score") if "score" in ann else None
        if detections and score is not None and score < min_score:
            skipped.append(f"{fld}: detection score {score:.3f} < {min_score}")
            continue
        kps: list[float] | None = None
        layout: str | None = None
        if not detections and ann.get("keypoints"):
            kps, layout = map_keypoints(list(ann["keypoints"]), where, f"{fld}.keypoints", given)
        ann_id: int = _number(ann["id"], int, where, f"{fld}.id") if "id" in ann else n
        if detections:
            ann_id = n
        area = _number(ann["area"], float, where, f"{fld}.area") if ann.get("area") else None
        people.setdefault(image_id, []).append(_Person(n, ann_id, box, kps, layout, score, area))
    return people, skipped


def _group_of(subset: str, info: Mapping[str, Any]) -> str:
    video = info.get("video")
    return f"{subset}/video-{video}" if video is not None else f"{subset}/{info['file_name']}"


@dataclass
class _Source:
    """A file read and checked: its images, the people on each, what was skipped, their origin."""

    images: dict[int, dict[str, Any]]
    people: dict[int, list[_Person]]
    skipped: list[str]
    origin: _Origin
    from_detections: bool = False


def import_coco(
    store: Store,
    coco_path: str | Path,
    *,
    image_dir: str | Path | None = None,
    subset: str | None = None,
    hidden: bool = False,
    keep_ground_truth: bool = False,
    boxes_only: bool = False,
    detections: str | Path | None = None,
    min_detection_score: float = 0.0,
    group: str | None = None,
    layout: str | None = None,
) -> ImportSummary:
    """Import the images, person boxes and human keypoints of a COCO keypoint file (or of MPII's
    json: `mpii_format`).

    Boxes come from the file's annotations, or from `detections` (a COCO results list of
    image_id, bbox, score) when given. Every instance stores its box in `Instance.meta["bbox"]`.
    The points a person labelled become an accepted `human` revision (module docstring); with
    `hidden` (or its old name `keep_ground_truth`) `import` revisions with accepted=False instead;
    with `boxes_only` nothing. `layout` names the file's keypoint layout (schemas/layouts.py),
    needed where the count is shared (14, 16). Images are looked up in `image_dir` (default: the
    file's folder). The split group (frames of one group never straddle splits) is `group` when
    given, else the image's video id (`vid_id`/`video_id`, as PoseTrack writes), else the image.
    """
    path = Path(coco_path).resolve()
    hidden = hidden or keep_ground_truth
    if hidden and boxes_only:
        raise InputError(path, "--hidden keeps the keypoints, --boxes-only drops them: give one",
                         field="keypoints")
    if layout is not None and layout not in LAYOUTS:
        raise InputError(path, f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}", field="--layout")
    folder = Path(image_dir).resolve() if image_dir is not None else path.parent
    source = _read_source(path, folder, layout, detections, min_detection_score)
    return _write_source(store, source, path, subset or path.stem, group,
                         hidden=hidden, boxes_only=boxes_only)


def _read_source(path: Path, folder: Path, layout: str | None, detections: str | Path | None,
                 min_score: float) -> _Source:
    """Read and check the whole file (and the detections) before anything is written."""
    data = _read_json(path)
    if mpii_format.looks_like_mpii(data):
        if detections is not None:
            raise InputError(path, "MPII's json has no image ids for --detections to name",
                             field="--detections")
        return _mpii_source(path, data, folder, layout)
    if not isinstance(data, Mapping):
        raise InputError(path, "expected a COCO object with images and annotations, or MPII's "
                               "list of people (image, joints, joints_vis, center, scale)")
    images = _images(data, path, folder)
    if detections is not None:
        det_path = Path(detections).resolve()
        records = _read_json(det_path)
        if not isinstance(records, list):
            raise InputError(det_path, "expected a list of detections (COCO results format)")
        people, skipped = _people(det_path, records, set(images), detections=True, min_score=min_score)
        return _Source(images, people, skipped, _Origin(det_path, file_sha256(det_path)), True)
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise InputError(path, "'annotations' must be a list", field="annotations")
    people, skipped = _people(path, anns, set(images), detections=False, min_score=0.0,
                              given=_file_layout(data, path, layout))
    return _Source(images, people, skipped, _Origin(path, file_sha256(path)))


def _file_layout(data: Mapping[str, Any], path: Path, layout: str | None) -> FileLayout:
    """The layout asked for and the point names of the file's person category (if it lists them)."""
    cats = data.get("categories")
    for k, cat in enumerate(cats if isinstance(cats, list) else []):
        if isinstance(cat, Mapping) and cat.get("id", 1) == 1 and isinstance(cat.get("keypoints"), list):
            names = tuple(str(n) for n in cat["keypoints"])
            return FileLayout(layout, names or None, f"categories[{k}].keypoints")
    return FileLayout(layout)


def _mpii_source(path: Path, data: Any, folder: Path, layout: str | None) -> _Source:
    """MPII's people as the importer's: images by first appearance, sizes from the image files,
    boxes mmpose's clipped to the image, joints mapped through the `mpii` layout."""
    if layout not in (None, "mpii"):
        raise InputError(path, f"MPII's json holds MPII's 16 joints: --layout mpii, not {layout}",
                         field="--layout")
    images: dict[int, dict[str, Any]] = {}
    ids: dict[str, int] = {}
    people: dict[int, list[_Person]] = {}
    skipped: list[str] = []
    for person in mpii_format.read_people(path, data):
        fld = f"[{person.index}]"
        if person.image not in ids:
            file = folder / person.image
            width, height = mpii_format.image_size(file, path, f"{fld}.image")
            ids[person.image] = image_id = len(ids) + 1
            images[image_id] = {"id": image_id, "file_name": person.image, "width": width,
                                "height": height, "file": file, "video": None}
        info = images[ids[person.image]]
        raw = person.mmpose_box()
        box = mpii_format.clipped_box(raw, (info["width"], info["height"]))
        if person.center[0] == -1 or box is None:
            skipped.append(f"{fld}: no box inside the image (center {person.center}, scale {person.scale})")
            continue
        kps, name = map_keypoints(person.triplets, str(path), f"{fld}.joints", FileLayout("mpii"))
        on_image = people.setdefault(info["id"], [])
        meta = {"mpii_center": list(person.center), "mpii_scale": person.scale, "mmpose_box": list(raw)}
        on_image.append(_Person(person.index, person.index, box, kps, name, None,
                                key=f"mpii:{len(on_image)}", meta=meta))
    return _Source(images, people, skipped, _Origin(path, file_sha256(path)))


def _write_source(store: Store, source: _Source, path: Path, subset_name: str, group: str | None, *,
                  hidden: bool, boxes_only: bool) -> ImportSummary:
    """Store the checked file: images, boxed people, and their points as human labels (or hidden)."""
    origin = source.origin
    summary = ImportSummary(skipped=source.skipped)
    bare: list[NewImage] = []
    labels: list[NewLabel] = []
    humans: list[tuple[NewLabel, _Person]] = []
    for image_id, info in source.images.items():
        image = NewImage(
            info["file"],
            source="real",
            subset=subset_name,
            group_key=group or _group_of(subset_name, info),
            width=info["width"],
            height=info["height"],
            meta={"coco_file": str(path), "coco_image_id": image_id, "file_name": info["file_name"]},
            sha256=file_sha256(info["file"]),
        )
        summary.images += 1
        persons = source.people.get(image_id, [])
        if not persons:
            bare.append(image)
        for person in persons:
            label = _label(image, person, source, hidden=hidden)
            if not (hidden or boxes_only) and _placed(person.keypoints):
                humans.append((label, person))
            else:
                labels.append(label)
    store.add_images(bare)
    for batch in chunked(labels, WRITE_BATCH):  # a few transactions, not three per person
        for written, label in zip(store.add_labels(batch), batch, strict=True):
            summary.instances += 1
            if label.revision is not None and written.revision_id is not None:
                summary.ground_truth_revisions += 1
    for human_batch in chunked(humans, WRITE_BATCH):
        _write_people(store, human_batch, origin, summary)
    return summary


def _label(image: NewImage, person: _Person, source: _Source, *, hidden: bool) -> NewLabel:
    """The person's instance (key, box, where it came from) and, with `hidden`, its hidden truth."""
    origin = source.origin
    key = (f"det:{origin.sha256[:12]}:{person.ann_index}" if source.from_detections
           else person.key or instance_key(person.annotation_id))
    meta: dict[str, Any] = {
        "bbox": person.bbox,
        "box_source": "detections" if source.from_detections else "annotation",
        "source_file": str(origin.path),
        "annotation_id": person.annotation_id,
        **person.meta,
    }
    if person.score is not None:
        meta["bbox_score"] = person.score
    revision = None
    if hidden and person.keypoints is not None:
        revision = NewRevision(
            person.keypoints,
            person.bbox,
            area=person.area,
            source=RevisionSource.IMPORT,
            accepted=False,
            provenance={"file": str(origin.path), "annotation_id": person.annotation_id,
                        "layout": person.layout},
            external_id=origin.external_id("import", person.annotation_id),
        )
    return NewLabel(image, key, meta, revision)


def _placed(keypoints: list[float] | None) -> list[int]:
    """The points a person labelled (v > 0) among 37 mapped triplets."""
    return [] if keypoints is None else [i for i in range(NUM_KEYPOINTS) if keypoints[3 * i + 2] > 0]


def _write_people(store: Store, batch: list[tuple[NewLabel, _Person]], origin: _Origin,
                  summary: ImportSummary) -> None:
    """People with the points the file labels, as accepted human revisions added to the points
    people placed on them before (another file, Label Studio): the instances first, so their
    earlier points can be read; a crash between the two leaves boxed people, and a re-run adds
    the labels (by external id)."""
    written = store.add_labels([label for label, _ in batch])
    ids = [w.instance_id for w in written]
    earlier = store.human_points(ids)
    revisions = [(iid, _human_revision(person, origin, earlier.get(iid)))
                 for iid, (_, person) in zip(ids, batch, strict=True)]
    for rid, (_, rev) in zip(store.add_revisions(revisions), revisions, strict=True):
        summary.instances += 1
        if rid is not None:
            summary.human_revisions += 1
            summary.human_points += len((rev.provenance or {})["human_points"][-1]["points"])


def _human_revision(person: _Person, origin: _Origin, earlier: HumanPoints | None) -> NewRevision:
    """The person's label after this file: its labelled points over those people placed before.

    Where both place a point, this file's wins; every point keeps where it came from."""
    assert person.keypoints is not None
    placed = _placed(person.keypoints)
    keypoints = list(person.keypoints)
    sources = [RevisionSource.HUMAN if i in placed else NONE for i in range(NUM_KEYPOINTS)]
    origins: list[dict[str, Any]] = []
    if earlier is not None:
        kept = [i for i in earlier.ids if i not in placed]
        for i in kept:
            keypoints[3 * i:3 * i + 3] = earlier.keypoints[3 * i:3 * i + 3]
            sources[i] = RevisionSource.HUMAN
        before = earlier.origins or [{"revision": earlier.revision_id, "points": earlier.ids}]
        for entry in before:
            points = [i for i in entry.get("points", []) if i in kept]
            if points:
                origins.append({**entry, "points": points})
    origins.append({"file": str(origin.path), "sha256": origin.sha256,
                    "annotation_id": person.annotation_id, "layout": person.layout, "points": placed})
    return NewRevision(
        keypoints,
        person.bbox,
        area=person.area,
        source=RevisionSource.HUMAN,
        accepted=True,
        provenance={"file": str(origin.path), "annotation_id": person.annotation_id,
                    "layout": person.layout, "human_points": origins},
        external_id=origin.external_id("human-import", person.annotation_id),
        point_sources=[str(s) for s in sources],
    )
