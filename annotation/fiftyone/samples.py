"""The store's labels as FiftyOne samples: fields, colours, saved views; bulk-loaded.

One FiftyOne sample per image. `ground_truth` holds each instance's label (a release's recorded
revision, or the store's current one) as fo.Keypoints with the 37 SpineTrack points in order,
normalised to [0, 1], unlabelled points (v=0) as NaN the way FiftyOne expects; `spine` repeats the
spine group (sacrum to skull, head top) of the same labels so that the App draws it in its own
colour over the body; `boxes` holds the matching boxes and `predictions` the latest model proposal
of each instance. Every label carries `store_instance_id` and `store_revision_id` (FiftyOne
reserves `instance_id` for its own fo.Instance links, which also tie each instance's keypoints, box
and prediction together), so a reviewer's tag maps back to exactly one store instance and the
revision the reviewer saw. Each sample's `metadata` (size, type, bytes) comes from the store and
the file, so the App never has to compute it.
"""

from __future__ import annotations

import math
import mimetypes
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from annotation.fiftyone.setup import SPINE_POINTS, dataset_name, fiftyone_module, skeleton, spine_skeleton
from annotation.fiftyone.tags import NEEDS_FIX, sync_review_tags, tag_times
from annotation.labelstudio.agreement import DISAGREEMENT_BELOW
from pipeline import progress
from pipeline.gc_pause import gc_paused
from pipeline.release.build import get_release, labels_for_revisions
from pipeline.store import Label, Store
from schemas import enums
from schemas.keypoint_array import KeypointArray
from schemas.keypoints import GROUP_COLOURS, NAMES, NUM_KEYPOINTS

#: Revision sources that are model proposals.
PREDICTION_SOURCES = enums.PREDICTION_SOURCES
#: quality keys holding inter-annotator agreement (mean pairwise OKS, 0-1), newest name first.
AGREEMENT_KEYS = ("agreement_oks", "agreement")
#: Saved views, by name (see `save_views`).
VIEW_NAMES = ("most-uncertain", "annotator-disagreement", "auto-accepted", "needs-fix",
              "source-synthetic", "source-real")
#: App colour of each label field: spine over body in the keypoint spec's group colours.
COLOURS = {
    "ground_truth": GROUP_COLOURS["body"],
    "spine": GROUP_COLOURS["spine"],
    "predictions": "#f5f5f5",
    "boxes": "#9e9e9e",
}
#: Samples written per insert (FiftyOne's own default batching is by size; this bounds memory too).
BATCH = 1000


# -- reading the store ---------------------------------------------------------------------------
def latest_predictions(store: Store, instance_ids: Iterable[int] | None = None) -> list[Label]:
    """The latest model proposal of each instance (accepted or not), as Labels."""
    return store.latest_labels(accepted_only=False, among_sources=PREDICTION_SOURCES,
                               instance_ids=None if instance_ids is None else list(instance_ids))


# -- building samples ------------------------------------------------------------------------------
def _quality_number(quality: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = quality.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):  # a tuple: faster than int | float
            return float(value)
    return None


def _ik_residual(label: Label) -> float | None:
    """RMS bone-marker residual of the OpenSim fit (metres), for synthetic labels."""
    return _quality_number(label.quality, "ik_rms_m", "ik_residual")


def _points(label: Label, ids: Sequence[int] = range(NUM_KEYPOINTS)) -> tuple[list[tuple[float, float]],
                                                                              list[int]]:
    """Normalised (x, y) of keypoints `ids`; unlabelled points (v=0) as NaN."""
    points, visibility = [], []
    kps = KeypointArray.from_flat(label.keypoints)
    for i in ids:
        x, y, v = kps.point(i)
        visibility.append(int(v))
        points.append((x / label.width, y / label.height) if v > 0 else (math.nan, math.nan))
    return points, visibility


