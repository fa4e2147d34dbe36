"""Backup and restore of a whole store: its database, the images it owns, its models.

`backup(store, DIR)` writes, into a staging folder renamed to DIR at the end:

    backup.json       format, when, the home it came from, the database kind and Alembic revision,
                      every file with its sha256 and size, the releases it can rebuild
    store.sqlite      SQLite's online backup of the database (a consistent copy while others write)
    store.pgdump      or `pg_dump --format=custom` of a PostgreSQL store
    objects/ media/ models/ stats/   the store's image copies, Label Studio media, model registry
                      (checkpoints) and fitted statistics, copied from $SPINETRACK_HOME

The database is copied first: every file a row of it names was written before the row, so the
copy holds it. Releases are not copied: `restore` rebuilds each one from the database and the
images with `reproduce_release`, byte for byte (a difference is an error), which proves the
restored store is the one that made them.

`restore(DIR, home, url)` checks every file against backup.json, refuses a store that already has
data, copies the files, loads the database (SQLite file or `pg_restore --single-transaction`),
moves paths under the old home to the new one, migrates to head and rebuilds the releases. An
interrupted restore can be run again: files already in place with the right bytes are kept.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, select, text, update
from sqlalchemy.engine import Engine, make_url

from pipeline.release.build import (
    get_release,
    list_releases,
    releases_root,
    reproduce_release,
    verify_release,
)
from pipeline.store import Store
from pipeline.store.models import Image, ModelVersion, Release
from pipeline.store.objects import checked_object, object_path
from schemas.errors import InputError

BACKUP_FORMAT = 1
MANIFEST = "backup.json"
SQLITE_FILE = "store.sqlite"
PG_FILE = "store.pgdump"
#: Folders of $SPINETRACK_HOME a backup holds (releases are rebuilt; caches and reports are not kept).
TREES = ("objects", "media", "models", "stats")
PG_BIN_ENV = "SPINETRACK_PG_BIN"


@dataclass
class BackupSummary:
    path: Path
    database: str
    files: int = 0
    bytes: int = 0
    releases: list[str] = field(default_factory=list)
    images_without_bytes: list[int] = field(default_factory=list)  # neither a copy nor the source left


@dataclass
class RestoreSummary:
    home: Path
    database: str
    files: int = 0
    releases: list[str] = field(default_factory=list)
    moved_from: str | None = None


# -- backup -------------------------------------------------------------------------------------
def backup(store: Store, out: str | Path) -> BackupSummary:
    """Back the store up into the new or empty folder `out` (written aside, renamed at the end)."""
    target = Path(out).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(target, "backup folder exists and is not empty: give a new folder", field="DIR")
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        missing = _copies_of_every_image(store)
        kind, revision = _dump_database(store, staging)  # first: the files its rows name exist already
        files = [entry for tree in TREES for entry in _copy_tree(store.home / tree, staging / tree, tree)]
        summary = BackupSummary(target, kind, len(files), sum(f["bytes"] for f in files),
                                list_releases(store), missing)
        manifest = {
            "format": BACKUP_FORMAT,
            "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "home": str(store.home),
            "database": {"kind": kind, "file": SQLITE_FILE if kind == "sqlite" else PG_FILE,
                         "alembic_revision": revision,
                         "sha256": _sha256(staging / (SQLITE_FILE if kind == "sqlite" else PG_FILE))},
            "files": files,
            "releases": summary.releases,
            "images_without_bytes": missing,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _copies_of_every_image(store: Store) -> list[int]:
    """Make the store's copy of any image that has none yet (stores from before objects existed),
    from its source if that still has the ingest hash; the ids of images with no bytes left."""
    missing = []
    with store.session() as s:
        rows = s.execute(select(Image.id, Image.sha256, Image.path)).all()
    for image_id, digest, path in rows:
        if object_path(store.home, digest, Path(path).suffix).is_file():
            continue
        try:
            checked_object(store.home, digest, Path(path).suffix, path)
        except InputError:
            missing.append(int(image_id))
    return missing


def _dump_database(store: Store, out: Path) -> tuple[str, str | None]:
    """Copy the database into `out`; (kind, Alembic revision)."""
    revision = _alembic_revision(store.engine)
    kind = store.engine.dialect.name
    if kind == "sqlite":
        source = sqlite3.connect(str(store.engine.url.database))
        copy = sqlite3.connect(str(out / SQLITE_FILE))
        try:
            source.backup(copy)  # SQLite's online backup: consistent while other processes write
        finally:
            copy.close()
            source.close()
        return kind, revision
    if kind == "postgresql":
        _run_pg("pg_dump", ["--format=custom", "--no-owner", "--no-privileges",
                            f"--file={out / PG_FILE}", f"--dbname={_libpq_url(store.url)}"])
        return kind, revision
    raise InputError(store.url, f"backup supports SQLite and PostgreSQL stores, not {kind}", field="database")


def _alembic_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if "alembic_version" not in inspect(conn).get_table_names():
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _copy_tree(source: Path, dest: Path, name: str) -> list[dict[str, Any]]:
    """Copy every finished file below `source` (not the partial files of a writer at work);
    their manifest entries (path relative to the backup, sha256, bytes)."""
    entries = []
    for path in _files_below(source):
        data = path.read_bytes()
        rel = path.relative_to(source)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entries.append({"path": f"{name}/{rel.as_posix()}", "sha256": hashlib.sha256(data).hexdigest(),
                        "bytes": len(data)})
    return entries


def _files_below(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if not (name.startswith(".") and (".partial" in name or name.endswith(".tmp"))):
                yield Path(folder) / name


# -- restore ------------------------------------------------------------------------------------
def restore(source: str | Path, *, home: Path, url: str | None = None) -> RestoreSummary:
    """Restore the backup in `source` into `home` (and the database at `url`, default SQLite
    under `home`), which must hold no store yet; rebuilds and verifies every release."""
    folder = Path(source).resolve()
    manifest = read_manifest(folder)
    home = home.resolve()
    target_url = url or f"sqlite:///{home / SQLITE_FILE}"
    database = manifest["database"]
    kind = make_url(target_url).get_backend_name()
    if kind != database["kind"]:
        raise InputError(folder / MANIFEST, f"a {database['kind']} backup cannot be restored into a "
                                            f"{kind} store", field="database.kind")
    _check_files(folder, manifest)
    _refuse_existing_store(home, target_url, kind)
    home.mkdir(parents=True, exist_ok=True)
    for entry in manifest["files"]:
        _put(folder / entry["path"], home / entry["path"], entry["sha256"])
    _load_database(folder / database["file"], home, target_url, kind)
    summary = RestoreSummary(home, kind, len(manifest["files"]))
    engine = create_engine(target_url)
    try:
        if manifest["home"] != str(home):
            _move_paths(engine, manifest["home"], str(home))
            summary.moved_from = manifest["home"]
    finally:
        engine.dispose()
    with Store.open(target_url, home=home) as store:  # migrates an older backup to head
        summary.releases = _rebuild_releases(store)
    return summary


def read_manifest(folder: Path) -> dict[str, Any]:
    """backup.json of a backup folder; InputError naming the file and field when it is unusable."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "not a SpineTrack backup (no backup.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the backup manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise InputError(path, "the backup manifest is not a JSON object")
    if manifest.get("format") != BACKUP_FORMAT:
        raise InputError(path, f"backup format {manifest.get('format')!r} is not {BACKUP_FORMAT}",
                         field="format")
    for key in ("home", "database", "files"):
        if key not in manifest:
            raise InputError(path, "missing", field=key)
    return manifest


def _check_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file of the backup, database included, has the bytes the manifest records."""
    database = manifest["database"]
    wanted = [(database["file"], database["sha256"])] + [(f["path"], f["sha256"]) for f in manifest["files"]]
    for rel, digest in wanted:
        path = folder / rel
        if not path.is_file():
            raise InputError(path, "file of the backup is missing", field="files")
        if _sha256(path) != digest:
            raise InputError(path, "differs from the backup manifest (sha256): the backup is damaged",
                             field="sha256")


def _refuse_existing_store(home: Path, url: str, kind: str) -> None:
    """Restore never overwrites: the target database must hold no store."""
    if kind == "sqlite":
        database = Path(make_url(url).database or "")
        if database.exists():
            raise InputError(database, "a store exists here: restore into a new SPINETRACK_HOME "
                                       "(or move this one away first)", field="SPINETRACK_HOME")
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if inspect(conn).get_table_names():
                raise InputError(make_url(url).render_as_string(hide_password=True),
                                 "the database is not empty: restore into a new database",
                                 field="SPINETRACK_DB_URL")
    finally:
        engine.dispose()


def _put(source: Path, dest: Path, digest: str) -> None:
    """Copy one backed-up file into place (kept if already there with these bytes; a different
    file is never overwritten). The store's image copies are read-only."""
    if dest.is_file():
        if _sha256(dest) == digest:
            return
        raise InputError(dest, "a different file is in the way of the restore", field="path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.copyfile(source, partial)
    if dest.parent.parent.name == "objects":
        partial.chmod(0o444)
    os.replace(partial, dest)


def _load_database(dump: Path, home: Path, url: str, kind: str) -> None:
    """The database from the backup: the SQLite file (renamed into place last, so a store exists
    only once it is whole) or pg_restore in one transaction."""
    if kind == "sqlite":
        database = Path(make_url(url).database or home / SQLITE_FILE)
        partial = database.with_name(f".{database.name}.restoring")
        shutil.copyfile(dump, partial)
        os.replace(partial, database)
        return
    _run_pg("pg_restore", ["--single-transaction", "--no-owner", "--no-privileges",
                           f"--dbname={_libpq_url(url)}", str(dump)])


def _move_paths(engine: Engine, old: str, new: str) -> None:
    """Paths under the backed-up home now live under the restored one (images' copies, model
    checkpoints, release folders); paths outside it (sources) are left as they were."""
    prefix, moved = old.rstrip("/") + "/", new.rstrip("/") + "/"
    columns = ((Image.path, Image.id), (ModelVersion.checkpoint_path, ModelVersion.name),
               (Release.path, Release.version))
    with engine.begin() as conn:
        for column, key in columns:
            rows = conn.execute(select(key, column).where(column.startswith(prefix, autoescape=True))).all()
            for ident, path in rows:
                conn.execute(update(column.class_).where(key == ident)
                             .values({column.key: moved + path[len(prefix):]}))


def _rebuild_releases(store: Store) -> list[str]:
    """Every release folder again, from the store alone, byte for byte (written aside, renamed)."""
    done = []
    for version in list_releases(store):
        final = get_release(store, version).path
        if not final.exists():
            staging = releases_root(store) / f".{version}.restoring-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            reproduce_release(store, version, staging)
            staging.rename(final)
        problems = verify_release(final)
        if problems:
            raise InputError(final, f"rebuilt release differs: {'; '.join(problems[:3])}", field="release")
        done.append(version)
    return done


# -- helpers ------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _libpq_url(url: str) -> str:
    """The store's SQLAlchemy URL as libpq understands it (no `+driver`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_tool(name: str) -> str:
    """pg_dump / pg_restore: $SPINETRACK_PG_BIN, the PATH, or the newest Debian PostgreSQL."""
    folder = os.environ.get(PG_BIN_ENV)
    if folder and (Path(folder) / name).is_file():
        return str(Path(folder) / name)
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise InputError(name, f"not found: install the PostgreSQL client tools or set ${PG_BIN_ENV}",
                     field="PATH")


def _run_pg(name: str, args: list[str]) -> None:
    done = subprocess.run([pg_tool(name), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise InputError(name, f"failed ({done.returncode}): {message[-1] if message else ''}",
                         field="database")


__all__ = ["BACKUP_FORMAT", "MANIFEST", "TREES", "BackupSummary", "RestoreSummary", "backup",
           "pg_tool", "read_manifest", "restore"]
