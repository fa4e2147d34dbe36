"""Photos and videos as the importers read them: which files a list of paths names, their pixels
(OpenCV, so EXIF orientation is applied as every reader of the store sees it), and a video's sampled
frames (every Nth, or N per second, decoded in order with their index and time).

`check_inputs` is the cheap look a command takes before it starts any flow: a file that is no
image (by its signature) or a video OpenCV cannot open fails at once, naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from schemas.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
NOT_IMAGE = "cannot read image (not an image, or a format OpenCV cannot decode)"
NOT_VIDEO = "cannot read video (not a video, or a codec OpenCV cannot decode)"


@dataclass(frozen=True)
class InputFile:
    """An image or video to import; `name` is its path under the input it was found in."""

    path: Path
    name: str
    video: bool


@dataclass(frozen=True)
class Sampling:
    """Which decoded video frames to keep: every `every`-th, or `fps` per second of video time."""

    every: int = 1
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise InputError("--every", f"must be >= 1, got {self.every}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise InputError("--fps", f"must be > 0, got {self.fps}")



def collect_inputs(paths: Sequence[str | Path]) -> tuple[list[InputFile], list[str]]:
    """Image and video files of `paths` (folders walked recursively, hidden entries and other files
    skipped with a reason); each file once. A missing path is an InputError."""
    found: dict[Path, InputFile] = {}
    skipped: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if any(part.startswith(".") for part in rel.parts) or not child.is_file():
                    continue
                kind = _kind(child)
                if kind is None:
                    skipped.append(f"{child}: not an image or video")
                    continue
                found.setdefault(child.resolve(), InputFile(child.resolve(), rel.as_posix(), kind == "video"))
        elif path.is_file():
            kind = _kind(path) or "image"  # an explicit file of another suffix: try it as an image
            found.setdefault(path.resolve(), InputFile(path.resolve(), path.name, kind == "video"))
        else:
            raise InputError(path, "no such file or folder")
    return list(found.values()), skipped


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def read_image(path: Path) -> NDArray[np.uint8]:
    """BGR pixels as every reader here sees them (cv2, EXIF orientation applied); InputError if unreadable."""
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None or pixels.size == 0:
        raise InputError(path, NOT_IMAGE)
    return np.asarray(pixels, dtype=np.uint8)


@dataclass(frozen=True)
class VideoFrame:
    index: int  # decoded frame number, from 0
    time_s: float | None  # index / fps; None when the file gives no frame rate
    fps: float | None
    pixels: NDArray[np.uint8]  # BGR


def video_fps(capture: cv2.VideoCapture) -> float | None:
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    return fps if math.isfinite(fps) and 0 < fps < 10_000 else None


def sampled(index: int, fps: float | None, sampling: Sampling, next_time: float) -> tuple[bool, float]:
    """Whether frame `index` is kept, and the next sample time: with `sampling.fps`, the first frame
    at or after each multiple of 1/fps seconds; else every `sampling.every`-th frame."""
    if sampling.fps is None:
        return index % sampling.every == 0, next_time
    assert fps is not None
    time = index / fps
    if time + 1e-9 < next_time:
        return False, next_time
    while next_time <= time + 1e-9:
        next_time += 1.0 / sampling.fps
    return True, next_time


def video_frames(path: Path, sampling: Sampling) -> Iterator[VideoFrame]:
    """The sampled frames of a video, decoded in order (no seeking: containers seek unreliably);
    InputError when OpenCV cannot open it or decodes no frame."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(path, NOT_VIDEO)
        fps = video_fps(capture)
        if sampling.fps is not None and fps is None:
            raise InputError(path, "the video gives no frame rate: sample it with --every N instead of --fps")
        index, next_time = 0, 0.0
        while capture.grab():
            keep, next_time = sampled(index, fps, sampling, next_time)
            if keep:
                ok, pixels = capture.retrieve()
                if ok and pixels is not None:
                    yield VideoFrame(index, index / fps if fps else None, fps,
                                     np.asarray(pixels, dtype=np.uint8))
            index += 1
        if index == 0:
            raise InputError(path, "cannot read video: no frame could be decoded")
    finally:
        capture.release()


def check_inputs(paths: Sequence[str | Path]) -> list[InputFile]:
    """The inputs of `paths`, each looked at without decoding it all: an image's signature must be one
    OpenCV reads, a video must open and give a first frame. InputError naming the first bad file."""
    inputs, _ = collect_inputs(paths)
    for item in inputs:
        if item.video:
            capture = cv2.VideoCapture(str(item.path))
            try:
                if not capture.isOpened() or not capture.grab():
                    raise InputError(item.path, NOT_VIDEO)
            finally:
                capture.release()
        elif not cv2.haveImageReader(str(item.path)):
            raise InputError(item.path, NOT_IMAGE)
    return inputs
