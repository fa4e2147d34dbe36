"""Versioned, immutable dataset releases: grouped COCO splits, a manifest, a dataset card.

A release is a folder $SPINETRACK_HOME/releases/VERSION/ written once:

    manifest.json              what is in it and where it came from (schemas/manifest.py)
    README.md                  the dataset card, generated from the manifest
    annotations/train.json     COCO keypoints, 37 points, one file per split ...
    annotations/train-real.json, train-synthetic.json, ...   ... and per image source
    images/000000000042.png    the images (hard links where possible), unless referenced

The COCO files hold no timestamps and the manifest records the revision of every instance, so
`reproduce_release` rebuilds any version byte for byte from the append-only store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from pipeline import progress
from pipeline.coco_writer import coco_dataset
from pipeline.export import SLOT, encode_each, encode_json, encoded_annotations, image_entry
from pipeline.gc_pause import gc_paused
from pipeline.release.dataset_card import render_card
from pipeline.release.kit import changed_kit_files, has_kit, write_kit
from pipeline.review_decisions import needs_fix_instances
from pipeline.splits import DEFAULT_FRACTIONS, SPLITS, assign_splits, check_fractions
from pipeline.store import Label, Store, file_sha256
from pipeline.store.models import Image, ModelVersion, Release
from pipeline.store.objects import checked_object, link_or_copy, object_path
from pipeline.store.store import IN_CHUNK
from schemas.keypoints import KEYPOINTS, NUM_KEYPOINTS
from schemas.manifest import (
    Changelog,
    Counts,
    FileEntry,
    ModelInfo,
    ReleaseManifest,
    SplitCounts,
    VisibilityCounts,
    check_semver,
    semver_key,
)
from schemas.point_sources import labelled_counts

MANIFEST_NAME = "manifest.json"
CARD_NAME = "README.md"


class ReleaseError(RuntimeError):
    """A release that cannot be made as asked (existing version, unknown parent, no labels)."""


@dataclass(frozen=True)
class PublishedRelease:
    version: str
    path: Path
    manifest: ReleaseManifest


def releases_root(store: Store) -> Path:
    return store.home / "releases"


def list_releases(store: Store) -> list[str]:
    """Versions in the store, in semver order."""
    with store.session() as s:
        versions = list(s.scalars(select(Release.version)))
    return sorted(versions, key=semver_key)


def get_release(store: Store, version: str) -> PublishedRelease:
    with store.session() as s:
        row = s.get(Release, version)
        if row is None:
            known = ", ".join(list_releases(store)) or "none"
            raise ReleaseError(f"no release {version!r} in the store (releases: {known})")
        return PublishedRelease(row.version, Path(row.path), ReleaseManifest.model_validate(row.manifest))


def labels_for_revisions(store: Store, revision_ids: Sequence[int]) -> list[Label]:
    """The labels of exact revisions; a revision missing from the store is an error."""
    labels = store.labels_for_revisions(revision_ids)
    if len(labels) != len(set(revision_ids)):
        missing = sorted(set(revision_ids) - {lab.revision_id for lab in labels})
        raise ReleaseError(f"revisions missing from the store: {missing[:20]}")
    return labels


def create_release(
    store: Store,
    version: str,
    *,
    parent: str | None = None,
    notes: str = "",
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    pinned: Mapping[str, str] | None = None,
    revision_sources: Sequence[str] | None = None,
    copy_images: bool = True,
) -> PublishedRelease:
    """Publish the store's current labels as release `version` (refused if it exists).

    `parent` defaults to the highest existing version; the changelog is computed against it.
    Groups keep the split they were first given; new groups are split by `fractions`.
    """
    with gc_paused():  # tens of thousands of labels and entries, no cyclic garbage
        return _create_release(store, version, parent=parent, notes=notes, fractions=fractions,
                               pinned=pinned, revision_sources=revision_sources, copy_images=copy_images)


def _create_release(
    store: Store, version: str, *, parent: str | None, notes: str, fractions: Mapping[str, float],
    pinned: Mapping[str, str] | None, revision_sources: Sequence[str] | None, copy_images: bool,
) -> PublishedRelease:
    """The work of `create_release`."""
    check_semver(version)
    fractions = check_fractions(fractions)
    existing = list_releases(store)
    if version in existing:
        old = get_release(store, version)
        raise ReleaseError(
            f"release {version} already exists ({old.path}, created"
            f" {old.manifest.created_at:%Y-%m-%d %H:%M}Z); releases are immutable: choose a new version"
        )
    if parent is None and existing:
        parent = existing[-1]
    parent_manifest = None
    if parent is not None:
        check_semver(parent)
        if parent not in existing:
            known = ", ".join(existing) or "none"
            raise ReleaseError(f"parent release {parent!r} does not exist (releases: {known})")
        if semver_key(version) <= semver_key(parent):
            raise ReleaseError(f"release {version} must be a higher version than its parent {parent}")
        parent_manifest = get_release(store, parent).manifest

    labels = store.current_labels(revision_sources=revision_sources)
    needs_fix = needs_fix_instances(store)  # a reviewer's open needs-fix keeps a label out
    excluded = sorted(lab.instance_id for lab in labels if lab.instance_id in needs_fix)
    labels = [lab for lab in labels if lab.instance_id not in needs_fix]
    if not labels:
        raise ReleaseError("the store has no accepted labels to release")
    split_of_group = assign_splits(store, (lab.group_key for lab in labels), fractions, pinned=pinned)
    by_split: dict[str, list[Label]] = {name: [] for name in SPLITS}
    for lab in labels:
        by_split[split_of_group[lab.group_key]].append(lab)

    root = releases_root(store)
    final = root / version
    if final.exists():
        raise ReleaseError(f"{final} exists but the store has no release {version}: move it away first")
    staging = root / f".{version}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    created_at = datetime.now(UTC).replace(microsecond=0)
    manifest = write_release_files(
        store, staging, version=version, parent=parent, created_at=created_at, notes=notes,
        fractions=fractions, by_split=by_split, copy_images=copy_images, parent_manifest=parent_manifest,
        excluded_needs_fix=excluded,
    )
    renamed = False
    try:
        with store.session() as s:
            s.add(Release(version=version, parent=parent, path=str(final),
                          manifest=manifest.model_dump(mode="json"), created_at=created_at))
            s.flush()  # a concurrent release of the same version fails here, before the rename
            staging.rename(final)
            renamed = True
    except BaseException:
        # the row was not committed: take the files away too, so the version stays free
        shutil.rmtree(final if renamed else staging, ignore_errors=True)
        raise
    return PublishedRelease(version, final, manifest)


def reproduce_release(store: Store, version: str, out_dir: str | Path) -> Path:
    """Rebuild release `version` into `out_dir` from the revisions its manifest names.

    The result is byte-identical to the original (files, manifest, card); a difference means the
    store or an image changed under the release, and is reported as an error.
    """
    published = get_release(store, version)
    recorded = published.manifest
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out} is not empty")
    labels = {lab.revision_id: lab for lab in labels_for_revisions(
        store, [rev for pairs in recorded.revisions.values() for _, rev in pairs])}
    by_split = {name: [labels[rev] for _, rev in recorded.revisions.get(name, [])] for name in SPLITS}
    parent_manifest = get_release(store, recorded.parent).manifest if recorded.parent else None
    rebuilt = write_release_files(
        store, out, version=version, parent=recorded.parent, created_at=recorded.created_at,
        notes=recorded.notes, fractions=recorded.split_fractions, by_split=by_split,
        copy_images=recorded.images == "copied", parent_manifest=parent_manifest,
        excluded_needs_fix=recorded.excluded_needs_fix, kit=has_kit(f.path for f in recorded.files),
        point_counts=recorded.counts.point_sources is not None,
    )
    if rebuilt != recorded:
        kit = changed_kit_files(recorded.files, rebuilt.files)
        if kit and rebuilt.model_copy(update={"files": recorded.files}) == recorded:
            raise ReleaseError(f"release {version} rebuilt with other {', '.join(kit)}: these are made by"
                               " the code (configs, keypoint metainfo), which changed since the release")
        raise ReleaseError(f"release {version} rebuilt to a different manifest: the store changed under it")
    return out


def verify_release(path: str | Path) -> list[str]:
    """Problems found checking a release folder against its manifest (empty list: intact)."""
    from schemas.manifest import load_manifest

    root = Path(path)
    manifest = load_manifest(root / MANIFEST_NAME)
    problems = []
    for entry in manifest.files:
        file = root / entry.path
        if not file.is_file():
            problems.append(f"{entry.path}: missing")
        elif file.stat().st_size != entry.bytes or file_sha256(file) != entry.sha256:
            problems.append(f"{entry.path}: content differs from the manifest")
    if (root / CARD_NAME).read_text() != render_card(manifest):
        problems.append(f"{CARD_NAME}: differs from the card generated from the manifest")
    return problems


# -- writing ------------------------------------------------------------------------------
def write_release_files(
    store: Store,
    out: Path,
    *,
    version: str,
    parent: str | None,
    created_at: datetime,
    notes: str,
    fractions: Mapping[str, float],
    by_split: Mapping[str, Sequence[Label]],
    copy_images: bool,
    parent_manifest: ReleaseManifest | None,
    excluded_needs_fix: Sequence[int] = (),
    kit: bool = True,
    point_counts: bool = True,
) -> ReleaseManifest:
    """Write annotations, images, manifest and card of one release into `out`; return the manifest.

    `kit`: also the mmpose metainfo and configs that train on it (pipeline/release/kit.py);
    `point_counts`: count the points by who placed them. False only to rebuild a release made
    before them."""
    out.mkdir(parents=True, exist_ok=True)
    all_labels = [lab for name in SPLITS for lab in by_split.get(name, [])]
    files: list[FileEntry] = []
    copied: dict[int, str] = {}
    if copy_images:
        image_files = _copy_images(store, all_labels, out)
        folder = str(out).rstrip("/") + "/"
        copied = {image_id: folder + name for image_id, (name, _, _) in image_files.items()}
        files.extend(FileEntry(path=name, sha256=digest, bytes=size)
                     for name, digest, size in image_files.values())
        image_root = out
    else:
        image_root = store.home
    coco = _CocoParts(image_root, copied, all_labels)
    for file_name, labs, split in _annotation_files(by_split):
        path = coco.write(
            out / "annotations" / file_name, labs,
            info={"description": f"SpineTrack {version} {file_name.removesuffix('.json')}",
                  "version": version, "split": split, "keypoints": NUM_KEYPOINTS},
        )
        files.append(_entry(out, path))
    if kit:
        files.extend(_entry(out, path) for path in write_kit(out, version=version, images_copied=copy_images))
    manifest = ReleaseManifest(
        version=version,
        parent=parent,
        created_at=created_at,
        notes=notes,
        snapshot_id=store.snapshot_id(sorted(all_labels, key=lambda lab: (lab.image_id, lab.instance_id))),
        split_fractions=dict(fractions),
        images="copied" if copy_images else "referenced",
        image_root="." if copy_images else "$SPINETRACK_HOME",
        counts=_counts(by_split, points=point_counts),
        model_versions=_model_infos(store, all_labels),
        revisions={
            name: sorted((lab.instance_id, lab.revision_id) for lab in by_split.get(name, []))
            for name in SPLITS
        },
        changelog=_changelog(parent_manifest, all_labels),
        files=sorted(files, key=lambda f: f.path),
        excluded_needs_fix=sorted(excluded_needs_fix),
    )
    _write_read_only(out / MANIFEST_NAME, manifest.to_json())
    _write_read_only(out / CARD_NAME, render_card(manifest))
    for entry in files:
        if entry.path.startswith("annotations/"):
            (out / entry.path).chmod(0o444)
    return manifest


class _CocoParts:
    """COCO image and annotation entries made once per label, for every file a label appears in
    (its split's, its source's, its subset's); the bytes are those of `pipeline.export.export_coco`."""

    def __init__(self, image_root: Path, copied: Mapping[int, str], labels: Sequence[Label]) -> None:
        self.root = Path(image_root).resolve()
        self.prefix = str(self.root).rstrip("/") + "/"
        self.root_parts = [part for part in str(self.root).split("/") if part]
        self.copied = copied  # image id -> its copy in the release (copy_images)
        self.folders: dict[str, str] = {}  # an image folder -> its path relative to root, "" or ending in /
        # image id -> its entry, encoded; revision id -> its annotation, encoded: all at once
        firsts = list({lab.image_id: lab for lab in reversed(labels)}.values())
        self.images = dict(zip((lab.image_id for lab in firsts),
                               encode_each([self._image(lab) for lab in firsts]), strict=True))
        unique = list({lab.revision_id: lab for lab in labels}.values())
        self.annotations = dict(zip((lab.revision_id for lab in unique), encoded_annotations(unique),
                                    strict=True))

    def _image(self, label: Label) -> dict[str, Any]:
        return image_entry(label, None, file_name=self._relative(self.copied.get(label.image_id,
                                                                                 label.image_path)))

    def _relative(self, path: str) -> str:
        """os.path.relpath(path, root), without its cost (it normalises both paths every call):
        worked out once per folder, the file's name appended."""
        folder, _, name = path.rpartition("/")
        if (not path.startswith("/") or path.endswith(("/", "/.", "/..")) or "/../" in path
                or "/./" in path or "//" in path or name in ("", ".", "..")
                or self.prefix.startswith(path + "/")):  # the root itself, or a folder above it
            return os.path.relpath(path, self.root)
        relative = self.folders.get(folder)
        if relative is None:
            parts = [part for part in folder.split("/") if part]
            common = 0
            for mine, theirs in zip(parts, self.root_parts, strict=False):
                if mine != theirs:
                    break
                common += 1
            relative = self.folders[folder] = "".join(
                f"{part}/" for part in [".."] * (len(self.root_parts) - common) + parts[common:])
        return relative + name

    def write(self, path: Path, labels: Sequence[Label], info: dict[str, Any]) -> Path:
        """The bytes of `dump_coco(coco_dataset(images, annotations, info=info), path)`, with every
        image and annotation encoded once for all the files it is in (a label is in 2-3 files)."""
        images: dict[int, str] = {}
        annotations = []
        for label in sorted(labels, key=lambda lab: (lab.image_id, lab.instance_id)):
            if label.image_id not in images:
                images[label.image_id] = self.images[label.image_id]
            annotations.append(self.annotations[label.revision_id])
        # the dataset with one placeholder string per list, then the encoded entries put in its place
        skeleton = encode_json(coco_dataset([], [], info=info) | {"images": [SLOT], "annotations": [SLOT]})
        head, middle, tail = skeleton.split(encode_json(SLOT))  # sorted keys: annotations come first
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head + ",".join(annotations) + middle + ",".join(images.values()) + tail + "\n")
        return path


