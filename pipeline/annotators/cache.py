"""Remember a fixed annotator's poses, so a person is seen by a slow body expert once.

A round pseudo-labels its whole pool with the combined annotator, scores it on the real
validation split, and the next round does both again with a new student; the body expert
(BlazePose, an ONNX or mmpose file) is the same every time and gives the same answer for the same
pixels and box. `CachedAnnotator` keys each pose by the expert's identity (name + sha256 of its
weights and settings), the image's content (sha256 of the file or array bytes) and the box, and
keeps it in a SQLite file beside the store (`$SPINETRACK_HOME/cache/annotators.sqlite`). A changed
image, box or model is a different key: the cache can go stale only by being deleted, which is
always safe. Floats go through JSON unchanged (Python writes the shortest exact repr), so a cached
pose equals the computed one bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.annotators.base import Annotator, BaseAnnotator, ImageInput, PersonPose, boxes_array

CACHE_FILE = "annotators.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS poses (
    annotator TEXT NOT NULL, image TEXT NOT NULL, box TEXT NOT NULL, pose TEXT NOT NULL,
    PRIMARY KEY (annotator, image, box))"""


def cache_path(home: Path) -> Path:
    return home / "cache" / CACHE_FILE


class _ImageKeys:
    """sha256 of image content; a file is hashed once per (path, size, mtime)."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, int, int], str] = {}

    def __call__(self, image: ImageInput) -> str:
        if isinstance(image, (str, Path)):
            path = Path(image)
            stat = path.stat()
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if key not in self._files:
                self._files[key] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
            return self._files[key]
        arr = np.ascontiguousarray(image)
        digest = hashlib.sha256(repr((arr.shape, arr.dtype.str)).encode())
        digest.update(arr.tobytes())
        return "array:" + digest.hexdigest()


def _box_key(box: np.ndarray) -> str:
    return json.dumps([float(v) for v in box])


def _encode(pose: PersonPose) -> str:
    def arr(value: np.ndarray | None) -> list[Any] | None:
        return None if value is None else np.asarray(value).tolist()

    return json.dumps({
        "keypoints": arr(pose.keypoints), "confidence": arr(pose.confidence),
        "covered": arr(pose.covered), "origin": pose.origin, "raw_scores": arr(pose.raw_scores),
        "flip_keypoints": arr(pose.flip_keypoints),
        "features": None if pose.features is None else np.asarray(pose.features).tolist(),
        "detail": pose.detail,
    }, default=_encode_array)


def _encode_array(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot cache a {type(value).__name__} in a pose's detail")


def _decode_array(value: dict[str, Any]) -> Any:
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
    return value


def _decode(text: str, bbox: np.ndarray, image_index: int, box_index: int) -> PersonPose:
    d = json.loads(text, object_hook=_decode_array)

    def arr(value: list[Any] | None, dtype: Any = np.float64) -> Any:
        return None if value is None else np.asarray(value, dtype=dtype)

    return PersonPose(
        keypoints=arr(d["keypoints"]), confidence=arr(d["confidence"]),
        covered=arr(d["covered"], np.bool_), origin=list(d["origin"]),
        bbox=np.asarray(bbox, dtype=np.float64), image_index=image_index, box_index=box_index,
        raw_scores=arr(d["raw_scores"]), flip_keypoints=arr(d["flip_keypoints"]),
        features=arr(d["features"], np.float32), detail=d["detail"],
    )


class CachedAnnotator(BaseAnnotator):
    """`inner` (deterministic, fixed weights) with its poses kept in a SQLite file."""

    def __init__(self, inner: Annotator, path: Path, settings: dict[str, Any] | None = None) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.covers = inner.covers
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # settings the identity does not carry (BlazePose's retry, the device) are part of the key
        self._key = json.dumps({**inner.identity.as_json(), "settings": settings or {}}, sort_keys=True)
        self._images = _ImageKeys()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        with self._connect() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # several processes (Dask workers) may share the file: wait for a writer rather than fail
        db = sqlite3.connect(self.path, timeout=60)
        try:
            with db:  # one transaction, committed on success
                yield db
        finally:
            db.close()

    def __getattr__(self, name: str) -> Any:
        # what the wrapped annotator offers beyond the protocol (stats, close, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def predict(self, image: ImageInput, boxes: Sequence[Sequence[float]]) -> list[PersonPose]:
        return self.predict_many([image], [boxes])

    def predict_many(self, images: Sequence[ImageInput],
                     boxes: Sequence[Sequence[Sequence[float]]]) -> list[PersonPose]:
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        arrays = [boxes_array(b) for b in boxes]
        keys = [self._images(img) if len(arr) else "" for img, arr in zip(images, arrays, strict=True)]
        box_keys = [[_box_key(box) for box in arr] for arr in arrays]
        stored = self._lookup(keys)
        missing = [i for i, names in enumerate(box_keys) if any((keys[i], b) not in stored for b in names)]
        computed: dict[tuple[str, str], PersonPose] = {}
        if missing:
            fresh = self.inner.predict_many([images[i] for i in missing],
                                            [arrays[i].tolist() for i in missing])
            for pose in fresh:
                i = missing[pose.image_index]
                computed[(keys[i], box_keys[i][pose.box_index])] = pose
            self._store(computed)
        out: list[PersonPose] = []
        for i, arr in enumerate(arrays):
            for j, box in enumerate(arr):
                key = (keys[i], box_keys[i][j])
                if key in computed:
                    pose = computed[key]
                    pose.image_index, pose.box_index = i, j
                    self.misses += 1
                else:
                    pose = _decode(stored[key], box, i, j)
                    self.hits += 1
                out.append(pose)
        return out

    def _lookup(self, keys: list[str]) -> dict[tuple[str, str], str]:
        wanted = sorted({k for k in keys if k})
        found: dict[tuple[str, str], str] = {}
        with self._lock, self._connect() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute("SELECT image, box, pose FROM poses WHERE annotator = ? "
                                  f"AND image IN ({marks})", [self._key, *chunk])
                found.update({(image, box): pose for image, box, pose in rows})
        return found

    def _store(self, poses: dict[tuple[str, str], PersonPose]) -> None:
        rows = [(self._key, image, box, _encode(pose)) for (image, box), pose in poses.items()]
        with self._lock, self._connect() as db:
            db.executemany("INSERT OR IGNORE INTO poses (annotator, image, box, pose) "
                           "VALUES (?, ?, ?, ?)", rows)
