"""Ingest one rendered sequence into the store: bones -> OpenSim IK -> 37 landmarks -> pixels -> labels.

Idempotent and resumable: a sequence is recorded in `IngestRecord` when it starts and marked done when
it ends; the same content again is a no-op, an interrupted run picks up where it stopped (each
frame/actor revision carries ``external_id = synthetic:<sequence_id>:<frame>:<actor>``), and a
different content under a known sequence_id is refused rather than silently mixed.

The work is in four readable steps: `_open` (read and hash the folder), `_fit_actor` (OpenSim IK for
one actor), `_label_frame` (project, visibility, box: one frame's label, nothing written) and
`_write_labels` (images, instances and revisions of a chunk of frames in ONE transaction: a crash
loses at most one chunk, and the store is not paying three commits per frame).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select

from pipeline.store import Store
from pipeline.store.models import IngestRecord
from pipeline.store.store import NewImage, NewLabel, NewRevision, file_sha256
from schemas.errors import InputError
from schemas.keypoints import KEYPOINTS
from schemas.provenance import IKResiduals, SyntheticProvenance, software_versions
from schemas.render import RGB_DIR, frame_name
from synthetic.camera import Camera
from synthetic.coords import opensim_to_unreal, unreal_to_opensim
from synthetic.reader import RenderSequence, content_sha256, read_sequence
from synthetic.visibility import (
    V_OCCLUDED,
    V_OUTSIDE,
    V_VISIBLE,
    PixelSamples,
    VisibilityRule,
    bbox_from_keypoints,
    bbox_from_mask,
    coco_keypoints_frames,
    decide_visibility,
    point_pixels,
    sample_pixels,
    self_occlusion,
)

SUBSET = "train-unreal"
#: Frames whose IK marker RMS exceeds this (metres) are stored flagged (accepted=False);
#: the same value as synthetic.alignment.DEFAULT_RMS_THRESHOLD_M (not imported: OpenSim loads slowly).
DEFAULT_RESIDUAL_THRESHOLD_M = 0.02
#: Frames written per store transaction (a crash loses at most this many frames of one actor).
DEFAULT_BATCH_FRAMES = 256
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(k.group for k in KEYPOINTS))
_GROUP_OF = np.array([GROUPS.index(k.group) for k in KEYPOINTS])


def external_id(sequence_id: str, frame: int, actor: int) -> str:
    return f"synthetic:{sequence_id}:{frame}:{actor}"


@dataclass
class IngestSummary:
    """What one ingest did; also the JSON kept in IngestRecord.summary and the bench's raw numbers.

    After a resumed run, `visibility` counts only the frames this run stored; `ik_rms_m` covers
    every fitted frame.
    """

    sequence_id: str
    folder: str
    content_sha256: str
    status: str = "done"  # done | unchanged (same content ingested before)
    frames: int = 0
    actors: int = 0
    annotations_added: int = 0
    annotations_existing: int = 0
    flagged: int = 0
    empty: int = 0  # frame/actor pairs with nothing in the image (not stored)
    visibility: dict[str, dict[str, int]] = field(default_factory=dict)
    ik_rms_m: dict[str, float] = field(default_factory=dict)
    timing_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Timer:
    """Seconds spent per step (read, ik, projection, store), summed over the run."""

    totals: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[key] = self.totals.get(key, 0.0) + time.perf_counter() - start

    def report(self) -> dict[str, float]:
        return {**self.totals, "total": sum(self.totals.values())}


@dataclass(frozen=True)
class _Source:
    """A read, hashed sequence folder and what its provenance needs."""

    seq: RenderSequence
    digest: str
    file_hashes: dict[str, str]
    model_id: tuple[str, str, str]


@dataclass
class _ActorFit:
    """One actor's IK result, ready for projection."""

    actor: int
    subject_id: str
    landmarks_ue: NDArray[np.float64]  # (frames, 37, 3) Unreal cm
    rms_m: NDArray[np.float64]
    max_m: NDArray[np.float64]
    worst_bone: list[str]
    flagged: NDArray[np.bool_]
    ik_settings: dict[str, Any]
    #: the fitted body's capsules for self-occlusion (default model): ends (F, C, 2, 3) Unreal cm,
    #: radii (C,) cm, capsule bodies, per-landmark home bodies; None for user models
    surface: tuple[NDArray[np.float64], NDArray[np.float64], list[str], list[frozenset[str]]] | None = None


