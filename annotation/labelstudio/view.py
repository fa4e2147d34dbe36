"""The annotator's view of a task: the person fills the canvas (issue 22, item 5).

A pushed task shows a crop of its image around the one person (`person_view`: the box and every
pre-annotated point, grown by `MARGIN` on each side for context, clipped to the image), written as a
PNG below Label Studio's document root (`stage_view`), so Label Studio's "fit" zoom makes the person
as large as the canvas allows. The crop's place in the image (`View`: integer pixels) goes in the
task data as `view`; every coordinate crosses the crop with an integer offset only, so the pixels
stored are the image's exactly (`to_view` / `from_view`, 1/1000 px like `convert`).

A result is read in the frame it was drawn on: Label Studio records the size of the image it drew
on in each region (`original_width` / `original_height`). A region on the crop (a person in the
browser) is mapped back by the offset; one on the full image (an API client such as the simulated
annotator, or a task pushed before crops existed) is taken as it is (`frame_of`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from pipeline.store.objects import read_checked
from schemas.errors import InputError

#: Context around the person, as a share of the person's own size on each side.
MARGIN = 0.15
#: A crop of at least this share of the image's area is no crop: the task shows the whole image.
WHOLE_ABOVE = 0.8
#: The folder below the document root that holds the crops.
VIEWS_DIR = "views"
PIXEL_DECIMALS = 3


@dataclass(frozen=True)
class View:
    """The part of an image a task shows, in the image's own pixels (integers)."""

    x: int
    y: int
    width: int
    height: int

    def as_data(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


def _labelled(keypoints: Sequence[float]) -> list[tuple[float, float]]:
    return [(float(keypoints[i]), float(keypoints[i + 1]))
            for i in range(0, len(keypoints), 3) if keypoints[i + 2] > 0]


def person_view(keypoints: Sequence[float] | None, bbox: Sequence[float] | None, width: int, height: int,
                margin: float = MARGIN) -> View | None:
    """The crop that shows one person: box and labelled points, grown by `margin`; None: the whole
    image (no box, nothing labelled, or the crop would be most of the image anyway)."""
    xs: list[float] = []
    ys: list[float] = []
    if bbox is not None and bbox[2] > 0 and bbox[3] > 0:
        xs += [float(bbox[0]), float(bbox[0]) + float(bbox[2])]
        ys += [float(bbox[1]), float(bbox[1]) + float(bbox[3])]
    for x, y in _labelled(keypoints or ()):
        xs.append(x)
        ys.append(y)
    if not xs:
        return None
    grow = margin * max(max(xs) - min(xs), max(ys) - min(ys), 16.0)
    x0, y0 = max(0, math.floor(min(xs) - grow)), max(0, math.floor(min(ys) - grow))
    x1, y1 = min(width, math.ceil(max(xs) + grow)), min(height, math.ceil(max(ys) + grow))
    if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) >= WHOLE_ABOVE * width * height:
        return None
    return View(x0, y0, x1 - x0, y1 - y0)


def contains(view: View, keypoints: Sequence[float], bbox: Sequence[float] | None) -> bool:
    """Every labelled point and the box lie inside the view."""
    corners = _labelled(keypoints)
    if bbox is not None and bbox[2] > 0 and bbox[3] > 0:
        corners += [(bbox[0], bbox[1]), (bbox[0] + bbox[2], bbox[1] + bbox[3])]
    return all(view.x <= x <= view.x + view.width and view.y <= y <= view.y + view.height
               for x, y in corners)


def to_view(keypoints: Sequence[float], bbox: Sequence[float] | None,
            view: View | None) -> tuple[list[float], list[float] | None]:
    """Image pixels -> the view's pixels (labelled points and the box moved by the offset)."""
    kps, box = [float(v) for v in keypoints], None if bbox is None else [float(v) for v in bbox]
    if view is None:
        return kps, box
    for i in range(0, len(kps), 3):
        if kps[i + 2] > 0:
            kps[i], kps[i + 1] = kps[i] - view.x, kps[i + 1] - view.y
    if box is not None:
        box[0], box[1] = box[0] - view.x, box[1] - view.y
    return kps, box


def from_view(x: float, y: float, view: View | None) -> tuple[float, float]:
    """A point in the view's pixels -> the image's, to 1/1000 px."""
    if view is None:
        return x, y
    return round(x + view.x, PIXEL_DECIMALS), round(y + view.y, PIXEL_DECIMALS)


def frame_of(item: Mapping[str, Any], view: View | None, width: int, height: int) -> View | None:
    """The view a result region was drawn on: the crop, unless the region says it was drawn on the
    full image (its `original_width` x `original_height` is the image's size, not the crop's)."""
    if view is None:
        return None
    drawn = (item.get("original_width"), item.get("original_height"))
    return None if drawn == (width, height) else view


def task_view(data: Mapping[str, Any], where: str = "task") -> View | None:
    """The `view` of a task's data (None when it shows the whole image); InputError naming the task
    and the field when it is not a crop inside the image the data names."""
    raw = data.get("view")
    if raw is None:
        return None
    keys = ("x", "y", "width", "height")
    if not isinstance(raw, Mapping) or not all(_is_int(raw.get(k)) for k in keys):
        raise InputError(where, "must be an object of integer x, y, width, height", field="data.view")
    view = View(*(int(raw[k]) for k in keys))
    width, height = data.get("width"), data.get("height")
    if not (isinstance(width, int) and isinstance(height, int)):
        raise InputError(where, "a task with a view needs integer image width and height", field="data.width")
    if view.x < 0 or view.y < 0 or view.width <= 0 or view.height <= 0 \
            or view.x + view.width > width or view.y + view.height > height:
        raise InputError(where, f"{view.as_data()} is not a part of the {width}x{height} image",
                         field="data.view")
    return view


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def view_path(sha256: str, view: View, root: str | Path) -> Path:
    """Where the crop of an image is served from: named by the image's content and the view."""
    name = f"{sha256}_{view.x}_{view.y}_{view.width}_{view.height}.png"
    return Path(root).resolve() / VIEWS_DIR / sha256[:2] / name


def crop_png(image_path: str | Path, sha256: str, view: View) -> bytes:
    """The view's pixels of the image (its stored bytes, checked against `sha256`) as PNG: lossless,
    no EXIF, so the browser shows the same pixels the store's coordinates refer to."""
    data, _ = read_checked(image_path, sha256)
    with PILImage.open(io.BytesIO(data)) as img:
        crop = img.crop((view.x, view.y, view.x + view.width, view.y + view.height))
        if crop.mode not in ("RGB", "RGBA", "L"):
            crop = crop.convert("RGB")
        out = io.BytesIO()
        crop.save(out, format="PNG")
    return out.getvalue()


def stage_view(image_path: str | Path, sha256: str, view: View, root: str | Path) -> Path:
    """The crop as a file below `root` (written again when missing or changed); idempotent."""
    dst = view_path(sha256, view, root)
    png = crop_png(image_path, sha256, view)
    if dst.is_file() and dst.read_bytes() == png:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.{os.getpid()}")
    partial.write_bytes(png)
    os.replace(partial, dst)
    return dst
