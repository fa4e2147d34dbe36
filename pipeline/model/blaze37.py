"""`blaze37`: BlazePose's own landmark network extended to the 37 SpineTrack keypoints.

The one pretrained pose network that installs offline is inside the mediapipe wheel
(pipeline/model/blazepose_port.py converts it). A student that starts from it knows real people
from its first round; a from-scratch model does not (docs/model.md has the measurements).

* Backbone: the converted network up to its 64x64x48 decoder feature (`BlazePoseBackbone`).
* Head: a 1x1 conv 48 -> 37 on that feature (`Blaze37Head`); the rows of the points BlazePose has
  start as copies of its own heatmap conv, the others are new. Its outputs are spatial-softmax
  heatmaps scaled so that a Gaussian target of the codec's sigma peaks at 1, so mmpose's heatmap
  codec (sub-pixel DARK decoding), its flip test and the project's peak confidence apply as they
  are, while the loss works on the logits (cross-entropy to the normalised Gaussian target), which
  keeps BlazePose's unnormalised rows usable from the first step.
* Keeping what it knows (`Blaze37Estimator`): a frozen copy of the original network runs on the
  same crops every step and its heatmap rows are distilled into the student's body rows (KL of the
  spatial softmaxes). Crops of real people with no labels join the training set for exactly that
  (pipeline.model.teacher_targets, soft targets), so the body knowledge is anchored on real images,
  not only on renders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpose.models.heads.base_head import BaseHead
from mmpose.models.pose_estimators.topdown import TopdownPoseEstimator
from mmpose.registry import KEYPOINT_CODECS, MODELS
from mmpose.utils.tensor_utils import to_numpy
from torch import Tensor, nn

from pipeline.heatmap_decode import decode_heatmaps
from pipeline.model.blazepose_port import BlazePoseLandmarkNet, EncoderFeatures, load_landmark_net
from pipeline.model.losses import (
    DEFAULT_WEIGHTS,
    segment_scale,
    spine_smoothness_loss,
    spine_structure_loss,
)
from schemas.blazepose import LANDMARK_TO_SPINETRACK
from schemas.keypoints import NUM_KEYPOINTS, SPINE_CHAIN

#: BlazePose heatmap row -> SpineTrack keypoint row, for the rows the two share.
SHARED_ROWS: tuple[tuple[int, int], ...] = tuple(sorted(LANDMARK_TO_SPINETRACK.items()))
INPUT_SIZE = (256, 256)
HEATMAP_SIZE = (64, 64)
STRIDE = INPUT_SIZE[0] // HEATMAP_SIZE[0]
SIGMA = 2.0

#: Parts of the converted network that `freeze` names (see BlazePoseBackbone).
FREEZE_CHOICES = ("none", "early", "encoder")


def heatmap_codec() -> dict[str, Any]:
    return {"type": "MSRAHeatmap", "input_size": INPUT_SIZE, "heatmap_size": HEATMAP_SIZE,
            "sigma": SIGMA, "unbiased": True}


def spatial_log_softmax(logits: Tensor) -> Tensor:
    """log p over the H*W cells of each (N, K, H, W) map, flattened to (N, K, H*W)."""
    return F.log_softmax(logits.flatten(2).float(), dim=-1)


def soft_argmax(logits: Tensor) -> Tensor:
    """Expected (x, y) of each map's spatial softmax in input pixels, (N, K, 2), differentiable."""
    n, k, h, w = logits.shape
    prob = spatial_log_softmax(logits).exp().view(n, k, h, w)
    xs = torch.arange(w, dtype=prob.dtype, device=prob.device)
    ys = torch.arange(h, dtype=prob.dtype, device=prob.device)
    x = (prob.sum(2) * xs).sum(-1)
    y = (prob.sum(3) * ys).sum(-1)
    return torch.stack([x, y], dim=-1) * STRIDE


def target_centre(heatmaps: Tensor) -> Tensor:
    """Centre of mass of Gaussian target maps (N, K, H, W) in input pixels: the labelled point."""
    h, w = heatmaps.shape[-2:]
    mass = heatmaps.flatten(2).sum(-1).clamp_min(1e-12)
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device)
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device)
    x = (heatmaps.sum(2) * xs).sum(-1) / mass
    y = (heatmaps.sum(3) * ys).sum(-1) / mass
    return torch.stack([x, y], dim=-1) * STRIDE


