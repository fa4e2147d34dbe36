"""Read one rendered sequence folder (the render contract) and check it is complete before any work.

Everything that can be checked cheaply is checked up front — JSON lines, frame counts, that every
frame file exists and has the declared size — so a bad folder fails in a second with a message
naming the file and field, instead of half-way through IK.

File formats (docs/render-contract.md): depth as OpenEXR (what Unreal's Movie Render Queue writes;
float cm, read with OpenCV's EXR codec, which needs ``OPENCV_IO_ENABLE_OPENEXR=1`` before first use),
float32 ``.npy`` (cm) or 16-bit PNG (mm); masks as 8/16-bit actor ids or 8-bit custom-stencil
values (grey or RGB with equal channels, as a post-process material writes them).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

# OpenCV reads this when it first decodes an EXR, so it must be set before any cv2 EXR call.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2

from schemas.errors import InputError
from schemas.render import (
    BONES_FILE,
    CAMERAS_FILE,
    DEPTH_DIR,
    MASK_DIR,
    REQUIRED_BONES,
    RGB_DIR,
    SEQUENCE_FILE,
    BoneFrame,
    CameraFrame,
    SequenceInfo,
    frame_name,
    load_bones,
    load_cameras,
    load_sequence_info,
)
from synthetic.camera import Camera

#: Depth PNGs hold uint16 millimetres; 0 means "no hit".
DEPTH_PNG_MM_PER_UNIT = 1.0
#: Depth suffixes in order of preference (one per folder).
DEPTH_SUFFIXES = (".exr", ".npy", ".png")
#: Scene depth at or beyond this (cm) is "no hit": Unreal writes the far plane / sky as huge values
#: (65504 is the largest half float).
DEPTH_NO_HIT_CM = 65000.0


def write_depth(path: Path, depth_cm: NDArray[np.float32]) -> None:
    """Write planar depth (H, W) cm in the format of `path`'s suffix (+inf = no hit)."""
    depth = np.asarray(depth_cm, dtype=np.float32)
    if path.suffix == ".npy":
        np.save(path, depth)
    elif path.suffix == ".exr":
        flags = [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_FLOAT]
        if not cv2.imwrite(str(path), depth, flags):
            raise OSError(f"OpenCV could not write {path} (EXR codec disabled?)")
    elif path.suffix == ".png":
        mm = np.where(np.isfinite(depth), np.clip(np.rint(depth * 10.0), 1, 65535), 0).astype(np.uint16)
        if not cv2.imwrite(str(path), mm):
            raise OSError(f"OpenCV could not write {path}")
    else:
        raise ValueError(f"unknown depth format {path.suffix!r}; use one of {DEPTH_SUFFIXES}")


