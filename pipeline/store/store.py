"""The dataset store: one SQLAlchemy database (SQLite by default, PostgreSQL by URL).

Writes are idempotent where the caller can name what it writes: images by content hash, instances
by (image, key), revisions by `external_id`. That is what makes every flow safe to re-run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.store.models import Image, Instance, Revision
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS

#: Revision sources, in the words the store and the docs use.
SOURCES = ("synthetic", "import", "pseudo", "pseudo-accepted", "human", "review")
HUMAN_SOURCES = ("human", "review")


def spinetrack_home() -> Path:
    """Where the store, images and models live: $SPINETRACK_HOME, default ./spinetrack-data."""
    return Path(os.environ.get("SPINETRACK_HOME", "spinetrack-data")).resolve()


def default_url(home: Path | None = None) -> str:
    env = os.environ.get("SPINETRACK_DB_URL")
    if env:
        return env
    home = home or spinetrack_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'store.sqlite'}"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Label:
    """An instance with its current (latest accepted) revision, flattened for export and training."""

    image_id: int
    image_path: str
    width: int
    height: int
    image_source: str
    subset: str
    group_key: str
    frame_index: int | None
    instance_id: int
    instance_key: str
    revision_id: int
    keypoints: list[float]
    bbox: list[float]
    area: float
    source: str
    model_version: str | None
    annotator: str | None
    round: int | None
    uncertainty: float | None
    quality: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    image_meta: dict[str, Any] = field(default_factory=dict)


def validate_keypoints(keypoints: Sequence[float], where: str = "keypoints") -> list[float]:
    values = [float(v) for v in keypoints]
    if len(values) != NUM_KEYPOINTS * 3:
        raise InputError(where, f"expected {NUM_KEYPOINTS * 3} numbers, got {len(values)}", field="keypoints")
    return values


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:  # pragma: no cover - driver hook
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


class Store:
    """Handle on the store database; cheap to create, migrates the schema to head on open."""

    def __init__(self, url: str | None = None, *, home: Path | None = None, migrate: bool = True) -> None:
        self.home = (home or spinetrack_home()).resolve()
        self.url = url or default_url(self.home)
        self.engine = create_engine(self.url, future=True)
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            from pipeline.store.migrate import upgrade

            upgrade(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    # -- images and instances -------------------------------------------------------------
    def add_image(
        self,
        path: str | Path,
        *,
        source: str,
        subset: str,
        group_key: str,
        width: int,
        height: int,
        frame_index: int | None = None,
        meta: dict[str, Any] | None = None,
        sha256: str | None = None,
    ) -> int:
        """Register an image; the same content registered again returns the existing id."""
        digest = sha256 or file_sha256(path)
        with self.session() as s:
            found = s.scalar(select(Image.id).where(Image.sha256 == digest))
            if found is not None:
                return found
            image = Image(
                sha256=digest,
                path=str(Path(path).resolve()),
                width=int(width),
                height=int(height),
                source=source,
                subset=subset,
                group_key=group_key,
                frame_index=frame_index,
                meta=meta or {},
            )
            s.add(image)
            s.flush()
            return image.id

    def instance_id(self, image_id: int, key: str, meta: dict[str, Any] | None = None) -> int:
        """Get or create the instance `key` of an image."""
        with self.session() as s:
            found = s.scalar(
                select(Instance.id).where(Instance.image_id == image_id, Instance.key == key)
            )
            if found is not None:
                return found
            inst = Instance(image_id=image_id, key=key, meta=meta or {})
            s.add(inst)
            s.flush()
            return inst.id

    # -- revisions --------------------------------------------------------------------------
    def add_revision(
        self,
        instance_id: int,
        keypoints: Sequence[float],
        bbox: Sequence[float],
        *,
        source: str,
        accepted: bool = True,
        status: str = "ok",
        area: float | None = None,
        model_version: str | None = None,
        annotator: str | None = None,
        round: int | None = None,
        scores: Sequence[float] | None = None,
        uncertainty: float | None = None,
        quality: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None,
        external_id: str | None = None,
        session: Session | None = None,
    ) -> int | None:
        """Append a revision. Returns its id, or None when `external_id` was stored before.

        Model output never overrides people: an accepted `pseudo-accepted` revision is refused
        (stored as not accepted) for an instance that already has an accepted human label.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown revision source {source!r}; expected one of {SOURCES}")
        values = validate_keypoints(keypoints)
        box = [float(v) for v in bbox]
        if len(box) != 4:
            raise InputError("bbox", "expected 4 numbers", field="bbox")
        rev = Revision(
            instance_id=instance_id,
            keypoints=values,
            bbox=box,
            area=float(area if area is not None else box[2] * box[3]),
            source=source,
            accepted=accepted,
            status=status,
            model_version=model_version,
            annotator=annotator,
            round=round,
            scores=list(map(float, scores)) if scores is not None else None,
            uncertainty=uncertainty,
            quality=quality or {},
            provenance=provenance or {},
            external_id=external_id,
        )
        if session is not None:
            return self._insert_revision(session, rev)
        try:
            with self.session() as s:
                return self._insert_revision(s, rev)
        except IntegrityError:
            if external_id is None:
                raise
            return None

    def _insert_revision(self, s: Session, rev: Revision) -> int | None:
        if rev.external_id is not None:
            if s.scalar(select(Revision.id).where(Revision.external_id == rev.external_id)) is not None:
                return None
        if rev.source in ("pseudo", "pseudo-accepted") and rev.accepted:
            if self._has_human(s, rev.instance_id):
                rev.accepted = False
                rev.status = "superseded-by-human"
        s.add(rev)
        s.flush()
        return rev.id

    @staticmethod
    def _has_human(s: Session, instance_id: int) -> bool:
        q = select(func.count(Revision.id)).where(
            Revision.instance_id == instance_id,
            Revision.source.in_(HUMAN_SOURCES),
            Revision.accepted.is_(True),
        )
        return bool(s.scalar(q))

    def has_human_label(self, instance_id: int) -> bool:
        with self.session() as s:
            return self._has_human(s, instance_id)

    def revisions(self, instance_id: int) -> list[Revision]:
        with self.session() as s:
            return list(
                s.scalars(select(Revision).where(Revision.instance_id == instance_id).order_by(Revision.id))
            )

    # -- reading labels ---------------------------------------------------------------------
    def current_labels(
        self,
        *,
        image_source: str | None = None,
        subset: str | None = None,
        revision_sources: Sequence[str] | None = None,
        image_ids: Sequence[int] | None = None,
    ) -> list[Label]:
        """Every instance's latest accepted revision, optionally filtered; ordered by image, instance.

        `revision_sources` keeps the instances whose current label came from those sources.
        """
        labels = self.latest_labels(accepted_only=True, image_source=image_source, subset=subset,
                                    image_ids=image_ids)
        if revision_sources:
            labels = [lab for lab in labels if lab.source in revision_sources]
        return labels

    def latest_labels(
        self,
        *,
        accepted_only: bool = True,
        among_sources: Sequence[str] | None = None,
        image_source: str | None = None,
        subset: str | None = None,
        image_ids: Sequence[int] | None = None,
        instance_ids: Sequence[int] | None = None,
    ) -> list[Label]:
        """Each instance's latest revision among `among_sources` (accepted ones only, by default)."""
        latest = select(Revision.instance_id, func.max(Revision.id).label("rid"))
        if accepted_only:
            latest = latest.where(Revision.accepted.is_(True))
        if among_sources:
            latest = latest.where(Revision.source.in_(list(among_sources)))
        sub = latest.group_by(Revision.instance_id).subquery()
        q = (
            select(Image, Instance, Revision)
            .join(Instance, Instance.image_id == Image.id)
            .join(sub, sub.c.instance_id == Instance.id)
            .join(Revision, Revision.id == sub.c.rid)
            .order_by(Image.id, Instance.id)
        )
        if image_source:
            q = q.where(Image.source == image_source)
        if subset:
            q = q.where(Image.subset == subset)
        if image_ids is not None:
            q = q.where(Image.id.in_(list(image_ids)))
        if instance_ids is not None:
            q = q.where(Instance.id.in_(list(instance_ids)))
        with self.session() as s:
            return [_label(img, inst, rev) for img, inst, rev in s.execute(q)]

    def labels_for_revisions(self, revision_ids: Sequence[int]) -> list[Label]:
        """The labels of exact revisions, old ones included (the store is append-only)."""
        wanted = sorted(set(revision_ids))
        labels: list[Label] = []
        with self.session() as s:
            for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
                q = (
                    select(Image, Instance, Revision)
                    .join(Instance, Instance.image_id == Image.id)
                    .join(Revision, Revision.instance_id == Instance.id)
                    .where(Revision.id.in_(wanted[start : start + 500]))
                )
                labels.extend(_label(img, inst, rev) for img, inst, rev in s.execute(q))
        return sorted(labels, key=lambda lab: (lab.image_id, lab.instance_id))

    def unlabelled_instances(self, *, image_source: str | None = None) -> list[tuple[Image, Instance]]:
        """Instances with no accepted revision yet (the active-learning pool)."""
        accepted = select(Revision.instance_id).where(Revision.accepted.is_(True))
        q = (
            select(Image, Instance)
            .join(Instance, Instance.image_id == Image.id)
            .where(Instance.id.not_in(accepted))
            .order_by(Image.id, Instance.id)
        )
        if image_source:
            q = q.where(Image.source == image_source)
        with self.session() as s:
            return [(img, inst) for img, inst in s.execute(q)]

    def snapshot_id(self, labels: Sequence[Label] | None = None) -> str:
        """A content id for a set of labels: the same revisions give the same id."""
        labels = self.current_labels() if labels is None else labels
        digest = hashlib.sha256()
        for lab in labels:
            digest.update(f"{lab.instance_id}:{lab.revision_id};".encode())
        return digest.hexdigest()[:16]


def _label(img: Image, inst: Instance, rev: Revision) -> Label:
    return Label(
        image_id=img.id,
        image_path=img.path,
        width=img.width,
        height=img.height,
        image_source=img.source,
        subset=img.subset,
        group_key=img.group_key,
        frame_index=img.frame_index,
        instance_id=inst.id,
        instance_key=inst.key,
        revision_id=rev.id,
        keypoints=list(rev.keypoints),
        bbox=list(rev.bbox),
        area=rev.area,
        source=rev.source,
        model_version=rev.model_version,
        annotator=rev.annotator,
        round=rev.round,
        uncertainty=rev.uncertainty,
        quality=dict(rev.quality or {}),
        provenance=dict(rev.provenance or {}),
        image_meta=dict(img.meta or {}),
    )