def heatmap_cross_entropy(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean KL(target || softmax(logits)) over labelled maps; targets need not sum to 1."""
    target = targets.flatten(2).float()
    mass = target.sum(-1, keepdim=True)
    target = target / mass.clamp_min(1e-12)
    kl = (torch.xlogy(target, target) - target * spatial_log_softmax(logits)).sum(-1)
    w = weights * (mass.squeeze(-1) > 0)
    return (kl * w).sum() / w.sum().clamp_min(1.0)


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean KL(teacher || student) of the spatial softmaxes of matching rows."""
    t_log = spatial_log_softmax(teacher_logits)
    s_log = spatial_log_softmax(student_logits)
    return (t_log.exp() * (t_log - s_log)).sum(-1).mean()


#: Encoder parts each `freeze` choice keeps fixed (in the order the encoder runs them).
FROZEN_PARTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "early": ("stem", "stage64", "stage32"),
    "encoder": ("stem", "stage64", "stage32", "stage16", "stage8", "tail"),
}


ENCODER_PARTS = ("stem", "stage64", "stage32", "stage16", "stage8", "tail")


def _encode(encoder: Any, x: Tensor, start: Sequence[Tensor] = ()) -> list[Tensor]:
    """The outputs of the encoder's parts (ENCODER_PARTS), continuing after `start` if given."""
    outs = list(start)
    current = outs[-1] if outs else x
    for name in ENCODER_PARTS[len(outs):]:
        current = getattr(encoder, name)(current)
        outs.append(current)
    return outs


def _decoded(net: BlazePoseLandmarkNet, outs: Sequence[Tensor]) -> Tensor:
    """The 64x64x48 decoder feature from the encoder's part outputs (no regression branch)."""
    s128, s64, s32, s16, _, s8 = outs
    return cast(Tensor, net.decoder(EncoderFeatures(s128, s64, s32, s16, s8)))


@MODELS.register_module()
class BlazePoseBackbone(BaseModule):
    """The converted BlazePose landmark network up to its 64x64x48 decoder feature, trainable.

    `freeze` keeps encoder parts fixed while training (`FROZEN_PARTS`: "early" = the stem and the
    64x64 and 32x32 stages, "encoder" = all of it down to the 8x8 bottleneck).
    `expert=True` adds a frozen copy of the original network whose feature the head turns into
    BlazePose's own heatmaps for the body rows at inference: the body is then BlazePose's by
    construction, whatever fine-tuning does to the trainable copy. The expert is rebuilt from the
    wheel, never saved (its provenance is the base model's source sha256). In eval mode the
    features are (expert, trainable); in training only (trainable,) is computed. Where the frozen
    parts are still BlazePose's own (checked once, on the first inference), the two copies compute
    them once: they are most of the network's cost (the 128- and 64-pixel stages).
    """

    def __init__(self, freeze: str = "none", expert: bool = False, init_cfg: Any = None) -> None:
        super().__init__(init_cfg)
        if freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
        self.freeze = freeze
        self.net: BlazePoseLandmarkNet = load_landmark_net()
        # a list, so that nn.Module neither saves nor trains it
        self._expert: list[BlazePoseLandmarkNet] = [load_landmark_net()] if expert else []
        self._shares: bool | None = None  # whether the frozen parts equal the expert's (lazy)
        self._apply_freeze()

    @property
    def expert(self) -> BlazePoseLandmarkNet | None:
        return self._expert[0] if self._expert else None

    def _frozen(self, net: BlazePoseLandmarkNet) -> list[nn.Module]:
        return [getattr(net.encoder, name) for name in FROZEN_PARTS[self.freeze]]

    def _apply_freeze(self) -> None:
        for part in self._frozen(self.net):
            for param in part.parameters():
                param.requires_grad_(False)
        for net in self._expert:
            for param in net.parameters():
                param.requires_grad_(False)

    def init_weights(self) -> None:
        """Pretrained: nothing to initialise (the Runner calls this on every model it trains)."""
        self._is_init = True

    def train(self, mode: bool = True) -> BlazePoseBackbone:
        super().train(mode)
        for part in self._frozen(self.net):
            part.eval()
        for net in self._expert:
            net.eval()
        self._shares = None  # weights may be loaded between now and the next inference
        return self

    def _shared_parts(self, expert: BlazePoseLandmarkNet) -> int:
        """How many leading encoder parts both copies may compute once (0: none)."""
        if self._shares is None:
            pairs = zip(self._frozen(self.net), self._frozen(expert), strict=True)
            self._shares = all(torch.equal(a, b) for mine, theirs in pairs
                               for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(),
                                               strict=True))
        return len(FROZEN_PARTS[self.freeze]) if self._shares else 0

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if not self._expert or self.training:
            return (_decoded(self.net, _encode(self.net.encoder, x)),)
        expert = self._expert[0]
        if next(expert.parameters()).device != x.device:
            expert.to(x.device)
        with torch.no_grad():
            mine = _encode(self.net.encoder, x)
            theirs = _encode(expert.encoder, x, mine[:self._shared_parts(expert)])
            return (_decoded(expert, theirs), _decoded(self.net, mine))


