"""Ingest one rendered sequence into the store: bones -> OpenSim IK -> 37 landmarks -> pixels -> labels.

Idempotent and resumable: a sequence is recorded in `IngestRecord` when it starts and marked done when
it ends; the same content again is a no-op, an interrupted run picks up where it stopped (each
frame/actor revision carries ``external_id = synthetic:<sequence_id>:<frame>:<actor>``), and a
different content under a known sequence_id is refused rather than silently mixed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select

from pipeline.store import Store
from pipeline.store.models import IngestRecord, Revision
from pipeline.store.store import file_sha256
from schemas.errors import InputError
from schemas.keypoints import KEYPOINTS
from schemas.provenance import IKResiduals, SyntheticProvenance, software_versions
from schemas.render import RGB_DIR, frame_name
from synthetic.coords import opensim_to_unreal, unreal_to_opensim
from synthetic.reader import RenderSequence, content_sha256, read_sequence
from synthetic.visibility import (
    V_OCCLUDED,
    V_OUTSIDE,
    V_VISIBLE,
    VisibilityRule,
    bbox_from_keypoints,
    bbox_from_mask,
    coco_keypoints,
    keypoint_visibility,
)

SUBSET = "train-unreal"
#: Frames whose IK marker RMS exceeds this (metres) are stored flagged (accepted=False);
#: the same value as synthetic.alignment.DEFAULT_RMS_THRESHOLD_M (not imported: OpenSim loads slowly).
DEFAULT_RESIDUAL_THRESHOLD_M = 0.02
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(k.group for k in KEYPOINTS))


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
    totals: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, start: float) -> float:
        now = time.perf_counter()
        self.totals[key] = self.totals.get(key, 0.0) + now - start
        return now


def _existing_ids(store: Store, prefix: str) -> set[str]:
    with store.session() as s:
        rows = s.scalars(select(Revision.external_id).where(Revision.external_id.like(prefix + "%")))
        return {r for r in rows if r is not None}


def _claim(store: Store, seq: RenderSequence, digest: str) -> IngestRecord | None:
    """Start (or resume) the sequence's IngestRecord; return the record if it is already done."""
    with store.session() as s:
        rec = s.scalar(select(IngestRecord).where(IngestRecord.sequence_key == seq.sequence_id))
        if rec is None:
            s.add(
                IngestRecord(
                    sequence_key=seq.sequence_id,
                    path=str(seq.folder),
                    content_sha256=digest,
                    summary={"status": "started"},
                )
            )
            return None
        if rec.content_sha256 != digest:
            raise InputError(
                seq.folder / "sequence.json",
                f"sequence_id {seq.sequence_id!r} was already ingested from different content "
                f"({rec.path}, sha256 {rec.content_sha256[:12]}); give a re-render a new sequence_id",
                field="sequence_id",
            )
        return rec if rec.summary.get("status") == "done" else None


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