def _annotation_files(by_split: Mapping[str, Sequence[Label]]) -> list[tuple[str, list[Label], str]]:
    """(file name, labels, split): every split, then per image source, then per subset where a
    source has several (train-real-coco, train-real-yoga)."""
    everything = [lab for labs in by_split.values() for lab in labs]
    sources = sorted({lab.image_source for lab in everything})
    subsets = {src: sorted({lab.subset for lab in everything if lab.image_source == src}) for src in sources}
    out = []
    for split in SPLITS:
        labs = list(by_split.get(split, []))
        out.append((f"{split}.json", labs, split))
        for src in sources:
            out.append((f"{split}-{src}.json", [lab for lab in labs if lab.image_source == src], split))
            if len(subsets[src]) > 1:
                for sub in subsets[src]:
                    chosen = [lab for lab in labs if lab.image_source == src and lab.subset == sub]
                    out.append((f"{split}-{src}-{_slug(sub)}.json", chosen, split))
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _copy_images(store: Store, labels: Sequence[Label], out: Path) -> dict[int, tuple[str, str, int]]:
    """Hard-link each image's copy in the store's objects into images/ (a read-only copy across
    file systems), after checking the object still has the image's ingest hash.

    A release never shares an inode with a source file, a media file or anything else that may be
    written: only with the store's objects, which nothing rewrites (pipeline/store/objects.py). An
    image registered before objects existed gets its object now, from its source if that still has
    the ingest hash. Returns image id -> (name in the release, sha256, bytes)."""
    hashes = _image_hashes(store, {lab.image_id for lab in labels})
    files: dict[int, tuple[str, str, int]] = {}
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    prefix = str(images_dir) + "/"
    link = True  # until a link fails with EXDEV (another file system): then copies only
    for lab in progress.track(labels, "release: images"):
        if lab.image_id in files:
            continue
        src, suffix, expected = lab.image_path, _suffix(lab.image_path), hashes[lab.image_id]
        obj = object_path(store.home, expected, suffix)
        size, digest = _hashed(obj)
        if digest != expected:  # missing (an older store) or damaged: made again from the source
            obj = checked_object(store.home, expected, suffix, src)
            size = obj.stat().st_size
        name = f"{lab.image_id:012d}{suffix.lower()}"
        link = link_or_copy(obj, Path(prefix + name), link=link)
        files[lab.image_id] = (f"images/{name}", expected, size)
    return files