@MODELS.register_module()
class Blaze37Head(BaseHead):
    """37 heatmap rows on the 64x64 feature; see the module docstring for what it outputs."""

    def __init__(self, in_channels: int = 48, out_channels: int = NUM_KEYPOINTS,
                 decoder: dict[str, Any] | None = None, loss_weights: dict[str, float] | None = None,
                 spine_chain: Sequence[int] = SPINE_CHAIN, init_cfg: Any = None) -> None:
        super().__init__(init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.final_layer = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        #: BlazePose's own heatmap conv (frozen), for a backbone with an expert: set by the model,
        #: held in a list so that it is saved once, with the backbone's expert
        self.expert_conv: list[nn.Conv2d] = []
        source = torch.zeros(out_channels, dtype=torch.long)
        rows = torch.zeros(out_channels, dtype=torch.bool)
        for blaze, ours in SHARED_ROWS:
            source[ours], rows[ours] = blaze, True
        self.register_buffer("expert_source", source, persistent=False)
        self.register_buffer("expert_rows", rows, persistent=False)
        self.decoder = KEYPOINT_CODECS.build(decoder or heatmap_codec())
        self.loss_weights = {**DEFAULT_WEIGHTS, **(loss_weights or {})}
        self.spine_chain = tuple(spine_chain)
        sigma = float(getattr(self.decoder, "sigma", SIGMA))
        self.peak_scale = 2.0 * math.pi * sigma * sigma  # a Gaussian of this sigma peaks at 1

    @torch.no_grad()
    def init_from_blazepose(self, heatmap_conv: nn.Conv2d) -> None:
        """Shared rows copy BlazePose's heatmap conv; the new rows start small and unbiased."""
        weight, bias = self.final_layer.weight, self.final_layer.bias
        assert bias is not None  # built with a bias
        nn.init.normal_(weight, std=1e-3)
        nn.init.zeros_(bias)
        for source, target in SHARED_ROWS:
            weight[target] = heatmap_conv.weight[source]
            if heatmap_conv.bias is not None:
                bias[target] = heatmap_conv.bias[source]

    def logits(self, feats: Sequence[Tensor]) -> Tensor:
        """The trainable rows on the last feature; with an expert feature in front (eval mode of a
        backbone with `expert=True`), the shared rows are the expert's own heatmap rows."""
        logits = self.final_layer(feats[-1])
        if len(feats) == 2 and self.expert_conv:
            # batch-agnostic ops only (no in-place indexing): the ONNX export keeps a dynamic batch
            expert = self.expert_conv[0](feats[0]).index_select(1, self.expert_source)
            logits = torch.where(self.expert_rows.view(1, -1, 1, 1), expert, logits)
        return logits

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        logits = self.logits(feats)
        return spatial_log_softmax(logits).exp().reshape_as(logits) * self.peak_scale

    def decode(self, batch_outputs: Any) -> Any:
        """mmpose's heatmap decode (same result), batched: pipeline.heatmap_decode."""
        from mmengine.structures import InstanceData

        heatmaps = to_numpy(batch_outputs)
        sx, sy = (float(v) for v in self.decoder.scale_factor)
        keypoints, scores = decode_heatmaps(heatmaps, scale=(sx, sy))
        return [InstanceData(keypoints=kp[None], keypoint_scores=sc[None])
                for kp, sc in zip(keypoints, scores, strict=True)]

    def predict(self, feats: Any, batch_data_samples: Any, test_cfg: Any = None) -> Any:
        """mmpose's API (inference_topdown): decode the heatmaps, flip test as configured."""
        from mmpose.models.utils.tta import flip_heatmaps

        cfg = dict(test_cfg or {})
        heatmaps = self.forward(feats)
        if cfg.get("flip_test", False) and isinstance(feats, list):
            flip_indices = batch_data_samples[0].metainfo["flip_indices"]
            flipped = flip_heatmaps(self.forward(feats[1]), flip_mode="heatmap",
                                    flip_indices=flip_indices, shift_heatmap=True)
            heatmaps = (self.forward(feats[0]) + flipped) * 0.5
        return self.decode(heatmaps)

    def loss(self, feats: Sequence[Tensor], batch_data_samples: Any, train_cfg: Any = None,
             teacher_logits: Tensor | None = None) -> dict[str, Tensor]:  # type: ignore[override]
        logits = self.logits(feats)
        targets = torch.stack([d.gt_fields.heatmaps for d in batch_data_samples]).to(logits)
        weights = torch.cat([d.gt_instance_labels.keypoint_weights for d in batch_data_samples]).to(logits)
        lw = self.loss_weights
        losses: dict[str, Tensor] = {"loss_kpt": lw["gt"] * heatmap_cross_entropy(logits, targets, weights)}
        if lw["structure"] > 0 or lw["smoothness"] > 0:
            pred_xy = soft_argmax(logits)
            gt_xy = target_centre(targets)
            if lw["structure"] > 0:
                losses["loss_structure"] = lw["structure"] * spine_structure_loss(
                    pred_xy, gt_xy, weights, self.spine_chain)
            if lw["smoothness"] > 0:
                default = float(INPUT_SIZE[1]) / (2 * len(self.spine_chain))
                scale = segment_scale(gt_xy, weights, self.spine_chain, default)
                losses["loss_smooth"] = lw["smoothness"] * spine_smoothness_loss(
                    pred_xy, self.spine_chain, scale=scale)
        if teacher_logits is not None and lw["distill"] > 0:
            sources = [s for s, _ in SHARED_ROWS]
            targets_rows = [t for _, t in SHARED_ROWS]
            losses["loss_distill"] = lw["distill"] * distillation_kl(
                logits[:, targets_rows], teacher_logits[:, sources])
        with torch.no_grad():
            hit = (to_numpy(weights) > 0)
            peaks = soft_argmax(logits).cpu()
            truth = target_centre(targets).cpu()
            close = (peaks - truth).norm(dim=-1).numpy() < 0.05 * INPUT_SIZE[0]
            acc = float(close[hit].mean()) if hit.any() else 0.0
        losses["acc_pose"] = torch.tensor(acc, device=logits.device)
        return losses


@MODELS.register_module()
class Blaze37Estimator(TopdownPoseEstimator):
    """Top-down estimator whose body rows are distilled from the frozen original network.

    The frozen network is built from the same wheel, kept out of `state_dict` (a list attribute),
    and only runs while training with a distillation weight above 0.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._teacher: list[BlazePoseLandmarkNet] = []
        backbone: Any = self.backbone
        if backbone.expert is not None:  # the expert's heatmap conv travels with the head
            head: Any = self.head
            head.expert_conv = [backbone.expert.heatmap_conv]  # moves with the expert

    def init_weights(self) -> None:
        """BlazePose's weights: the backbone is converted pretrained, the head's shared rows are
        copied (mmengine's generic initialisation has nothing to add and logs every tensor).

        Once only: mmengine's Runner calls this again when training starts, after a fine-tune
        loaded its parent's weights; copying BlazePose's rows then would throw the parent's head
        (its spine) away and every round would restart the spine from nothing."""
        if getattr(self, "_is_init", False):
            return
        self._is_init = True
        backbone: Any = self.backbone
        head: Any = self.head
        head.init_from_blazepose(backbone.net.heatmap_conv)

    def _teacher_net(self, device: torch.device) -> BlazePoseLandmarkNet:
        """The frozen original: the backbone's body expert when it has one, else a copy of its own."""
        backbone: Any = self.backbone
        if backbone.expert is not None:
            return backbone.expert.to(device)
        if not self._teacher:
            teacher = load_landmark_net().to(device)
            teacher.eval()
            for param in teacher.parameters():
                param.requires_grad_(False)
            self._teacher = [teacher]
        return self._teacher[0]

    def loss(self, inputs: Tensor, data_samples: Any) -> dict[str, Tensor]:
        feats = self.extract_feat(inputs)
        head: Any = self.head
        teacher_logits = None
        if head.loss_weights.get("distill", 0.0) > 0:
            with torch.no_grad():
                teacher = self._teacher_net(inputs.device)
                teacher_logits = teacher.heatmap_conv(teacher.features(inputs)[0])
        return head.loss(feats, data_samples, train_cfg=self.train_cfg, teacher_logits=teacher_logits)
