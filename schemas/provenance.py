"""Where a synthetic label came from: enough to reproduce it or to find every label a bad input touched."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class IKResiduals(BaseModel):
    """Marker residuals of the OpenSim IK solve for one frame (metres)."""

    model_config = ConfigDict(extra="allow")

    rms_m: float
    max_m: float
    worst_marker: str | None = None


class SyntheticProvenance(BaseModel):
    """Stored in `Revision.provenance` of every synthetic revision (as a plain dict)."""

    model_config = ConfigDict(extra="allow")

    kind: str = "synthetic-render"
    source_sequence: str  # sequence_id from sequence.json
    source_path: str  # the folder that was ingested
    sequence_sha256: str  # content hash of the whole folder (IngestRecord.content_sha256)
    schema_version: str
    frame: int
    actor: int
    subject_id: str
    rgb_file: str  # relative to the folder, e.g. rgb/000017.png
    renderer: str | None = None  # sequence.json "renderer" (exporter / engine version)
    model_file: str  # the .osim used for scaling + IK
    model_sha256: str
    marker_map: str  # name or file of the bone -> marker / landmark map
    ik_settings: dict[str, Any] = Field(default_factory=dict)
    residuals: IKResiduals
    visibility_rule: dict[str, Any] = Field(default_factory=dict)
    software: dict[str, str] = Field(default_factory=dict)


def software_versions(*packages: str) -> dict[str, str]:
    """Installed versions of the packages that shaped a label (python always included)."""
    out = {"python": platform.python_version()}
    for name in ("spinetrack", *packages):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not-installed"
    return out
