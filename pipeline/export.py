"""COCO export of the store's current labels.

The same labels always give the same bytes (ids from the store, sorted keys, no timestamps), so a
release can be reproduced and checksummed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.coco_writer import coco_annotation, coco_dataset, coco_image
from pipeline.store import Label, Store
from schemas.coco import dump_coco
from schemas.keypoints import NUM_KEYPOINTS


def label_annotation(label: Label) -> dict[str, Any]:
    """A COCO annotation for one label; ids are the store's instance ids."""
    return coco_annotation(
        label.instance_id, label.image_id, label.keypoints, label.bbox, area=label.area, decimals=3,
        extra={
            "spinetrack": {
                "revision_id": label.revision_id,
                "source": label.source,
                "model_version": label.model_version,
                "annotator": label.annotator,
                "round": label.round,
            },
        },
    )


def image_entry(label: Label, image_root: Path | None, *, file_name: str | None = None) -> dict[str, Any]:
    """A COCO image entry; `file_name` is relative to `image_root` when given, else absolute
    (or exactly `file_name`, when the caller computed it)."""
    if file_name is None:
        path = Path(label.image_path)
        file_name = os.path.relpath(path, image_root) if image_root is not None else str(path)
    return coco_image(label.image_id, file_name, label.width, label.height, extra={
        "spinetrack": {
            "source": label.image_source,
            "subset": label.subset,
            "group": label.group_key,
            "frame_index": label.frame_index,
        },
    })


def coco_dict(labels: Sequence[Label], *, image_root: Path | None = None,
              info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the COCO dictionary for `labels` (one person category, 37 keypoints)."""
    images: dict[int, dict[str, Any]] = {}
    annotations = []
    for label in sorted(labels, key=lambda lab: (lab.image_id, lab.instance_id)):
        images.setdefault(label.image_id, image_entry(label, image_root))
        annotations.append(label_annotation(label))
    return coco_dataset(list(images.values()), annotations,
                        info=info or {"description": "SpineTrack export", "keypoints": NUM_KEYPOINTS})


def export_coco(
    store: Store,
    out_path: str | Path,
    *,
    image_source: str | None = None,
    subset: str | None = None,
    revision_sources: Sequence[str] | None = None,
    labels: Sequence[Label] | None = None,
    image_root: str | Path | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the current labels (or the given ones) as a pycocotools-loadable COCO file."""
    if labels is None:
        labels = store.current_labels(
            image_source=image_source, subset=subset, revision_sources=revision_sources
        )
    root = Path(image_root).resolve() if image_root is not None else None
    return dump_coco(coco_dict(labels, image_root=root, info=info), out_path)
