"""Official-format mmpose checkpoints: a 26-point RTMPose the test trains briefly and saves itself
(config file + `.pth` with meta/state_dict/optimizer, numpy values in meta), used as an annotator
and as the start of a 37-point model whose body predictions equal the source's before fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.annotators.mmpose_checkpoint import checkpoint_annotator, load_checkpoint_model
from pipeline.model.configs import SPECS, build_config, codec
from pipeline.model.init_checkpoint import init_from_checkpoint
from pipeline.model.predict import predict
from pipeline.model.registry import build_model
from schemas.errors import InputError

K = 26
TRAIN_STEPS = 20


def _config_text() -> str:
    spec = SPECS["tiny"]
    w, h = spec.input_size
    enc = codec(spec)
    model = {
        "type": "TopdownPoseEstimator",
        "data_preprocessor": {"type": "PoseDataPreprocessor", "mean": [123.675, 116.28, 103.53],
                              "std": [58.395, 57.12, 57.375], "bgr_to_rgb": True},
        # as the official configs write it: mmdet scope, SyncBN, a pretrained init_cfg (URL)
        "backbone": {"_scope_": "mmdet", "type": "CSPNeXt", "arch": "P5", "expand_ratio": 0.5,
                     "deepen_factor": spec.deepen_factor, "widen_factor": spec.widen_factor,
                     "out_indices": (spec.out_index,), "channel_attention": True,
                     "norm_cfg": {"type": "SyncBN"}, "act_cfg": {"type": "SiLU"},
                     "init_cfg": {"type": "Pretrained", "prefix": "backbone.",
                                  "checkpoint": "https://example.invalid/cspnext.pth"}},
        "head": {"type": "RTMCCHead", "in_channels": spec.in_channels, "out_channels": K,
                 "input_size": spec.input_size,
                 "in_featuremap_size": (w // spec.stride, h // spec.stride),
                 "simcc_split_ratio": spec.simcc_split_ratio, "final_layer_kernel_size": spec.final_kernel,
                 "gau_cfg": {"hidden_dims": spec.gau_hidden, "s": spec.gau_s, "expansion_factor": 2,
                             "dropout_rate": 0.0, "drop_path": 0.0, "act_fn": "SiLU",
                             "use_rel_bias": False, "pos_enc": False},
                 "loss": {"type": "KLDiscretLoss", "use_target_weight": True, "beta": 10.0,
                          "label_softmax": True},
                 "decoder": enc},
        "test_cfg": {"flip_test": True},
    }
    pipeline = [{"type": "LoadImage"}, {"type": "GetBBoxCenterScale"},
                {"type": "TopdownAffine", "input_size": spec.input_size}, {"type": "PackPoseInputs"}]
    return (f"default_scope = 'mmpose'\ncodec = {enc!r}\nmodel = {model!r}\n"
            f"test_dataloader = dict(dataset=dict(pipeline={pipeline!r}))\n")


def _train_briefly(model: Any, folder: Path) -> None:
    """A few AdamW steps on rendered frames (their first 26 points are Halpe26's)."""
    import cv2
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope

    init_default_scope("mmpose")
    spec = SPECS["tiny"]
    steps = Compose([{"type": "GetBBoxCenterScale"}, {"type": "TopdownAffine", "input_size": spec.input_size},
                     {"type": "GenerateTarget", "encoder": codec(spec)}, {"type": "PackPoseInputs"}])
    gt = json.loads((folder / "ground_truth.json").read_text())
    files = {img["id"]: folder / img["file_name"] for img in gt["images"]}
    items = []
    for ann in gt["annotations"]:
        kps = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3)[:K]
        x, y, w, h = ann["bbox"]
        img = cv2.imread(str(files[ann["image_id"]]))
        items.append(steps({"img": img, "img_shape": img.shape[:2], "id": ann["id"],
                            "img_id": ann["image_id"],
                            "bbox": np.array([[x, y, x + w, y + h]], np.float32),
                            "bbox_score": np.ones(1, np.float32), "keypoints": kps[None, :, :2],
                            "keypoints_visible": np.minimum(1, kps[None, :, 2])}))
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=4e-3)
    for step in range(TRAIN_STEPS):
        batch = pseudo_collate(items[(step * 8) % len(items):][:8] or items[:8])
        data = model.data_preprocessor(batch, training=True)
        losses = model.loss(data["inputs"], data["data_samples"])
        optim.zero_grad()
        losses["loss_kpt"].backward()
        optim.step()
    model.eval()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from mmpose.apis import init_model

    from pipeline.annotators.mmpose_checkpoint import load_config
    from synthetic.sample_set import SequenceSpec, render_set

    root = tmp_path_factory.mktemp("rtmpose26")
    cfg_path = root / "rtmpose-tiny_halpe26-128x96.py"
    cfg_path.write_text(_config_text())
    torch.manual_seed(0)
    model = init_model(load_config(cfg_path), None, device="cpu")
    folder = render_set(root / "renders", [SequenceSpec("walk", 41, 16)])[0]
    _train_briefly(model, folder)
    ckpt = root / "rtmpose-tiny_halpe26-128x96.pth"
    torch.save({"meta": {"mmpose_version": "1.3.2", "iter": TRAIN_STEPS, "seed": np.int64(0),
                         "loss": np.float64(1.0)},
                "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "optimizer": {"state": {}, "param_groups": []}}, ckpt)
    gt = json.loads((folder / "ground_truth.json").read_text())
    images = [folder / img["file_name"] for img in gt["images"][:6]]
    boxes = [np.array([a["bbox"] for a in gt["annotations"] if a["image_id"] == img["id"]])
             for img in gt["images"][:6]]
    return {"config": cfg_path, "checkpoint": ckpt, "model": model, "images": images, "boxes": boxes}


def test_checkpoint_annotator_covers_its_26_points(source: dict[str, Any]) -> None:
    ann = checkpoint_annotator(source["config"], source["checkpoint"])
    assert ann.covers == tuple(range(K)) and ann.identity.kind == "mmpose"
    poses = ann.predict_many(source["images"], source["boxes"])
    direct = predict(source["model"], source["images"], source["boxes"])
    assert len(poses) == len(direct) > 0
    for pose, ref in zip(poses, direct, strict=True):
        assert pose.covered[:K].all() and not pose.covered[K:].any()
        assert np.abs(pose.keypoints[:K] - ref.keypoints).max() < 1e-3
        assert (pose.keypoints[K:] == 0).all() and set(pose.origin[K:]) == {""}


def test_init_copies_body_rows_and_keeps_body_predictions(source: dict[str, Any], tmp_path: Path) -> None:
    model = build_model(build_config("tiny", work_dir=tmp_path))
    model.init_weights()
    report = init_from_checkpoint(model, source["checkpoint"])
    assert report.source_keypoints == K
    assert set(report.rows_copied) == {"head.final_layer.weight", "head.final_layer.bias"}
    assert "rows 0-25 of 37" in report.rows_copied["head.final_layer.weight"]
    assert report.shape_mismatch == {} and report.missing_in_checkpoint == []
    assert "backbone.stem.0.conv.weight" in report.copied and "head.cls_x.weight" in report.copied
    before = predict(model, source["images"], source["boxes"])
    reference = predict(source["model"], source["images"], source["boxes"])
    for mine, ref in zip(before, reference, strict=True):
        assert np.abs(mine.keypoints[:K] - ref.keypoints).max() < 1e-3
        assert mine.confidence[:K] == pytest.approx(ref.confidence, abs=1e-4)


def test_checkpoint_missing_weights_is_an_input_error(source: dict[str, Any], tmp_path: Path) -> None:
    state = torch.load(source["checkpoint"], weights_only=False)["state_dict"]
    partial = {k: v for k, v in state.items() if not k.startswith("head.")}
    bad = tmp_path / "partial.pth"
    torch.save({"state_dict": partial}, bad)
    with pytest.raises(InputError, match="lacks"):
        load_checkpoint_model(source["config"], bad)