def ingest_sequence(
    store: Store,
    folder: str | Path,
    *,
    residual_threshold_m: float = DEFAULT_RESIDUAL_THRESHOLD_M,
    model: str | Path | None = None,
    marker_map: str | Path | None = None,
    rule: VisibilityRule | None = None,
) -> IngestSummary:
    """Read, fit, project and store one sequence folder. Raises InputError for a bad folder."""
    # OpenSim imports take seconds: only when ingesting, not when the CLI or the reader loads
    from synthetic.alignment import DEFAULT_ACCURACY, fit_sequence

    rule = rule or VisibilityRule()
    timer = _Timer()
    t = time.perf_counter()
    seq = read_sequence(folder)
    model_id = model_identity(model, marker_map)  # a wrong model path fails before anything is written
    digest, file_hashes = content_sha256(seq)
    t = timer.add("read", t)
    done = _claim(store, seq, digest)
    t = timer.add("store", t)
    if done is not None:
        known = IngestSummary.__dataclass_fields__
        prior = IngestSummary(**{k: v for k, v in done.summary.items() if k in known})
        prior.status = "unchanged"
        prior.annotations_existing += prior.annotations_added
        prior.annotations_added = 0
        prior.timing_s = {**timer.totals, "total": sum(timer.totals.values())}
        return prior

    info = seq.info
    summary = IngestSummary(
        sequence_id=seq.sequence_id, folder=str(seq.folder), content_sha256=digest,
        frames=seq.frame_count, actors=len(seq.actor_ids),
    )
    counts = {g: np.zeros(3, dtype=np.int64) for g in GROUPS}
    group_of = np.array([GROUPS.index(k.group) for k in KEYPOINTS])
    existing = _existing_ids(store, f"synthetic:{seq.sequence_id}:")
    cameras = [seq.camera(f) for f in range(seq.frame_count)]
    software = software_versions("opensim", "numpy")
    rms_all: list[NDArray[np.float64]] = []
    image_ids: dict[int, int] = {}
    t = timer.add("store", t)

    for actor in seq.actor_ids:
        todo = [f for f in range(seq.frame_count) if external_id(seq.sequence_id, f, actor) not in existing]
        summary.annotations_existing += seq.frame_count - len(todo)
        if not todo:
            continue
        subject = info.subject_of(actor)
        bones_os = [
            {name: unreal_to_opensim(xyz) for name, xyz in seq.bones[(f, actor)].bones.items()}
            for f in range(seq.frame_count)
        ]
        fit = fit_sequence(
            bones_os,
            subject.height_cm / 100.0,
            subject.mass_kg,
            model=model,
            marker_map=marker_map,
            rms_threshold_m=residual_threshold_m,
        )
        ik_settings = {
            "accuracy": DEFAULT_ACCURACY,
            "rms_threshold_m": fit.rms_threshold_m,
            "scale_factors": fit.scale_factors,
            "bones_used": fit.bones_used,
            "warnings": fit.warnings,
        }
        t = timer.add("ik", t)
        landmarks_ue = opensim_to_unreal(fit.landmarks)  # (F, 37, 3)
        rms_all.append(np.asarray(fit.rms_m, dtype=np.float64))
        for f in todo:
            cam = cameras[f]
            depth_buf = seq.load_depth(f)
            mask = seq.load_mask(f)
            t = timer.add("read", t)
            uv, depth = cam.project(landmarks_ue[f])
            vis = keypoint_visibility(
                uv, depth, cam.width, cam.height, depth_buffer=depth_buf, mask=mask, actor_id=actor, rule=rule
            )
            box = bbox_from_mask(mask, actor) if mask is not None else None
            if box is None:
                box = bbox_from_keypoints(uv, vis, cam.width, cam.height, rule.bbox_margin)
            for g in range(len(GROUPS)):
                counts[GROUPS[g]] += np.bincount(vis[group_of == g], minlength=3)
            t = timer.add("projection", t)
            if box is None:
                summary.empty += 1
                continue
            rms, worst = float(fit.rms_m[f]), float(fit.max_m[f])
            flagged = bool(fit.flagged[f])
            rgb_rel = f"{RGB_DIR}/{frame_name(f, '.png')}"
            if f not in image_ids:
                image_ids[f] = store.add_image(
                    seq.rgb_path(f),
                    source="synthetic",
                    subset=SUBSET,
                    group_key=seq.sequence_id,
                    width=info.image_width,
                    height=info.image_height,
                    frame_index=f,
                    sha256=file_hashes[rgb_rel],
                    meta={
                        "sequence_id": seq.sequence_id,
                        "frame": f,
                        "fps": info.fps,
                        "camera": seq.camera_frames[f].model_dump(),
                    },
                )
            inst = store.instance_id(
                image_ids[f], f"actor-{actor}", meta={"actor": actor, "subject": subject.id}
            )
            provenance = SyntheticProvenance(
                source_sequence=seq.sequence_id,
                source_path=str(seq.folder),
                sequence_sha256=digest,
                schema_version=info.schema_version,
                frame=f,
                actor=actor,
                subject_id=subject.id,
                rgb_file=rgb_rel,
                renderer=info.renderer,
                model_file=model_id[0],
                model_sha256=model_id[1],
                marker_map=model_id[2],
                ik_settings=ik_settings,
                residuals=IKResiduals(rms_m=rms, max_m=worst, worst_marker=fit.worst_bone[f]),
                visibility_rule=rule.as_dict(),
                software=software,
            )
            added = store.add_revision(
                inst,
                coco_keypoints(uv, vis),
                box[0],
                area=box[1],
                source="synthetic",
                accepted=not flagged,
                status="flagged" if flagged else "ok",
                quality={"ik_rms_m": rms, "ik_max_m": worst, "flagged": flagged},
                provenance=provenance.model_dump(mode="json"),
                external_id=external_id(seq.sequence_id, f, actor),
            )
            if added is None:
                summary.annotations_existing += 1
            else:
                summary.annotations_added += 1
                summary.flagged += int(flagged)
            t = timer.add("store", t)

    summary.visibility = {
        g: {"outside": int(c[V_OUTSIDE]), "occluded": int(c[V_OCCLUDED]), "visible": int(c[V_VISIBLE])}
        for g, c in counts.items()
    }
    summary.ik_rms_m = _rms_stats(np.concatenate(rms_all) if rms_all else np.empty(0))
    summary.timing_s = {**timer.totals, "total": sum(timer.totals.values())}
    _finish(store, seq.sequence_id, summary)
    return summary


def model_identity(model: str | Path | None, marker_map: str | Path | None) -> tuple[str, str, str]:
    """(model file, its sha256, marker map) for provenance.

    The built-in model is generated by code, so its identity is the generating module's hash.
    """
    if model is None:
        source = Path(__file__).resolve().parent / "opensim_model.py"
        return "builtin:spinetrack-default", file_sha256(source), "builtin:spinetrack-default"
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

