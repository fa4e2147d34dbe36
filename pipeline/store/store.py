"""The dataset store: one SQLAlchemy database (SQLite by default, PostgreSQL by URL).

Writes are idempotent where the caller can name what it writes: images by content hash, instances
by (image, key), revisions by `external_id`. That is what makes every flow safe to re-run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    Text,
    case,
    cast,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker

from pipeline.store.models import (
    AnnotationTask,
    Base,
    Image,
    Instance,
    ModelVersion,
    Revision,
    Round,
    SyncState,
    utcnow,
)
from pipeline.store.objects import capture, is_object
from schemas.enums import (
    HUMAN_SOURCES,
    PREDICTION_SOURCES,
    RevisionSource,
    RevisionStatus,
    RoundStep,
    step_reached,
)
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS
from schemas.point_sources import NONE, checked, human_mask, resolved

#: Revision sources, in the words the store and the docs use (schemas.enums.RevisionSource).
SOURCES: tuple[RevisionSource, ...] = tuple(RevisionSource)

#: Values per SQL `IN (...)`: stays under SQLite's bound-parameter limit, whatever it was built with.
IN_CHUNK = 500

T = TypeVar("T")
#: A column to filter on: `Image.id` or a Core column expression.
Column = QueryableAttribute[Any] | ColumnElement[Any]


def not_taken_back() -> ColumnElement[bool]:
    """The one revoked-label rule: a revision no later `revoked` revision took back (`supersedes`)."""
    return Revision.id.not_in(select(Revision.supersedes).where(Revision.supersedes.is_not(None)))


def chunked(values: Iterable[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    """`values` in lists of at most `size` (for `IN (...)` queries)."""
    batch: list[T] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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
    #: who placed each point, when the points have several sources (schemas/point_sources.py)
    point_sources: list[str] | None = None

    def sources_of_points(self) -> list[str]:
        """The source of each of the 37 points (the label's own source where it names none)."""
        return resolved(self.point_sources, self.source)


@dataclass(frozen=True)
class HumanPoints:
    """The points people placed on one instance: those of its latest live accepted person-made
    revision (`Store.human_points`). Model output may complete them, never change them."""

    revision_id: int
    keypoints: list[float]  # that revision's 37 (x, y, v), as stored
    placed: list[bool]  # (37,) which points a person placed
    origins: list[dict[str, Any]] = field(default_factory=list)  # which file placed which points

    @property
    def ids(self) -> list[int]:
        return [i for i, on in enumerate(self.placed) if on]

    def kept_by(self, keypoints: Sequence[float], point_sources: Sequence[str] | None) -> bool:
        """Whether a revision with these points carries every placed point unchanged, to the bit,
        and says it is the person's."""
        if point_sources is None:
            return False
        return all(point_sources[i] == RevisionSource.HUMAN
                   and list(keypoints[3 * i:3 * i + 3]) == self.keypoints[3 * i:3 * i + 3]
                   for i in self.ids)


@dataclass(frozen=True)
class NewImage:
    """An image to register (see `Store.add_image`); `sha256` defaults to the file's hash."""

    path: str | Path
    source: str
    subset: str
    group_key: str
    width: int
    height: int
    frame_index: int | None = None
    meta: dict[str, Any] | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class NewRevision:
    """A revision to append (see `Store.add_revision` for the meaning of each field)."""

    keypoints: Sequence[float]
    bbox: Sequence[float]
    source: str
    accepted: bool = True
    status: str = RevisionStatus.OK
    area: float | None = None
    model_version: str | None = None
    annotator: str | None = None
    round: int | None = None
    scores: Sequence[float] | None = None
    uncertainty: float | None = None
    quality: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    external_id: str | None = None
    supersedes: int | None = None  # a `revoked` revision names the revision it takes back
    point_sources: Sequence[str] | None = None  # who placed each point (None: all `source`)


@dataclass(frozen=True)
class NewLabel:
    """One person in one image, with an optional revision: the unit of `Store.add_labels`."""

    image: NewImage
    instance_key: str
    instance_meta: dict[str, Any] | None = None
    revision: NewRevision | None = None


@dataclass(frozen=True)
class WrittenLabel:
    """Ids `Store.add_labels` wrote or found; `revision_id` is None when the revision's
    `external_id` was stored before (or no revision was given)."""

    image_id: int
    instance_id: int
    revision_id: int | None


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
    """Handle on the store database; cheap to create, migrates the schema to head on open.

    Use it as a context manager (`with Store.open(url) as store:`) or call `close()`, so its
    connection pool is released (a PostgreSQL server counts connections; SQLite keeps files open).
    """

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

    @classmethod
    def open(cls, url: str | None = None, *, home: Path | None = None, migrate: bool = True) -> Store:
        """The store at `url` (default: $SPINETRACK_DB_URL, else SQLite under `home`)."""
        return cls(url, home=home, migrate=migrate)

    def close(self) -> None:
        """Release every pooled connection; the handle can still be used (it reconnects)."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    # -- query helpers ----------------------------------------------------------------------
    def rows_in(
        self,
        query: Select[Any],
        column: Column,
        values: Iterable[Any],
        *,
        session: Session | None = None,
    ) -> list[Any]:
        """Rows of `query` where `column IN values`, asked in chunks of IN_CHUNK values."""
        return self._in_chunks(query, column, values, session, scalars=False)

    def scalars_in(
        self,
        query: Select[Any],
        column: Column,
        values: Iterable[Any],
        *,
        session: Session | None = None,
    ) -> list[Any]:
        """Like `rows_in` for a one-column (or one-entity) query: the values themselves."""
        return self._in_chunks(query, column, values, session, scalars=True)

    def _in_chunks(self, query: Select[Any], column: Column, values: Iterable[Any],
                   session: Session | None, *, scalars: bool) -> list[Any]:
        wanted = list(dict.fromkeys(values))
        with self._use(session) as s:
            run = s.scalars if scalars else s.execute
            out: list[Any] = []
            for batch in chunked(wanted):
                out.extend(run(query.where(column.in_(batch))).all())
            return out

    @contextmanager
    def _use(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
        else:
            with self.session() as s:
                yield s

    def insert_ignore(
        self, s: Session, model: type[Base], rows: Sequence[Mapping[str, Any]], conflict: Sequence[str]
    ) -> None:
        """INSERT rows, skipping those whose `conflict` columns (a unique key) are already stored.

        Race-safe: a row another transaction wrote (even one still running) is skipped, never an
        error, on SQLite and PostgreSQL (`ON CONFLICT DO NOTHING`); elsewhere each row goes in
        under a savepoint and an IntegrityError skips it.
        """
        if not rows:
            return
        stmt = _on_conflict_do_nothing(s, model, conflict)
        if stmt is not None:
            s.execute(stmt, [dict(r) for r in rows])
            return
        for row in rows:  # pragma: no cover - neither SQLite nor PostgreSQL
            try:
                with s.begin_nested():
                    s.execute(insert(model), [dict(row)])
            except IntegrityError:
                pass

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
        """Register an image; the same content registered again returns the existing id.

        Safe under concurrent writers: two processes adding the same bytes get the same id.
        """
        image = NewImage(path, source, subset, group_key, width, height, frame_index, meta, sha256)
        with self.session() as s:
            return self._image_ids(s, [image])[0]

    def _image_ids(self, s: Session, images: Sequence[NewImage]) -> list[int]:
        rows = [
            {
                "sha256": img.sha256 or file_sha256(img.path),
                "path": str(Path(img.path).resolve()),
                "width": int(img.width),
                "height": int(img.height),
                "source": img.source,
                "subset": img.subset,
                "group_key": img.group_key,
                "frame_index": img.frame_index,
                "meta": img.meta or {},
            }
            for img in images
        ]
        digests = [r["sha256"] for r in rows]
        known = dict(self.rows_in(select(Image.sha256, Image.id), Image.sha256, digests, session=s))
        new = list({r["sha256"]: r for r in rows if r["sha256"] not in known}.values())
        if new:
            for row in new:
                self._keep_copy(row)
            self.insert_ignore(s, Image, new, ["sha256"])
            known.update(self.rows_in(select(Image.sha256, Image.id), Image.sha256,
                                      [r["sha256"] for r in new], session=s))
        return [int(known[d]) for d in digests]

    def _keep_copy(self, row: dict[str, Any]) -> None:
        """Copy a new image's bytes into the store's objects and point its row there, so nothing
        that rewrites the source later changes what the store holds (pipeline/store/objects.py).
        The bytes must still be those hashed (InputError otherwise); an image registered with a
        sha256 but no file stays where it was said to be."""
        source = row["path"]
        if is_object(self.home, source) or not os.path.isfile(source):
            return
        copy, _ = capture(self.home, source, row["sha256"])
        row["meta"] = {**row["meta"], "source_path": source}
        row["path"] = str(copy)

    def add_images(self, images: Sequence[NewImage]) -> list[int]:
        """Register many images in one transaction; ids in the order given (see `add_image`)."""
        with self.session() as s:
            return self._image_ids(s, images)

    def instance_id(self, image_id: int, key: str, meta: dict[str, Any] | None = None) -> int:
        """Get or create the instance `key` of an image (race-safe, like `add_image`)."""
        with self.session() as s:
            return self._instance_ids(s, [(image_id, key, meta)])[0]

    def _instance_ids(
        self, s: Session, wanted: Sequence[tuple[int, str, dict[str, Any] | None]]
    ) -> list[int]:
        def lookup(pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], int]:
            by_image: dict[int, set[str]] = {}
            for image_id, key in pairs:
                by_image.setdefault(image_id, set()).add(key)
            found: dict[tuple[int, str], int] = {}
            for batch in chunked(sorted(by_image)):
                q = select(Instance.image_id, Instance.key, Instance.id).where(Instance.image_id.in_(batch))
                for image_id, key, iid in s.execute(q):
                    if key in by_image[image_id]:
                        found[(image_id, key)] = iid
            return found

        pairs = [(int(i), k) for i, k, _ in wanted]
        known = lookup(pairs)
        new: dict[tuple[int, str], dict[str, Any]] = {}
        for (image_id, key), (_, _, meta) in zip(pairs, wanted, strict=True):
            if (image_id, key) not in known and (image_id, key) not in new:
                new[(image_id, key)] = {"image_id": image_id, "key": key, "meta": meta or {}}
        if new:
            self.insert_ignore(s, Instance, list(new.values()), ["image_id", "key"])
            known.update(lookup(new))
        return [known[p] for p in pairs]

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
        supersedes: int | None = None,
        point_sources: Sequence[str] | None = None,
        session: Session | None = None,
    ) -> int | None:
        """Append a revision. Returns its id, or None when `external_id` was stored before.

        Model output never overrides people: an accepted `pseudo-accepted` revision is refused
        (stored as not accepted) for an instance that already has an accepted human label, unless
        it completes that label (`HumanPoints.kept_by`: every point the person placed, unchanged).
        Two writers storing the same `external_id` at once store it once, without an error.
        """
        new = NewRevision(keypoints, bbox, source, accepted, status, area, model_version, annotator,
                          round, scores, uncertainty, quality, provenance, external_id, supersedes,
                          point_sources)
        row = _revision_row(instance_id, new)
        with self._use(session) as s:
            return self._insert_revision(s, row, checked=False)

    def add_revisions(
        self, items: Sequence[tuple[int, NewRevision]], *, session: Session | None = None
    ) -> list[int | None]:
        """Append many revisions `(instance_id, revision)` in one transaction; ids as `add_revision`."""
        rows = [_revision_row(iid, rev) for iid, rev in items]
        with self._use(session) as s:
            return self._insert_revisions(s, rows)

    def add_labels(self, labels: Sequence[NewLabel]) -> list[WrittenLabel]:
        """Images, instances and revisions of many labels in one transaction (fast bulk ingest).

        Same rules as `add_image`, `instance_id` and `add_revision` one by one: existing images and
        instances are reused, a revision whose `external_id` is stored already is skipped, and it
        is all safe under concurrent writers. Returns the ids, in the order of `labels`.
        """
        rows = [_revision_row(0, lab.revision) if lab.revision is not None else None for lab in labels]
        with self.session() as s:
            image_ids = self._image_ids(s, [lab.image for lab in labels])
            instance_ids = self._instance_ids(
                s, [(img, lab.instance_key, lab.instance_meta) for img, lab in zip(image_ids, labels,
                                                                                    strict=True)]
            )
            for row, inst in zip(rows, instance_ids, strict=True):
                if row is not None:
                    row["instance_id"] = inst
            written = iter(self._insert_revisions(s, [row for row in rows if row is not None]))
            return [WrittenLabel(img, inst, next(written) if row is not None else None)
                    for img, inst, row in zip(image_ids, instance_ids, rows, strict=True)]

    def _insert_revisions(self, s: Session, rows: Sequence[dict[str, Any]]) -> list[int | None]:
        """Insert checked revision rows, in order, in two multi-row INSERTs (rows without and with
        an `external_id`); what is stored already is looked up in bulk first.

        Same outcome as inserting row by row: a stored (or repeated) `external_id` gives None, an
        accepted model row for an instance with an accepted human label (stored, or earlier in
        `rows`) is stored as not accepted unless it completes that label, and ids grow in the
        order of `rows`.
        """
        ext_ids = [r["external_id"] for r in rows if r["external_id"] is not None]
        stored = set(self.scalars_in(select(Revision.external_id), Revision.external_id, ext_ids, session=s))
        check = [r["instance_id"] for r in rows if r["source"] in PREDICTION_SOURCES and r["accepted"]]
        humans = self.human_points(check, session=s) if check else {}
        todo: list[tuple[int, dict[str, Any]]] = []  # (position in rows, row) to insert
        for n, row in enumerate(rows):
            if row["external_id"] in stored:
                continue
            _refuse_over_people(row, humans)
            if row["source"] in HUMAN_SOURCES and row["accepted"]:
                humans[row["instance_id"]] = _row_points(row)  # a later model row must keep them
            if row["external_id"] is not None:
                stored.add(row["external_id"])
            todo.append((n, row))
        out: list[int | None] = [None] * len(rows)
        stmt = _on_conflict_do_nothing(s, Revision, ["external_id"])
        if stmt is None:  # pragma: no cover - neither SQLite nor PostgreSQL
            for n, row in todo:
                out[n] = self._insert_revision(s, row)
            return out
        # one statement for all rows keeps ids in row order; a row another writer stored meanwhile
        # (same external_id) is skipped by ON CONFLICT and keeps None
        for batch in chunked(todo, IN_CHUNK):
            returned = s.execute(stmt.returning(Revision.id, Revision.external_id,
                                                sort_by_parameter_order=True),
                                 [row for _, row in batch]).all()
            if len(returned) == len(batch):
                for (n, _), (rid, _) in zip(batch, returned, strict=True):
                    out[n] = int(rid)
                continue
            # a conflict left gaps: walk both in order (only rows with an external id can be skipped)
            found = iter(returned)
            pending = next(found, None)
            for n, row in batch:
                if pending is not None and pending[1] == row["external_id"]:
                    out[n] = int(pending[0])
                    pending = next(found, None)
        return out

    def _insert_revision(self, s: Session, row: dict[str, Any], *, checked: bool = True) -> int | None:
        """Insert one row; `checked=False` first applies the human rule and the stored-id check."""
        if not checked:
            if row["source"] in PREDICTION_SOURCES and row["accepted"]:
                _refuse_over_people(row, self.human_points([row["instance_id"]], session=s))
            if row["external_id"] is not None and s.scalar(
                select(Revision.id).where(Revision.external_id == row["external_id"])
            ) is not None:
                return None
        if row["external_id"] is None:
            return int(s.execute(insert(Revision).returning(Revision.id), [row]).scalar_one())
        stmt = _on_conflict_do_nothing(s, Revision, ["external_id"])
        if stmt is None:  # pragma: no cover - neither SQLite nor PostgreSQL
            try:
                with s.begin_nested():
                    return int(s.execute(insert(Revision).returning(Revision.id), [row]).scalar_one())
            except IntegrityError:
                return None
        found = s.execute(stmt.returning(Revision.id), row).scalar_one_or_none()
        return None if found is None else int(found)

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

    def human_points(self, instance_ids: Iterable[int], *,
                     session: Session | None = None) -> dict[int, HumanPoints]:
        """The points people placed on each instance: those of its latest live, accepted
        person-made revision (a Label Studio label: all 37; an imported file's: the points it
        labels). Instances without one are absent."""
        q = (select(Revision.instance_id, Revision.id, Revision.source, Revision.keypoints,
                    Revision.point_sources, Revision.provenance)
             .where(Revision.source.in_(list(HUMAN_SOURCES)), Revision.accepted.is_(True),
                    Revision.status != RevisionStatus.REVOKED, not_taken_back()))
        out: dict[int, HumanPoints] = {}
        for iid, rid, source, kps, sources, provenance in sorted(
                self.rows_in(q, Revision.instance_id, instance_ids, session=session), key=lambda r: r[1]):
            out[int(iid)] = HumanPoints(int(rid), [float(v) for v in kps], human_mask(sources, source),
                                        list((provenance or {}).get("human_points", [])))
        return out

    def revisions(self, instance_id: int) -> list[Revision]:
        with self.session() as s:
            return list(
                s.scalars(select(Revision).where(Revision.instance_id == instance_id).order_by(Revision.id))
            )

    def revisions_for(
        self,
        instance_ids: Iterable[int] | None = None,
        *,
        sources: Sequence[str] | None = None,
        model_version: str | None = None,
        round: int | None = None,
        accepted: bool | None = None,
        session: Session | None = None,
    ) -> list[Revision]:
        """Revisions (all of them, or those of `instance_ids`) matching every filter given, by id."""
        q = select(Revision)
        if sources is not None:
            q = q.where(Revision.source.in_(list(sources)))
        if model_version is not None:
            q = q.where(Revision.model_version == model_version)
        if round is not None:
            q = q.where(Revision.round == round)
        if accepted is not None:
            q = q.where(Revision.accepted.is_(accepted))
        if instance_ids is None:
            with self._use(session) as s:
                return list(s.scalars(q.order_by(Revision.id)))
        found = self.scalars_in(q, Revision.instance_id, instance_ids, session=session)
        return sorted(found, key=lambda r: r.id)

    def latest_revisions(
        self,
        instance_ids: Iterable[int],
        *,
        sources: Sequence[str] | None = None,
        accepted: bool | None = None,
        model_version: str | None = None,
        session: Session | None = None,
    ) -> dict[int, Revision]:
        """Each instance's latest revision (highest id) matching the filters (`revisions_for`); an
        instance with none is absent. Revoked ones are not left out: for the current label, use
        `current_labels`."""
        found = self.revisions_for(instance_ids, sources=sources, accepted=accepted,
                                   model_version=model_version, session=session)
        return {rev.instance_id: rev for rev in found}  # by id: the latest wins

    def revision(self, revision_id: int, *, session: Session | None = None) -> Revision | None:
        with self._use(session) as s:
            return s.get(Revision, revision_id)

    def revisions_by_id(self, revision_ids: Iterable[int]) -> dict[int, Revision]:
        return {rev.id: rev for rev in self.scalars_in(select(Revision), Revision.id, revision_ids)}

    def instances_having(self, instance_ids: Iterable[int], *, sources: Sequence[str]) -> set[int]:
        """Which of `instance_ids` have at least one revision from `sources` (any status)."""
        query = select(Revision.instance_id).where(Revision.source.in_(list(sources)))
        return set(self.scalars_in(query, Revision.instance_id, instance_ids))

    def person_revisions(
        self, instance_ids: Iterable[int] | None = None
    ) -> list[tuple[int, int, str, bool, dict[str, Any] | None]]:
        """Every revision a person made (HUMAN_SOURCES), by id, as (instance, revision, source,
        accepted, quality of a `review` revision else None): what review decisions are read from.
        Quality is decoded for review revisions only (decoding every human label's JSON is most of
        a 60,000-label release's check otherwise)."""
        quality_of_review = case((Revision.source == RevisionSource.REVIEW, Revision.quality), else_=None)
        q = (select(Revision.instance_id, Revision.id, Revision.source, Revision.accepted, quality_of_review)
             .where(Revision.source.in_(list(HUMAN_SOURCES))).order_by(Revision.id))
        if instance_ids is not None:
            q = q.where(Revision.instance_id.in_(list(instance_ids)))
        with self.session() as s:
            return [tuple(row) for row in s.execute(q)]  # type: ignore[misc]

    def revision_scores(self, revision_ids: Sequence[int]) -> dict[int, tuple[list[float] | None, bool]]:
        """revision id -> (per-keypoint scores, accepted); the scores read as text and decoded by one
        json.loads (the ORM decodes each row's JSON on its own)."""
        q = select(Revision.id, cast(Revision.scores, Text), Revision.accepted)
        rows = self.rows_in(q, Revision.id, sorted(set(revision_ids)))
        scores = json.loads("[" + ",".join(text if text is not None else "null" for _, text, _ in rows) + "]")
        return {rid: (value, accepted) for (rid, _, accepted), value in zip(rows, scores, strict=True)}

    def revision_times(self, revision_ids: Sequence[int]) -> dict[int, datetime]:
        """revision id -> when it was written."""
        q = select(Revision.id, Revision.created_at)
        return {rid: at for rid, at in self.rows_in(q, Revision.id, sorted(set(revision_ids)))}

    def reference_revisions(
        self,
        instance_ids: Iterable[int] | None = None,
        *,
        sources: Sequence[str],
        group_keys: Iterable[str] | None = None,
        image_source: str | None = None,
    ) -> list[Revision]:
        """Revisions that can be an instance's ground truth, by id: of `sources`, live (neither taken
        back by a later `revoked` revision nor one itself), and accepted or a hidden `import`
        (skipped tasks and refused labels are not). `group_keys` / `image_source` narrow by image."""
        q = select(Revision).where(
            Revision.source.in_(list(sources)), not_taken_back(), Revision.status != RevisionStatus.REVOKED,
            or_(Revision.accepted.is_(True), Revision.source == RevisionSource.IMPORT))
        if group_keys is not None or image_source is not None:
            q = (q.join(Instance, Instance.id == Revision.instance_id)
                 .join(Image, Image.id == Instance.image_id))
            if group_keys is not None:
                q = q.where(Image.group_key.in_(list(group_keys)))
            if image_source is not None:
                q = q.where(Image.source == image_source)
        if instance_ids is None:
            with self.session() as s:
                found = list(s.scalars(q.order_by(Revision.id)))
        else:
            found = sorted(self.scalars_in(q, Revision.instance_id, instance_ids), key=lambda r: r.id)
        return found

    def ground_truth(self, instance_ids: Sequence[int], *, sources: Sequence[str]) -> dict[int, Revision]:
        """The reference label of each instance: its latest live accepted label among `sources`,
        else its hidden import (`reference_revisions`)."""
        out: dict[int, Revision] = {}
        for rev in self.reference_revisions(instance_ids, sources=sources):  # by id
            current = out.get(rev.instance_id)
            # accepted labels win over hidden imports; later wins among equals
            if current is None or rev.accepted or not current.accepted:
                out[rev.instance_id] = rev
        return out

    def instance_boxes(self, instances: Sequence[Instance]) -> dict[int, tuple[list[float], str]]:
        """Box of each instance, with where it came from: its own (`meta["bbox"]`, "instance"), else
        the box of its latest revision of any kind with a positive size ("revision"); none: absent."""
        out: dict[int, tuple[list[float], str]] = {}
        missing: list[int] = []
        for inst in instances:
            box = (inst.meta or {}).get("bbox")
            if box is not None and len(box) == 4:
                out[inst.id] = ([float(v) for v in box], "instance")
            else:
                missing.append(inst.id)
        if missing:
            # chunks split by instance, so each instance's revisions stay in id order
            query = select(Revision.instance_id, Revision.bbox).order_by(Revision.id)
            for instance_id, bbox in self.rows_in(query, Revision.instance_id, missing):
                if bbox and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0:  # later ones overwrite earlier
                    out[instance_id] = ([float(v) for v in bbox], "revision")
        return out

    def count_revisions(
        self, *, sources: Sequence[str] | None = None, round: int | None = None, accepted: bool | None = None
    ) -> int:
        """How many revisions match every filter given."""
        q = select(func.count(Revision.id))
        if sources is not None:
            q = q.where(Revision.source.in_(list(sources)))
        if round is not None:
            q = q.where(Revision.round == round)
        if accepted is not None:
            q = q.where(Revision.accepted.is_(accepted))
        with self.session() as s:
            return int(s.scalar(q) or 0)

    def stored_external_ids(
        self, external_ids: Iterable[str] | None = None, *, prefix: str | None = None
    ) -> set[str]:
        """Which of `external_ids` (or which ids starting with `prefix`) are stored already."""
        q = select(Revision.external_id).where(Revision.external_id.is_not(None))
        if prefix is not None:
            q = q.where(Revision.external_id.startswith(prefix, autoescape=True))
        if external_ids is None:
            with self.session() as s:
                return {str(v) for v in s.scalars(q)}
        return {str(v) for v in self.scalars_in(q, Revision.external_id, external_ids)}

    # -- models -------------------------------------------------------------------------------
    def current_model(self) -> str | None:
        """The model the next round starts from: the model of the last round whose retrain step
        finished, else the newest registered model; None when nothing was trained."""
        with self.session() as s:
            for rnd in s.scalars(select(Round).order_by(Round.number.desc())):
                if rnd.model_version and step_reached(rnd.step, RoundStep.RETRAIN):
                    return str(rnd.model_version)
            newest = s.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())).first()
            return newest.name if newest else None

    # -- images, instances, tasks, cursors ----------------------------------------------------
    def group_keys(self) -> list[str]:
        """Every image group (sequence / video), sorted."""
        with self.session() as s:
            return sorted(s.scalars(select(Image.group_key).distinct()))

    def images_of(self, instance_ids: Iterable[int]) -> dict[int, Image]:
        """The image of each instance."""
        q = select(Instance.id, Image).join(Image, Image.id == Instance.image_id)
        return {int(iid): img for iid, img in self.rows_in(q, Instance.id, instance_ids)}

    def tasks(
        self,
        *,
        round: int | None = None,
        states: Sequence[str] | None = None,
        instance_ids: Iterable[int] | None = None,
    ) -> list[AnnotationTask]:
        """Annotation tasks matching every filter given, by id."""
        q = select(AnnotationTask)
        if round is not None:
            q = q.where(AnnotationTask.round == round)
        if states is not None:
            q = q.where(AnnotationTask.state.in_(list(states)))
        if instance_ids is None:
            with self.session() as s:
                return list(s.scalars(q.order_by(AnnotationTask.id)))
        return sorted(self.scalars_in(q, AnnotationTask.instance_id, instance_ids), key=lambda t: t.id)

    def tasked_instance_ids(self) -> set[int]:
        """Instances that ever had an annotation task."""
        with self.session() as s:
            return {int(i) for i in s.scalars(select(AnnotationTask.instance_id))}

    def sync_value(self, key: str) -> dict[str, Any] | None:
        """A stored cursor (SyncState), or None."""
        with self.session() as s:
            row = s.get(SyncState, key)
            return None if row is None else dict(row.value)

    def set_sync_value(self, key: str, value: dict[str, Any], *, session: Session | None = None) -> None:
        """Store a cursor (SyncState), replacing the old value (an upsert: safe with concurrent writers)."""
        row = {"key": key, "value": value, "updated_at": utcnow()}
        with self._use(session) as s:
            stmt = _dialect_insert(s, SyncState)
            if stmt is None:  # pragma: no cover - neither SQLite nor PostgreSQL
                s.merge(SyncState(**row))
                return
            update = {"value": value, "updated_at": row["updated_at"]}
            s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=update), row)

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
        if accepted_only:  # a revision taken back by a later `revoked` one is no longer current
            latest = latest.where(Revision.accepted.is_(True), not_taken_back())
        if among_sources:
            latest = latest.where(Revision.source.in_(list(among_sources)))
        sub = latest.group_by(Revision.instance_id).subquery()
        q = (
            _label_columns()
            .join(sub, sub.c.instance_id == Instance.id)
            .join(Revision, Revision.id == sub.c.rid)
            .order_by(Image.id, Instance.id)
        )
        if image_source:
            q = q.where(Image.source == image_source)
        if subset:
            q = q.where(Image.subset == subset)
        if image_ids is not None and instance_ids is not None:
            q = q.where(Image.id.in_(list(image_ids)))
        if instance_ids is not None:
            rows = self.rows_in(q, Instance.id, instance_ids)
        elif image_ids is not None:
            rows = self.rows_in(q, Image.id, image_ids)
        else:
            with self.session() as s:
                rows = list(s.connection().execute(q).all())  # Core rows (fetchall), no ORM layer
        labels = _labels(rows)
        if image_ids is not None or instance_ids is not None:  # chunks come back chunk by chunk
            labels.sort(key=lambda lab: (lab.image_id, lab.instance_id))
        return labels

    def labels_for_revisions(self, revision_ids: Sequence[int]) -> list[Label]:
        """The labels of exact revisions, old ones included (the store is append-only)."""
        q = _label_columns().join(Revision, Revision.instance_id == Instance.id)
        rows = self.rows_in(q, Revision.id, sorted(set(revision_ids)))
        return sorted(_labels(rows), key=lambda lab: (lab.image_id, lab.instance_id))

    def instances(self, *, image_source: str | None = None) -> list[tuple[Image, Instance]]:
        """Every instance with its image, labelled or not, by image and instance id."""
        q = (select(Image, Instance).join(Instance, Instance.image_id == Image.id)
             .order_by(Image.id, Instance.id))
        if image_source:
            q = q.where(Image.source == image_source)
        with self.session() as s:
            return [(img, inst) for img, inst in s.execute(q)]

    def unlabelled_instances(self, *, image_source: str | None = None,
                             incomplete: bool = False) -> list[tuple[Image, Instance]]:
        """Instances with no accepted revision yet (the active-learning pool); with `incomplete`,
        also those whose current label a person left partial (`incomplete_instances`)."""
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
            pairs = [(img, inst) for img, inst in s.execute(q)]
        if incomplete:
            pairs = sorted([*pairs, *self.incomplete_instances(image_source=image_source)],
                           key=lambda pair: (pair[0].id, pair[1].id))
        return pairs

    def incomplete_instances(self, *, image_source: str | None = None) -> list[tuple[Image, Instance]]:
        """Instances whose current label is a person's partial one: points they placed beside
        points nobody placed (an imported COCO person has no spine). Pseudo-labelling completes
        them around the person's points, which stay as they are."""
        current = (select(func.max(Revision.id).label("rid"))
                   .where(Revision.accepted.is_(True), not_taken_back())
                   .group_by(Revision.instance_id).subquery())
        q = (select(Image, Instance, cast(Revision.point_sources, Text))
             .join(Instance, Instance.image_id == Image.id)
             .join(Revision, Revision.instance_id == Instance.id)
             .join(current, current.c.rid == Revision.id)
             .where(Revision.source.in_(list(HUMAN_SOURCES)), Revision.point_sources.is_not(None))
             .order_by(Image.id, Instance.id))
        if image_source:
            q = q.where(Image.source == image_source)
        with self.session() as s:
            rows = list(s.execute(q))
        return [(img, inst) for img, inst, text in rows if NONE in (json.loads(text) or ())]

    def snapshot_id(self, labels: Sequence[Label] | None = None) -> str:
        """A content id for a set of labels: the same revisions give the same id."""
        labels = self.current_labels() if labels is None else labels
        digest = hashlib.sha256()
        for lab in labels:
            digest.update(f"{lab.instance_id}:{lab.revision_id};".encode())
        return digest.hexdigest()[:16]


