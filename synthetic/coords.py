"""Unreal world <-> OpenSim ground coordinates.

Unreal: centimetres, left-handed, X forward, Y right, Z up.
OpenSim: metres, right-handed, X forward, Y up, Z right.

Swapping two axes flips handedness, so the mapping is a pure axis swap plus unit change:
``os = (ue_x, ue_z, ue_y) / 100`` and ``ue = 100 * (os_x, os_z, os_y)``. The map is its own
inverse up to the scale, which is why both directions share `_SWAP_YZ`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

CM_PER_M = 100.0
#: Column order that swaps the second and third axes (Y <-> Z).
_SWAP_YZ = (0, 2, 1)


def _as_points(points: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(points, dtype=np.float64)
    if arr.shape[-1:] != (3,):
        raise ValueError(f"points must have a last axis of size 3, got shape {arr.shape}")
    return arr


def unreal_to_opensim(points: ArrayLike) -> NDArray[np.float64]:
    """Unreal world points (..., 3) in cm -> OpenSim ground points (..., 3) in m."""
    arr = _as_points(points)
    return arr[..., _SWAP_YZ] / CM_PER_M


def opensim_to_unreal(points: ArrayLike) -> NDArray[np.float64]:
    """OpenSim ground points (..., 3) in m -> Unreal world points (..., 3) in cm."""
    arr = _as_points(points)
    return arr[..., _SWAP_YZ] * CM_PER_M
