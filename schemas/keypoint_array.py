"""One person's 37 keypoints as a typed (37, 3) array, converted from and to COCO's flat list once.

COCO files, the store and Label Studio carry keypoints as a flat list of (x, y, v) triplets; code
that reads them wants positions and flags. Like mmpose's `parse_data_info` (flat list -> (K, 2)
keypoints + (K,) visibility) and FiftyOne's `COCOObject`, this converts at the edge, so no module
indexes `3 * i + 2` by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from schemas.keypoints import INDEX, NAMES, NUM_KEYPOINTS

#: COCO visibility flags.
V_UNLABELLED, V_OCCLUDED, V_VISIBLE = 0, 1, 2


@dataclass(frozen=True, eq=False)
class KeypointArray:
    """x, y, v of the 37 SpineTrack keypoints of one person; `data` is a (37, 3) float array.

    Accessors are views: `xy` (37, 2), `v` (37,); `labelled` (v > 0) and `visible` (v == 2) masks.
    """

    data: NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.data.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"expected {NUM_KEYPOINTS} keypoints as (x, y, v), got shape {self.data.shape}")

    # -- conversion at the edge -----------------------------------------------------------------
    @classmethod
    def from_flat(cls, values: Sequence[float] | ArrayLike) -> KeypointArray:
        """From COCO's flat [x0, y0, v0, x1, ...] (exactly 37 triplets)."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size != NUM_KEYPOINTS * 3:
            raise ValueError(f"expected {NUM_KEYPOINTS * 3} numbers (37 x, y, v), got {arr.size}")
        return cls(arr.reshape(NUM_KEYPOINTS, 3).copy())

    @classmethod
    def from_array(cls, values: ArrayLike, visibility: ArrayLike | None = None) -> KeypointArray:
        """From (37, 2) positions (+ optional (37,) flags; default visible), (37, 3), or a flat list."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            return cls.from_flat(arr)
        if arr.shape == (NUM_KEYPOINTS, 3) and visibility is None:
            return cls(arr.copy())
        if arr.shape[-1] not in (2, 3) or arr.shape[0] != NUM_KEYPOINTS:
            raise ValueError(f"expected {NUM_KEYPOINTS} keypoints as (x, y[, v]), got shape {arr.shape}")
        out = np.zeros((NUM_KEYPOINTS, 3))
        out[:, :2] = arr[:, :2]
        out[:, 2] = V_VISIBLE if visibility is None else np.asarray(visibility, dtype=np.float64)
        return cls(out)

    @classmethod
    def zeros(cls) -> KeypointArray:
        """No keypoint labelled."""
        return cls(np.zeros((NUM_KEYPOINTS, 3)))

    def to_flat(self, decimals: int | None = None) -> list[float]:
        """COCO's flat list; visibility flags as ints (pycocotools expects 0/1/2), x, y rounded
        to `decimals` when given."""
        out: list[Any] = []
        for x, y, v in self.data.tolist():
            if decimals is not None:
                x, y = round(x, decimals), round(y, decimals)
            out += [x, y, int(v)]
        return out

    # -- accessors ------------------------------------------------------------------------------
    @property
    def xy(self) -> NDArray[np.float64]:
        return self.data[:, :2]

    @property
    def v(self) -> NDArray[np.float64]:
        return self.data[:, 2]

    @property
    def labelled(self) -> NDArray[np.bool_]:
        """Keypoints with a position (v > 0: visible or occluded)."""
        return self.data[:, 2] > 0

    @property
    def visible(self) -> NDArray[np.bool_]:
        return self.data[:, 2] >= V_VISIBLE

    @property
    def num_labelled(self) -> int:
        """COCO's `num_keypoints`."""
        return int(self.labelled.sum())

    names = NAMES

    def point(self, key: int | str) -> tuple[float, float, float]:
        """(x, y, v) of a keypoint by index or name."""
        index = INDEX[key] if isinstance(key, str) else int(key)
        x, y, v = self.data[index].tolist()
        return x, y, v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeypointArray) and bool(np.array_equal(self.data, other.data))

    __hash__ = None  # type: ignore[assignment]


def keypoint_rows(keypoints: ArrayLike) -> NDArray[np.float64]:
    """37 rows of (x, y[, v]) from flat (x, y, v) triplets or an array already in rows."""
    arr = np.asarray(keypoints, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 3)
    if arr.shape[0] != NUM_KEYPOINTS:
        raise ValueError(f"expected {NUM_KEYPOINTS} keypoints, got shape {arr.shape}")
    return arr
