"""The render contract: what an Unreal exporter writes for one rendered sequence (docs/render-contract.md).

One folder per sequence: ``sequence.json``, ``cameras.jsonl`` (one line per frame), ``bones.jsonl``
(one line per frame and actor), ``rgb/NNNNNN.png``, optional ``depth/NNNNNN.exr|.npy|.png`` and
``mask/NNNNNN.png`` (actor ids, or 8-bit custom-stencil values mapped by ``actors[].stencil``).
This module is the single source of the contract: the models, bone names (the UE5 mannequin's, with
`RIG_BONE_MAPS` for other rigs), file names and the loaders that validate line by line and raise
`InputError` naming file, line and field. docs/render-contract.schema.json is `contract_json_schema()`.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import InputError, from_validation_error

#: The version this code writes. It reads every ``1.x``: minor versions only add optional fields.
SCHEMA_VERSION = "1.1"
SUPPORTED_MAJOR = 1

SEQUENCE_FILE = "sequence.json"
CAMERAS_FILE = "cameras.jsonl"
BONES_FILE = "bones.jsonl"
RGB_DIR = "rgb"
DEPTH_DIR = "depth"
MASK_DIR = "mask"
#: Frame files are named by zero-padded frame number: rgb/000017.png.
FRAME_DIGITS = 6

#: Unreal (UE5 mannequin) bones every bones.jsonl line must give for every actor: the IK targets.
REQUIRED_BONES: tuple[str, ...] = (
    "pelvis",
    "spine_01",
    "spine_02",
    "spine_03",
    "spine_04",
    "spine_05",
    "neck_01",
    "neck_02",
    "head",
    "clavicle_l",
    "upperarm_l",
    "lowerarm_l",
    "hand_l",
    "clavicle_r",
    "upperarm_r",
    "lowerarm_r",
    "hand_r",
    "thigh_l",
    "calf_l",
    "foot_l",
    "ball_l",
    "thigh_r",
    "calf_r",
    "foot_r",
    "ball_r",
)
#: Bones used when present (face landmarks); other extra bones are accepted and ignored.
OPTIONAL_BONES: tuple[str, ...] = ("eye_l", "eye_r")
#: Rigs whose bones are renamed to the UE5 mannequin names above on reading (their name -> ours).
#: A rig that lacks a required bone (the UE4 mannequin has three spine bones, Mixamo one neck bone)
#: fails with the list of missing bones: the spine landmarks need five spine bones and two neck bones.
RIG_BONE_MAPS: dict[str, dict[str, str]] = {
    "ue5_mannequin": {},
    # MetaHuman bodies use the UE5 mannequin names; the eyes come from the face skeleton
    "metahuman": {"FACIAL_L_Eye": "eye_l", "FACIAL_R_Eye": "eye_r"},
    "ue4_mannequin": {},
    "mixamo": {
        "Hips": "pelvis", "Spine": "spine_01", "Spine1": "spine_02", "Spine2": "spine_03", "Neck": "neck_01",
        "Head": "head", "LeftShoulder": "clavicle_l", "LeftArm": "upperarm_l", "LeftForeArm": "lowerarm_l",
        "LeftHand": "hand_l", "RightShoulder": "clavicle_r", "RightArm": "upperarm_r",
        "RightForeArm": "lowerarm_r", "RightHand": "hand_r", "LeftUpLeg": "thigh_l", "LeftLeg": "calf_l",
        "LeftFoot": "foot_l", "LeftToeBase": "ball_l", "RightUpLeg": "thigh_r", "RightLeg": "calf_r",
        "RightFoot": "foot_r", "RightToeBase": "ball_r", "LeftEye": "eye_l", "RightEye": "eye_r",
    },
}

M = TypeVar("M", bound=BaseModel)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: A world coordinate (Unreal cm): finite and within 100 km of the origin, so the fit's arithmetic
#: (squares, sums over frames) cannot overflow into NaN on a hostile value.
WORLD_LIMIT_CM = 1e7
WorldCm = Annotated[float, Field(allow_inf_nan=False, ge=-WORLD_LIMIT_CM, le=WORLD_LIMIT_CM)]
Vec3 = tuple[WorldCm, WorldCm, WorldCm]
#: Mask pixels hold the actor id; 16-bit PNG masks allow ids up to 65535 (8-bit up to 255).
MAX_ACTOR_ID = 65535
#: Unreal's CustomDepth stencil is 8-bit; 0 is "no stencil" (background).
MAX_STENCIL = 255


def frame_name(frame: int, suffix: str) -> str:
    """File name of a frame: ``frame_name(17, ".png") == "000017.png"``."""
    return f"{frame:0{FRAME_DIGITS}d}{suffix}"


class _Strict(BaseModel):
    # Unknown fields are ignored so newer 1.x exporters stay readable.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Subject(_Strict):
    id: str = Field(min_length=1)
    height_cm: FiniteFloat = Field(gt=0)
    mass_kg: FiniteFloat = Field(gt=0)


class Actor(_Strict):
    id: int = Field(ge=1, le=MAX_ACTOR_ID)
    subject_id: str = Field(min_length=1)
    #: Custom-stencil value of this actor when the masks are Unreal custom-stencil buffers (1.1).
    stencil: int | None = Field(default=None, ge=1, le=MAX_STENCIL)


class SequenceInfo(_Strict):
    """sequence.json."""

    schema_version: str
    sequence_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    fps: FiniteFloat = Field(gt=0)
    image_width: int = Field(gt=0)
    image_height: int = Field(gt=0)
    units: Literal["cm"]
    axes: Literal["unreal"]
    subject: Subject
    #: Further subjects for multi-actor scenes; `subject` is always the first.
    subjects: list[Subject] = Field(default_factory=list)
    actors: list[Actor] = Field(min_length=1)
    frame_count: int = Field(ge=1)
    #: Free text naming what wrote the folder (e.g. "UE 5.4 MovieRenderQueue + SpineTrackExporter 0.3").
    renderer: str | None = None
    #: Skeleton naming of bones.jsonl (1.1): a key of RIG_BONE_MAPS; 1.0 folders are ue5_mannequin.
    rig: str = "ue5_mannequin"
    #: Extra renames applied after the rig's (their bone name -> UE5 mannequin name) (1.1).
    bone_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _supported(cls, value: str) -> str:
        check_schema_version(value)
        return value

    @model_validator(mode="after")
    def _actors_known(self) -> SequenceInfo:
        ids = [a.id for a in self.actors]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate actor ids {ids}")
        stencils = [a.stencil for a in self.actors]
        if any(v is not None for v in stencils):
            if any(v is None for v in stencils):
                raise ValueError("give a stencil value for every actor or for none")
            if len(set(stencils)) != len(stencils):
                raise ValueError(f"duplicate actor stencil values {stencils}")
        known = {s.id for s in self.all_subjects}
        for actor in self.actors:
            if actor.subject_id not in known:
                raise ValueError(f"actor {actor.id} names unknown subject_id {actor.subject_id!r}")
        return self

    @field_validator("rig")
    @classmethod
    def _known_rig(cls, value: str) -> str:
        if value not in RIG_BONE_MAPS:
            raise ValueError(f"unknown rig {value!r}; known: {', '.join(RIG_BONE_MAPS)} (or give bone_map)")
        return value

    @property
    def bone_renames(self) -> dict[str, str]:
        """Their bone name -> UE5 mannequin name, rig map first, then bone_map."""
        return {**RIG_BONE_MAPS[self.rig], **self.bone_map}

    @property
    def stencil_to_actor(self) -> dict[int, int] | None:
        """Mask value -> actor id when the masks are custom-stencil buffers, else None."""
        if self.actors[0].stencil is None:
            return None
        return {int(a.stencil): a.id for a in self.actors if a.stencil is not None}

    @property
    def all_subjects(self) -> list[Subject]:
        return [self.subject, *self.subjects]

    def subject_of(self, actor_id: int) -> Subject:
        sid = next(a.subject_id for a in self.actors if a.id == actor_id)
        return next(s for s in self.all_subjects if s.id == sid)


class Rotator(_Strict):
    """Unreal FRotator in degrees (see synthetic/camera.py for the matrix)."""

    pitch: FiniteFloat
    yaw: FiniteFloat
    roll: FiniteFloat


class CameraFrame(_Strict):
    """One cameras.jsonl line: explicit intrinsics (fx, fy, cx, cy) or a horizontal FOV."""

    frame: int = Field(ge=0)
    fx: FiniteFloat | None = Field(default=None, gt=0)
    fy: FiniteFloat | None = Field(default=None, gt=0)
    cx: FiniteFloat | None = None
    cy: FiniteFloat | None = None
    hfov_deg: FiniteFloat | None = Field(default=None, gt=0, lt=180)
    location: Vec3
    rotation: Rotator

    @model_validator(mode="after")
    def _intrinsics(self) -> CameraFrame:
        explicit = [self.fx, self.fy, self.cx, self.cy]
        if all(v is not None for v in explicit):
            return self
        if any(v is not None for v in explicit):
            raise ValueError("give all of fx, fy, cx, cy (or only hfov_deg)")
        if self.hfov_deg is None:
            raise ValueError("no intrinsics: give fx, fy, cx, cy or hfov_deg")
        return self


class BoneFrame(_Strict):
    """One bones.jsonl line: world positions (Unreal cm) of one actor's bones in one frame."""

    frame: int = Field(ge=0)
    actor: int = Field(ge=1, le=MAX_ACTOR_ID)
    bones: dict[str, Vec3] = Field(json_schema_extra={"required": list(REQUIRED_BONES)})

    @field_validator("bones")
    @classmethod
    def _required(cls, bones: dict[str, Vec3]) -> dict[str, Vec3]:
        missing = [b for b in REQUIRED_BONES if b not in bones]
        if missing:
            hints = []
            for name in missing:
                close = difflib.get_close_matches(name, list(bones), n=1, cutoff=0.6)
                if close:
                    hints.append(f"{close[0]!r} -> {name!r}?")
            hint = f" (did you mean {', '.join(hints)})" if hints else ""
            raise ValueError(f"missing required bones {missing}{hint}")
        return bones