@dataclass
class _FrameLabel:
    """One frame/actor label, computed but not yet written."""

    frame: int
    actor: int
    keypoints: list[float]
    bbox: list[float]
    area: float
    flagged: bool
    rms_m: float
    max_m: float
    worst_bone: str


def _existing_ids(store: Store, prefix: str) -> set[str]:
    return store.stored_external_ids(prefix=prefix)


def _open(folder: str | Path, model: str | Path | None, marker_map: str | Path | None) -> _Source:
    seq = read_sequence(folder)
    model_id = model_identity(model, marker_map)  # a wrong model path fails before anything is written
    digest, file_hashes = content_sha256(seq)
    return _Source(seq, digest, file_hashes, model_id)


def _claim(store: Store, seq: RenderSequence, digest: str) -> IngestRecord | None:
    """Start (or resume) the sequence's IngestRecord; return the record if it is already done."""
    with store.session() as s:
        # race-safe: a worker claiming the same sequence at the same moment finds this one's record
        row = {"sequence_key": seq.sequence_id, "path": str(seq.folder), "content_sha256": digest,
               "summary": {"status": "started"}}
        store.insert_ignore(s, IngestRecord, [row], ["sequence_key"])
        rec = s.scalar(select(IngestRecord).where(IngestRecord.sequence_key == seq.sequence_id))
        assert rec is not None
        if rec.content_sha256 != digest:
            raise InputError(
                seq.folder / "sequence.json",
                f"sequence_id {seq.sequence_id!r} was already ingested from different content "
                f"({rec.path}, sha256 {rec.content_sha256[:12]}); give a re-render a new sequence_id",
                field="sequence_id",
            )
        return rec if rec.summary.get("status") == "done" else None


def _unchanged(done: IngestRecord, timer: _Timer) -> IngestSummary:
    """The summary of a sequence ingested before with the same content."""
    known = IngestSummary.__dataclass_fields__
    prior = IngestSummary(**{k: v for k, v in done.summary.items() if k in known})
    prior.status = "unchanged"
    prior.annotations_existing += prior.annotations_added
    prior.annotations_added = 0
    prior.timing_s = timer.report()
    return prior


def _unclaim(store: Store, sequence_id: str) -> None:
    """Drop a claim that stored nothing (its ingest met a broken frame before any label)."""
    with store.session() as s:
        rec = s.scalar(select(IngestRecord).where(IngestRecord.sequence_key == sequence_id))
        if rec is not None and rec.summary.get("status") == "started":
            s.delete(rec)


def _finish(store: Store, sequence_id: str, summary: IngestSummary) -> None:
    with store.session() as s:
        rec = s.scalar(select(IngestRecord).where(IngestRecord.sequence_key == sequence_id))
        assert rec is not None
        rec.summary = summary.to_dict()


def _rms_stats(values: NDArray[np.float64]) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def _fit_actor(
    seq: RenderSequence,
    actor: int,
    *,
    residual_threshold_m: float,
    model: str | Path | None,
    marker_map: str | Path | None,
) -> _ActorFit:
    """Scale the OpenSim model to the actor's subject and solve IK for every frame."""
    # OpenSim imports take seconds: only when ingesting, not when the CLI or the reader loads
    from synthetic.alignment import DEFAULT_ACCURACY, fit_sequence

    subject = seq.info.subject_of(actor)
    bones_os = []
    for f in range(seq.frame_count):  # one conversion per frame, not per bone
        bones = seq.bones[(f, actor)].bones
        bones_os.append(dict(zip(bones, unreal_to_opensim(list(bones.values())), strict=True)))
    fit = fit_sequence(
        bones_os,
        subject.height_cm / 100.0,
        subject.mass_kg,
        model=model,
        marker_map=marker_map,
        rms_threshold_m=residual_threshold_m,
    )
    return _ActorFit(
        actor=actor,
        subject_id=subject.id,
        landmarks_ue=opensim_to_unreal(fit.landmarks),
        rms_m=np.asarray(fit.rms_m, dtype=np.float64),
        max_m=np.asarray(fit.max_m, dtype=np.float64),
        worst_bone=list(fit.worst_bone),
        flagged=np.asarray(fit.flagged, dtype=bool),
        ik_settings={
            "accuracy": DEFAULT_ACCURACY,
            "rms_threshold_m": fit.rms_threshold_m,
            "scale_factors": fit.scale_factors,
            "bones_used": fit.bones_used,
            "warnings": fit.warnings,
        },
        surface=None
        if fit.capsule_ends_m is None or fit.capsule_radii_m is None
        or fit.capsule_bodies is None or fit.landmark_home is None
        else (opensim_to_unreal(fit.capsule_ends_m), fit.capsule_radii_m * 100.0, fit.capsule_bodies,
              fit.landmark_home),
    )


