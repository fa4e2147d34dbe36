"""Review of labels in FiftyOne: load a release or the working set, launch the App, sync tags back.

One FiftyOne sample per image. `ground_truth` holds each instance's label (a release's recorded
revision, or the store's current one) as fo.Keypoints with the 37 SpineTrack points in order,
normalised to [0, 1], unlabelled points (v=0) as NaN the way FiftyOne expects; `boxes` holds the
matching boxes and `predictions` the latest model proposal of each instance. Every label carries
`store_instance_id` and `store_revision_id` (FiftyOne reserves `instance_id` for its own
fo.Instance links, which also tie each instance's keypoints, box and prediction together), so a
reviewer's tag maps back to exactly one store instance and the revision the reviewer saw.

FiftyOne keeps its datasets in a MongoDB it starts itself (mongod from the fiftyone-db package,
stopped when the last Python process using it exits). The database lives under
$SPINETRACK_HOME/fiftyone/db unless FIFTYONE_DATABASE_DIR is set; the location must be chosen before
fiftyone is imported, which is why this module imports it lazily through `fiftyone_module()`.
"""

from __future__ import annotations

import getpass
import hashlib
import ipaddress
import logging
import math
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import func, select

from annotation.labelstudio.agreement import DISAGREEMENT_BELOW
from pipeline.release import get_release, labels_for_revisions
from pipeline.store import Label, Store
from pipeline.store.models import Instance, ReviewTag, Revision
from schemas import enums
from schemas.keypoints import NAMES, NUM_KEYPOINTS, SKELETON

log = logging.getLogger(__name__)

#: The tag a reviewer puts on a sample or a label whose annotation must be corrected.
NEEDS_FIX = enums.ReviewTag.NEEDS_FIX
#: Revision sources that are model proposals.
PREDICTION_SOURCES = enums.PREDICTION_SOURCES
#: Label fields that carry `store_instance_id` (tags on any of them map back to the instance).
LABEL_FIELDS = ("ground_truth", "boxes", "predictions")
#: quality keys holding inter-annotator agreement (mean pairwise OKS, 0-1), newest name first.
AGREEMENT_KEYS = ("agreement_oks", "agreement")
#: Saved views, by name (see `save_views`).
VIEW_NAMES = ("most-uncertain", "annotator-disagreement", "auto-accepted", "needs-fix",
              "source-synthetic", "source-real")


# -- FiftyOne set-up -------------------------------------------------------------------------
def database_dir(home: Path) -> Path:
    return Path(os.environ.get("FIFTYONE_DATABASE_DIR") or home / "fiftyone" / "db")


def database_name(home: Path) -> str:
    """MongoDB database name of a home: `spinetrack-<hash of its path>`."""
    return "spinetrack-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def fiftyone_module(home: Path) -> ModuleType:
    """Import fiftyone with its database under `home` (or $FIFTYONE_DATABASE_DIR) and no telemetry.

    The first import in a process fixes the database for that process; a later call for another
    home keeps the first one and says so in the log.
    """
    wanted = database_dir(home).resolve()
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    import sys

    if "fiftyone" not in sys.modules:
        wanted.mkdir(parents=True, exist_ok=True)
        os.environ["FIFTYONE_DATABASE_DIR"] = str(wanted)
        # FiftyOne may attach to another home's running mongod: a database name per home keeps
        # the datasets of two homes apart even then
        os.environ.setdefault("FIFTYONE_DATABASE_NAME", database_name(home))
    import fiftyone

    active = Path(fiftyone.config.database_dir).resolve()
    if active != wanted:
        log.warning("fiftyone already uses the database in %s (not %s): one per process", active, wanted)
    for other in running_database_dirs():
        if other != active:
            log.warning("a FiftyOne database service for %s is running; FiftyOne attaches to it instead of "
                        "starting one for %s (close the other FiftyOne session to keep them apart)",
                        other, active)
    return fiftyone


