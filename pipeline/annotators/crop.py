"""Top-down crops as RTMPose's reference runtimes make them (mmpose's test pipeline, rtmlib, spinepose).

Box (x, y, w, h) -> centre and scale padded 1.25x -> scale widened or heightened to the model's
aspect ratio -> a 3-point affine warp of the box onto the model input (bilinear). Keypoints found
in the crop map back with the inverse of the same transform. Written with numpy + cv2 only, so the
ONNX path needs neither torch nor mmpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from schemas.errors import InputError

PADDING = 1.25


def read_image(image: NDArray[np.uint8] | str | Path) -> NDArray[np.uint8]:
    """A BGR uint8 image from a path or an array (grey gains 3 channels), without torch: the same
    contract as pipeline.model.predict.load_image, for annotators that do not need torch."""
    if isinstance(image, (str, Path)):
        arr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if arr is None:
            raise InputError(image, "cannot read image (missing file or unsupported format)")
        return np.asarray(arr, dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


@dataclass(frozen=True)
class Crop:
    image: NDArray[np.uint8]  # (h, w, 3), same channel order as the source image
    center: NDArray[np.float64]  # (2,) image pixels
    scale: NDArray[np.float64]  # (2,) the box area (w, h) mapped onto the whole input, pixels
    input_size: tuple[int, int]  # (w, h)

    def to_image(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Crop-pixel coordinates (..., 2) -> image pixels (as rtmlib and mmpose decode)."""
        size = np.asarray(self.input_size, dtype=np.float64)
        return points / size * self.scale + self.center - 0.5 * self.scale


def center_scale(box: NDArray[np.float64] | list[float], padding: float = PADDING
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + 0.5 * w, y + 0.5 * h])
    scale = np.array([w, h]) * padding
    return center, scale


def fix_aspect(scale: NDArray[np.float64], input_size: tuple[int, int]) -> NDArray[np.float64]:
    """Grow the shorter side so the box has the model input's aspect ratio (w / h)."""
    ratio = input_size[0] / input_size[1]
    w, h = float(scale[0]), float(scale[1])
    return np.array([w, w / ratio]) if w > h * ratio else np.array([h * ratio, h])


def _third(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    d = a - b
    return (b + np.array([-d[1], d[0]], dtype=np.float32)).astype(np.float32)


def warp_matrix(center: NDArray[np.float64], scale: NDArray[np.float64],
                output_size: tuple[int, int], *, inverse: bool = False) -> NDArray[np.float64]:
    """The 2x3 affine taking the box (centre, scale) onto an output of `output_size` (no rotation)."""
    src_w = float(scale[0])
    dst_w, dst_h = output_size
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, src_w * -0.5])
    src[2] = _third(src[0], src[1])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, dst_w * -0.5])
    dst[2] = _third(dst[0], dst[1])
    pair = (dst, src) if inverse else (src, dst)
    return np.asarray(cv2.getAffineTransform(*pair), dtype=np.float64)


def topdown_crop(image: NDArray[np.uint8], box: NDArray[np.float64] | list[float],
                 input_size: tuple[int, int], padding: float = PADDING) -> Crop:
    """The model input for one person box (see the module docstring)."""
    center, scale = center_scale(box, padding)
    scale = fix_aspect(scale, input_size)
    mat = warp_matrix(center, scale, input_size)
    out = cv2.warpAffine(image, mat, (int(input_size[0]), int(input_size[1])), flags=cv2.INTER_LINEAR)
    return Crop(np.asarray(out, dtype=np.uint8), center, scale, (int(input_size[0]), int(input_size[1])))


@dataclass(frozen=True)
class RegionCrop:
    """A rotated crop (BlazePose's region of interest): `back` maps crop pixels to image pixels."""

    image: NDArray[np.uint8]  # (size, size, 3), same channel order as the source image
    back: NDArray[np.float64]  # (2, 3)

    def to_image(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        pts = np.asarray(points, dtype=np.float64)
        return np.asarray(pts @ self.back[:, :2].T + self.back[:, 2], dtype=np.float64)
