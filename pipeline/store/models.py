"""The store's tables.

Annotation revisions are append-only: a correction is a new row, never an update, so every human
correction is kept once and the history of an instance can always be replayed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Image(Base):
    """An image file, identified by its content hash (re-ingesting the same bytes adds nothing)."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    path: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(32), index=True)  # synthetic | real
    subset: Mapped[str] = mapped_column(String(128), index=True)  # e.g. train-unreal, coco, yoga
    group_key: Mapped[str] = mapped_column(String(256), index=True)  # sequence / video: split unit
    frame_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    instances: Mapped[list[Instance]] = relationship(back_populates="image", cascade="all")


class Instance(Base):
    """One person in one image. `key` is stable across re-ingest (actor id, source annotation id)."""

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("image_id", "key", name="uq_instance_image_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    key: Mapped[str] = mapped_column(String(256))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    image: Mapped[Image] = relationship(back_populates="instances")
    revisions: Mapped[list[Revision]] = relationship(
        back_populates="instance", order_by="Revision.id", cascade="all"
    )


class Revision(Base):
    """One version of an instance's label. Append-only.

    `source` says where it came from: synthetic (render + OpenSim), import (a COCO file with ground
    truth), pseudo (model prediction, proposed), pseudo-accepted (model prediction auto-accepted as
    confident), human (a person's label: Label Studio, or the points of an imported file), review
    (reviewer verdict). `external_id` makes writes idempotent: the same Label Studio annotation
    version or the same ingest frame is stored once.
    """

    __tablename__ = "revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"), index=True)
    keypoints: Mapped[list[Any]] = mapped_column(JSON)  # 37 * (x, y, v), pixels
    bbox: Mapped[list[Any]] = mapped_column(JSON)  # x, y, w, h, pixels
    area: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32), index=True)
    accepted: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    status: Mapped[str] = mapped_column(String(32), default="ok")  # ok | skipped | cancelled | flagged
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    annotator: Mapped[str | None] = mapped_column(String(256), nullable=True)
    round: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    scores: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)  # per-keypoint confidence
    uncertainty: Mapped[float | None] = mapped_column(Float, nullable=True)
    quality: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # IK residuals, agreement ...
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    external_id: Mapped[str | None] = mapped_column(String(256), unique=True, nullable=True)
    #: a `revoked` revision names the revision it takes back (deleted/rejected in Label Studio)
    supersedes: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    #: who placed each point (schemas/point_sources.py): a person's imported points completed by a
    #: model say so point by point; None: every point is `source`'s
    point_sources: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    instance: Mapped[Instance] = relationship(back_populates="revisions")


class ModelVersion(Base):
    """A trained model: config, the data snapshot it saw, metrics and a checksummed checkpoint."""

    __tablename__ = "model_versions"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    config_name: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    data_snapshot: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checkpoint_path: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IngestRecord(Base):
    """A rendered sequence that was ingested; re-ingesting the same content is a no-op."""

    __tablename__ = "ingests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence_key: Mapped[str] = mapped_column(String(256), unique=True)
    path: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AnnotationTask(Base):
    """A Label Studio task made for one instance in one round (never created twice)."""

    __tablename__ = "annotation_tasks"
    __table_args__ = (UniqueConstraint("instance_id", "round", name="uq_task_instance_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    project_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    prediction_revision_id: Mapped[int | None] = mapped_column(ForeignKey("revisions.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="open")  # open | done | skipped | reopened
    reason: Mapped[str] = mapped_column(String(64), default="uncertain")  # uncertain | review | ...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewTag(Base):
    """A reviewer's tag on an instance (e.g. needs-fix from FiftyOne)."""

    __tablename__ = "review_tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"), index=True)
    tag: Mapped[str] = mapped_column(String(64))
    reviewer: Mapped[str | None] = mapped_column(String(256), nullable=True)
    pushed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Round(Base):
    """One active-learning round; `step` is the last completed step, for resuming after a crash."""

    __tablename__ = "rounds"

    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(64))
    budget: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(64), default="started")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # selected ids, threshold ...
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SplitAssignment(Base):
    """The split of a group (sequence or video); once assigned it never changes across releases."""

    __tablename__ = "split_assignments"

    group_key: Mapped[str] = mapped_column(String(256), primary_key=True)
    split: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Release(Base):
    """A published, immutable dataset version."""

    __tablename__ = "releases"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    path: Mapped[str] = mapped_column(Text)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SyncState(Base):
    """Small key/value cursors (e.g. the last Label Studio pull time)."""

    __tablename__ = "sync_state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Lease(Base):
    """Who drives something now (an active-learning round: `round:<n>`): one holder at a time, until
    it lets go or stops renewing `expires_at` (pipeline/store/lease.py)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))  # the holder's own random id: it alone renews
    host: Mapped[str] = mapped_column(String(255))  # for people: "PID 123 on host"
    node: Mapped[str] = mapped_column(String(255))  # host + boot + PID namespace: where `pid` means something
    pid: Mapped[int] = mapped_column(Integer)
    pid_started: Mapped[str | None] = mapped_column(String(32), nullable=True)  # tells a reused PID apart
    acquired_at: Mapped[float] = mapped_column(Float)  # unix seconds
    expires_at: Mapped[float] = mapped_column(Float)