def _label_frames(
    seq: RenderSequence,
    fit: _ActorFit,
    frames: Sequence[int],
    rule: VisibilityRule,
    counts: dict[str, NDArray[np.int64]],
    timer: _Timer,
) -> list[_FrameLabel | None]:
    """Project the fitted landmarks of `frames`, decide visibility and the boxes; None if off-screen.

    The geometry runs on all frames at once (numpy's per-call cost, paid per frame, was most of this
    step); only reading a frame's depth and mask and sampling them at its points' pixels is per frame.
    Adds the frames' visibility to `counts` (per keypoint group) whether or not they are stored.
    """
    if not frames:
        return []
    index = np.asarray(frames, dtype=np.intp)
    cams = [seq.camera(f) for f in frames]
    width, height = cams[0].width, cams[0].height
    points = fit.landmarks_ue[index]  # (F, P, 3)
    with timer.step("projection"):
        uv, depth = Camera.project_frames(cams, points)
        inside, rows, cols = point_pixels(uv, depth, width, height)
        hidden = None
        if fit.surface is not None:  # which of the actor's own parts is in front: the fitted body knows
            ends, radii, bodies, home = fit.surface
            locations = np.array([c.location for c in cams], dtype=np.float64)
            a, b = ends[index, :, 0], ends[index, :, 1]
            hidden = self_occlusion(locations, points, a, b, radii, bodies, home)
    samples: list[PixelSamples] = []
    mask_boxes: list[tuple[list[float], float] | None] = []
    for i, f in enumerate(frames):
        with timer.step("read"):
            depth_buf = seq.load_depth(f)
            mask = seq.load_mask(f)
        with timer.step("projection"):
            samples.append(sample_pixels(rows[i], cols[i], depth_buffer=depth_buf, mask=mask,
                                         actor_id=fit.actor, mask_radius_px=rule.mask_radius_px))
            mask_boxes.append(bbox_from_mask(mask, fit.actor) if mask is not None else None)
    with timer.step("projection"):
        vis = decide_visibility(inside, depth, PixelSamples.stack(samples), actor_id=fit.actor, rule=rule,
                                self_occluded=hidden)
        for g, group in enumerate(GROUPS):
            counts[group] += np.bincount(vis[:, np.equal(_GROUP_OF, g)].ravel(), minlength=3)
        keypoints = coco_keypoints_frames(uv, vis)
    labels: list[_FrameLabel | None] = []
    for i, f in enumerate(frames):
        box = mask_boxes[i] or bbox_from_keypoints(uv[i], vis[i], width, height, rule.bbox_margin)
        if box is None:
            labels.append(None)
            continue
        labels.append(_FrameLabel(
            frame=f,
            actor=fit.actor,
            keypoints=keypoints[i],
            bbox=list(box[0]),
            area=float(box[1]),
            flagged=bool(fit.flagged[f]),
            rms_m=float(fit.rms_m[f]),
            max_m=float(fit.max_m[f]),
            worst_bone=fit.worst_bone[f],
        ))
    return labels


@dataclass(frozen=True)
class _WriteContext:
    """What every label of one actor shares when it is written."""

    source: _Source
    fit: _ActorFit
    rule: dict[str, Any]
    software: dict[str, str]
    #: the actor's provenance as JSON, made once by the model (`_provenance`); frames change 3 keys
    provenance_template: dict[str, Any] = field(default_factory=dict)


#: The provenance keys that differ between the frames of one actor.
_PER_FRAME_PROVENANCE = ("frame", "rgb_file", "residuals")