def check_schema_version(value: Any) -> None:
    """Accept ``1.x``; anything else is a clear error rather than a silent misread."""
    text = str(value)
    major, _, minor = text.partition(".")
    if not (major.isdigit() and int(major) == SUPPORTED_MAJOR and (minor == "" or minor.isdigit())):
        raise ValueError(
            f"unsupported schema_version {text!r}: this SpineTrack reads {SUPPORTED_MAJOR}.x "
            f"(writes {SCHEMA_VERSION})"
        )


# -- loaders --------------------------------------------------------------------------------
def _reject_constant(token: str) -> float:
    # json accepts NaN/Infinity literals; keep them so the field validator names the field.
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[token]


def load_sequence_info(path: str | Path) -> SequenceInfo:
    """Read and validate sequence.json."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object")
    if "schema_version" not in raw:
        raise InputError(path, "missing", field="schema_version")
    try:
        check_schema_version(raw["schema_version"])
    except ValueError as exc:
        raise InputError(path, str(exc), field="schema_version") from exc
    try:
        return SequenceInfo.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(path, exc) from exc


def iter_jsonl(
    path: str | Path, model: type[M], prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> Iterator[tuple[int, M]]:
    """Yield (1-based line number, validated model) for each non-blank line (`prepare` edits the raw dict)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line, parse_constant=_reject_constant)
            except json.JSONDecodeError as exc:
                truncated = not line.endswith("\n")
                why = "truncated line (file cut off?)" if truncated else "not valid JSON"
                raise InputError(path, f"{why}: {exc.msg}", line=lineno) from exc
            if not isinstance(raw, dict):
                raise InputError(path, "expected a JSON object", line=lineno)
            if prepare is not None:
                raw = prepare(raw)
            try:
                yield lineno, model.model_validate(raw)
            except ValidationError as exc:
                raise from_validation_error(path, exc, line=lineno) from exc