#: JSON columns a Label needs, read as their stored text and decoded together (`_labels`).
_JSON_COLUMNS = (Revision.keypoints, Revision.bbox, Revision.quality, Revision.provenance, Image.meta,
                 Revision.point_sources)


def _label_columns() -> Select[Any]:
    """Image x instance columns of a Label, plain Core rows (no ORM objects); the caller joins
    `revisions`. JSON columns come back as text so `_labels` decodes them in one call."""
    return select(
        Image.id, Image.path, Image.width, Image.height, Image.source, Image.subset, Image.group_key,
        Image.frame_index, Instance.id, Instance.key, Revision.id, Revision.area, Revision.source,
        Revision.model_version, Revision.annotator, Revision.round, Revision.uncertainty,
        *(cast(column, Text) for column in _JSON_COLUMNS),
    ).join(Instance, Instance.image_id == Image.id)


def _labels(rows: Sequence[Any]) -> list[Label]:
    """Labels from `_label_columns` rows: every JSON value of every row decoded by one json.loads
    (what the ORM does per value, 5 calls a row, is most of the read time at dataset scale)."""
    width = len(_JSON_COLUMNS)
    texts = [text if text is not None else "null" for row in rows for text in row[-width:]]
    values = json.loads("[" + ",".join(texts) + "]") if texts else []
    out = []
    for n, row in enumerate(rows):
        kps, box, quality, provenance, meta, sources = values[n * width:(n + 1) * width]
        out.append(Label(
            image_id=row[0], image_path=row[1], width=row[2], height=row[3], image_source=row[4],
            subset=row[5], group_key=row[6], frame_index=row[7], instance_id=row[8],
            instance_key=row[9], revision_id=row[10],
            keypoints=list(kps), bbox=list(box), area=row[11], source=row[12],
            model_version=row[13], annotator=row[14], round=row[15], uncertainty=row[16],
            quality=dict(quality or {}), provenance=dict(provenance or {}), image_meta=dict(meta or {}),
            point_sources=list(sources) if sources is not None else None,
        ))
    return out