def _provenance_model(ctx: _WriteContext, label: _FrameLabel) -> SyntheticProvenance:
    src, fit = ctx.source, ctx.fit
    seq = src.seq
    return SyntheticProvenance(
        source_sequence=seq.sequence_id,
        source_path=str(seq.folder),
        sequence_sha256=src.digest,
        schema_version=seq.info.schema_version,
        frame=label.frame,
        actor=label.actor,
        subject_id=fit.subject_id,
        rgb_file=f"{RGB_DIR}/{frame_name(label.frame, '.png')}",
        renderer=seq.info.renderer,
        model_file=src.model_id[0],
        model_sha256=src.model_id[1],
        marker_map=src.model_id[2],
        ik_settings=fit.ik_settings,
        residuals=IKResiduals(rms_m=label.rms_m, max_m=label.max_m, worst_marker=label.worst_bone),
        visibility_rule=ctx.rule,
        software=ctx.software,
    )


def _provenance(ctx: _WriteContext, label: _FrameLabel) -> dict[str, Any]:
    """`SyntheticProvenance` of one label as JSON; the model validates and dumps the actor's first
    label, later ones copy it and set the per-frame keys (the same dict, a tenth of the time:
    tests/test_ingest_speed_paths.py)."""
    if not ctx.provenance_template:
        ctx.provenance_template.update(_provenance_model(ctx, label).model_dump(mode="json"))
    out = dict(ctx.provenance_template)
    out["frame"] = label.frame
    out["rgb_file"] = f"{RGB_DIR}/{frame_name(label.frame, '.png')}"
    out["residuals"] = IKResiduals(rms_m=label.rms_m, max_m=label.max_m,
                                   worst_marker=label.worst_bone).model_dump(mode="json")
    return out


def _image_record(src: _Source, frame: int) -> dict[str, Any]:
    seq, info = src.seq, src.seq.info
    return {
        "path": seq.rgb_path(frame),
        "source": "synthetic",
        "subset": SUBSET,
        "group_key": seq.sequence_id,
        "width": info.image_width,
        "height": info.image_height,
        "frame_index": frame,
        "sha256": src.file_hashes[f"{RGB_DIR}/{frame_name(frame, '.png')}"],
        "meta": {
            "sequence_id": seq.sequence_id,
            "frame": frame,
            "fps": info.fps,
            "camera": seq.camera_frames[frame].model_dump(),
        },
    }


def _revision_record(ctx: _WriteContext, label: _FrameLabel) -> dict[str, Any]:
    seq = ctx.source.seq
    return {
        "keypoints": label.keypoints,
        "bbox": label.bbox,
        "area": label.area,
        "source": "synthetic",
        "accepted": not label.flagged,
        "status": "flagged" if label.flagged else "ok",
        "quality": {"ik_rms_m": label.rms_m, "ik_max_m": label.max_m, "flagged": label.flagged},
        "provenance": _provenance(ctx, label),
        "external_id": external_id(seq.sequence_id, label.frame, label.actor),
    }


def _write_labels(store: Store, ctx: _WriteContext, labels: Sequence[_FrameLabel]) -> list[bool]:
    """Write the images, instances and revisions of `labels` in one transaction; True per label added.

    An image already in the store (by content hash), an existing instance or a revision whose
    external id is known are reused (`Store.add_labels`), so a resumed run writes nothing twice.
    """
    if not labels:
        return []
    rows = [
        NewLabel(
            image=NewImage(**_image_record(ctx.source, lab.frame)),
            instance_key=f"actor-{lab.actor}",
            instance_meta={"actor": lab.actor, "subject": ctx.fit.subject_id},
            revision=NewRevision(**_revision_record(ctx, lab)),
        )
        for lab in labels
    ]
    return [written.revision_id is not None for written in store.add_labels(rows)]


