"""A model to take away (issue 21, item 3): `spinetrack export-model NAME --format onnx|pth OUT`.

The ONNX file runs through the project's own `onnx:` annotator and the .pth + config.py through its
`mmpose:` one; both give the registered torch model's keypoints within 0.5 px. The card names the
release the model was trained on, the split its metrics come from and the licence of its first
weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from pipeline.annotators.spec import load_annotator
from pipeline.model.configs import build_config
from pipeline.model.predict import predict, untrained_model
from pipeline.model.registry import load_model, save_model
from pipeline.model_export import export_model
from pipeline.release.build import create_release
from pipeline.store import Store
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS

NAME = "tiny-takeaway"


def _person(seed: int) -> list[float]:
    out: list[float] = []
    for i in range(NUM_KEYPOINTS):
        out += [float(20 + (seed + 7 * i) % 56), float(16 + (3 * seed + 11 * i) % 96), 2]
    return out


@pytest.fixture()
def registered(store: Store, tmp_path: Path) -> Store:
    """Release 0.1.0 (a group in each split) and an untrained tiny model registered as trained on it."""
    pinned = {}
    for n, split in enumerate(("train", "val", "test")):
        pinned[f"seq-{n}"] = split
        for frame in range(2):
            path = tmp_path / f"seq-{n}-{frame}.png"
            PILImage.new("RGB", (96, 128), (40 * n, 20 * frame, 90)).save(path)
            image = store.add_image(path, source="synthetic", subset="train-unreal", group_key=f"seq-{n}",
                                    width=96, height=128, frame_index=frame)
            store.add_revision(store.instance_id(image, "p0"), _person(n + frame), [18, 14, 60, 100],
                               source="synthetic")
    release = create_release(store, "0.1.0", pinned=pinned)
    save_model(store, untrained_model("tiny", seed=3), name=NAME, config_name="tiny",
               config=build_config("tiny", work_dir=tmp_path), data_snapshot=release.manifest.snapshot_id,
               metrics={"all_AP": 0.5}, extra={"provenance": {"train_labels": 6}})
    return store


def _coco(real_people: Path) -> tuple[list[Path], list[np.ndarray]]:
    raw = json.loads((real_people / "coco" / "test_coco.json").read_text())
    files, boxes = [], []
    for img in raw["images"]:
        files.append(real_people / "coco" / img["file_name"])
        boxes.append(np.array([a["bbox"] for a in raw["annotations"] if a["image_id"] == img["id"]]))
    return files, boxes


def _worst_px(annotator: Any, model: Any, real_people: Path) -> float:
    files, boxes = _coco(real_people)
    poses = annotator.predict_many(files, boxes)
    reference = predict(model, files, boxes, flip_test=True)
    assert len(poses) == len(reference) == 14
    return max(float(np.abs(p.keypoints - r.keypoints).max()) for p, r in zip(poses, reference, strict=True))


def test_onnx_runs_through_the_onnx_path_and_equals_torch(
    prefect_harness: None, registered: Store, tmp_path: Path, real_people: Path,
) -> None:
    from typer.testing import CliRunner

    from flows.app import app
    from flows.cli import _register

    _register()
    out = tmp_path / "takeaway"
    done = CliRunner().invoke(app, ["export-model", NAME, str(out), "--format", "onnx"])
    assert done.exit_code == 0, done.output
    assert {p.name for p in out.iterdir()} == {"MODEL_CARD.md", f"{NAME}.onnx", "metainfo.py",
                                               "model_card.json"}
    annotator = load_annotator(f"onnx:{out / f'{NAME}.onnx'},flip")
    assert annotator.num_keypoints == NUM_KEYPOINTS  # type: ignore[attr-defined]
    worst = _worst_px(annotator, load_model(registered, NAME).module, real_people)
    assert worst < 0.5, f"ONNX and torch keypoints differ by up to {worst:.3f} px"

    card = json.loads((out / "model_card.json").read_text())
    assert card["training_data"]["releases"] == ["0.1.0"]
    assert (card["validation"]["release"], card["validation"]["split"]) == ("0.1.0", "val")
    assert card["validation"]["instances"] == 2 and "all_AP" in card["validation"]["metrics"]
    assert card["started_from"]["licence"].startswith("Apache-2.0")  # from scratch: the project's own
    text = (out / "MODEL_CARD.md").read_text()
    assert "release 0.1.0" in text and "split `val`" in text and "not held-out" in text


def test_pth_runs_through_the_mmpose_path_with_stock_types(registered: Store, tmp_path: Path,
                                                            real_people: Path) -> None:
    exported = export_model(registered, NAME, "pth", tmp_path / "pth")
    config = exported.folder / "config.py"
    assert "SpineTrack" not in "".join(line for line in config.read_text().splitlines(keepends=True)
                                       if not line.startswith("#"))  # stock mmpose types only
    annotator = load_annotator(f"mmpose:{config},{exported.model_file}")
    worst = _worst_px(annotator, load_model(registered, NAME).module, real_people)
    assert worst < 0.5, f"mmpose checkpoint and torch keypoints differ by up to {worst:.3f} px"


def test_bad_requests_are_input_errors(registered: Store, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="choose one of onnx, pth"):
        export_model(registered, NAME, "tflite", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("")
    with pytest.raises(InputError, match="new or empty"):
        export_model(registered, NAME, "onnx", tmp_path / "full")
