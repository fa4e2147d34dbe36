"""The manifest of a dataset release: what is in it, where it came from, how it changed.

A manifest is the release's contract: it names the store snapshot and the exact revision of every
instance, so the release can be rebuilt byte for byte, and it checksums every file, so a copy can be
verified. It holds no absolute paths, so the same release rebuilt elsewhere has the same manifest.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from packaging.version import Version
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from schemas.errors import load_json_model

MANIFEST_SCHEMA_VERSION = 1

#: Semantic Versioning 2.0.0 (semver.org), the official regular expression.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


#: The pre-release labels a release may use: those whose order packaging.version knows
#: (alpha < beta < rc), optionally numbered (1.0.0-rc.1).
PRE_RELEASE = re.compile(r"^(alpha|beta|rc)(\.(0|[1-9]\d*))?$")


def check_semver(version: str) -> str:
    """Return `version` if it is a semantic version (e.g. 1.2.0, 2.0.0-rc.1), else raise ValueError."""
    match = SEMVER.match(version)
    if not match:
        raise ValueError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0)")
    if match[4] is not None and not PRE_RELEASE.match(match[4]):
        raise ValueError(f"{version!r}: a pre-release must be alpha, beta or rc, optionally numbered "
                         "(e.g. 1.0.0-rc.1)")
    return version


def semver_key(version: str) -> Version:
    """Sort key with release precedence: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0 < 1.0.1
    (packaging.version's ordering of the versions check_semver accepts)."""
    return Version(check_semver(version))


class FileEntry(BaseModel):
    """One file of the release, relative to the release folder."""

    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class SplitCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: int = 0
    instances: int = 0
    groups: int = 0


class VisibilityCounts(BaseModel):
    """COCO visibility flags of one keypoint over the release: 0 unlabelled, 1 occluded, 2 visible."""

    model_config = ConfigDict(extra="forbid")

    v0: int = 0
    v1: int = 0
    v2: int = 0


class Counts(BaseModel):
    """Instance counts, by split and by what they came from."""

    model_config = ConfigDict(extra="forbid")

    splits: dict[str, SplitCounts]
    #: split -> image source (synthetic | real) -> instances
    image_sources: dict[str, dict[str, int]]
    #: split -> image subset (e.g. train-unreal, coco, yoga) -> instances
    subsets: dict[str, dict[str, int]]
    #: split -> revision source (synthetic, human, pseudo-accepted, ...) -> instances
    revision_sources: dict[str, dict[str, int]]
    #: split -> active-learning round ("none" for labels outside rounds) -> instances
    rounds: dict[str, dict[str, int]]
    #: keypoint name -> visibility counts over every split, in keypoint order
    keypoint_visibility: dict[str, VisibilityCounts]
    #: split -> who placed the labelled points (human, synthetic, pseudo-accepted, ...) -> points;
    #: None (and absent from the JSON) in releases made before points had sources
    point_sources: dict[str, dict[str, int]] | None = None

    @model_serializer(mode="wrap")
    def _without_unknown_points(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """An older release's counts serialise as they were written: without `point_sources`."""
        data: dict[str, object] = handler(self)
        if data.get("point_sources") is None:
            data.pop("point_sources", None)
        return data


class ModelInfo(BaseModel):
    """A model version whose output (pseudo-accepted labels) is in the release."""

    model_config = ConfigDict(extra="forbid")

    name: str
    instances: int
    config_name: str | None = None
    data_snapshot: str | None = None
    checkpoint_sha256: str | None = None


class Changelog(BaseModel):
    """Instance ids changed against the parent release (sorted)."""

    model_config = ConfigDict(extra="forbid")

    parent: str | None = None
    added: list[int] = Field(default_factory=list)
    removed: list[int] = Field(default_factory=list)
    relabelled: list[int] = Field(default_factory=list)  # same instance, another revision


class ReleaseManifest(BaseModel):
    """manifest.json of a release (see docs/releases.md)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str = "SpineTrack"
    version: str
    parent: str | None = None
    created_at: datetime
    notes: str = ""
    snapshot_id: str
    split_fractions: dict[str, float]
    #: "copied": images/ is part of the release; "referenced": file_name is relative to image_root
    images: str = Field(pattern=r"^(copied|referenced)$")
    image_root: str = "."
    counts: Counts
    model_versions: list[ModelInfo] = Field(default_factory=list)
    #: split -> [[instance_id, revision_id], ...] sorted: the exact labels, for reproduce and changelog
    revisions: dict[str, list[tuple[int, int]]]
    changelog: Changelog
    files: list[FileEntry]
    #: instances left out because a reviewer's newest decision on them is needs-fix (sorted ids)
    excluded_needs_fix: list[int] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_semver(value)

    @field_validator("parent")
    @classmethod
    def _parent(cls, value: str | None) -> str | None:
        return None if value is None else check_semver(value)

    def instance_revisions(self) -> dict[int, int]:
        """instance id -> revision id over every split."""
        return {inst: rev for pairs in self.revisions.values() for inst, rev in pairs}

    def to_json(self) -> str:
        """Deterministic JSON text (sorted keys, fixed separators, trailing newline)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")) + "\n"


def load_manifest(path: str | Path) -> ReleaseManifest:
    """Read and validate manifest.json; errors name the file and the field."""
    return load_json_model(path, ReleaseManifest, "manifest")