def _point_lists(label: Label, ids: Sequence[int] | None = None) -> tuple[list[list[float]], list[int]]:
    """`_points` as lists (what the database stores), computed on the whole array at once."""
    kps = KeypointArray.from_flat(label.keypoints)
    xy = kps.xy / np.array([label.width, label.height], dtype=np.float64)
    v = kps.v
    if ids is not None:
        xy, v = xy[list(ids)], v[list(ids)]
    xy[v <= 0] = np.nan
    return xy.tolist(), [int(x) for x in v]


def _points_by_revision(labels: Sequence[Label]) -> dict[int, tuple[list[list[float]], list[int]]]:
    """`_point_lists` of every label, computed on one (N, 37, 3) array: revision id -> (xy, v)."""
    if not labels:
        return {}
    kps = np.asarray([lab.keypoints for lab in labels], dtype=np.float64)
    kps = kps.reshape(len(labels), NUM_KEYPOINTS, 3)
    size = np.asarray([(lab.width, lab.height) for lab in labels], dtype=np.float64)[:, None, :]
    xy = kps[:, :, :2] / size
    v = kps[:, :, 2]
    xy[v <= 0] = np.nan
    return {lab.revision_id: pair for lab, pair in zip(labels, zip(xy.tolist(), v.astype(np.int64).tolist(),
                                                                    strict=True), strict=True)}


def _common(label: Label) -> dict[str, Any]:
    return {
        "store_instance_id": label.instance_id,
        "instance_key": label.instance_key,
        "store_revision_id": label.revision_id,
        "source": label.source,
        "model_version": label.model_version,
        "annotator": label.annotator,
        "round": label.round,
        "uncertainty": label.uncertainty,
        "agreement": _quality_number(label.quality, *AGREEMENT_KEYS),
        "ik_residual": _ik_residual(label),
    }


def _keypoint(fo: ModuleType, label: Label, instance: Any, scores: list[float] | None = None, *,
              name: str = "person", ids: Sequence[int] = range(NUM_KEYPOINTS), **fields: Any) -> Any:
    """An fo.Keypoint of points `ids` of `label`: the body, or the spine group (`spine` field)."""
    points, visibility = _points(label, ids)
    confidence = [float(c) for c in scores] if scores and len(scores) == NUM_KEYPOINTS else None
    return fo.Keypoint(label=name, points=points, confidence=confidence, visibility=visibility,
                       instance=instance, **fields)


def _box(fo: ModuleType, label: Label, instance: Any) -> Any:
    x, y, w, h = label.bbox
    box = [x / label.width, y / label.height, w / label.width, h / label.height]
    return fo.Detection(label="person", bounding_box=box, instance=instance, **_common(label))