def _revision_row(instance_id: int, rev: NewRevision) -> dict[str, Any]:
    """A checked `revisions` row for `rev`."""
    if rev.source not in SOURCES:
        known = ", ".join(SOURCES)
        raise ValueError(f"unknown revision source {rev.source!r}; expected one of {known}")
    values = validate_keypoints(rev.keypoints)
    box = [float(v) for v in rev.bbox]
    if len(box) != 4:
        raise InputError("bbox", "expected 4 numbers", field="bbox")
    return {
        "instance_id": instance_id,
        "keypoints": values,
        "bbox": box,
        "area": float(rev.area if rev.area is not None else box[2] * box[3]),
        "source": str(rev.source),
        "accepted": bool(rev.accepted),
        "status": str(rev.status),
        "model_version": rev.model_version,
        "annotator": rev.annotator,
        "round": rev.round,
        "scores": list(map(float, rev.scores)) if rev.scores is not None else None,
        "uncertainty": rev.uncertainty,
        "quality": rev.quality or {},
        "provenance": rev.provenance or {},
        "external_id": rev.external_id,
        "supersedes": rev.supersedes,
        "point_sources": checked(rev.point_sources),
    }


def _row_points(row: Mapping[str, Any]) -> HumanPoints:
    """The points a person placed in a revision row about to be written."""
    return HumanPoints(0, list(row["keypoints"]), human_mask(row["point_sources"], row["source"]))


def _refuse_over_people(row: dict[str, Any], humans: Mapping[int, HumanPoints]) -> None:
    """People over models: an accepted model row for an instance a person labelled is stored not
    accepted (`superseded-by-human`), unless it completes the person's label unchanged."""
    people = humans.get(row["instance_id"])
    if (row["source"] in PREDICTION_SOURCES and row["accepted"] and people is not None
            and not people.kept_by(row["keypoints"], row["point_sources"])):
        row["accepted"] = False
        row["status"] = RevisionStatus.SUPERSEDED_BY_HUMAN


def _dialect_insert(s: Session, model: type[Base]) -> Any:
    """The session database's own INSERT (with ON CONFLICT clauses), or None."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(model)
    return None  # pragma: no cover


def _on_conflict_do_nothing(s: Session, model: type[Base], conflict: Sequence[str]) -> Any:
    """`INSERT ... ON CONFLICT (conflict) DO NOTHING` for the session's database, or None."""
    stmt = _dialect_insert(s, model)
    return None if stmt is None else stmt.on_conflict_do_nothing(index_elements=list(conflict))