def _hashed(path: Path) -> tuple[int, str | None]:
    """(size, sha256) of a file; (0, None) when it does not exist."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= _READ_WHOLE:  # one read: file_digest's 256 KiB buffer costs more than the hash
                data = fh.read()
                return len(data), hashlib.sha256(data).hexdigest()
            return size, hashlib.file_digest(fh, "sha256").hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return 0, None


#: Images up to this size are hashed from one read.
_READ_WHOLE = 1 << 24


def _suffix(path: str) -> str:
    """`Path(path).suffix` without building a Path (60,000 of them add up)."""
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def _image_hashes(store: Store, image_ids: set[int]) -> dict[int, str]:
    """sha256 of each image at ingest; a release of most of the store reads the whole column once
    (one query, plain rows) rather than IN (...) chunk by chunk."""
    query = select(Image.id, Image.sha256)
    if len(image_ids) <= 4 * IN_CHUNK:
        return dict(store.rows_in(query, Image.id, sorted(image_ids)))
    with store.session() as s:
        rows = s.connection().execute(query).all()
        return {image_id: digest for image_id, digest in rows if image_id in image_ids}


def _entry(root: Path, path: Path) -> FileEntry:
    return FileEntry(
        path=path.relative_to(root).as_posix(), sha256=file_sha256(path), bytes=path.stat().st_size
    )


def _write_read_only(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o444)


def _point_counts(labels: Sequence[Label], flags: np.ndarray) -> dict[str, int]:
    """Labelled points (`flags` > 0, one row per label) by who placed them: human, synthetic,
    pseudo-accepted, ... (a label without `point_sources`: all its own source's)."""
    total: Counter[str] = Counter()
    labelled = (flags > 0).sum(axis=1).tolist()
    for lab, count, row in zip(labels, labelled, flags, strict=True):
        if lab.point_sources is None:
            total[lab.source] += count
        else:
            total.update(labelled_counts(lab.point_sources, lab.source, row.tolist()))
    return dict(sorted(total.items()))


def _counts(by_split: Mapping[str, Sequence[Label]], *, points: bool = True) -> Counts:
    visibility = {k.name: Counter[int]() for k in KEYPOINTS}
    splits, image_sources, subsets, revision_sources, rounds = {}, {}, {}, {}, {}
    point_sources: dict[str, dict[str, int]] | None = {} if points else None
    for name in SPLITS:
        labs = by_split.get(name, [])
        splits[name] = SplitCounts(
            images=len({lab.image_id for lab in labs}),
            instances=len(labs),
            groups=len({lab.group_key for lab in labs}),
        )
        image_sources[name] = dict(sorted(Counter(lab.image_source for lab in labs).items()))
        subsets[name] = dict(sorted(Counter(lab.subset for lab in labs).items()))
        revision_sources[name] = dict(sorted(Counter(lab.source for lab in labs).items()))
        rounds[name] = dict(sorted(Counter(
            "none" if lab.round is None else str(lab.round) for lab in labs).items()))
        # (labels, 37) flags, as ints the way int() truncates them; counted per keypoint and value
        flags = np.array([lab.keypoints[2::3] for lab in labs], dtype=np.float64).reshape(
            -1, NUM_KEYPOINTS).astype(np.int64)
        if point_sources is not None:
            point_sources[name] = _point_counts(labs, flags)
        for k in KEYPOINTS:
            column = flags[:, k.index]
            for value in (0, 1, 2):
                visibility[k.name][value] += int(np.count_nonzero(column == value))
    return Counts(
        splits=splits,
        image_sources=image_sources,
        subsets=subsets,
        revision_sources=revision_sources,
        rounds=rounds,
        keypoint_visibility={
            name: VisibilityCounts(v0=c[0], v1=c[1], v2=c[2]) for name, c in visibility.items()
        },
        point_sources=point_sources,
    )


def _model_infos(store: Store, labels: Sequence[Label]) -> list[ModelInfo]:
    used = Counter(lab.model_version for lab in labels if lab.model_version)
    with store.session() as s:
        rows = {m.name: m for m in s.scalars(select(ModelVersion).where(ModelVersion.name.in_(list(used))))}
    infos = []
    for name, count in sorted(used.items()):
        row = rows.get(name)
        infos.append(ModelInfo(
            name=name, instances=count,
            config_name=row.config_name if row else None,
            data_snapshot=row.data_snapshot if row else None,
            checkpoint_sha256=row.checkpoint_sha256 if row else None,
        ))
    return infos


def _changelog(parent: ReleaseManifest | None, labels: Sequence[Label]) -> Changelog:
    now = {lab.instance_id: lab.revision_id for lab in labels}
    if parent is None:
        return Changelog(parent=None, added=sorted(now))
    before = parent.instance_revisions()
    return Changelog(
        parent=parent.version,
        added=sorted(set(now) - set(before)),
        removed=sorted(set(before) - set(now)),
        relabelled=sorted(i for i in set(now) & set(before) if now[i] != before[i]),
    )


__all__ = [
    "CARD_NAME",
    "MANIFEST_NAME",
    "PublishedRelease",
    "ReleaseError",
    "create_release",
    "get_release",
    "labels_for_revisions",
    "list_releases",
    "releases_root",
    "reproduce_release",
    "verify_release",
]
