"""Marker maps: where each Unreal bone and each SpineTrack landmark sits on an OpenSim model.

A marker map says, for one model, which body carries each marker and at which offset (metres, in
that body's frame). Bones are IK targets (``ue_<bone>`` markers); landmarks are the 37 outputs
(``kp_<name>`` markers). ``scale_segments`` lists, per body, the bone pairs whose distance ratio
(subject / model) scales that body. The file format is documented in docs/opensim-marker-map.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from schemas.errors import InputError
from schemas.keypoints import NAMES
from schemas.render import OPTIONAL_BONES, REQUIRED_BONES

BONE_PREFIX: Final[str] = "ue_"
LANDMARK_PREFIX: Final[str] = "kp_"
FORMAT: Final[str] = "spinetrack-marker-map"
VERSION: Final[int] = 1

#: Shipped maps, by name: synthetic/marker_maps/<name>.json.
MAPS_DIR: Final[Path] = Path(__file__).resolve().parent / "marker_maps"


@dataclass(frozen=True)
class MarkerSpec:
    """A marker fixed to `body` at `offset` (m, body frame)."""

    body: str
    offset: tuple[float, float, float]


@dataclass(frozen=True)
class MarkerMap:
    model: str
    bones: dict[str, MarkerSpec]
    landmarks: dict[str, MarkerSpec]
    scale_segments: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    #: Optional per-axis pairs: body -> {"x"|"y"|"z": pairs}; used by the per-axis scaling.
    axis_scale_segments: dict[str, dict[str, tuple[tuple[str, str], ...]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def spec(s: MarkerSpec) -> dict[str, Any]:
            return {"body": s.body, "offset": [round(v, 6) for v in s.offset]}

        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "length_unit": "m",
            "bones": {k: spec(v) for k, v in self.bones.items()},
            "landmarks": {k: spec(v) for k, v in self.landmarks.items()},
            "scale_segments": {k: [list(p) for p in v] for k, v in self.scale_segments.items()},
            "axis_scale_segments": {
                k: {axis: [list(p) for p in pairs] for axis, pairs in v.items()}
                for k, v in self.axis_scale_segments.items()
            },
        }


def save_marker_map(marker_map: MarkerMap, path: str | Path) -> None:
    Path(path).write_text(json.dumps(marker_map.to_json(), indent=1) + "\n", encoding="utf-8")


def _spec(path: Path, where: str, raw: Any) -> MarkerSpec:
    if not isinstance(raw, dict):
        raise InputError(path, 'expected {"body": ..., "offset": [x, y, z]}', field=where)
    body = raw.get("body")
    if not isinstance(body, str) or not body:
        raise InputError(path, "missing or empty body name", field=f"{where}.body")
    off = raw.get("offset", [0.0, 0.0, 0.0])
    if (
        not isinstance(off, list)
        or len(off) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in off)
    ):
        raise InputError(path, "offset must be 3 finite numbers (metres)", field=f"{where}.offset")
    return MarkerSpec(body, (float(off[0]), float(off[1]), float(off[2])))


def load_marker_map(path: str | Path) -> MarkerMap:
    """Read and validate a marker-map JSON file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "marker map file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object")
    if raw.get("format") != FORMAT:
        raise InputError(path, f"expected {FORMAT!r}", field="format")
    if raw.get("version") != VERSION:
        raise InputError(
            path, f"unsupported version {raw.get('version')!r}; this reads {VERSION}", field="version"
        )
    if raw.get("length_unit", "m") != "m":
        raise InputError(path, "offsets must be in metres ('m')", field="length_unit")
    bones_raw = raw.get("bones")
    marks_raw = raw.get("landmarks")
    if not isinstance(bones_raw, dict):
        raise InputError(path, "expected an object of bone -> marker", field="bones")
    if not isinstance(marks_raw, dict):
        raise InputError(path, "expected an object of landmark -> marker", field="landmarks")
    known_bones = set(REQUIRED_BONES) | set(OPTIONAL_BONES)
    bones: dict[str, MarkerSpec] = {}
    for name, spec in bones_raw.items():
        if name not in known_bones:
            raise InputError(path, f"unknown Unreal bone {name!r}", field=f"bones.{name}")
        bones[name] = _spec(path, f"bones.{name}", spec)
    missing = [b for b in REQUIRED_BONES if b not in bones]
    if missing:
        raise InputError(path, f"missing required bones {missing}", field="bones")
    landmarks: dict[str, MarkerSpec] = {}
    for name, spec in marks_raw.items():
        if name not in NAMES:
            raise InputError(
                path, f"unknown landmark {name!r} (see schemas.keypoints.NAMES)", field=f"landmarks.{name}"
            )
        landmarks[name] = _spec(path, f"landmarks.{name}", spec)
    missing = [n for n in NAMES if n not in landmarks]
    if missing:
        raise InputError(path, f"missing landmarks {missing}", field="landmarks")
    scale: dict[str, tuple[tuple[str, str], ...]] = {}
    scale_raw = raw.get("scale_segments", {})
    if not isinstance(scale_raw, dict):
        raise InputError(path, "expected an object of body -> [[bone, bone], ...]", field="scale_segments")
    for body, pairs in scale_raw.items():
        scale[body] = _pairs(path, f"scale_segments.{body}", pairs, bones)
    axis_raw = raw.get("axis_scale_segments", {})
    if not isinstance(axis_raw, dict):
        raise InputError(path, 'expected body -> {"x"|"y"|"z": pairs}', field="axis_scale_segments")
    axis_scale: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {}
    for body, per_axis in axis_raw.items():
        where = f"axis_scale_segments.{body}"
        if not isinstance(per_axis, dict) or not per_axis or not set(per_axis) <= {"x", "y", "z"}:
            raise InputError(path, 'expected {"x"|"y"|"z": [[bone, bone], ...]}', field=where)
        axis_scale[body] = {a: _pairs(path, f"{where}.{a}", p, bones) for a, p in per_axis.items()}
    name = raw.get("model", path.stem)
    return MarkerMap(
        model=str(name),
        bones=bones,
        landmarks={n: landmarks[n] for n in NAMES},
        scale_segments=scale,
        axis_scale_segments=axis_scale,
    )


def _pairs(path: Path, where: str, pairs: Any, bones: dict[str, MarkerSpec]) -> tuple[tuple[str, str], ...]:
    if not isinstance(pairs, list) or not pairs:
        raise InputError(path, "expected a non-empty list of [bone, bone] pairs", field=where)
    out: list[tuple[str, str]] = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in bones for p in pair)):
            raise InputError(path, f"pair {pair!r} must name two bones of this map", field=f"{where}[{i}]")
        out.append((pair[0], pair[1]))
    return tuple(out)


def shipped_marker_map(name: str) -> MarkerMap:
    """A marker map shipped with SpineTrack, e.g. ``shipped_marker_map("rajagopal2016")``."""
    return load_marker_map(MAPS_DIR / f"{name}.json")
