"""A pinhole camera with Unreal pose semantics: the one projection both renderer and ingest use.

Pose: an Unreal location (cm) and an FRotator {pitch, yaw, roll} in degrees. Unreal builds the
camera's orientation with ``FRotationMatrix(rotator)``, whose rows are the world directions of the
camera's local axes (row vectors, ``world = local @ M``):

- forward (local +X) = (cp*cy, cp*sy, sp)
- right   (local +Y) = (sr*sp*cy - cr*sy, sr*sp*sy + cr*cy, -sr*cp)
- up      (local +Z) = (-(cr*sp*cy + sr*sy), cy*sr - cr*sp*sy, cr*cp)

with s/c the sine/cosine of p(itch), y(aw), r(oll). Yaw turns about world Z, positive pitch looks up,
roll turns about the viewing direction.

Pixels: continuous image coordinates with the origin at the top-left *corner* of the top-left pixel,
u to the right, v down. Pixel (col i, row j) covers [i, i+1) x [j, j+1) and its centre is
(i + 0.5, j + 0.5). With a horizontal FOV, fx = fy = (W/2)/tan(hfov/2) and (cx, cy) = (W/2, H/2),
the geometric image centre (as in Unreal). A point is inside the image when 0 <= u < W and
0 <= v < H; the pixel it lands on is (floor(u), floor(v)).

Projection: ``u = cx + fx * right/forward``, ``v = cy - fy * up/forward``; depth is *planar*
(the distance along the camera forward axis), the same quantity Unreal's SceneDepth stores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Points closer than this along the forward axis (cm) are treated as behind the camera.
NEAR_CM = 1e-3


def rotator_matrix(pitch: float, yaw: float, roll: float) -> NDArray[np.float64]:
    """Unreal ``FRotationMatrix`` (degrees in): rows are world forward, right and up of the rotated frame."""
    p, y, r = (math.radians(a) for a in (pitch, yaw, roll))
    sp, cp = math.sin(p), math.cos(p)
    sy, cy = math.sin(y), math.cos(y)
    sr, cr = math.sin(r), math.cos(r)
    return np.array(
        [
            [cp * cy, cp * sy, sp],
            [sr * sp * cy - cr * sy, sr * sp * sy + cr * cy, -sr * cp],
            [-(cr * sp * cy + sr * sy), cy * sr - cr * sp * sy, cr * cp],
        ],
        dtype=np.float64,
    )


def look_at_rotation(location: ArrayLike, target: ArrayLike) -> dict[str, float]:
    """The roll-free Unreal rotator that points a camera at `location` towards `target` (both cm)."""
    d = np.asarray(target, dtype=np.float64) - np.asarray(location, dtype=np.float64)
    yaw = math.degrees(math.atan2(d[1], d[0]))
    pitch = math.degrees(math.atan2(d[2], math.hypot(d[0], d[1])))
    return {"pitch": pitch, "yaw": yaw, "roll": 0.0}


def focal_from_hfov(width: int, hfov_deg: float) -> float:
    """Focal length in pixels for a horizontal field of view (Unreal's FOV is horizontal)."""
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    return (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)


def _perspective(
    cam: NDArray[np.float64], fx: Any, fy: Any, cx: Any, cy: Any
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Camera-local (forward, right, up) cm -> (uv pixels, planar depth); intrinsics broadcast
    against the points' leading shape. At or behind the camera plane (depth <= NEAR_CM) uv is NaN."""
    depth = cam[..., 0]
    safe = np.where(depth > NEAR_CM, depth, np.nan)
    u = cx + fx * cam[..., 1] / safe
    v = cy - fy * cam[..., 2] / safe
    return np.stack([u, v], axis=-1), depth


@dataclass(frozen=True)
class Camera:
    """Intrinsics in pixels + Unreal pose; see the module docstring for every convention."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    location: tuple[float, float, float]
    pitch: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_record(cls, record: Mapping[str, Any], width: int, height: int) -> Camera:
        """Build from one cameras.jsonl line (a dict) and the sequence's image size.

        Explicit fx/fy/cx/cy win; otherwise `hfov_deg` gives fx = fy and the centre principal point.
        """
        rot = record.get("rotation") or {}
        loc = record["location"]
        if record.get("fx") is not None:
            fx = float(record["fx"])
            fy = float(record["fy"])
            cx = float(record["cx"])
            cy = float(record["cy"])
        else:
            fx = fy = focal_from_hfov(width, float(record["hfov_deg"]))
            cx, cy = width / 2.0, height / 2.0
        return cls(
            width=int(width),
            height=int(height),
            fx=fx,
            fy=fy,
            cx=cx,
            cy=cy,
            location=(float(loc[0]), float(loc[1]), float(loc[2])),
            pitch=float(rot.get("pitch", 0.0)),
            yaw=float(rot.get("yaw", 0.0)),
            roll=float(rot.get("roll", 0.0)),
        )

    @classmethod
    def from_hfov(
        cls,
        width: int,
        height: int,
        hfov_deg: float,
        location: ArrayLike,
        rotation: Mapping[str, float] | None = None,
    ) -> Camera:
        rot = rotation or {}
        loc = np.asarray(location, dtype=np.float64)
        f = focal_from_hfov(width, hfov_deg)
        return cls(
            width=int(width),
            height=int(height),
            fx=f,
            fy=f,
            cx=width / 2.0,
            cy=height / 2.0,
            location=(float(loc[0]), float(loc[1]), float(loc[2])),
            pitch=float(rot.get("pitch", 0.0)),
            yaw=float(rot.get("yaw", 0.0)),
            roll=float(rot.get("roll", 0.0)),
        )

    def to_record(self, frame: int) -> dict[str, Any]:
        """The cameras.jsonl line for this camera (explicit intrinsics)."""
        return {
            "frame": int(frame),
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "location": list(self.location),
            "rotation": {"pitch": self.pitch, "yaw": self.yaw, "roll": self.roll},
        }

    # -- geometry -------------------------------------------------------------------------
    @property
    def rotation_matrix(self) -> NDArray[np.float64]:
        """Rows: world directions of camera forward, right, up."""
        return rotator_matrix(self.pitch, self.yaw, self.roll)

    @property
    def forward(self) -> NDArray[np.float64]:
        return self.rotation_matrix[0]

    @property
    def right(self) -> NDArray[np.float64]:
        return self.rotation_matrix[1]

    @property
    def up(self) -> NDArray[np.float64]:
        return self.rotation_matrix[2]

    @property
    def intrinsics(self) -> NDArray[np.float64]:
        """K for camera coordinates (right, down, forward) -> homogeneous pixels."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def world_to_camera(self, points_ue: ArrayLike) -> NDArray[np.float64]:
        """World points (..., 3) cm -> camera-local (forward, right, up) cm."""
        pts = np.asarray(points_ue, dtype=np.float64)
        return (pts - np.asarray(self.location)) @ self.rotation_matrix.T

    def camera_to_world(self, points_cam: ArrayLike) -> NDArray[np.float64]:
        """Camera-local (forward, right, up) cm -> world points cm."""
        pts = np.asarray(points_cam, dtype=np.float64)
        return pts @ self.rotation_matrix + np.asarray(self.location)

    def project(self, points_ue: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World points (N, 3) cm -> (uv (N, 2) pixels, planar depth (N,) cm).

        Points at or behind the camera plane (depth <= NEAR_CM) get uv = NaN; their depth is still
        returned so callers can tell "behind" from "outside the image".
        """
        return _perspective(self.world_to_camera(points_ue), self.fx, self.fy, self.cx, self.cy)

    @staticmethod
    def project_frames(
        cameras: Sequence[Camera], points_ue: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """`project` for many frames at once: camera f sees points (F, N, 3) cm -> uv (F, N, 2),
        depth (F, N). The same arithmetic as `project`, batched (the ingest projects every frame)."""
        pts = np.asarray(points_ue, dtype=np.float64)
        rot = np.stack([c.rotation_matrix for c in cameras])  # (F, 3, 3)
        loc = np.array([c.location for c in cameras], dtype=np.float64)
        intr = np.array([(c.fx, c.fy, c.cx, c.cy) for c in cameras], dtype=np.float64)
        cam = (pts - loc[:, None, :]) @ rot.transpose(0, 2, 1)
        fx, fy, cx, cy = (intr[:, i, None] for i in range(4))
        return _perspective(cam, fx, fy, cx, cy)

    def in_image(self, uv: ArrayLike) -> NDArray[np.bool_]:
        """True where a (finite) point falls inside the image: 0 <= u < W and 0 <= v < H."""
        arr = np.asarray(uv, dtype=np.float64)
        u, v = arr[..., 0], arr[..., 1]
        with np.errstate(invalid="ignore"):
            inside = (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return np.isfinite(u) & np.isfinite(v) & inside

    def unproject(self, uv: ArrayLike, depth_cm: ArrayLike) -> NDArray[np.float64]:
        """Pixels (..., 2) + planar depth (...) cm -> world points (..., 3) cm (inverse of `project`)."""
        arr = np.asarray(uv, dtype=np.float64)
        d = np.asarray(depth_cm, dtype=np.float64)
        right = (arr[..., 0] - self.cx) / self.fx * d
        up = -(arr[..., 1] - self.cy) / self.fy * d
        return self.camera_to_world(np.stack([d, right, up], axis=-1))

    def pixel_rays(self) -> NDArray[np.float64]:
        """World-space ray directions (H, W, 3) through every pixel centre, scaled to unit *forward*
        component: a hit at ray parameter t lies at planar depth t, so a ray caster's t is directly
        the depth buffer value (cm)."""
        cols = np.arange(self.width, dtype=np.float64) + 0.5
        rows = np.arange(self.height, dtype=np.float64) + 0.5
        uu, vv = np.meshgrid(cols, rows)
        local = np.stack(
            [np.ones_like(uu), (uu - self.cx) / self.fx, -(vv - self.cy) / self.fy], axis=-1
        )
        return local @ self.rotation_matrix
