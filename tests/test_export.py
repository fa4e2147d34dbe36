"""COCO export: pycocotools loads it, ids are stable, bytes are deterministic."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image as PILImage
from pycocotools.coco import COCO

from pipeline.export import export_coco
from pipeline.store import Store
from schemas.coco import load_coco


def _fill(store: Store, tmp_path: Path) -> int:
    path = tmp_path / "img.png"
    PILImage.new("RGB", (64, 48), (1, 2, 3)).save(path)
    image = store.add_image(path, source="synthetic", subset="train-unreal", group_key="seq1",
                            width=64, height=48, frame_index=0)
    inst = store.instance_id(image, "actor-1")
    kps = []
    for i in range(37):
        kps += [float(i), float(i) / 2, 2 if i % 3 else 1]
    store.add_revision(inst, kps, [1, 2, 30, 40], source="synthetic")
    return inst


def test_export_loads_in_pycocotools_and_is_deterministic(store: Store, tmp_path: Path) -> None:
    inst = _fill(store, tmp_path)
    a = export_coco(store, tmp_path / "a.json", image_root=tmp_path)
    b = export_coco(store, tmp_path / "b.json", image_root=tmp_path)
    assert a.read_bytes() == b.read_bytes()
    coco = COCO(str(a))
    (ann,) = coco.loadAnns(coco.getAnnIds())
    assert ann["id"] == inst and len(ann["keypoints"]) == 111
    assert ann["num_keypoints"] == 37 and ann["area"] == 1200
    # the store's own copy of the image (pipeline/store/objects.py), relative to the root asked for
    copy = Path(store.images_of([inst])[inst].path)
    assert copy.parent.parent == store.home / "objects"
    assert copy.read_bytes() == (tmp_path / "img.png").read_bytes()
    assert coco.loadImgs(ann["image_id"])[0]["file_name"] == copy.relative_to(tmp_path).as_posix()
    assert load_coco(a).annotations[0].keypoints[3:6] == [1.0, 0.5, 2]


def test_export_filters_by_source(store: Store, tmp_path: Path) -> None:
    _fill(store, tmp_path)
    out = export_coco(store, tmp_path / "real.json", image_source="real")
    assert json.loads(out.read_text())["annotations"] == []
