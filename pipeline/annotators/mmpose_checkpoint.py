"""mmpose checkpoints of the official RTMPose body models (COCO-17 or Halpe26 `.pth` + config):
for inference (an annotator), as the starting point of training (pipeline.model.init_checkpoint)
and as a distillation teacher (pipeline.model.train).

Stock RTMPose configs are made to run on this stack first (docs/stack.md): no `mmdet.` scope on
the backbone (mmpose has its own CSPNeXt), no pretrained `init_cfg` (it downloads), BN instead of
SyncBN. The checkpoint is read with `weights_only=True` (numpy data allowed, never code) and must
fill every weight of the model the config builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.annotators.base import AnnotatorIdentity, covered_names
from pipeline.annotators.registered import ModelAnnotator
from schemas.errors import InputError


def _sanitise(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "init_cfg" and isinstance(value, dict) and value.get("type") == "Pretrained":
                continue
            out[key] = _sanitise(value)
        if isinstance(out.get("type"), str):
            if out["type"].startswith("mmdet."):
                out["type"] = out["type"].removeprefix("mmdet.")
            if out["type"] == "SyncBN":
                out["type"] = "BN"
        out.pop("_scope_", None)
        return out
    if isinstance(node, list):
        return [_sanitise(v) for v in node]
    if isinstance(node, tuple):
        return tuple(_sanitise(v) for v in node)
    return node


def load_config(config: str | Path) -> Any:
    """An mmpose config file, made to build offline on this stack."""
    from mmengine.config import Config

    path = Path(config)
    if not path.is_file():
        raise InputError(path, "mmpose config file not found")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises many kinds for a bad config
        raise InputError(path, f"cannot read the mmpose config: {exc}") from exc
    if "model" not in cfg:
        raise InputError(path, "config has no `model`", field="model")
    cfg.model = _sanitise(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model))
    return cfg


def load_checkpoint_model(config: str | Path, checkpoint: str | Path, *, device: str = "cpu") -> Any:
    """The model a config builds, with every weight from the checkpoint (eval mode)."""
    import pipeline.model  # noqa: F401, I001  (mmpose import shims first)
    from mmpose.apis import init_model

    from pipeline.model import compat

    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise InputError(ckpt, "checkpoint file not found")
    model = init_model(load_config(config), None, device=device)
    try:
        state = compat.load_checkpoint_weights_only(ckpt)
    except Exception as exc:
        raise InputError(ckpt, f"cannot read the checkpoint with weights_only=True: {exc}") from exc
    missing, _unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise InputError(ckpt, f"checkpoint lacks {len(missing)} weights of the config's model, "
                         f"e.g. {missing[:3]}")
    model.eval()
    return model


def checkpoint_identity(checkpoint: str | Path) -> AnnotatorIdentity:
    from pipeline.store.store import file_sha256

    path = Path(checkpoint)
    return AnnotatorIdentity(f"mmpose:{path.stem}", file_sha256(path), "mmpose")


def checkpoint_annotator(config: str | Path, checkpoint: str | Path, *, device: str = "cpu",
                         flip_test: bool = True) -> ModelAnnotator:
    """An official RTMPose (or project) checkpoint as an annotator; covers its first K points."""
    model = load_checkpoint_model(config, checkpoint, device=device)
    head = getattr(model, "head", None)
    if head is None or not hasattr(head, "out_channels"):
        raise InputError(config, "not a top-down model with a keypoint head", field="model.head")
    return ModelAnnotator(model, checkpoint_identity(checkpoint), flip_test=flip_test)


def describe_checkpoint(config: str | Path, checkpoint: str | Path) -> dict[str, Any]:
    """Identity and covered points without building the model (reads the config's head size)."""
    cfg = load_config(config)
    k = int(cfg.model.get("head", {}).get("out_channels", 0))
    identity = checkpoint_identity(checkpoint)
    return {**identity.as_json(), "covers": covered_names(range(min(k, 37)))}