def read_exr_depth(path: Path, size: tuple[int, int]) -> NDArray[np.float32]:
    """Depth (H, W) cm from an EXR: one channel, or RGB(A) with depth in R (Movie Render Queue)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(path, "unreadable OpenEXR depth (is OPENCV_IO_ENABLE_OPENEXR=1 honoured?)")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 2]  # OpenCV orders channels B, G, R(, A)
    if (arr.shape[1], arr.shape[0]) != size:
        raise InputError(path, f"image size {(arr.shape[1], arr.shape[0])} differs from sequence.json {size}")
    if arr.dtype.kind != "f":
        raise InputError(path, f"EXR depth must be float (cm), got {arr.dtype}")
    depth = arr.astype(np.float32)
    depth[~np.isfinite(depth) | (depth >= DEPTH_NO_HIT_CM) | (depth <= 0)] = np.inf
    return depth


@dataclass(frozen=True)
class RenderSequence:
    """A validated sequence folder. Frame images are loaded on demand."""

    folder: Path
    info: SequenceInfo
    camera_frames: list[CameraFrame]
    bones: dict[tuple[int, int], BoneFrame]
    depth_suffix: str | None  # ".exr" | ".npy" | ".png" | None (no depth/)
    has_mask: bool

    @property
    def sequence_id(self) -> str:
        return self.info.sequence_id

    @property
    def frame_count(self) -> int:
        return self.info.frame_count

    @property
    def actor_ids(self) -> list[int]:
        return [a.id for a in self.info.actors]

    def camera(self, frame: int) -> Camera:
        rec = self.camera_frames[frame].model_dump()
        return Camera.from_record(rec, self.info.image_width, self.info.image_height)

    def rgb_path(self, frame: int) -> Path:
        return self._rgb_paths[frame]

    def depth_path(self, frame: int) -> Path | None:
        return None if self._depth_paths is None else self._depth_paths[frame]

    def mask_path(self, frame: int) -> Path | None:
        return None if self._mask_paths is None else self._mask_paths[frame]

    # every frame's paths built once: pathlib joins cost more than the ingest's other per-frame work
    @cached_property
    def _rgb_paths(self) -> tuple[Path, ...]:
        return _frame_paths(self.folder / RGB_DIR, ".png", self.frame_count)

    @cached_property
    def _depth_paths(self) -> tuple[Path, ...] | None:
        if self.depth_suffix is None:
            return None
        return _frame_paths(self.folder / DEPTH_DIR, self.depth_suffix, self.frame_count)

    @cached_property
    def _mask_paths(self) -> tuple[Path, ...] | None:
        return _frame_paths(self.folder / MASK_DIR, ".png", self.frame_count) if self.has_mask else None

    @cached_property
    def _npy_reader(self) -> _NpyFrames:
        return _NpyFrames((self.info.image_height, self.info.image_width))

    def bone_positions(self, actor: int, names: tuple[str, ...] = REQUIRED_BONES) -> NDArray[np.float64]:
        """(frames, len(names), 3) Unreal cm for one actor; NaN where an optional bone is absent."""
        out = np.full((self.frame_count, len(names), 3), np.nan)
        for f in range(self.frame_count):
            bones = self.bones[(f, actor)].bones
            for j, name in enumerate(names):
                if name in bones:
                    out[f, j] = bones[name]
        return out

    def load_depth(self, frame: int) -> NDArray[np.float32] | None:
        """Planar scene depth (H, W) float32 cm; +inf where the ray hit nothing."""
        path = self.depth_path(frame)
        if path is None:
            return None
        h, w = self.info.image_height, self.info.image_width
        if self.depth_suffix == ".exr":
            return read_exr_depth(path, (w, h))
        if self.depth_suffix == ".npy":
            arr = self._npy_reader.read(path)
            depth = arr.astype(np.float32, copy=False)  # a fresh array: no second copy
            depth[np.isnan(depth)] = np.inf
            return depth
        raw = _read_png(path, (w, h))
        if raw.dtype != np.uint16:
            raise InputError(path, f"depth PNG must be 16-bit (uint16 millimetres), got {raw.dtype}")
        depth = raw.astype(np.float32) * np.float32(DEPTH_PNG_MM_PER_UNIT / 10.0)
        depth[raw == 0] = np.inf
        return depth

    def load_mask(self, frame: int) -> NDArray[np.int32] | None:
        """Actor id per pixel (H, W); 0 is background. Custom-stencil masks are mapped to actor ids."""
        path = self.mask_path(frame)
        if path is None:
            return None
        raw = _read_png(path, (self.info.image_width, self.info.image_height))
        stencils = self.info.stencil_to_actor
        if raw.ndim == 3 and stencils is not None:
            # a stencil buffer written through a colour target: grey, every channel the same value
            channels = raw[..., :3]
            if not (np.array_equal(channels[..., 0], channels[..., 1])
                    and np.array_equal(channels[..., 0], channels[..., 2])):
                raise InputError(path, "custom-stencil mask has different R, G, B values; expected grey")
            raw = channels[..., 0]
        if raw.ndim != 2:
            raise InputError(path, f"mask must be single-channel (actor id per pixel), got shape {raw.shape}")
        if stencils is None:
            return raw.astype(np.int32)
        if raw.dtype != np.uint8:
            raise InputError(path, f"custom-stencil masks are 8-bit, got {raw.dtype}")
        lut = np.zeros(256, dtype=np.int32)  # unknown stencil values (props, other meshes): background
        for value, actor in stencils.items():
            lut[value] = actor
        return lut[raw]

    def frame_files(self) -> Iterator[Path]:
        """Every file the contract names, in a fixed order (for content hashing)."""
        for name in (SEQUENCE_FILE, CAMERAS_FILE, BONES_FILE):
            yield self.folder / name
        for f in range(self.frame_count):
            yield self.rgb_path(f)
            for p in (self.depth_path(f), self.mask_path(f)):
                if p is not None:
                    yield p


def _frame_paths(directory: Path, suffix: str, frame_count: int) -> tuple[Path, ...]:
    base = str(directory)
    return tuple(Path(f"{base}/{frame_name(f, suffix)}") for f in range(frame_count))


class _NpyFrames:
    """Reads a sequence's depth ``.npy`` frames: a file whose header bytes equal the last parsed
    header is read straight into an array (``np.load`` parses every header with ``ast.literal_eval``,
    a compile per frame); any other header goes through ``np.load`` and becomes the kept one."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.header = b""
        self.dtype: np.dtype[Any] | None = None

    def read(self, path: Path) -> NDArray[np.floating[Any]]:
        try:
            with path.open("rb") as fh:
                if self.header and fh.read(len(self.header)) == self.header:
                    assert self.dtype is not None
                    arr = np.fromfile(fh, dtype=self.dtype, count=self.shape[0] * self.shape[1])
                    if arr.size == self.shape[0] * self.shape[1]:
                        return arr.reshape(self.shape)
                    raise ValueError(f"{arr.size} values, header says {self.shape}")
                fh.seek(0)
                arr = np.load(fh, allow_pickle=False)
                header_len = fh.tell() - arr.nbytes
                fh.seek(0)
                header = fh.read(max(header_len, 0))
        except (OSError, ValueError) as exc:
            raise InputError(path, f"unreadable depth array: {exc}") from exc
        if arr.shape != self.shape or arr.dtype.kind != "f":
            h, w = self.shape
            raise InputError(path, f"expected float (H, W)=({h}, {w}) cm, got {arr.dtype} {arr.shape}")
        c_order = b"'fortran_order': False" in header
        if not arr.dtype.hasobject and arr.flags.c_contiguous and c_order:
            self.header, self.dtype = header, arr.dtype
        return arr


