"""Start a 37-keypoint model from a pretrained body checkpoint (an official RTMPose COCO-17 or
Halpe26 `.pth`), copying what really carries over and saying what did not.

Everything whose name and shape match is copied (backbone, neck, the head's MLP, GAU and SimCC
classifiers when the input size is the same). The only keypoint-shaped layer of an RTMPose SimCC
head is `head.final_layer` (one output channel per keypoint): its K source rows go into rows 0..K-1
of the 37-way layer (SpineTrack's indices 0-16 are COCO-17, 0-25 Halpe26) and the new rows start
at zero. Zero rows give zero tokens, which the head's gated attention unit (relu^2 kernel, no
biases) adds nothing from, so until fine-tuning moves them the new model's body predictions are
exactly the source's. Nothing is skipped silently: the report lists copied, row-copied, shape-
mismatched (left as initialised) and missing weights, and a checkpoint that fills less than half
of the model is refused (`MIN_MATCHED_SHARE`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.model import compat
from schemas.errors import InputError

#: Layers with one row per keypoint in an RTMPose SimCC head.
KEYPOINT_ROW_LAYERS = ("head.final_layer.weight", "head.final_layer.bias")
#: A checkpoint that fills less than this share of the model's weights (by count) was trained for
#: another architecture (another width or input size): starting from it would be starting from
#: scratch under a pretrained name, so it is refused. A checkpoint of the same architecture fills
#: all of them but the keypoint rows it lacks.
MIN_MATCHED_SHARE = 0.5


@dataclass
class InitReport:
    checkpoint: str
    source_keypoints: int | None
    copied: list[str] = field(default_factory=list)
    rows_copied: dict[str, str] = field(default_factory=dict)  # name -> "rows 0-25 of 37, rest zero"
    shape_mismatch: dict[str, str] = field(default_factory=dict)  # name -> "source (..) vs model (..)"
    missing_in_checkpoint: list[str] = field(default_factory=list)
    unused_in_checkpoint: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["copied_count"] = len(self.copied)
        out["copied"] = sorted(self.copied)[:20] + (["..."] if len(self.copied) > 20 else [])
        return out

    def summary(self) -> str:
        rows = "; ".join(f"{k}: {v}" for k, v in self.rows_copied.items())
        text = (f"{self.checkpoint}: copied {len(self.copied)} weights"
                + (f", {rows}" if rows else "")
                + f"; {len(self.shape_mismatch)} shape mismatches left as initialised"
                + f"; {len(self.missing_in_checkpoint)} not in the checkpoint")
        return text


def source_keypoints(state: dict[str, torch.Tensor]) -> int | None:
    weight = state.get("head.final_layer.weight")
    return int(weight.shape[0]) if weight is not None else None


def init_from_checkpoint(model: nn.Module, checkpoint: str | Path) -> InitReport:
    """Copy a pretrained mmpose checkpoint into `model` (loaded with weights_only=True)."""
    source = compat.load_checkpoint_weights_only(checkpoint)
    own = model.state_dict()
    report = InitReport(str(checkpoint), source_keypoints(source))
    new_state: dict[str, torch.Tensor] = {}
    for name, target in own.items():
        if name not in source:
            report.missing_in_checkpoint.append(name)
            continue
        value = source[name]
        if value.shape == target.shape:
            new_state[name] = value.to(target.dtype)
            report.copied.append(name)
        elif name in KEYPOINT_ROW_LAYERS and value.shape[1:] == target.shape[1:] \
                and value.shape[0] < target.shape[0]:
            k = int(value.shape[0])
            rows = torch.zeros_like(target)
            rows[:k] = value.to(target.dtype)
            new_state[name] = rows
            report.rows_copied[name] = f"rows 0-{k - 1} of {target.shape[0]}, rows {k}- zero"
        else:
            report.shape_mismatch[name] = f"source {tuple(value.shape)} vs model {tuple(target.shape)}"
    report.unused_in_checkpoint = sorted(set(source) - set(own))
    total = sum(int(v.numel()) for v in own.values())
    matched = sum(int(own[name].numel()) for name in new_state)
    if matched < MIN_MATCHED_SHARE * total:
        raise InputError(checkpoint, (
            f"only {matched / max(total, 1):.0%} of the model's weights match it ({len(new_state)} of "
            f"{len(own)} tensors; {len(report.shape_mismatch)} differ in shape, "
            f"{len(report.missing_in_checkpoint)} are not in it): it was trained for another "
            "architecture; pick the --config it fits (rtmpose-s, rtmpose-m: docs/annotators.md)"))
    model.load_state_dict(new_state, strict=False)
    return report
