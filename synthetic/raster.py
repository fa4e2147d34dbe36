"""A vectorised ray caster for capsules: depth, front-most capsule index and surface normal per pixel.

Capsules (a segment plus a radius) are the body-segment geometry of the default OpenSim model. Each
capsule is intersected only with the rays of its screen-space bounding box, so the cost scales with
the pixels a body covers, not with image size x capsule count. Intersection follows the closed form
for a capsule (cylinder body + two hemispherical caps) with unit ray directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from synthetic.camera import NEAR_CM, Camera


@dataclass
class RayCast:
    """Per-pixel results (H, W): planar depth (cm, +inf = nothing), capsule index (-1), unit normal."""

    depth: NDArray[np.float32]
    index: NDArray[np.int32]
    normal: NDArray[np.float32]


def _capsule_hits(
    bard: NDArray[np.float64],
    rdoa: NDArray[np.float64],
    rdob: NDArray[np.float64],
    baba: NDArray[np.float64] | float,
    baoa: NDArray[np.float64] | float,
    oaoa: NDArray[np.float64] | float,
    obob: NDArray[np.float64] | float,
    r2: NDArray[np.float64] | float,
) -> NDArray[np.float64]:
    """The capsule-ray quadratic, from the dot products of unit ray d, axis ba = b - a and the
    origin offsets oa = o - a, ob = o - b: nearest hit distance, +inf for a miss or a hit behind."""
    # infinite cylinder around the axis
    aa = baba - bard * bard
    bb = baba * rdoa - baoa * bard
    cc = baba * oaoa - baoa * baoa - r2 * baba
    h = bb * bb - aa * cc
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (-bb - np.sqrt(np.maximum(h, 0.0))) / aa
    y = baoa + tc * bard
    body = (h >= 0) & (aa > 1e-12) & (y > 0) & (y < baba) & (tc > 0)
    # caps: the sphere at whichever end the infinite-cylinder hit falls beyond
    low = y <= 0
    bs = np.where(low, rdoa, rdob)
    cs = np.where(low, oaoa, obob) - r2
    hs = bs * bs - cs
    ts = -bs - np.sqrt(np.maximum(hs, 0.0))
    cap = ~body & (hs >= 0) & (ts > 0)
    return np.where(body, tc, np.where(cap, ts, np.inf))


def intersect_capsule(
    origin: NDArray[np.float64],
    dirs: NDArray[np.float64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    radius: NDArray[np.float64] | float,
) -> NDArray[np.float64]:
    """Nearest hit distance along unit rays `dirs` (..., 3) from `origin` (3,) to capsules a-b.

    `a`, `b` are (3,) or broadcast against the rays' leading shape, e.g. (1, C, 3) with rays (R, 1, 3)
    for an (R, C) table. Returns +inf where the ray misses or the capsule lies behind the origin.
    """
    ba = b - a
    oa = origin - a
    ob = origin - b
    return _capsule_hits(
        bard=np.sum(dirs * ba, axis=-1),
        rdoa=np.sum(dirs * oa, axis=-1),
        rdob=np.sum(dirs * ob, axis=-1),
        baba=np.sum(ba * ba, axis=-1),
        baoa=np.sum(ba * oa, axis=-1),
        oaoa=np.sum(oa * oa, axis=-1),
        obob=np.sum(ob * ob, axis=-1),
        r2=np.asarray(radius, dtype=np.float64) ** 2,
    )


def capsule_normals(
    points: NDArray[np.float64], a: NDArray[np.float64], b: NDArray[np.float64], radius: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Outward unit normals at surface `points` (..., 3) of capsules a-b (broadcast, per point)."""
    ba = b - a
    s = np.clip(np.sum((points - a) * ba, axis=-1) / np.maximum(np.sum(ba * ba, axis=-1), 1e-12), 0.0, 1.0)
    n = points - (a + s[..., None] * ba)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _bboxes(
    camera: Camera, a: NDArray[np.float64], b: NDArray[np.float64], radii: NDArray[np.float64]
) -> NDArray[np.int64]:
    """Pixel bounding boxes (N, 4: x0, y0, x1, y1) of capsules; empty boxes (x0 >= x1) are invisible.

    A capsule straddling the camera plane gets the whole image.
    """
    n = len(radii)
    uv, depth = camera.project(np.concatenate([a, b]))
    uv = uv.reshape(2, n, 2)
    depth = depth.reshape(2, n)
    near = depth.min(axis=0)
    behind = np.all(depth <= radii + NEAR_CM, axis=0)
    straddle = ~behind & (np.any(depth <= radii + NEAR_CM, axis=0) | ~np.all(np.isfinite(uv), axis=(0, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        pad = max(camera.fx, camera.fy) * radii / np.maximum(near - radii, NEAR_CM) + 1.0
        x0 = np.floor(np.nanmin(uv[..., 0], axis=0) - pad)
        x1 = np.ceil(np.nanmax(uv[..., 0], axis=0) + pad)
        y0 = np.floor(np.nanmin(uv[..., 1], axis=0) - pad)
        y1 = np.ceil(np.nanmax(uv[..., 1], axis=0) + pad)
    boxes = np.stack([x0, y0, x1, y1], axis=1)
    boxes[straddle] = (0, 0, camera.width, camera.height)
    boxes[behind] = (0, 0, 0, 0)
    boxes = np.nan_to_num(boxes, nan=0.0)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, camera.width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, camera.height)
    return boxes.astype(np.int64)


class PixelRays:
    """Unit ray directions of every pixel centre in camera axes (forward, right, up), cached per
    intrinsics; `world` rotates them for a pose. Same pixel convention as Camera.pixel_rays."""

    def __init__(self, camera: Camera) -> None:
        self.key = (camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy)
        cols = np.arange(camera.width, dtype=np.float64) + 0.5
        rows = np.arange(camera.height, dtype=np.float64) + 0.5
        uu, vv = np.meshgrid(cols, rows)
        local = np.stack(
            [np.ones_like(uu), (uu - camera.cx) / camera.fx, -(vv - camera.cy) / camera.fy], axis=-1
        )
        norm = np.linalg.norm(local, axis=-1)
        self.local = local / norm[..., None]
        #: ray distance -> planar depth (the forward component of a unit ray)
        self.to_planar = self.local[..., 0].copy()

    def matches(self, camera: Camera) -> bool:
        return self.key == (camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy)

    def world(self, camera: Camera) -> NDArray[np.float64]:
        return self.local @ camera.rotation_matrix


def _intersect_one(
    origin: NDArray[np.float64],
    dirs: NDArray[np.float64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    radius: float,
) -> NDArray[np.float64]:
    """`intersect_capsule` for one capsule and a block of rays: the per-ray dot products become
    matrix-vector products and the per-capsule ones scalars (the renderer's hot loop)."""
    ba = b - a
    oa = origin - a
    ob = origin - b
    return _capsule_hits(
        bard=dirs @ ba,
        rdoa=dirs @ oa,
        rdob=dirs @ ob,
        baba=float(ba @ ba),
        baoa=float(ba @ oa),
        oaoa=float(oa @ oa),
        obob=float(ob @ ob),
        r2=radius * radius,
    )


def raycast(
    camera: Camera,
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    radii: NDArray[np.float64],
    rays: PixelRays | None = None,
) -> RayCast:
    """Ray-cast capsules (N: endpoints a, b in Unreal cm, radii cm) through every pixel of `camera`."""
    h, w = camera.height, camera.width
    if rays is None or not rays.matches(camera):
        rays = PixelRays(camera)
    dirs = rays.world(camera)
    origin = np.asarray(camera.location, dtype=np.float64)
    dist = np.full((h, w), np.inf)
    index = np.full((h, w), -1, dtype=np.int32)
    boxes = _bboxes(camera, a, b, radii)
    for i in range(len(radii)):
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        if x0 >= x1 or y0 >= y1:
            continue
        t = _intersect_one(origin, dirs[y0:y1, x0:x1], a[i], b[i], float(radii[i]))
        window = dist[y0:y1, x0:x1]
        closer = t < window
        if not closer.any():
            continue
        window[closer] = t[closer]
        index[y0:y1, x0:x1][closer] = i
    normal = np.zeros((h, w, 3))
    fg = index >= 0
    if fg.any():
        k = index[fg]
        pts = origin + dist[fg][:, None] * dirs[fg]
        normal[fg] = capsule_normals(pts, a[k], b[k], radii[k])
    depth = (dist * rays.to_planar).astype(np.float32)
    return RayCast(depth=depth, index=index, normal=normal.astype(np.float32))


def segment_hits(
    origin: NDArray[np.float64],
    targets: NDArray[np.float64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    radii: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """(T, N): does the straight line from `origin` to target t enter capsule n before reaching it?

    One scene: origin (3,), targets (T, 3), capsules (N, 3); or stacked scenes (frames): origin
    (F, 3), targets (F, T, 3), capsules (F, N, 3) -> (F, T, N). Radii (N,).
    1 mm of slack keeps a point on a surface from occluding itself.
    """
    origin = np.asarray(origin, dtype=np.float64)
    d = targets - origin[..., None, :]
    length = np.linalg.norm(d, axis=-1)
    dirs = d / np.maximum(length, 1e-9)[..., None]
    t = intersect_capsule(origin[..., None, None, :], dirs[..., :, None, :], a[..., None, :, :],
                          b[..., None, :, :], radii)
    return t < (length - 0.1)[..., None]