#: PNG file signature and the IHDR chunk that must follow it (width, height, bit depth, colour type).
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GREY = 0


def _png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's first 26 bytes; None if not a PNG."""
    if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height, data[24], data[25]


def _read_png(path: Path, size: tuple[int, int]) -> NDArray[np.generic]:
    """The pixels of a PNG as PIL gives them (grey 8/16-bit ones decoded by OpenCV: 2x faster)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"unreadable PNG: {exc}") from exc
    header = _png_header(data)
    if header is not None and header[3] == _PNG_GREY and header[2] in (8, 16):
        if header[:2] != size:
            raise InputError(path, f"image size {header[:2]} differs from sequence.json {size}")
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.shape == (size[1], size[0]):
            return np.asarray(arr)
    try:
        with Image.open(path) as img:
            if img.size != size:
                raise InputError(path, f"image size {img.size} differs from sequence.json {size}")
            arr = np.asarray(img)
    except (OSError, SyntaxError) as exc:
        raise InputError(path, f"unreadable PNG: {exc}") from exc
    return arr


def _check_frame_dir(folder: Path, sub: str, suffixes: tuple[str, ...], frame_count: int) -> str:
    """All frames 0..N-1 present with one suffix, nothing extra; returns the suffix used."""
    directory = folder / sub
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    used = {p.suffix for p in files if p.suffix in suffixes}
    if len(used) > 1:
        raise InputError(directory, f"mixes {sorted(used)} files; use one format per folder")
    suffix = used.pop() if used else suffixes[0]
    for f in range(frame_count):
        path = directory / frame_name(f, suffix)
        if not path.is_file():
            raise InputError(
                path, f"missing frame file (sequence.json frame_count={frame_count})", field="frame"
            )
    expected = {frame_name(f, suffix) for f in range(frame_count)}
    extra = [p.name for p in files if p.suffix == suffix and p.name not in expected]
    if extra:
        raise InputError(
            directory,
            f"frame count mismatch: {len(extra)} frame file(s) beyond frame_count={frame_count}: {extra[:5]}",
            field="frame_count",
        )
    return suffix


def read_sequence(folder: str | Path, *, check_image_sizes: bool = True) -> RenderSequence:
    """Validate a sequence folder and return its parsed contents; raises InputError on any defect."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a directory (expected a rendered sequence folder)")
    info = load_sequence_info(folder / SEQUENCE_FILE)
    cameras = load_cameras(folder / CAMERAS_FILE, info.frame_count)
    bones = load_bones(folder / BONES_FILE, info.frame_count, [a.id for a in info.actors], info.bone_renames)
    if not (folder / RGB_DIR).is_dir():
        raise InputError(folder / RGB_DIR, "missing rgb/ folder")
    _check_frame_dir(folder, RGB_DIR, (".png",), info.frame_count)
    depth_suffix = None
    if (folder / DEPTH_DIR).is_dir():
        depth_suffix = _check_frame_dir(folder, DEPTH_DIR, DEPTH_SUFFIXES, info.frame_count)
    has_mask = (folder / MASK_DIR).is_dir()
    if has_mask:
        _check_frame_dir(folder, MASK_DIR, (".png",), info.frame_count)
    seq = RenderSequence(folder.resolve(), info, cameras, bones, depth_suffix, has_mask)
    if check_image_sizes:
        size = (info.image_width, info.image_height)
        for f in range(info.frame_count):
            depth = seq.depth_path(f)
            if depth is not None and depth.suffix == ".npy":
                _check_npy(depth, size)
            depth_png = depth if depth is not None and depth.suffix == ".png" else None
            pngs = (seq.rgb_path(f), seq.mask_path(f), depth_png)
            for path in pngs:
                if path is None:
                    continue
                header = _png_header(_head(path))
                if header is not None:
                    if _tail(path) != _PNG_END:  # cut short: nothing of a broken frame is stored
                        raise InputError(path, "truncated PNG (it does not end with the IEND chunk)")
                    found = header[:2]
                else:  # not a PNG by its signature: PIL names what it is (or is not)
                    try:
                        with Image.open(path) as img:  # reads the header only
                            found = img.size
                    except OSError as exc:
                        raise InputError(path, f"unreadable PNG: {exc}") from exc
                if found != size:
                    raise InputError(
                        path, f"image size {found} differs from sequence.json {size}", field="image_width"
                    )
    return seq


