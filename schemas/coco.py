"""Typed COCO keypoint datasets with SpineTrack's 37 keypoints.

The models accept what pycocotools reads and reject what it would silently misread: wrong keypoint
count, a visibility flag outside {0, 1, 2}, NaN coordinates, a negative box.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.errors import load_json_model
from schemas.keypoint_array import KeypointArray
from schemas.keypoints import NUM_KEYPOINTS, coco_category


class CocoImage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    file_name: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class CocoCategory(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    name: str
    keypoints: list[str] = Field(default_factory=list)
    skeleton: list[list[int]] = Field(default_factory=list)
    supercategory: str = "person"


class CocoAnnotation(BaseModel):
    """One person instance. `keypoints` is a flat list of 37 (x, y, v) triplets."""

    model_config = ConfigDict(extra="allow")

    id: int
    image_id: int
    category_id: int = 1
    keypoints: list[float]
    num_keypoints: int | None = None
    bbox: list[float]
    area: float | None = None
    iscrowd: int = 0

    @field_validator("keypoints")
    @classmethod
    def _triplets(cls, value: list[float]) -> list[float]:
        if len(value) != NUM_KEYPOINTS * 3:
            raise ValueError(
                f"expected {NUM_KEYPOINTS} keypoints ({NUM_KEYPOINTS * 3} numbers), got {len(value)} numbers"
            )
        kps = KeypointArray.from_flat(value)
        for i in np.flatnonzero(~np.isfinite(kps.xy).all(axis=1)):
            raise ValueError(f"keypoint {i} has a non-finite coordinate")
        for i in np.flatnonzero(~np.isin(kps.v, (0, 1, 2))):
            raise ValueError(f"keypoint {i} has visibility {kps.v[i]:g}, expected 0, 1 or 2")
        return value

    @field_validator("bbox")
    @classmethod
    def _box(cls, value: list[float]) -> list[float]:
        if len(value) != 4 or not all(math.isfinite(v) for v in value):
            raise ValueError("bbox must be 4 finite numbers [x, y, w, h]")
        if value[2] < 0 or value[3] < 0:
            raise ValueError("bbox width and height must be >= 0")
        return value

    @model_validator(mode="after")
    def _fill(self) -> CocoAnnotation:
        labelled = KeypointArray.from_flat(self.keypoints).num_labelled
        if self.num_keypoints is None:
            self.num_keypoints = labelled
        if self.area is None:
            self.area = float(self.bbox[2] * self.bbox[3])
        return self


class CocoDataset(BaseModel):
    model_config = ConfigDict(extra="allow")

    info: dict[str, Any] = Field(default_factory=dict)
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory] = Field(default_factory=lambda: [CocoCategory(**coco_category())])  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _references(self) -> CocoDataset:
        ids = {img.id for img in self.images}
        if len(ids) != len(self.images):
            raise ValueError("duplicate image ids")
        for n, ann in enumerate(self.annotations):
            if ann.image_id not in ids:
                raise ValueError(f"annotations[{n}] refers to unknown image_id {ann.image_id}")
        return self


def load_coco(path: str | Path) -> CocoDataset:
    """Read and validate a SpineTrack COCO file; errors name the file and the field."""
    return load_json_model(path, CocoDataset, "COCO")


def dump_coco(dataset: CocoDataset | dict[str, Any], path: str | Path) -> Path:
    """Write COCO JSON deterministically (sorted keys, fixed separators) so releases are byte-stable."""
    path = Path(path)
    data = dataset.model_dump(mode="json") if isinstance(dataset, CocoDataset) else dataset
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
    return path
