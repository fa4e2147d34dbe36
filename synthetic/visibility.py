"""COCO visibility, bbox and area for projected synthetic landmarks.

The public SpineTrack pipeline marks a point visible whenever it falls inside the image; we also use
the render's depth buffer and actor mask, so a point hidden behind another actor, an object or the
actor's own limbs gets v=1 ("labelled, not visible") instead of v=2.

Landmarks are anatomical points *inside* the body (joint centres, vertebral bodies), so the
depth buffer (the skin) is always somewhat in front of them: the depth test allows the landmark
to lie `depth_tol_cm + depth_tol_rel * depth` behind the surface before calling it occluded. A spine
point seen from the front sits ~15 cm behind the chest; an arm across the chest is ~20+ cm in front
of it. 20 cm was chosen on the (then self-consistent) reference renderer's geometric ground truth
(6 seeded sequences, 1-3 actors, 40 frames each): 96 % agreement on v; 5 cm would call almost
every spine and hip point occluded by the actor's own torso (agreement 42 %). On the independent
character, whose torso is deeper, depth and mask alone agree far less (bench/synthetic_fidelity.py),
hence the fitted-surface test below.

The mask marks a point occluded only when it lands on *another* actor (no pixel of its own actor
nearby): background (0) under a point is normal for surface landmarks (toe tips, heels) that sit on
the silhouette edge, and non-actor occluders are caught by the depth test.

Depth and mask cannot tell which of the actor's own parts is in front: an arm across the chest and
the chest itself are both "own actor, 15-25 cm in front". When the fit provides the fitted body's
surface (`self_occlusion`: the default model's capsules, posed and scaled like the fit), a point on
its own actor's pixels is occluded exactly when the line of sight passes through a fitted body part
that is not its own, a joint neighbour or (for trunk points) the trunk — the renderer's own
definition — and the depth test only judges pixels that are not the actor's (props, other actors).
Measured on the independent character: bench/synthetic_fidelity.py, `occlusion`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from synthetic.raster import segment_hits

V_OUTSIDE, V_OCCLUDED, V_VISIBLE = 0, 1, 2


@dataclass(frozen=True)
class VisibilityRule:
    """Tolerances of the occlusion tests (recorded in every revision's provenance)."""

    depth_tol_cm: float = 20.0
    #: Extra allowance per cm of depth, for depth buffers with limited precision (0: float depth).
    depth_tol_rel: float = 0.0
    #: Half-size of the mask neighbourhood (pixels): a point on another actor is still visible when a
    #: pixel of its own actor lies within this radius (silhouette edges are aliased).
    mask_radius_px: int = 1
    #: Margin added on each side of a keypoint bbox, as a fraction of its width/height.
    bbox_margin: float = 0.1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def point_pixels(
    uv: ArrayLike, depth_cm: ArrayLike, width: int, height: int
) -> tuple[NDArray[np.bool_], NDArray[np.intp], NDArray[np.intp]]:
    """Which points fall in the image (in front of the camera) and their pixel (row, col); any
    leading shape (one frame's (P,) or stacked frames' (F, P)). Points outside get pixel (0, 0)."""
    uv = np.asarray(uv, dtype=np.float64)
    depth = np.asarray(depth_cm, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        inside = (
            np.isfinite(uv).all(axis=-1)
            & (depth > 0)
            & (uv[..., 0] >= 0)
            & (uv[..., 0] < width)
            & (uv[..., 1] >= 0)
            & (uv[..., 1] < height)
        )
    cols = np.floor(np.where(inside, uv[..., 0], 0)).astype(np.intp)
    rows = np.floor(np.where(inside, uv[..., 1], 0)).astype(np.intp)
    return inside, rows, cols


@dataclass(frozen=True)
class PixelSamples:
    """What one frame's depth buffer and mask say at its points' pixels (`sample_pixels`); samples
    of several frames stack (`stack`), so the rule is applied to a whole batch at once."""

    surface: NDArray[np.float64] | None = None  # depth buffer at the pixel (cm); None without depth
    under: NDArray[np.int64] | None = None  # mask value at the pixel; None without a mask
    own: NDArray[np.bool_] | None = None  # a pixel of the actor within the mask radius

    @staticmethod
    def stack(frames: Sequence[PixelSamples]) -> PixelSamples:
        """Frames' samples as (F, P) arrays; every frame must have the same buffers."""

        def one(values: list[Any]) -> Any:
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise ValueError("frames differ in which buffers (depth, mask) they have")
            return np.stack(values)

        return PixelSamples(one([f.surface for f in frames]), one([f.under for f in frames]),
                            one([f.own for f in frames]))


def sample_pixels(
    rows: NDArray[np.intp],
    cols: NDArray[np.intp],
    *,
    depth_buffer: NDArray[np.floating[Any]] | None = None,
    mask: NDArray[np.integer[Any]] | None = None,
    actor_id: int | None = None,
    mask_radius_px: int = 1,
) -> PixelSamples:
    """The buffers of one frame at its points' pixels (rows, cols: (P,)); the buffers can then go."""
    surface = depth_buffer[rows, cols].astype(np.float64) if depth_buffer is not None else None
    under = own = None
    if mask is not None and actor_id is not None:
        own = _actor_near(mask, rows, cols, actor_id, mask_radius_px)
        under = mask[rows, cols].astype(np.int64)
    return PixelSamples(surface, under, own)


def decide_visibility(
    inside: NDArray[np.bool_],
    depth_cm: ArrayLike,
    samples: PixelSamples,
    *,
    actor_id: int | None = None,
    rule: VisibilityRule | None = None,
    self_occluded: NDArray[np.bool_] | None = None,
) -> NDArray[np.int8]:
    """COCO v per point from `point_pixels`' `inside` and the pixels' samples; any leading shape.

    The rule of `keypoint_visibility`, on arrays: one frame or a batch of frames in one call.
    """
    rule = rule or VisibilityRule()
    depth = np.asarray(depth_cm, dtype=np.float64)
    vis = np.where(inside, V_VISIBLE, V_OUTSIDE).astype(np.int8)
    occluded = np.zeros_like(inside)
    own = np.zeros_like(inside)  # the actor's own surface is at (or next to) the point's pixel
    has_mask = samples.under is not None and samples.own is not None and actor_id is not None
    if has_mask:
        assert samples.under is not None and samples.own is not None
        own = samples.own
        on_other_actor = (samples.under != 0) & (samples.under != actor_id)
        occluded |= on_other_actor & ~own
    geometric = self_occluded is not None and has_mask
    if self_occluded is not None:
        occluded |= np.asarray(self_occluded, dtype=bool)
    if samples.surface is not None:
        tol = rule.depth_tol_cm + rule.depth_tol_rel * depth
        with np.errstate(invalid="ignore"):
            by_depth = np.isfinite(samples.surface) & (depth > samples.surface + tol)
        occluded |= by_depth & ~own if geometric else by_depth
    vis[inside & occluded] = V_OCCLUDED
    return vis


def keypoint_visibility(
    uv: ArrayLike,
    depth_cm: ArrayLike,
    width: int,
    height: int,
    *,
    depth_buffer: NDArray[np.floating[Any]] | None = None,
    mask: NDArray[np.integer[Any]] | None = None,
    actor_id: int | None = None,
    rule: VisibilityRule | None = None,
    self_occluded: NDArray[np.bool_] | None = None,
) -> NDArray[np.int8]:
    """COCO v per point: 0 outside the image (or behind the camera), 1 occluded, 2 visible.

    `self_occluded` (per point, from `self_occlusion`) replaces the depth test on the actor's own
    pixels when a mask tells which pixels are the actor's. One frame; the ingest runs the same three
    steps (`point_pixels`, `sample_pixels`, `decide_visibility`) over a batch of frames.
    """
    rule = rule or VisibilityRule()
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    depth = np.asarray(depth_cm, dtype=np.float64).reshape(-1)
    inside, rows, cols = point_pixels(uv, depth, width, height)
    if not inside.any():
        return np.full(inside.shape, V_OUTSIDE, dtype=np.int8)
    samples = sample_pixels(rows, cols, depth_buffer=depth_buffer, mask=mask, actor_id=actor_id,
                            mask_radius_px=rule.mask_radius_px)
    return decide_visibility(inside, depth, samples, actor_id=actor_id, rule=rule,
                             self_occluded=self_occluded)


def self_occlusion(
    camera_location: ArrayLike,
    points: NDArray[np.float64],
    cap_a: NDArray[np.float64],
    cap_b: NDArray[np.float64],
    radii: NDArray[np.float64],
    cap_bodies: list[str],
    home: list[frozenset[str]],
) -> NDArray[np.bool_]:
    """Per point: does the line of sight pass through a fitted body part other than its home bodies?

    One unit (e.g. Unreal cm): camera location (3,), points (P, 3), capsules (C, 3) for one frame,
    or stacked frames: (F, 3), (F, P, 3), (F, C, 3) -> (F, P). Radii (C,).
    """
    origin = np.asarray(camera_location, dtype=np.float64)
    blocked = segment_hits(origin, np.asarray(points, dtype=np.float64), cap_a, cap_b, radii)
    return np.asarray((blocked & _foreign(tuple(cap_bodies), tuple(home))).any(axis=-1))


@lru_cache(maxsize=64)
def _foreign(cap_bodies: tuple[str, ...], home: tuple[frozenset[str], ...]) -> NDArray[np.bool_]:
    """(P, C): capsule c is not one of point p's home bodies (the same for every frame of an actor)."""
    out = np.array([[body not in allowed for body in cap_bodies] for allowed in home], dtype=bool)
    out.setflags(write=False)
    return out


def _actor_near(
    mask: NDArray[np.integer[Any]], rows: NDArray[np.intp], cols: NDArray[np.intp], actor_id: int, radius: int
) -> NDArray[np.bool_]:
    """Per point: is the actor's own pixel within `radius` (a square window, clipped to the image)?"""
    h, w = mask.shape
    offsets = np.arange(-radius, radius + 1)
    r = np.clip(rows[:, None] + offsets, 0, h - 1)  # (P, 2r+1)
    c = np.clip(cols[:, None] + offsets, 0, w - 1)
    window = mask[r[:, :, None], c[:, None, :]]  # (P, 2r+1, 2r+1), one gather for every offset
    return np.asarray((window == actor_id).any(axis=(1, 2)))


def bbox_from_mask(mask: NDArray[np.integer[Any]], actor_id: int) -> tuple[list[float], float] | None:
    """Tight [x, y, w, h] around the actor's pixels (pixel edges) and its pixel area; None if absent."""
    hit = np.equal(mask, actor_id).view(np.uint8)  # OpenCV's box and count: a pass each, in C
    area = cv2.countNonZero(hit)
    if area == 0:
        return None
    x, y, w, h = cv2.boundingRect(hit)
    return [float(x), float(y), float(w), float(h)], float(area)


def bbox_from_keypoints(
    uv: ArrayLike, vis: ArrayLike, width: int, height: int, margin: float = 0.1
) -> tuple[list[float], float] | None:
    """Box around the labelled (v > 0) points grown by `margin` per side, clipped to the image."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    keep = np.asarray(vis).reshape(-1) > 0
    if not keep.any():
        return None
    pts = uv[keep]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    x0, x1 = max(0.0, x0 - mx), min(float(width), x1 + mx)
    y0, y1 = max(0.0, y0 - my), min(float(height), y1 + my)
    w, h = x1 - x0, y1 - y0
    return [float(x0), float(y0), float(w), float(h)], float(w * h)


def coco_keypoints(uv: ArrayLike, vis: ArrayLike) -> list[float]:
    """Flat COCO (x, y, v) triplets; unlabelled points (v=0) are written as 0, 0, 0 as COCO expects."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    v = np.asarray(vis).reshape(-1)
    if len(v) != len(uv):
        raise ValueError(f"{len(uv)} points but {len(v)} visibility flags")
    return coco_keypoints_frames(uv[None], v[None])[0]


def coco_keypoints_frames(uv: NDArray[np.float64], vis: NDArray[np.integer[Any]]) -> list[list[float]]:
    """`coco_keypoints` of stacked frames: uv (F, P, 2), v (F, P) -> one flat triplet list per frame."""
    keep = vis > 0
    out = np.zeros((*vis.shape, 3))
    out[keep, :2] = uv[keep]
    out[keep, 2] = vis[keep]
    return out.reshape(len(out), -1).tolist()