#: The last 12 bytes of every complete PNG: the empty IEND chunk and its CRC.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _tail(path: Path, size: int = 12) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - size))
            return fh.read(size)
    except OSError:
        return b""


def _check_npy(path: Path, size: tuple[int, int]) -> None:
    """A depth .npy frame is a numeric (H, W) array of exactly the bytes its header promises
    (read from the header and the file size: the array itself is read at ingest)."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable depth array: {exc}") from exc
    if dtype.kind not in "fiu" or fortran:
        raise InputError(path, f"depth array must be a C-ordered numeric array, got dtype {dtype}")
    if tuple(shape) != (size[1], size[0]):
        raise InputError(path, f"depth array shape {tuple(shape)} differs from sequence.json "
                               f"{(size[1], size[0])}", field="image_width")
    if path.stat().st_size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise InputError(path, "truncated depth array (fewer bytes than its header says)")


def _head(path: Path) -> bytes:
    """The first bytes of a file (a PNG's signature and IHDR); empty if it cannot be read."""
    try:
        with path.open("rb") as fh:
            return fh.read(26)
    except OSError:
        return b""


def content_sha256(seq: RenderSequence) -> tuple[str, dict[str, str]]:
    """Hash over every contract file (name + bytes), plus per-file hashes (rgb ones become image ids)."""
    total = hashlib.sha256()
    per_file: dict[str, str] = {}
    root = len(str(seq.folder)) + 1  # frame_files are all under the folder: cut the prefix, no pathlib
    for path in seq.frame_files():
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        rel = str(path)[root:].replace(os.sep, "/")
        per_file[rel] = digest
        total.update(f"{rel}\0{digest}\n".encode())
    return total.hexdigest(), per_file