def ingest_sequence(
    store: Store,
    folder: str | Path,
    *,
    residual_threshold_m: float = DEFAULT_RESIDUAL_THRESHOLD_M,
    model: str | Path | None = None,
    marker_map: str | Path | None = None,
    rule: VisibilityRule | None = None,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
) -> IngestSummary:
    """Read, fit, project and store one sequence folder. Raises InputError for a bad folder."""
    rule = rule or VisibilityRule()
    timer = _Timer()
    with timer.step("read"):
        src = _open(folder, model, marker_map)
    seq = src.seq
    with timer.step("store"):
        done = _claim(store, seq, src.digest)
        if done is not None:
            return _unchanged(done, timer)
        existing = _existing_ids(store, f"synthetic:{seq.sequence_id}:")

    summary = IngestSummary(
        sequence_id=seq.sequence_id, folder=str(seq.folder), content_sha256=src.digest,
        frames=seq.frame_count, actors=len(seq.actor_ids),
    )
    counts: dict[str, NDArray[np.int64]] = {g: np.zeros(3, dtype=np.int64) for g in GROUPS}
    software = software_versions("opensim", "numpy")
    rms_all: list[NDArray[np.float64]] = []
    try:
        for actor in seq.actor_ids:
            todo = [f for f in range(seq.frame_count)
                    if external_id(seq.sequence_id, f, actor) not in existing]
            summary.annotations_existing += seq.frame_count - len(todo)
            if not todo:
                continue
            with timer.step("ik"):
                fit = _fit_actor(seq, actor, residual_threshold_m=residual_threshold_m, model=model,
                                 marker_map=marker_map)
            rms_all.append(fit.rms_m)
            ctx = _WriteContext(src, fit, rule.as_dict(), software)
            for start in range(0, len(todo), max(1, batch_frames)):
                labels = []
                for label in _label_frames(seq, fit, todo[start : start + batch_frames], rule, counts, timer):
                    if label is None:
                        summary.empty += 1
                    else:
                        labels.append(label)
                with timer.step("store"):
                    added = _write_labels(store, ctx, labels)
                for label, was_added in zip(labels, added, strict=True):
                    if was_added:
                        summary.annotations_added += 1
                        summary.flagged += int(label.flagged)
                    else:
                        summary.annotations_existing += 1

    except InputError:
        if not existing and summary.annotations_added == 0:
            _unclaim(store, seq.sequence_id)  # an unreadable first frame leaves no trace in the store
        raise

    summary.visibility = {
        g: {"outside": int(c[V_OUTSIDE]), "occluded": int(c[V_OCCLUDED]), "visible": int(c[V_VISIBLE])}
        for g, c in counts.items()
    }
    summary.ik_rms_m = _rms_stats(np.concatenate(rms_all) if rms_all else np.empty(0))
    summary.timing_s = timer.report()
    with timer.step("store"):
        _finish(store, seq.sequence_id, summary)
    return summary


def model_identity(model: str | Path | None, marker_map: str | Path | None) -> tuple[str, str, str]:
    """(model file, its sha256, marker map) for provenance.

    The built-in model is generated by code, so its identity is the generating module's hash.
    """
    if model is None:
        from synthetic.anatomy import builtin_model_files  # no OpenSim import

        digest = hashlib.sha256("".join(file_sha256(p) for p in builtin_model_files()).encode()).hexdigest()
        return "builtin:spinetrack-default", digest, "builtin:spinetrack-default"
    path = Path(model)
    if not path.is_file():
        raise InputError(path, "OpenSim model file not found")
    mm = "model markers"
    if marker_map is not None:
        mm_path = Path(marker_map).resolve()
        mm = f"{mm_path} (sha256 {file_sha256(mm_path)})" if mm_path.is_file() else str(marker_map)
    return str(path.resolve()), file_sha256(path), mm


def summary_markdown(summaries: Sequence[dict[str, Any]], failures: Sequence[tuple[str, str]]) -> str:
    """A Markdown report of an ingest run (the Prefect artifact and the CLI's log)."""
    lines = ["# Synthetic ingest", ""]
    lines += [
        "| sequence | status | frames | added | existing | flagged | IK RMS mean (mm) | IK RMS max (mm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        rms = s.get("ik_rms_m") or {}
        mean = f"{rms['mean'] * 1000:.1f}" if "mean" in rms else "-"
        worst = f"{rms['max'] * 1000:.1f}" if "max" in rms else "-"
        lines.append(
            f"| {s['sequence_id']} | {s['status']} | {s['frames']} | {s['annotations_added']} | "
            f"{s['annotations_existing']} | {s['flagged']} | {mean} | {worst} |"
        )
    totals: dict[str, dict[str, int]] = {}
    for s in summaries:
        for group, c in (s.get("visibility") or {}).items():
            acc = totals.setdefault(group, {"outside": 0, "occluded": 0, "visible": 0})
            for k, v in c.items():
                acc[k] += v
    if totals:
        lines += ["", "## Keypoint visibility (all sequences)", ""]
        lines += ["| group | visible (2) | occluded (1) | outside (0) |", "|---|---|---|---|"]
        for group, c in totals.items():
            lines.append(f"| {group} | {c['visible']} | {c['occluded']} | {c['outside']} |")
    if failures:
        lines += ["", "## Failed sequences", ""]
        lines += [f"- `{folder}`: {message}" for folder, message in failures]
    return "\n".join(lines) + "\n"

