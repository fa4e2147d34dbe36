"""MPII's json as mmpose ships it: a list of people, each `image`, 16 `joints` [x, y], `joints_vis`,
`center` [x, y] and `scale` (person height / 200), with no image ids, sizes or boxes.

Read here into plain records so `real_import` can store them like a COCO file's people. The box
is mmpose's (MpiiDataset + bbox_cs2xyxy): centre moved down by 15 * scale px, then one px left and
up (MPII's centres are 1-based, Matlab), a square of 200 * scale px around it; then clipped to the
image, since a COCO box is the person's extent in the image, not a crop. Joints are kept as read,
as mmpose 1.x reads them. `joints_vis` 1 means annotated (a 0 joint is at -1, -1): MPII's own
visibility flag is not in this json, so an annotated joint is stored v=2 (v=1 and v=2 count the
same in training and AP). Image sizes come from the image files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from schemas.errors import InputError

#: MPII's scale unit: scale 1 is 200 px (mmpose's pixel_std).
PIXEL_STD = 200.0
#: MPII's 16 joints per person.
JOINTS = 16


@dataclass(frozen=True)
class MpiiPerson:
    """One person of the file, checked: where, the 16 joints as COCO triplets, mmpose's box."""

    index: int  # position in the file
    image: str  # file name, relative to the image folder
    triplets: list[float]  # 16 (x, y, v): v=2 where annotated, (0, 0, 0) where not
    center: tuple[float, float]
    scale: float

    def mmpose_box(self) -> tuple[float, float, float, float]:
        """mmpose's box (x0, y0, x1, y1), before clipping: see the module docstring."""
        side = self.scale * PIXEL_STD
        cx, cy = self.center
        if cx != -1:
            cy += 15.0 / PIXEL_STD * side
        cx, cy = cx - 1.0, cy - 1.0
        return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def looks_like_mpii(data: Any) -> bool:
    """A top-level list whose first entry has MPII's fields (COCO files are objects)."""
    return isinstance(data, list) and bool(data) and isinstance(data[0], Mapping) and "joints" in data[0]


def clipped_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> list[float] | None:
    """[x, y, w, h] of the box inside a width x height image; None when nothing is inside."""
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[2], float(size[0])), min(box[3], float(size[1]))
    return [x0, y0, x1 - x0, y1 - y0] if x1 > x0 and y1 > y0 else None


def read_people(path: Path, data: Any) -> list[MpiiPerson]:
    """Every person of an MPII json, checked field by field (InputError names the first bad one)."""
    if not isinstance(data, list):
        raise InputError(path, "expected MPII's list of people (image, joints, joints_vis, center, scale)")
    return [_person(path, n, rec) for n, rec in enumerate(data)]


def _person(path: Path, n: int, rec: Any) -> MpiiPerson:
    fld = f"[{n}]"
    if not isinstance(rec, Mapping):
        raise InputError(path, "must be an object", field=fld)
    missing = [k for k in ("image", "joints", "joints_vis", "center", "scale") if k not in rec]
    if missing:
        raise InputError(path, f"needs {', '.join(missing)}", field=fld)
    joints = _floats(rec["joints"], JOINTS * 2, path, f"{fld}.joints", pairs=True)
    vis = _floats(rec["joints_vis"], JOINTS, path, f"{fld}.joints_vis")
    center = _floats(rec["center"], 2, path, f"{fld}.center")
    scale = _floats([rec["scale"]], 1, path, f"{fld}.scale")[0]
    if scale <= 0:
        raise InputError(path, f"must be > 0, got {scale}", field=f"{fld}.scale")
    triplets: list[float] = []
    for j, v in enumerate(vis):
        triplets += [joints[2 * j], joints[2 * j + 1], 2.0] if v > 0 else [0.0, 0.0, 0.0]
    return MpiiPerson(n, str(rec["image"]), triplets, (center[0], center[1]), scale)


def _floats(value: Any, count: int, path: Path, fld: str, *, pairs: bool = False) -> list[float]:
    """`count` finite numbers (flattened from [x, y] pairs with `pairs`), else InputError on `fld`."""
    try:
        flat = [float(a) for v in value for a in (v if pairs else [v])]
        if pairs and any(len(v) != 2 for v in value):
            raise ValueError("each joint must be [x, y]")
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"must be a list of numbers{' [x, y]' if pairs else ''} ({exc})",
                         field=fld) from None
    if len(flat) != count:
        raise InputError(path, f"{len(flat)} numbers, expected {count}", field=fld)
    if not all(math.isfinite(a) for a in flat):
        raise InputError(path, "must be finite", field=fld)
    return flat


def image_size(file: Path, path: Path, fld: str) -> tuple[int, int]:
    """The image's width and height, read from the file (MPII's json has none); whole or refused."""
    if not file.is_file():
        raise InputError(path, f"image file not found: {file}", field=fld)
    try:
        with PILImage.open(file) as image:
            size = image.size
            image.verify()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(file, f"unreadable image: {exc}", field=fld) from None
    return int(size[0]), int(size[1])