def running_database_dirs() -> list[Path]:
    """--dbpath of every FiftyOne database service of this user (FiftyOne reuses any of them)."""
    import psutil

    me = psutil.Process().username()
    found = []
    for proc in psutil.process_iter(["cmdline", "username"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("username") != me or "--51-service" not in cmd or "db" not in cmd:
            continue
        if "--dbpath" in cmd[:-1] and os.path.basename(cmd[0]) != "mongod":
            found.append(Path(cmd[cmd.index("--dbpath") + 1]).resolve())
    return sorted(set(found))


def dataset_name(release: str | None = None) -> str:
    """`spinetrack-working` for the store's working set, `spinetrack-VERSION` for a release."""
    return f"spinetrack-{release}" if release else "spinetrack-working"


def skeleton(fo: ModuleType) -> Any:
    """The SpineTrack skeleton as a fo.KeypointSkeleton (37 named points in schema order)."""
    return fo.KeypointSkeleton(labels=list(NAMES), edges=[[a, b] for a, b in SKELETON])


# -- reading the store ---------------------------------------------------------------------------
def latest_predictions(store: Store, instance_ids: Iterable[int] | None = None) -> list[Label]:
    """The latest model proposal of each instance (accepted or not), as Labels."""
    return store.latest_labels(accepted_only=False, among_sources=PREDICTION_SOURCES,
                               instance_ids=None if instance_ids is None else list(instance_ids))


def _revision_scores(store: Store, revision_ids: Sequence[int]) -> dict[int, tuple[list[float] | None, bool]]:
    ids = sorted(set(revision_ids))
    out: dict[int, tuple[list[float] | None, bool]] = {}
    with store.session() as s:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            q = select(Revision.id, Revision.scores, Revision.accepted).where(Revision.id.in_(chunk))
            out.update({rid: (scores, accepted) for rid, scores, accepted in s.execute(q)})
    return out


def _revision_times(store: Store, revision_ids: Sequence[int]) -> dict[int, datetime]:
    ids = sorted(set(revision_ids))
    out: dict[int, datetime] = {}
    with store.session() as s:
        for start in range(0, len(ids), 500):
            q = select(Revision.id, Revision.created_at).where(Revision.id.in_(ids[start:start + 500]))
            out.update(dict(s.execute(q).tuples().all()))
    return out


def _tag_times(store: Store, tag: str | None = None) -> dict[tuple[int, str], datetime]:
    """(instance id, tag) -> time of the newest such row (of every tag, or of `tag`)."""
    q = select(ReviewTag.instance_id, ReviewTag.tag, func.max(ReviewTag.created_at)) \
        .group_by(ReviewTag.instance_id, ReviewTag.tag)
    if tag is not None:
        q = q.where(ReviewTag.tag == tag)
    with store.session() as s:
        return {(inst, name): at for inst, name, at in s.execute(q)}


# -- building the dataset --------------------------------------------------------------------------
def _quality_number(quality: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = quality.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def _ik_residual(label: Label) -> float | None:
    """RMS bone-marker residual of the OpenSim fit (metres), for synthetic labels."""
    return _quality_number(label.quality, "ik_rms_m", "ik_residual")


def _points(label: Label) -> tuple[list[tuple[float, float]], list[int]]:
    """Normalised (x, y) in schema order; unlabelled points (v=0) as NaN."""
    points, visibility = [], []
    for i in range(NUM_KEYPOINTS):
        x, y, v = label.keypoints[3 * i : 3 * i + 3]
        visibility.append(int(v))
        points.append((x / label.width, y / label.height) if v > 0 else (math.nan, math.nan))
    return points, visibility


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


def _keypoint(fo: ModuleType, label: Label, instance: Any, scores: list[float] | None = None,
              **extra: Any) -> Any:
    points, visibility = _points(label)
    confidence = [float(c) for c in scores] if scores and len(scores) == NUM_KEYPOINTS else None
    return fo.Keypoint(label="person", points=points, confidence=confidence, visibility=visibility,
                       instance=instance, **_common(label), **extra)


def _box(fo: ModuleType, label: Label, instance: Any) -> Any:
    x, y, w, h = label.bbox
    box = [x / label.width, y / label.height, w / label.width, h / label.height]
    return fo.Detection(label="person", bounding_box=box, instance=instance, **_common(label))


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
        gt, boxes, preds = [], [], []
        for lab in entry["labels"]:
            inst = instances.setdefault(lab.instance_id, fo.Instance())
            kp = _keypoint(fo, lab, inst, split=(splits or {}).get(lab.instance_id))
            box = _box(fo, lab, inst)
            kp.tags = list(open_tags.get(lab.instance_id, []))
            box.tags = list(kp.tags)
            gt.append(kp)
            boxes.append(box)
        for lab in entry["predictions"]:
            inst = instances.setdefault(lab.instance_id, fo.Instance())
            pred_scores, accepted = scores.get(lab.revision_id, (None, False))
            pred = _keypoint(fo, lab, inst, pred_scores, accepted=bool(accepted))
            if not any(gt_lab.instance_id == lab.instance_id for gt_lab in entry["labels"]):
                pred.tags = list(open_tags.get(lab.instance_id, []))  # a proposal-only instance
            preds.append(pred)
        everything = entry["labels"] + entry["predictions"]
        sample = fo.Sample(
            filepath=first.image_path,
            image_id=image_id,
            image_source=first.image_source,
            subset=first.subset,
            group_key=first.group_key,
            frame_index=first.frame_index,
            split=_first_split(splits, entry["labels"]),
            ground_truth=fo.Keypoints(keypoints=gt),
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
    labels they were given to, so no review work is lost.
    """
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
    # a tag is open while the label it was given to is still the one shown
    revision_times = _revision_times(store, [lab.revision_id for lab in labels])
    shown = {lab.instance_id: revision_times[lab.revision_id] for lab in labels}
    open_tags: dict[int, list[str]] = {}
    proposed_only = {p.instance_id for p in predictions} - set(shown)
    for (inst, tag), at in sorted(_tag_times(store).items()):
        if (inst in shown and at >= shown[inst]) or inst in proposed_only:
            open_tags.setdefault(inst, []).append(tag)
    dataset = fo.Dataset(name)
    dataset.persistent = True
    dataset.info = {"spinetrack_release": release, "keypoints": list(NAMES),
                    "store": store.engine.url.render_as_string(hide_password=True)}
    dataset.skeletons = {"ground_truth": skeleton(fo), "predictions": skeleton(fo)}
    dataset.default_skeleton = skeleton(fo)
    dataset.save()
    declare_fields(fo, dataset)
    samples = build_samples(
        fo, labels, predictions, splits=splits,
        scores=_revision_scores(store, [p.revision_id for p in predictions]), open_tags=open_tags,
    )
    if samples:
        dataset.add_samples(samples, validate=False, progress=False)
    save_views(dataset)
    return dataset


def declare_fields(fo: ModuleType, dataset: Any) -> None:
    """Give every sample field its type up front: a field whose first values are all None would
    otherwise be missing from the schema (and from the App's sidebar)."""
    string_list = {"ftype": fo.ListField, "subfield": fo.StringField}
    fields: dict[str, dict[str, Any]] = {
        "image_id": {"ftype": fo.IntField},
        "image_source": {"ftype": fo.StringField},
        "subset": {"ftype": fo.StringField},
        "group_key": {"ftype": fo.StringField},
        "frame_index": {"ftype": fo.IntField},
        "split": {"ftype": fo.StringField},
        "num_instances": {"ftype": fo.IntField},
        "revision_sources": string_list,
        "model_versions": string_list,
        "annotators": string_list,
        "round": {"ftype": fo.IntField},
        "uncertainty": {"ftype": fo.FloatField},
        "agreement": {"ftype": fo.FloatField},
        "ik_residual": {"ftype": fo.FloatField},
        "ground_truth": {"ftype": fo.EmbeddedDocumentField, "embedded_doc_type": fo.Keypoints},
        "boxes": {"ftype": fo.EmbeddedDocumentField, "embedded_doc_type": fo.Detections},
        "predictions": {"ftype": fo.EmbeddedDocumentField, "embedded_doc_type": fo.Keypoints},
    }
    for field_name, spec in fields.items():
        dataset.add_sample_field(field_name, **spec)


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


# -- reviewer tags back into the store --------------------------------------------------------------
def tagged_instances(dataset: Any, tag: str = NEEDS_FIX) -> dict[int, int | None]:
    """instance id -> revision id the reviewer saw, for every label or sample tagged `tag`.

    A sample tag stands for every instance on it. The revision is that of the ground-truth label;
    None when only a model proposal was tagged (an instance with no label yet).
    """
    found: dict[int, int | None] = {}

    def note(lab: Any, field: str) -> None:
        inst = int(lab.store_instance_id)
        rev = None if field == "predictions" else int(lab.store_revision_id)
        if found.get(inst) is None:
            found[inst] = rev

    def labels_of(sample: Any, field: str) -> list[Any]:
        container = sample[field]
        if container is None:
            return []
        return list(container.detections if field == "boxes" else container.keypoints)

    for sample in dataset.match_tags(tag).select_fields(list(LABEL_FIELDS)):
        for field in LABEL_FIELDS:
            for lab in labels_of(sample, field):
                note(lab, field)
    for field in LABEL_FIELDS:
        for sample in dataset.select_labels(tags=tag, fields=field).select_fields(field):
            for lab in labels_of(sample, field):
                note(lab, field)
    return found


def sync_review_tags(
    store: Store,
    dataset: Any,
    *,
    tags: Sequence[str] = (NEEDS_FIX,),
    reviewer: str | None = None,
) -> list[ReviewTag]:
    """Write a ReviewTag row for each instance a reviewer tagged; returns the rows it created.

    Idempotent: one row per instance and tag for the revision the reviewer saw. Syncing again adds
    nothing; a new row appears only when the instance was relabelled after its last tag and the
    reviewer tags the new label too (that is a new review, and reopens the task again).
    """
    reviewer = reviewer or os.environ.get("SPINETRACK_REVIEWER") or getpass.getuser()
    created: list[ReviewTag] = []
    for tag in tags:
        seen = tagged_instances(dataset, tag)
        if not seen:
            continue
        revision_times = _revision_times(store, [r for r in seen.values() if r is not None])
        tagged_at = _tag_times(store, tag)
        with store.session() as s:
            known = set(s.scalars(select(Instance.id).where(Instance.id.in_(list(seen)))))
            for inst, rev in sorted(seen.items()):
                if inst not in known:
                    log.warning("tag %r on instance %s, which this store does not have: skipped", tag, inst)
                    continue
                last = tagged_at.get((inst, tag))
                if last is not None and (rev is None or last >= revision_times[rev]):
                    continue
                row = ReviewTag(instance_id=inst, tag=tag, reviewer=reviewer, pushed=False)
                s.add(row)
                created.append(row)
    return created


# -- the App -----------------------------------------------------------------------------------------
def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def launch(dataset: Any, port: int = 5151, address: str = "127.0.0.1", *, wait: bool = False) -> Any:
    """Serve the FiftyOne App for `dataset` on `address:port` (loopback by default); returns the session.

    The App runs as a server process (remote mode: no browser is opened here); open
    http://127.0.0.1:PORT in a browser on this machine, or tunnel the port. `wait` blocks until
    the process is interrupted.
    """
    if not _is_loopback(address):
        log.warning("the FiftyOne App listens on %s, not loopback: anyone on that network can open it",
                    address)
    import fiftyone as fo

    session = fo.launch_app(dataset, port=port, address=address, remote=True)
    if wait:
        session.wait()
    return session


def review_counts(dataset: Any) -> dict[str, int]:
    """Sizes of the dataset and its saved views, for the CLI's summary."""
    counts = {"samples": len(dataset)}
    for view_name in dataset.list_saved_views():
        counts[view_name] = len(dataset.load_saved_view(view_name))
    return counts


__all__ = [
    "DISAGREEMENT_BELOW",
    "NEEDS_FIX",
    "VIEW_NAMES",
    "build_samples",
    "dataset_name",
    "fiftyone_module",
    "latest_predictions",
    "launch",
    "load_into_fiftyone",
    "review_counts",
    "save_views",
    "skeleton",
    "sync_review_tags",
    "tagged_instances",
]
