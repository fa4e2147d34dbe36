"""The SpineTrack COCO keypoint file as an mmpose dataset (top-down, 37 keypoints).

It is mmpose's COCO-style dataset with SpineTrack's metainfo, plus one guard mmpose lacks: an
annotation with a keypoint count other than 37 is an `InputError` naming the file and annotation,
instead of a shape error deep inside a training iteration.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from mmpose.datasets.datasets.base import BaseCocoStyleDataset
from mmpose.datasets.transforms import LoadImage
from mmpose.evaluation.metrics import KeypointPartitionMetric
from mmpose.registry import DATASETS, METRICS, TRANSFORMS

from pipeline import noise
from pipeline.coco_writer import coco_dataset
from pipeline.model.metainfo import dataset_info
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS


@DATASETS.register_module()
class SpineTrackDataset(BaseCocoStyleDataset):
    """COCO keypoint JSON with 37 (x, y, v) triplets per person; see docs and schemas/coco.py."""

    METAINFO: dict = dataset_info()

    def parse_data_info(self, raw_data_info: dict) -> dict | None:
        ann: dict[str, Any] = raw_data_info["raw_ann_info"]
        keypoints = ann.get("keypoints")
        if keypoints is not None and len(keypoints) != NUM_KEYPOINTS * 3:
            raise InputError(
                self.ann_file,
                f"annotation id {ann.get('id')} has {len(keypoints)} numbers, expected "
                f"{NUM_KEYPOINTS * 3} ({NUM_KEYPOINTS} keypoints as x, y, v)",
                field="annotations.keypoints",
            )
        return super().parse_data_info(raw_data_info)

    def _load_annotations(self) -> tuple[list[dict], list[dict]]:
        with noise.quiet_prints("cocotools"):  # xtcocotools prints its progress on stdout
            return super()._load_annotations()


@TRANSFORMS.register_module()
class LoadImageCached(LoadImage):
    """mmpose's LoadImage that keeps decoded images in memory, up to `max_megabytes`.

    Small CPU training runs revisit the same few hundred frames every few iterations; decoding the
    PNG again each time was about a quarter of the step time. The cache is per process (data loader
    workers each hold their own) and is keyed by path, so it never serves another file's pixels.
    """

    def __init__(self, *args: Any, max_megabytes: float = 1024.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_bytes = int(max_megabytes * 1e6)
        self._cache: dict[str, np.ndarray] = {}
        self._bytes = 0

    def transform(self, results: dict) -> dict | None:
        path = results.get("img_path")
        if "img" in results or path is None:
            return super().transform(results)
        cached = self._cache.get(path)
        if cached is None:
            out = super().transform(results)
            if out is not None and self._bytes + out["img"].nbytes <= self.max_bytes:
                self._cache[path] = out["img"]
                self._bytes += out["img"].nbytes
            return out
        results["img"] = cached.copy()
        results["img_shape"] = cached.shape[:2]
        results["ori_shape"] = cached.shape[:2]
        return results


@METRICS.register_module()
class SpineTrackPartitionMetric(KeypointPartitionMetric):
    """mmpose's KeypointPartitionMetric, fixed for datasets that publish their ann_file.

    CocoMetric looks up `<dataset_name>_ann_file` in the MessageHub and then scores the full
    37-keypoint ground truth against the partition's sliced predictions (shape error). Giving each
    partition its own dataset name makes it build ground truth from the sliced annotations instead.
    """

    @KeypointPartitionMetric.dataset_meta.setter  # type: ignore[attr-defined,untyped-decorator]
    def dataset_meta(self, dataset_meta: dict) -> None:
        self._dataset_meta = dataset_meta
        for name, keypoint_ids in self.partitions.items():
            meta = copy.deepcopy(dataset_meta)
            meta["dataset_name"] = f"{dataset_meta.get('dataset_name', 'dataset')}.{name}"
            meta["num_keypoints"] = len(keypoint_ids)
            meta["sigmas"] = meta["sigmas"][list(keypoint_ids)]
            self.metrics[name].dataset_meta = meta


def merge_coco_files(paths: list[Path] | list[str], out_path: str | Path) -> Path:
    """Merge SpineTrack COCO files (e.g. several render folders' ground_truth.json) into one.

    Image `file_name`s become absolute (resolved against each file's folder) and image/annotation
    ids are renumbered, so the result can be trained or evaluated on directly.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read COCO JSON: {exc}") from exc
        new_ids: dict[int, int] = {}
        for n, img in enumerate(data.get("images", [])):
            if "id" not in img or "file_name" not in img:
                raise InputError(path, "image entry needs id and file_name", field=f"images[{n}]")
            new_ids[img["id"]] = len(images) + 1
            file_name = Path(img["file_name"])
            if not file_name.is_absolute():
                file_name = (path.parent / file_name).resolve()
            images.append({**img, "id": new_ids[img["id"]], "file_name": str(file_name)})
        for n, ann in enumerate(data.get("annotations", [])):
            if ann.get("image_id") not in new_ids:
                raise InputError(path, f"refers to unknown image {ann.get('image_id')}",
                                 field=f"annotations[{n}].image_id")
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": new_ids[ann["image_id"]]})
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco_dataset(images, annotations)))
    return out
