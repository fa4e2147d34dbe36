"""Pretrained starting points as registry entries: where a student's first weights came from.

`blaze37` starts from BlazePose's landmark network, converted from the installed mediapipe wheel on
first use (pipeline/model/blazepose_port.py; nothing is downloaded, no weights are committed). The
converted model, with its 37-row head initialised from BlazePose's own heatmap rows, is registered
once per source file as `blaze37-base-<sha12>`, its provenance naming the source file, the file's
sha256 and the converted state_dict's sha256. Every blaze37 trained without a parent fine-tunes
from it and names it as its parent, so a model's lineage ends at a file anyone can check.
"""

from __future__ import annotations

import tempfile
from typing import Any

from pipeline.model.blazepose_port import (
    LANDMARK_MODEL_RELPATH,
    file_sha256,
    landmark_model_path,
    state_dict_sha256,
)
from pipeline.model.configs import SPECS, build_config
from pipeline.model.registry import build_model, get_version, save_model
from pipeline.store import Store
from pipeline.store.models import ModelVersion

MEDIAPIPE_VERSION = "0.10.14"
#: What the weights' licence is, as far as it could be checked offline (docs/model.md).
WEIGHTS_LICENCE = (
    "Apache-2.0 (the mediapipe package, which ships the file); model card: "
    "'BlazePose GHUM 3D' (MediaPipe Pose documentation, Models section)"
)
#: Configs whose weights start from a pretrained network, and how it is registered.
BASE_PREFIX = {"blaze37": "blaze37-base"}


def base_name(config: str) -> str:
    """`blaze37-base-<first 12 hex of the source file's sha256>`."""
    if config not in BASE_PREFIX:
        raise ValueError(f"config {config!r} has no pretrained base")
    return f"{BASE_PREFIX[config]}-{file_sha256(landmark_model_path())[:12]}"


def base_provenance(module: Any) -> dict[str, Any]:
    path = landmark_model_path()
    return {
        "source": f"mediapipe=={MEDIAPIPE_VERSION}/mediapipe/{LANDMARK_MODEL_RELPATH}",
        "source_path": str(path),
        "source_sha256": file_sha256(path),
        "converted_state_dict_sha256": state_dict_sha256(module),
        "converter": "pipeline/model/blazepose_port.py",
        "licence": WEIGHTS_LICENCE,
    }


def ensure_base(store: Store, config: str = "blaze37") -> ModelVersion:
    """The registered pretrained base of `config`, converted and registered on first use."""
    name = base_name(config)
    existing = get_version(store, name)
    if existing is not None:
        return existing
    if not SPECS[config].pretrained:
        raise ValueError(f"config {config!r} is not pretrained")
    cfg = build_config(config, work_dir=tempfile.gettempdir())
    model = build_model(cfg)
    model.init_weights()  # type: ignore[operator]  # the converted weights + BlazePose's head rows
    model.eval()
    return save_model(
        store, model, name=name, config_name=config, config=cfg, data_snapshot="pretrained",
        metrics={}, extra={"provenance": {"pretrained": base_provenance(model.backbone)}},
    )
