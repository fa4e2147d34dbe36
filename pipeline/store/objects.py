"""The store's own copy of every image: content-addressed, written once, never rewritten.

`$SPINETRACK_HOME/objects/ab/ab12...ef.png` holds exactly the bytes whose sha256 names it. Ingest
and import copy each new image here when they register it (the bytes they hashed: a copy, never a
link to the source), and the image's `path` is this copy. So a render folder re-rendered in place,
a real photo edited, or a Label Studio media file rewritten cannot change what the store labelled,
what a model trained on, or what a release holds. Releases hard-link these files, so an object
shares its inode only with releases; nothing writes it after it is made (mode 0444, made by a
rename of a finished file, so a reader never sees half an object).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

from schemas.errors import InputError

OBJECTS_DIR = "objects"

#: Files up to this size are read in one call (images are); larger ones in blocks.
_BLOCK = 1 << 20


def objects_root(home: Path) -> Path:
    """Where the store keeps its copies: `$SPINETRACK_HOME/objects`."""
    return home / OBJECTS_DIR


def object_path(home: Path, sha256: str, suffix: str) -> Path:
    """The copy of the image with content `sha256` (its file suffix kept, lower case)."""
    return objects_root(home) / sha256[:2] / f"{sha256}{suffix.lower()}"


def is_object(home: Path, path: str | Path) -> bool:
    """Whether `path` is one of the store's copies (such an image has nothing left to capture)."""
    return Path(path).parent.parent == objects_root(home)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checked(path: str | Path, sha256: str | None, *, what: str = "image") -> tuple[bytes, str]:
    """The bytes of `path` and their sha256; InputError when they are not the `sha256` expected
    (the file changed since it was hashed) or the file cannot be read."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise InputError(path, f"{what} file is missing", field="path") from None
    digest = digest_of(data)
    if sha256 is not None and digest != sha256:
        raise InputError(path, f"{what} changed since it was read (sha256 {digest[:12]}, expected "
                               f"{sha256[:12]}): a changed source is a new image, ingest it again",
                         field="sha256")
    return data, digest


def put_bytes(home: Path, data: bytes, sha256: str, suffix: str) -> Path:
    """Store `data` (whose sha256 the caller checked) as an object; an intact object is reused.

    The new file is written beside its final name, made read-only and linked into place, so an
    object that exists is complete and is never replaced while intact (its inode never changes)."""
    dst = object_path(home, sha256, suffix)
    if dst.is_file() and _intact(dst, sha256):
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.{os.getpid()}.{id(data):x}.partial")
    try:
        with open(partial, "wb") as fh:
            fh.write(data)
        partial.chmod(0o444)
        try:
            os.link(partial, dst)  # an existing object stays (another writer made the same bytes)
        except FileExistsError:
            if not _intact(dst, sha256):  # a damaged copy (e.g. a crash before the disk had it)
                os.replace(partial, dst)
    finally:
        partial.unlink(missing_ok=True)
    return dst


def capture(home: Path, source: str | Path, sha256: str | None = None) -> tuple[Path, str]:
    """Copy the file `source` into the objects (checked against `sha256` when given);
    (object path, sha256). Reads the file once: the object holds the bytes that were hashed."""
    data, digest = read_checked(source, sha256)
    return put_bytes(home, data, digest, Path(source).suffix), digest


def checked_object(home: Path, sha256: str, suffix: str, source: str | Path) -> Path:
    """The intact object of an image, made from `source` when missing or damaged (stores from
    before objects existed); InputError when neither holds the bytes the image was ingested with."""
    dst = object_path(home, sha256, suffix)
    if dst.is_file() and _intact(dst, sha256):
        return dst
    if Path(source) == dst:
        raise InputError(dst, "the store's copy of this image is damaged (sha256 differs) and there is "
                              "no source to restore it from: restore the store from a backup",
                         field="sha256")
    try:
        data = Path(source).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise InputError(source, "image of a released label is missing (and the store has no copy)",
                         field="path") from None
    if digest_of(data) != sha256:
        raise InputError(source, "image changed since it was ingested (sha256 differs) and the store "
                                 "has no copy of the ingested bytes", field="sha256")
    return put_bytes(home, data, sha256, suffix)


def link_or_copy(src: Path, dst: Path, *, link: bool = True) -> bool:
    """Hard-link `src` to `dst`, or copy it (across file systems, or `link=False`); the copy is
    read-only. Returns whether linking still works (False after an EXDEV)."""
    if link:
        try:
            os.link(src, dst)
            return True
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            link = False
    shutil.copyfile(src, dst)
    dst.chmod(0o444)
    return link


def _intact(path: Path, sha256: str) -> bool:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest() == sha256


__all__ = [
    "OBJECTS_DIR",
    "capture",
    "checked_object",
    "digest_of",
    "is_object",
    "link_or_copy",
    "object_path",
    "objects_root",
    "put_bytes",
    "read_checked",
]