def _metadata(fo: ModuleType, label: Label) -> Any:
    """Width and height from the store; bytes and type from the file (None when it is missing)."""
    try:
        size: int | None = os.stat(label.image_path).st_size
    except OSError:
        size = None
    mime = mimetypes.guess_type(label.image_path)[0]
    return fo.ImageMetadata(width=label.width, height=label.height, size_bytes=size, mime_type=mime,
                            num_channels=label.image_meta.get("channels", 3) if label.image_meta else 3)


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _min(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def build_samples(
    fo: ModuleType,
    labels: Sequence[Label],
    predictions: Sequence[Label],
    *,
    splits: dict[int, str] | None = None,
    scores: dict[int, tuple[list[float] | None, bool]] | None = None,
    open_tags: dict[int, list[str]] | None = None,
) -> list[Any]:
    """One fo.Sample per image of `labels` or `predictions` (ordered by image id)."""
    by_image: dict[int, dict[str, Any]] = {}
    for lab in [*labels, *predictions]:
        by_image.setdefault(lab.image_id, {"first": lab, "labels": [], "predictions": []})
    for lab in labels:
        by_image[lab.image_id]["labels"].append(lab)
    for lab in predictions:
        by_image[lab.image_id]["predictions"].append(lab)
    scores = scores or {}
    open_tags = open_tags or {}
    samples = []
    for image_id in sorted(by_image):
        entry = by_image[image_id]
        first: Label = entry["first"]
        instances: dict[int, Any] = {}
        gt, spine, boxes, preds = [], [], [], []
        for lab in entry["labels"]:
            inst = instances.setdefault(lab.instance_id, fo.Instance())
            kp = _keypoint(fo, lab, inst, **_common(lab), split=(splits or {}).get(lab.instance_id))
            box = _box(fo, lab, inst)
            kp.tags = list(open_tags.get(lab.instance_id, []))
            box.tags = list(kp.tags)
            gt.append(kp)
            spine.append(_keypoint(fo, lab, inst, name="spine", ids=SPINE_POINTS,
                                   store_instance_id=lab.instance_id, store_revision_id=lab.revision_id))
            boxes.append(box)
        labelled = {lab.instance_id for lab in entry["labels"]}
        for lab in entry["predictions"]:
            inst = instances.setdefault(lab.instance_id, fo.Instance())
            pred_scores, accepted = scores.get(lab.revision_id, (None, False))
            pred = _keypoint(fo, lab, inst, pred_scores, **_common(lab), accepted=bool(accepted))
            if lab.instance_id not in labelled:
                pred.tags = list(open_tags.get(lab.instance_id, []))  # a proposal-only instance
            preds.append(pred)
        everything = entry["labels"] + entry["predictions"]
        sample = fo.Sample(
            filepath=first.image_path,
            metadata=_metadata(fo, first),
            image_id=image_id,
            image_source=first.image_source,
            subset=first.subset,
            group_key=first.group_key,
            frame_index=first.frame_index,
            split=_first_split(splits, entry["labels"]),
            ground_truth=fo.Keypoints(keypoints=gt),
            spine=fo.Keypoints(keypoints=spine),
            boxes=fo.Detections(detections=boxes),
            predictions=fo.Keypoints(keypoints=preds),
            num_instances=len(instances),
            revision_sources=sorted({lab.source for lab in entry["labels"]}),
            model_versions=sorted({lab.model_version for lab in everything if lab.model_version}),
            annotators=sorted({lab.annotator for lab in entry["labels"] if lab.annotator}),
            round=max((lab.round for lab in entry["labels"] if lab.round is not None), default=None),
            uncertainty=_sample_uncertainty(entry["labels"], entry["predictions"]),
            agreement=_min(_quality_number(lab.quality, *AGREEMENT_KEYS) for lab in entry["labels"]),
            ik_residual=_max(_ik_residual(lab) for lab in entry["labels"]),
        )
        samples.append(sample)
    return samples


def _sample_uncertainty(labels: Sequence[Label], predictions: Sequence[Label]) -> float | None:
    """The largest instance uncertainty on the image. A human label has none of its own: the
    model's proposal for the same instance stands in for it."""
    proposed = {p.instance_id: p.uncertainty for p in predictions}
    values = [lab.uncertainty if lab.uncertainty is not None else proposed.get(lab.instance_id)
              for lab in labels]
    labelled = {lab.instance_id for lab in labels}
    values += [p.uncertainty for p in predictions if p.instance_id not in labelled]
    return _max(values)


def _first_split(splits: dict[int, str] | None, labels: Sequence[Label]) -> str | None:
    if not splits:
        return None
    return next((splits[lab.instance_id] for lab in labels if lab.instance_id in splits), None)


def _open_tags(store: Store, labels: Sequence[Label], predictions: Sequence[Label]) -> dict[int, list[str]]:
    """Store tags still open: given after the label now shown (or to an instance with no label yet)."""
    written = store.revision_times([lab.revision_id for lab in labels])
    shown = {lab.instance_id: written[lab.revision_id] for lab in labels}
    proposed_only = {p.instance_id for p in predictions} - set(shown)
    open_tags: dict[int, list[str]] = {}
    for (inst, tag), at in sorted(tag_times(store).items()):
        if (inst in shown and at >= shown[inst]) or inst in proposed_only:
            open_tags.setdefault(inst, []).append(tag)
    return open_tags


# -- the same samples as database documents (the fast path) ---------------------------------------
def _label_doc(cls: str, label: str, instance: Any, tags: list[str],
               fields: dict[str, Any]) -> dict[str, Any]:
    from bson import ObjectId

    return {"_id": ObjectId(), "_cls": cls, "attributes": {}, "tags": tags, "label": label, **fields,
            "instance": instance}


#: Points of each keypoint document: the whole body (`ground_truth`, `predictions`) or the spine.
ALL_POINTS: tuple[int, ...] = tuple(range(NUM_KEYPOINTS))


def _keypoint_doc(label: Label, instance: Any, tags: list[str], fields: dict[str, Any], *,
                  name: str = "person", ids: Sequence[int] = ALL_POINTS,
                  points: tuple[list[list[float]], list[int]] | None = None,
                  scores: list[float] | None = None) -> dict[str, Any]:
    """A fo.Keypoint document of points `ids` of `label` (the body, or the spine group for the
    `spine` field); `points` are the label's (xy, v) for all 37 points when computed already."""
    xy, visibility = points or _point_lists(label)
    if ids is not ALL_POINTS:
        xy, visibility = [xy[i] for i in ids], [visibility[i] for i in ids]
    confidence = [float(c) for c in scores] if scores and len(scores) == NUM_KEYPOINTS else None
    return _label_doc("Keypoint", name, instance, tags,
                      {"points": xy, "confidence": confidence, "visibility": visibility, **fields})


def _box_doc(label: Label, instance: Any, tags: list[str], common: dict[str, Any]) -> dict[str, Any]:
    x, y, w, h = label.bbox
    box = [x / label.width, y / label.height, w / label.width, h / label.height]
    return _label_doc("Detection", "person", instance, tags, {"bounding_box": box, **common})


def _metadata_doc(label: Label) -> dict[str, Any]:
    try:
        size: int | None = os.stat(label.image_path).st_size
    except OSError:
        size = None
    doc: dict[str, Any] = {"_cls": "ImageMetadata", "size_bytes": size,
                           "mime_type": mimetypes.guess_type(label.image_path)[0],
                           "width": label.width, "height": label.height,
                           "num_channels": label.image_meta.get("channels", 3) if label.image_meta else 3}
    return {k: v for k, v in doc.items() if v is not None or k == "_cls"}


def sample_documents(
    labels: Sequence[Label],
    predictions: Sequence[Label],
    *,
    dataset_id: Any,
    splits: dict[int, str] | None = None,
    scores: dict[int, tuple[list[float] | None, bool]] | None = None,
    open_tags: dict[int, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """The documents FiftyOne stores for `build_samples`' samples, built as plain dicts.

    Building fo.Sample/fo.Keypoint objects costs milliseconds per sample (mongoengine validates
    every attribute); these are the same documents (`tests/test_fiftyone_review.py` compares them
    with FiftyOne's own) for a fraction of that, written with one insert per batch.
    """
    import random
    from datetime import UTC, datetime

    from bson import ObjectId

    now = datetime.now(UTC).replace(tzinfo=None)
    by_image: dict[int, dict[str, Any]] = {}
    for lab in [*labels, *predictions]:
        by_image.setdefault(lab.image_id, {"first": lab, "labels": [], "predictions": []})
    for lab in labels:
        by_image[lab.image_id]["labels"].append(lab)
    for lab in predictions:
        by_image[lab.image_id]["predictions"].append(lab)
    scores = scores or {}
    open_tags = open_tags or {}
    points_of = _points_by_revision([*labels, *predictions])
    docs = []
    for image_id in sorted(by_image):
        entry = by_image[image_id]
        first: Label = entry["first"]
        instances: dict[int, Any] = {}
        gt, spine, boxes, preds = [], [], [], []
        for lab in entry["labels"]:
            inst = instances.setdefault(lab.instance_id, {"_id": ObjectId(), "_cls": "Instance"})
            tags = list(open_tags.get(lab.instance_id, []))
            common = _common(lab)
            points = points_of[lab.revision_id]
            gt.append(_keypoint_doc(lab, inst, tags, {**common, "split": (splits or {}).get(lab.instance_id)},
                                    points=points))
            spine.append(_keypoint_doc(lab, inst, [], {"store_instance_id": lab.instance_id,
                                                       "store_revision_id": lab.revision_id},
                                       name="spine", ids=SPINE_POINTS, points=points))
            boxes.append(_box_doc(lab, inst, list(tags), common))
        labelled = {lab.instance_id for lab in entry["labels"]}
        for lab in entry["predictions"]:
            inst = instances.setdefault(lab.instance_id, {"_id": ObjectId(), "_cls": "Instance"})
            pred_scores, accepted = scores.get(lab.revision_id, (None, False))
            tags = [] if lab.instance_id in labelled else list(open_tags.get(lab.instance_id, []))
            preds.append(_keypoint_doc(lab, inst, tags, {**_common(lab), "accepted": bool(accepted)},
                                       points=points_of[lab.revision_id], scores=pred_scores))
        everything = entry["labels"] + entry["predictions"]
        doc: dict[str, Any] = {
            "filepath": first.image_path,
            "tags": [],
            "metadata": _metadata_doc(first),
            "created_at": now,
            "last_modified_at": now,
            "_media_type": "image",
            "_rand": random.random() * 0.001 + 0.999,  # FiftyOne's own range for new samples
            "_dataset_id": dataset_id,
            "image_id": image_id,
            "image_source": first.image_source,
            "subset": first.subset,
            "group_key": first.group_key,
            "frame_index": first.frame_index,
            "split": _first_split(splits, entry["labels"]),
            "spine": {"_cls": "Keypoints", "keypoints": spine},
            "ground_truth": {"_cls": "Keypoints", "keypoints": gt},
            "boxes": {"_cls": "Detections", "detections": boxes},
            "predictions": {"_cls": "Keypoints", "keypoints": preds},
            "num_instances": len(instances),
            "revision_sources": sorted({lab.source for lab in entry["labels"]}),
            "model_versions": sorted({lab.model_version for lab in everything if lab.model_version}),
            "annotators": sorted({lab.annotator for lab in entry["labels"] if lab.annotator}),
            "round": max((lab.round for lab in entry["labels"] if lab.round is not None), default=None),
            "uncertainty": _sample_uncertainty(entry["labels"], entry["predictions"]),
            "agreement": _min(_quality_number(lab.quality, *AGREEMENT_KEYS) for lab in entry["labels"]),
            "ik_residual": _max(_ik_residual(lab) for lab in entry["labels"]),
        }
        docs.append({k: v for k, v in doc.items() if v is not None})
    return docs


# -- the dataset ------------------------------------------------------------------------------------
def load_into_fiftyone(
    store: Store,
    *,
    release: str | None = None,
    name: str | None = None,
    with_predictions: bool = True,
) -> Any:
    """Load a release (or the store's working set) into a persistent FiftyOne dataset.

    Re-running replaces the dataset; before that, tags a reviewer left on the old one are synced
    into the store, and open store tags (needs-fix, annotator-disagreement) are put back on the
    labels they were given to, so no review work is lost. Samples are written as documents, BATCH
    per insert, into a schema declared up front (bench/fiftyone_load.py measures it).
    """
    with gc_paused():  # store reads, documents and inserts
        fo = fiftyone_module(store.home)
        name = name or dataset_name(release)
        splits: dict[int, str] | None = None
        if release:
            manifest = get_release(store, release).manifest
            labels = labels_for_revisions(store, list(manifest.instance_revisions().values()))
            splits = {inst: split for split, pairs in manifest.revisions.items() for inst, _ in pairs}
            predictions = latest_predictions(store, splits) if with_predictions else []
        else:
            labels = store.current_labels()
            predictions = latest_predictions(store) if with_predictions else []
        if fo.dataset_exists(name):
            sync_review_tags(store, fo.load_dataset(name))
            fo.delete_dataset(name)
        open_tags = _open_tags(store, labels, predictions)
        scores = store.revision_scores([p.revision_id for p in predictions])
        dataset = new_dataset(fo, name, release, store)
        docs = sample_documents(labels, predictions, dataset_id=dataset._doc.id, splits=splits, scores=scores,
                                open_tags=open_tags)
        insert_in_batches(dataset, docs)
    save_views(dataset)
    return dataset


def new_dataset(fo: ModuleType, name: str, release: str | None, store: Store) -> Any:
    """An empty persistent dataset with SpineTrack's schema, skeletons and colours."""
    dataset = fo.Dataset(name, persistent=True)
    declare_fields(fo, dataset)  # first: the sidebar order below needs the fields
    dataset.info = {"spinetrack_release": release, "keypoints": list(NAMES),
                    "store": store.engine.url.render_as_string(hide_password=True)}
    dataset.skeletons = {"ground_truth": skeleton(fo), "predictions": skeleton(fo),
                         "spine": spine_skeleton(fo)}
    dataset.default_skeleton = skeleton(fo)
    dataset.app_config.color_scheme = fo.ColorScheme(
        color_by="field", show_skeletons=True,
        fields=[{"path": path, "fieldColor": colour} for path, colour in COLOURS.items()],
    )
    _label_order(fo, dataset)
    dataset.save()  # one save for all of the above
    return dataset


#: Order of the label fields in the App's sidebar, the order they are drawn in too: the App draws
#: a sample's fields in their stored order, the first on top (checked in docs/img/fiftyone-review.png,
#: `python -m annotation.fiftyone.screenshot`), so `spine` is declared and stored before the
#: `ground_truth` that repeats its points, and listed first.
LABEL_ORDER = ("spine", "ground_truth", "predictions", "boxes")


def _label_order(fo: ModuleType, dataset: Any) -> None:
    groups = fo.DatasetAppConfig.default_sidebar_groups(dataset)
    for group in groups:
        if group.name == "labels":
            rest = [path for path in group.paths if path not in LABEL_ORDER]
            group.paths = [path for path in LABEL_ORDER if path in group.paths] + rest
    dataset.app_config.sidebar_groups = groups


def insert_in_batches(dataset: Any, docs: Sequence[dict[str, Any]], batch: int = BATCH) -> None:
    """Write sample documents BATCH at a time (one insert each) into the declared schema."""
    from fiftyone.core.odm.database import insert_documents

    with progress.step("FiftyOne load", total=len(docs)) as advance:
        for start in range(0, len(docs), batch):
            chunk = docs[start:start + batch]
            insert_documents(chunk, dataset._sample_collection, ordered=False, batcher=False, progress=False)
            advance(len(chunk))


def add_in_batches(dataset: Any, samples: Sequence[Any], batch: int = BATCH) -> None:
    """Insert samples BATCH at a time into the declared schema (no per-sample schema inference)."""
    with progress.step("FiftyOne load", total=len(samples)) as advance:
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            dataset.add_samples(chunk, expand_schema=False, validate=False, progress=False)
            advance(len(chunk))


def declare_fields(fo: ModuleType, dataset: Any) -> None:
    """Give every sample field and label attribute its type up front, in one schema update.

    A field whose first values are all None would otherwise be missing from the schema (and from
    the App's sidebar), and documents are written without FiftyOne looking at them. The types are
    those FiftyOne infers from a template sample with every field set (`create_implied_field`, as
    `add_sample(dynamic=True)` does), merged in one schema update: adding the template took one
    dataset save per field, about a second.
    """
    instance = fo.Instance()
    common = {"store_instance_id": 0, "instance_key": "", "store_revision_id": 0, "source": "",
              "model_version": "", "annotator": "", "round": 0, "uncertainty": 0.0, "agreement": 0.0,
              "ik_residual": 0.0}
    point = [(0.0, 0.0)]
    template = fo.Sample(
        filepath=str(Path("/spinetrack-schema-template.png")),
        metadata=fo.ImageMetadata(width=1, height=1, size_bytes=1, mime_type="image/png", num_channels=3),
        image_id=0, image_source="", subset="", group_key="", frame_index=0, split="", num_instances=0,
        revision_sources=[""], model_versions=[""], annotators=[""], round=0, uncertainty=0.0,
        agreement=0.0, ik_residual=0.0,
        spine=fo.Keypoints(keypoints=[fo.Keypoint(label="", points=point, visibility=[0], instance=instance,
                                                  store_instance_id=0, store_revision_id=0)]),
        ground_truth=fo.Keypoints(keypoints=[fo.Keypoint(label="", points=point, confidence=[0.0],
                                                         visibility=[0], instance=instance, split="",
                                                         **common)]),
        boxes=fo.Detections(detections=[fo.Detection(label="", bounding_box=[0.0, 0.0, 0.0, 0.0],
                                                     instance=instance, **common)]),
        predictions=fo.Keypoints(keypoints=[fo.Keypoint(label="", points=point, confidence=[0.0],
                                                        visibility=[0], instance=instance, accepted=False,
                                                        **common)]),
    )
    from fiftyone.core.odm.utils import create_implied_field

    if dataset.media_type is None:
        dataset.media_type = "image"  # what the first added image sample would set
    declared = dataset.get_field_schema(include_private=True)
    schema = {path: create_implied_field(path, template[path], dynamic=True)
              for path in template._get_field_names(include_private=True)
              if path not in declared and template[path] is not None}
    dataset._sample_doc_cls.merge_field_schema(schema, validate=False)  # one update, as add_sample would
    dataset._reload()


def _tagged_expression(tag: str) -> Any:
    """Samples tagged `tag`, or with any label tagged `tag`."""
    from fiftyone import ViewField as F

    expr = F("tags").contains(tag)
    for field, kind in (("ground_truth", "keypoints"), ("boxes", "detections"), ("predictions", "keypoints")):
        labels = F(f"{field}.{kind}").filter(F("tags").contains(tag))
        expr = expr | (labels.length() > 0)
    return expr


def save_views(dataset: Any) -> None:
    """The reviewer's saved views (see VIEW_NAMES)."""
    from fiftyone import ViewField as F

    views = {
        "most-uncertain": dataset.exists("uncertainty").sort_by("uncertainty", reverse=True),
        "annotator-disagreement": dataset.exists("agreement").match(F("agreement") < DISAGREEMENT_BELOW)
        .sort_by("agreement"),
        "auto-accepted": dataset.filter_labels("ground_truth", F("source") == "pseudo-accepted"),
        "needs-fix": dataset.match(_tagged_expression(NEEDS_FIX)),
        "source-synthetic": dataset.match(F("image_source") == "synthetic"),
        "source-real": dataset.match(F("image_source") == "real"),
    }
    for view_name, view in views.items():
        dataset.save_view(view_name, view, overwrite=True)


def review_counts(dataset: Any) -> dict[str, int]:
    """Sizes of the dataset and its saved views, for the CLI's summary."""
    counts = {"samples": len(dataset)}
    for view_name in dataset.list_saved_views():
        counts[view_name] = len(dataset.load_saved_view(view_name))
    return counts