def load_cameras(path: str | Path, frame_count: int) -> list[CameraFrame]:
    """Read cameras.jsonl; exactly one line per frame 0..frame_count-1 (any order)."""
    path = Path(path)
    by_frame: dict[int, CameraFrame] = {}
    for lineno, cam in iter_jsonl(path, CameraFrame):
        if cam.frame >= frame_count:
            raise InputError(
                path, f"frame {cam.frame} beyond frame_count {frame_count} of sequence.json",
                line=lineno, field="frame",
            )
        if cam.frame in by_frame:
            raise InputError(path, f"duplicate frame {cam.frame}", line=lineno, field="frame")
        by_frame[cam.frame] = cam
    missing = [f for f in range(frame_count) if f not in by_frame]
    if missing:
        raise InputError(
            path,
            f"frame count mismatch: sequence.json says {frame_count} frames, {len(by_frame)} given; "
            f"missing frames {missing[:10]}{' ...' if len(missing) > 10 else ''}",
            field="frame",
        )
    return [by_frame[f] for f in range(frame_count)]


def rename_bones(renames: Mapping[str, str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A `prepare` for bones.jsonl lines: bone names of another rig -> UE5 mannequin names."""

    def prepare(raw: dict[str, Any]) -> dict[str, Any]:
        bones = raw.get("bones")
        if renames and isinstance(bones, dict):
            raw = dict(raw, bones={renames.get(k, k): v for k, v in bones.items()})
        return raw

    return prepare


def load_bones(
    path: str | Path, frame_count: int, actor_ids: list[int], renames: Mapping[str, str] | None = None
) -> dict[tuple[int, int], BoneFrame]:
    """Read bones.jsonl; exactly one line per (frame, actor) for every frame and declared actor.

    `renames` maps another rig's bone names to the UE5 mannequin names (`SequenceInfo.bone_renames`).
    """
    path = Path(path)
    known = set(actor_ids)
    out: dict[tuple[int, int], BoneFrame] = {}
    for lineno, bf in iter_jsonl(path, BoneFrame, rename_bones(renames or {})):
        if bf.frame >= frame_count:
            raise InputError(
                path, f"frame {bf.frame} beyond frame_count {frame_count} of sequence.json",
                line=lineno, field="frame",
            )
        if bf.actor not in known:
            raise InputError(
                path, f"actor {bf.actor} not declared in sequence.json", line=lineno, field="actor"
            )
        key = (bf.frame, bf.actor)
        if key in out:
            raise InputError(path, f"duplicate frame {bf.frame} actor {bf.actor}", line=lineno, field="frame")
        out[key] = bf
    missing = [(f, a) for f in range(frame_count) for a in sorted(known) if (f, a) not in out]
    if missing:
        raise InputError(
            path,
            f"frame count mismatch: expected {frame_count} frames x {len(known)} actors, {len(out)} given; "
            f"missing (frame, actor) {missing[:10]}{' ...' if len(missing) > 10 else ''}",
            field="frame",
        )
    return out


def contract_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of sequence.json and of one cameras.jsonl / bones.jsonl line.

    docs/render-contract.schema.json is this, written by `python -m schemas.render`; a test keeps
    them equal and validates docs/example-sequence/ against it.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"SpineTrack render contract {SCHEMA_VERSION}",
        "description": "docs/render-contract.md. Keys: sequence.json, cameras.jsonl line, bones.jsonl line.",
        "type": "object",
        "properties": {
            "sequence.json": SequenceInfo.model_json_schema(),
            "cameras.jsonl": CameraFrame.model_json_schema(),
            "bones.jsonl": BoneFrame.model_json_schema(),
        },
        "required_bones": list(REQUIRED_BONES),
        "optional_bones": list(OPTIONAL_BONES),
        "rig_bone_maps": RIG_BONE_MAPS,
    }


if __name__ == "__main__":
    print(json.dumps(contract_json_schema(), indent=1))
