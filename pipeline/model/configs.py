"""mmengine configs for the 37-keypoint SpineTrack model, built in Python (no config files to ship).

* `rtmpose-s`, `rtmpose-m`: the standard RTMPose 256x192 architectures (CSPNeXt + SimCC/GAU head)
  as SpinePose uses them, adapted to this stack: BN (not SyncBN), no pretrained `init_cfg` (it
  downloads), no mmdet scope, no Albumentation, no PipelineSwitchHook. For GPUs and real data.
* `tiny`: a small RTMPose that learns on 2 CPU cores within minutes (tests, demo, the active-learning
  benchmark): small input, thin CSPNeXt, small GAU head, short warm-up and a higher learning rate.
  Its design and learning curve are in bench/results/tiny_learning_curve.json.

All of them use `SpineTrackPoseEstimator` + `SpineTrackSimCCHead` (losses.py), the
`SpineTrackDataset` (dataset.py) and the 37-keypoint metainfo from the schema, and are iteration
based, because training rounds are sized in iterations, not epochs.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmengine.config import Config

from pipeline.model.blaze37 import heatmap_codec
from pipeline.model.metainfo import dataset_info, partitions
from schemas.keypoints import NUM_KEYPOINTS


@dataclass(frozen=True)
class ModelSpec:
    """What differs between the named configs."""

    input_size: tuple[int, int]  # (w, h), mmpose order
    deepen_factor: float
    widen_factor: float
    out_index: int  # CSPNeXt stage whose feature map feeds the head (4: stride 32, 3: stride 16)
    head_hidden: int
    gau_hidden: int
    gau_s: int
    final_kernel: int
    sigma: tuple[float, float]
    simcc_split_ratio: float
    iters: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_iters: int
    augment: str  # "full" (stock RTMPose) | "light" (flip, small scale/rotation)
    flip_test: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    #: "rtmpose" (CSPNeXt + SimCC head, the fields above) | "blaze37" (pipeline/model/blaze37.py)
    arch: str = "rtmpose"
    #: starts from pretrained weights (blaze37: the mediapipe wheel's), so it is never trained
    #: "from scratch": the spine terms are on and the learning rate is the spec's own
    pretrained: bool = False
    #: learning rate of the backbone relative to the head's
    backbone_lr_mult: float = 1.0
    #: blaze37: "none" | "early" | "encoder" (pipeline.model.blaze37.FROZEN_PARTS)
    freeze: str = "none"
    #: blaze37: the body rows come from a frozen copy of BlazePose's network (docs/model.md)
    expert_body: bool = False
    #: share of each epoch drawn from unlabelled real crops that only the teacher supervises
    real_share: float = 0.0
    #: inference crops: "box" (the padded box, mmpose's TopdownAffine) | "roi" (BlazePose's rotated
    #: region of interest from its detector, pipeline.model.roi; body AP 0.48 -> 0.55 on the COCO
    #: sample, bench/results/student.json)
    crop: str = "box"

    @property
    def stride(self) -> int:
        return 2 ** (self.out_index + 1)

    @property
    def in_channels(self) -> int:
        # CSPNeXt P5 stage channels: 64, 128, 256, 512, 1024 (x widen_factor) for out_index 0..4
        return int(1024 * self.widen_factor) // 2 ** (4 - self.out_index)


SPECS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(
        input_size=(96, 128),
        deepen_factor=0.167,
        widen_factor=0.25,
        out_index=4,
        head_hidden=128,
        gau_hidden=128,
        gau_s=64,
        final_kernel=3,
        sigma=(2.45, 2.83),
        simcc_split_ratio=2.0,
        iters=300,
        batch_size=16,
        lr=4e-3,
        weight_decay=0.0,
        warmup_iters=20,
        augment="light",
    ),
    # BlazePose's converted network + a 37-row heatmap head (docs/model.md): the default student.
    # Sized for a round's retrain on 2 CPU cores (about 0.7 s per iteration of 8 crops on 1 thread).
    "blaze37": ModelSpec(
        input_size=(256, 256),
        deepen_factor=0.0,
        widen_factor=0.0,
        out_index=1,  # stride 4: the 64x64 decoder feature
        head_hidden=0,
        gau_hidden=0,
        gau_s=0,
        final_kernel=1,
        sigma=(2.0, 2.0),
        simcc_split_ratio=1.0,
        iters=300,
        batch_size=8,
        lr=1e-3,
        weight_decay=0.0,
        warmup_iters=20,
        augment="light",
        arch="blaze37",
        pretrained=True,
        # measured (docs/model.md): with the body from the frozen expert the trainable copy can
        # learn at a tenth of the head's rate; self-distillation instead kept less body and spine
        backbone_lr_mult=0.1,
        # the stem and the 64- and 32-pixel stages stay BlazePose's: the body expert and the
        # trainable copy then compute them once at inference (most of the network's cost)
        freeze="early",
        expert_body=True,
        real_share=0.0,
        crop="roi",
    ),
    "rtmpose-s": ModelSpec(
        input_size=(192, 256),
        deepen_factor=0.33,
        widen_factor=0.5,
        out_index=4,
        head_hidden=256,
        gau_hidden=256,
        gau_s=128,
        final_kernel=7,
        sigma=(4.9, 5.66),
        simcc_split_ratio=2.0,
        iters=100_000,
        batch_size=256,
        lr=4e-3,
        weight_decay=0.0,
        warmup_iters=1000,
        augment="full",
    ),
    "rtmpose-m": ModelSpec(
        input_size=(192, 256),
        deepen_factor=0.67,
        widen_factor=0.75,
        out_index=4,
        head_hidden=256,
        gau_hidden=256,
        gau_s=128,
        final_kernel=7,
        sigma=(4.9, 5.66),
        simcc_split_ratio=2.0,
        iters=100_000,
        batch_size=256,
        lr=4e-3,
        weight_decay=0.05,
        warmup_iters=1000,
        augment="full",
    ),
}

CONFIG_NAMES: tuple[str, ...] = tuple(SPECS)
#: The student every round, the demo and `spinetrack train` use unless told otherwise.
DEFAULT_CONFIG = "blaze37"

#: ImageNet normalisation (RTMPose's data preprocessor).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def codec(spec: ModelSpec) -> dict[str, Any]:
    if spec.arch == "blaze37":
        return heatmap_codec()
    return {
        "type": "SimCCLabel",
        "input_size": spec.input_size,
        "sigma": spec.sigma,
        "simcc_split_ratio": spec.simcc_split_ratio,
        "normalize": False,
        "use_dark": False,
    }


def model_dict(spec: ModelSpec, loss_weights: dict[str, float] | None = None) -> dict[str, Any]:
    """The model section: CSPNeXt backbone + SpineTrack SimCC head, 37 outputs (or blaze37's)."""
    if spec.arch == "blaze37":
        return blaze37_model_dict(spec, loss_weights)
    w, h = spec.input_size
    return {
        "type": "SpineTrackPoseEstimator",
        "data_preprocessor": {
            "type": "PoseDataPreprocessor",
            "mean": list(MEAN),
            "std": list(STD),
            "bgr_to_rgb": True,
        },
        "backbone": {
            "type": "CSPNeXt",
            "arch": "P5",
            "expand_ratio": 0.5,
            "deepen_factor": spec.deepen_factor,
            "widen_factor": spec.widen_factor,
            "out_indices": (spec.out_index,),
            "channel_attention": True,
            "norm_cfg": {"type": "BN"},
            "act_cfg": {"type": "SiLU"},
        },
        "head": {
            "type": "SpineTrackSimCCHead",
            "in_channels": spec.in_channels,
            "out_channels": NUM_KEYPOINTS,
            "input_size": spec.input_size,
            "in_featuremap_size": (w // spec.stride, h // spec.stride),
            "simcc_split_ratio": spec.simcc_split_ratio,
            "final_layer_kernel_size": spec.final_kernel,
            "gau_cfg": {
                "hidden_dims": spec.gau_hidden,
                "s": spec.gau_s,
                "expansion_factor": 2,
                "dropout_rate": 0.0,
                "drop_path": 0.0,
                "act_fn": "SiLU",
                "use_rel_bias": False,
                "pos_enc": False,
            },
            "loss": {"type": "KLDiscretLoss", "use_target_weight": True, "beta": 10.0, "label_softmax": True},
            "loss_weights": dict(loss_weights or {}),
            "decoder": codec(spec),
        },
        "test_cfg": {"flip_test": spec.flip_test},
    }


def blaze37_model_dict(spec: ModelSpec, loss_weights: dict[str, float] | None = None) -> dict[str, Any]:
    """BlazePose's converted network (RGB in [0, 1], as it was trained) + the 37-row heatmap head."""
    return {
        "type": "Blaze37Estimator",
        "data_preprocessor": {
            "type": "PoseDataPreprocessor",
            "mean": [0.0, 0.0, 0.0],
            "std": [255.0, 255.0, 255.0],
            "bgr_to_rgb": True,
        },
        "backbone": {"type": "BlazePoseBackbone", "freeze": spec.freeze, "expert": spec.expert_body},
        "head": {
            "type": "Blaze37Head",
            "in_channels": 48,
            "out_channels": NUM_KEYPOINTS,
            "decoder": codec(spec),
            # the frozen expert gives the body rows, so nothing needs distilling into them
            "loss_weights": {**({"distill": 0.0} if spec.expert_body else {}), **(loss_weights or {})},
        },
        "test_cfg": {"flip_test": spec.flip_test, "flip_mode": "heatmap", "shift_heatmap": True,
                     "crop": spec.crop},
    }


def train_pipeline(spec: ModelSpec) -> list[dict[str, Any]]:
    if spec.augment == "full":
        augment: list[dict[str, Any]] = [
            {"type": "RandomFlip", "direction": "horizontal"},
            {"type": "RandomHalfBody"},
            {"type": "RandomBBoxTransform", "scale_factor": [0.6, 1.4], "rotate_factor": 80},
            {"type": "TopdownAffine", "input_size": spec.input_size},
            {"type": "YOLOXHSVRandomAug"},
        ]
    else:
        augment = [
            {"type": "RandomFlip", "direction": "horizontal"},
            {
                "type": "RandomBBoxTransform",
                "shift_factor": 0.05,
                "scale_factor": [0.85, 1.15],
                "rotate_factor": 20,
            },
            {"type": "TopdownAffine", "input_size": spec.input_size},
        ]
    return [
        {"type": "LoadImageCached"},  # dataset.py: decoded frames stay in memory between epochs
        {"type": "GetBBoxCenterScale"},
        *augment,
        {"type": "GenerateTarget", "encoder": codec(spec)},
        {"type": "PackPoseInputs"},
    ]


def test_pipeline(spec: ModelSpec) -> list[dict[str, Any]]:
    return [
        {"type": "LoadImage"},
        {"type": "GetBBoxCenterScale"},
        {"type": "TopdownAffine", "input_size": spec.input_size},
        {"type": "PackPoseInputs"},
    ]


def _dataset(ann: str | Path | None, data_root: str | Path, pipeline: list[dict[str, Any]], *,
             test_mode: bool) -> dict[str, Any]:
    return {
        "type": "SpineTrackDataset",
        "data_root": str(data_root),
        "data_mode": "topdown",
        "ann_file": str(ann) if ann else "",
        "data_prefix": {"img": ""},
        "metainfo": dataset_info(),
        "test_mode": test_mode,
        "pipeline": pipeline,
    }


def build_config(
    name: str,
    *,
    work_dir: str | Path,
    train_ann: str | Path | None = None,
    val_ann: str | Path | None = None,
    data_root: str | Path = "",
    iters: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    loss_weights: dict[str, float] | None = None,
    num_workers: int = 0,
    val_interval: int | None = None,
    log_interval: int = 50,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """A complete mmengine config for training/evaluating/inferring the named model.

    `train_ann`/`val_ann` are SpineTrack COCO files; image `file_name`s are resolved against
    `data_root` (absolute file names work with the default ""). Without `train_ann` the config is
    still complete for inference (`test_dataloader.dataset.pipeline`, metainfo). `overrides`
    replaces `ModelSpec` fields (e.g. {"input_size": (72, 96)}) for experiments.
    """
    spec = _resolved_spec(name, overrides)
    iters = int(iters if iters is not None else spec.iters)
    batch = int(batch_size if batch_size is not None else spec.batch_size)
    base_lr = float(lr if lr is not None else spec.lr)
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    cfg: dict[str, Any] = {
        **_runtime_sections(name, spec, overrides, work_dir=work_dir, seed=seed, log_interval=log_interval),
        "model": model_dict(spec, loss_weights),
        "optim_wrapper": _optim_wrapper(spec, base_lr),
        "param_scheduler": _lr_schedule(spec, iters, base_lr),
        "train_cfg": {"type": "IterBasedTrainLoop", "max_iters": iters, "val_interval": iters + 1},
        "test_dataloader": _test_dataloader(spec, val_ann, data_root, num_workers),
        # mmengine wants test_dataloader/test_cfg/test_evaluator together; inference needs the first
        "test_cfg": {},
        "test_evaluator": evaluator(),
    }
    if train_ann:
        cfg["train_dataloader"] = _train_dataloader(spec, train_ann, data_root, num_workers, batch)
    if val_ann:
        _add_validation(cfg, val_interval or iters)
    return Config(cfg)


def _resolved_spec(name: str, overrides: dict[str, Any] | None) -> ModelSpec:
    """The named spec with the experiment's overrides, refused before anything is built on it:
    an input the head's stride does not divide would give a feature map of the wrong size."""
    if name not in SPECS:
        raise ValueError(f"unknown model config {name!r}; choose one of {', '.join(CONFIG_NAMES)}")
    spec = dataclasses.replace(SPECS[name], **(overrides or {}))
    if any(side % spec.stride for side in spec.input_size):
        raise ValueError(
            f"input size {spec.input_size} must be a multiple of the head's feature stride {spec.stride}"
        )
    return spec


def _lr_schedule(spec: ModelSpec, iters: int, base_lr: float) -> list[dict[str, Any]]:
    """A linear warm-up (at most a fifth of the run, so a short run is not all warm-up), then a
    cosine decay to 5 % of the rate, counted in iterations as training rounds are sized."""
    warmup = min(spec.warmup_iters, iters // 5)
    schedulers: list[dict[str, Any]] = []
    if warmup > 0:
        schedulers.append(
            {"type": "LinearLR", "start_factor": 0.1, "by_epoch": False, "begin": 0, "end": warmup}
        )
    schedulers.append(
        {
            "type": "CosineAnnealingLR",
            "eta_min": base_lr * 0.05,
            "begin": warmup,
            "end": iters,
            "T_max": iters - warmup,
            "by_epoch": False,
        }
    )
    return schedulers


def _runtime_sections(
    name: str,
    spec: ModelSpec,
    overrides: dict[str, Any] | None,
    *,
    work_dir: str | Path,
    seed: int,
    log_interval: int,
) -> dict[str, Any]:
    """Everything but the model, optimiser and data: the `spinetrack` section records which config,
    input size and overrides made a checkpoint (export and the annotators read it back); the rest
    keeps mmengine quiet and seeded and stops it writing checkpoints of its own."""
    return {
        "default_scope": "mmpose",
        "spinetrack": {
            "config_name": name,
            "input_size": list(spec.input_size),
            "overrides": dict(overrides or {}),
        },
        "work_dir": str(work_dir),
        "randomness": {"seed": seed, "deterministic": False},
        "env_cfg": {
            "cudnn_benchmark": False,
            "mp_cfg": {"mp_start_method": "fork", "opencv_num_threads": 0},
            "dist_cfg": {"backend": "nccl"},
        },
        "log_level": "WARNING",
        "log_processor": {"type": "LogProcessor", "window_size": log_interval, "by_epoch": False},
        "default_hooks": {
            "timer": {"type": "IterTimerHook"},
            "logger": {"type": "LoggerHook", "interval": log_interval},
            "param_scheduler": {"type": "ParamSchedulerHook"},
            "checkpoint": {"type": "CheckpointHook", "interval": -1, "save_last": False},
            "sampler_seed": {"type": "DistSamplerSeedHook"},
        },
        "visualizer": {
            "type": "PoseLocalVisualizer",
            "vis_backends": [{"type": "LocalVisBackend"}],
            "name": "visualizer",
        },
    }


def _optim_wrapper(spec: ModelSpec, base_lr: float) -> dict[str, Any]:
    """AdamW without decay on norms and biases; the backbone learns at `backbone_lr_mult` of the
    head's rate where the spec asks for it (blaze37: a tenth, measured in docs/model.md)."""
    return {
        "type": "OptimWrapper",
        "optimizer": {"type": "AdamW", "lr": base_lr, "weight_decay": spec.weight_decay},
        "paramwise_cfg": {
            "norm_decay_mult": 0,
            "bias_decay_mult": 0,
            "bypass_duplicate": True,
            **({"custom_keys": {"backbone": {"lr_mult": spec.backbone_lr_mult}}}
               if spec.backbone_lr_mult != 1.0 else {}),
        },
    }


def _test_dataloader(
    spec: ModelSpec, val_ann: str | Path | None, data_root: str | Path, num_workers: int
) -> dict[str, Any]:
    """The evaluation loader, present even without `val_ann`: inference reads its pipeline."""
    return {
        "batch_size": 32,
        "num_workers": num_workers,
        "persistent_workers": False,
        "drop_last": False,
        "sampler": {"type": "DefaultSampler", "shuffle": False, "round_up": False},
        "dataset": _dataset(val_ann, data_root, test_pipeline(spec), test_mode=True),
    }


def _train_dataloader(
    spec: ModelSpec, train_ann: str | Path, data_root: str | Path, num_workers: int, batch: int
) -> dict[str, Any]:
    """An endless shuffled stream: training is sized in iterations, not epochs."""
    return {
        "batch_size": batch,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "sampler": {"type": "InfiniteSampler", "shuffle": True},
        "dataset": _dataset(train_ann, data_root, train_pipeline(spec), test_mode=False),
    }


def _add_validation(cfg: dict[str, Any], val_interval: int) -> None:
    """Validate every `val_interval` iterations on the test loader's data (mmengine wants its
    val_dataloader/val_cfg/val_evaluator together, like the test ones)."""
    cfg["train_cfg"]["val_interval"] = int(val_interval)
    cfg["val_dataloader"] = copy.deepcopy(cfg["test_dataloader"])
    cfg["val_cfg"] = {}
    cfg["val_evaluator"] = evaluator()


def evaluator() -> dict[str, Any]:
    """OKS AP with the SpineTrack sigmas for all/body/feet/spine (ground-truth boxes)."""
    return {
        "type": "SpineTrackPartitionMetric",
        "metric": {"type": "CocoMetric", "use_area": True},
        "partitions": partitions(),
    }
