"""Training losses of the SpineTrack model beyond SimCC's KL term, and their wiring into mmpose.

SpinePose trains with: ground truth (SimCC KL) + distillation from a body-pose teacher on the 26
body points (keeps body accuracy where the new data has no body labels) + an anatomical structure
term and a curvature smoothness term on the spine chain (the spine is a connected, ordered, smooth
curve; a free-floating point set is not). Paper weights: 1, 2.5, 0.1, 0.5.

The terms are plain functions on tensors (unit-tested by hand-computed values); `SpineTrackSimCCHead`
adds them to RTMPose's head and `SpineTrackPoseEstimator` runs the (frozen) teacher on the same crops.
Coordinates come from the SimCC distributions by soft-argmax, so every term is differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmpose.evaluation.functional import simcc_pck_accuracy
from mmpose.models.heads.coord_cls_heads.rtmcc_head import RTMCCHead
from mmpose.models.pose_estimators.topdown import TopdownPoseEstimator
from mmpose.registry import MODELS
from mmpose.utils.tensor_utils import to_numpy
from torch import Tensor, nn

from schemas.keypoints import HALPE26_IDS, SPINE_CHAIN

#: Paper weights: ground truth, distillation, structure, smoothness.
DEFAULT_WEIGHTS: dict[str, float] = {"gt": 1.0, "distill": 2.5, "structure": 0.1, "smoothness": 0.5}

#: Weights for a model trained from scratch (no parent, no pretrained checkpoint). The spine terms
#: regularise a model that already predicts a spine: on a random model's scattered points their
#: gradients measured ~100x the KL term's at initialisation and training diverged (AP 0 after 150
#: iterations of `tiny`, against spine AP 0.4 without them). They are on for every fine-tune.
SCRATCH_WEIGHTS: dict[str, float] = {"structure": 0.0, "smoothness": 0.0}


# -- the terms, on tensors ---------------------------------------------------------------------------


def simcc_expectation(logits: Tensor, beta: float = 1.0) -> Tensor:
    """Soft-argmax of SimCC logits (N, K, W) -> expected bin position (N, K), differentiable."""
    prob = F.softmax(logits * beta, dim=-1)
    bins = torch.arange(logits.shape[-1], dtype=prob.dtype, device=prob.device)
    return (prob * bins).sum(-1)


def simcc_to_xy(pred_x: Tensor, pred_y: Tensor, split_ratio: float, beta: float = 1.0) -> Tensor:
    """SimCC logits -> (N, K, 2) keypoints in input-image pixels."""
    return torch.stack(
        [simcc_expectation(pred_x, beta), simcc_expectation(pred_y, beta)], dim=-1
    ) / split_ratio


def robust_square(x: Tensor) -> Tensor:
    """x^2 for |x| <= 1, then 2|x| - 1: a square near the truth, with a bounded gradient (2) far
    from it, so a wildly wrong early prediction cannot swamp the ground-truth term."""
    a = x.abs()
    return torch.where(a <= 1, a * a, 2 * a - 1)


def _zero(like: Tensor) -> Tensor:
    return like.sum() * 0.0  # keeps the graph and device when a term has nothing to score


def spine_structure_loss(
    pred: Tensor,
    gt: Tensor,
    weights: Tensor,
    chain: Sequence[int] = SPINE_CHAIN,
    min_length: float = 1.0,
) -> Tensor:
    """Segment-length and ordering error along the spine chain, relative to each true segment.

    For each chain segment a->b with both ends labelled (weight > 0), with g = g_b - g_a the true
    segment, p = p_b - p_a the predicted one and L = max(|g|, min_length):
    rho((|p| - |g|) / L)  +  relu(-(p . g/|g|)) / L,   rho = `robust_square`.
    The first keeps vertebral spacing, the second punishes a predicted segment that runs backwards
    (vertebrae out of order). Dimensionless, so its weight does not depend on image size.
    Mean over labelled segments. pred, gt: (N, K, 2); weights: (N, K).
    """
    idx = torch.as_tensor(list(chain), device=pred.device)
    p, g, w = pred[:, idx], gt[:, idx], weights[:, idx]
    seg_p = p[:, 1:] - p[:, :-1]
    seg_g = g[:, 1:] - g[:, :-1]
    valid = (w[:, 1:] > 0) & (w[:, :-1] > 0)
    if not bool(valid.any()):
        return _zero(pred)
    len_p = seg_p.norm(dim=-1)
    len_g = seg_g.norm(dim=-1)
    norm = len_g.clamp_min(min_length)
    length_term = robust_square((len_p - len_g) / norm)
    unit_g = seg_g / len_g.clamp_min(1e-6).unsqueeze(-1)
    order_term = F.relu(-(seg_p * unit_g).sum(-1)) / norm
    return (length_term + order_term)[valid].mean()


def spine_smoothness_loss(
    pred: Tensor,
    chain: Sequence[int] = SPINE_CHAIN,
    weights: Tensor | None = None,
    scale: Tensor | float | None = None,
) -> Tensor:
    """Discrete curvature along the chain: mean of rho(|p[i-1] - 2 p[i] + p[i+1]| / s).

    s is a segment length that does not depend on the prediction: `scale` (a number or one per
    sample, e.g. the true mean segment length), else the sample's mean predicted segment length
    held constant for the gradient. The term is then dimensionless and cannot be lowered by
    shrinking the spine. Needs no labels, so it also regularises spines on images without spine
    ground truth. With `weights` (N, K), only triples whose three points have weight > 0 count.
    rho = `robust_square`.
    """
    idx = torch.as_tensor(list(chain), device=pred.device)
    p = pred[:, idx]
    if scale is None:
        s = (p[:, 1:] - p[:, :-1]).norm(dim=-1).mean(-1).detach()
    else:
        s = torch.as_tensor(scale, dtype=pred.dtype, device=pred.device).expand(pred.shape[0])
    s = s.clamp_min(1e-6).unsqueeze(-1)  # (N, 1)
    second = p[:, :-2] - 2 * p[:, 1:-1] + p[:, 2:]
    term = robust_square((second**2).sum(-1).clamp_min(1e-12).sqrt() / s)
    if weights is None:
        return term.mean()
    w = weights[:, idx] > 0
    valid = w[:, :-2] & w[:, 1:-1] & w[:, 2:]
    return term[valid].mean() if bool(valid.any()) else _zero(pred)


def segment_scale(gt: Tensor, weights: Tensor, chain: Sequence[int], default: float) -> Tensor:
    """Per-sample mean true segment length along the chain; `default` where no segment is labelled."""
    idx = torch.as_tensor(list(chain), device=gt.device)
    g, w = gt[:, idx], weights[:, idx] > 0
    lengths = (g[:, 1:] - g[:, :-1]).norm(dim=-1)
    valid = (w[:, 1:] & w[:, :-1]).to(gt.dtype)
    count = valid.sum(-1)
    mean = (lengths * valid).sum(-1) / count.clamp_min(1.0)
    return torch.where(count > 0, mean.clamp_min(1.0), torch.full_like(mean, default))


def resample_bins(prob: Tensor, size: int) -> Tensor:
    """Resample a (N, K, W) distribution over bins to `size` bins (same crop, other resolution)."""
    if prob.shape[-1] == size:
        return prob
    n, k, w = prob.shape
    out = F.interpolate(prob.reshape(n * k, 1, w), size=size, mode="linear", align_corners=False)
    out = out.reshape(n, k, size).clamp_min(0)
    return out / out.sum(-1, keepdim=True).clamp_min(1e-12)


def simcc_distill_loss(
    student: tuple[Tensor, Tensor],
    teacher: tuple[Tensor, Tensor],
    ids: Sequence[int],
    beta: float = 10.0,
) -> Tensor:
    """KL(teacher || student) on SimCC distributions of keypoints `ids`.

    Reduced like mmpose's KLDiscretLoss (mean over bins, sum over samples, mean over keypoints),
    so its weight compares directly with the ground-truth term. Teacher logits may have another
    bin count (another input size); they are resampled to the student's bins.
    """
    idx = torch.as_tensor(list(ids), device=student[0].device)
    total = _zero(student[0])
    for s_logits, t_logits in zip(student, teacher, strict=True):
        s = s_logits[:, idx]
        t_prob = resample_bins(F.softmax(t_logits[:, idx].detach() * beta, dim=-1), s.shape[-1])
        log_s = F.log_softmax(s * beta, dim=-1)
        kl = F.kl_div(log_s, t_prob, reduction="none").mean(-1)  # (N, K)
        total = total + kl.sum()
    return total / len(ids)


# -- wiring into mmpose ---------------------------------------------------------------------------


@MODELS.register_module()
class SpineTrackSimCCHead(RTMCCHead):
    """RTMPose's SimCC head with SpineTrack's extra loss terms (weights 0 switch a term off)."""

    def __init__(
        self,
        *args: Any,
        loss_weights: dict[str, float] | None = None,
        spine_chain: Sequence[int] = SPINE_CHAIN,
        distill_ids: Sequence[int] = HALPE26_IDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_weights = {**DEFAULT_WEIGHTS, **(loss_weights or {})}
        self.spine_chain = tuple(spine_chain)
        self.distill_ids = tuple(distill_ids)
        self.beta = float(getattr(self.loss_module, "beta", 10.0))

    def loss(  # type: ignore[override]
        self,
        feats: tuple[Tensor, ...],
        batch_data_samples: Any,
        train_cfg: Any = None,
        teacher_simcc: tuple[Tensor, Tensor] | None = None,
        teacher_ids: Sequence[int] | None = None,
    ) -> dict[str, Tensor]:
        pred_x, pred_y = self.forward(feats)
        labels = [d.gt_instance_labels for d in batch_data_samples]
        gt_x = torch.cat([lab.keypoint_x_labels for lab in labels], dim=0)
        gt_y = torch.cat([lab.keypoint_y_labels for lab in labels], dim=0)
        weights = torch.cat([lab.keypoint_weights for lab in labels], dim=0)
        lw = self.loss_weights

        losses: dict[str, Tensor] = {
            "loss_kpt": lw["gt"] * self.loss_module((pred_x, pred_y), (gt_x, gt_y), weights)
        }
        if lw["structure"] > 0 or lw["smoothness"] > 0:
            pred_xy = simcc_to_xy(pred_x, pred_y, self.simcc_split_ratio, self.beta)
            # the Gaussian targets' own mean is the ground-truth position
            gt_xy = torch.stack([_label_mean(gt_x), _label_mean(gt_y)], dim=-1) / self.simcc_split_ratio
            if lw["structure"] > 0:
                losses["loss_structure"] = lw["structure"] * spine_structure_loss(
                    pred_xy, gt_xy, weights, self.spine_chain
                )
            if lw["smoothness"] > 0:
                # a fixed length per sample (true spine spacing, else a share of the crop height)
                default = float(self.input_size[1]) / (2 * len(self.spine_chain))
                scale = segment_scale(gt_xy, weights, self.spine_chain, default)
                losses["loss_smooth"] = lw["smoothness"] * spine_smoothness_loss(
                    pred_xy, self.spine_chain, scale=scale
                )
        if teacher_simcc is not None and lw["distill"] > 0:
            ids = tuple(teacher_ids) if teacher_ids is not None else self.distill_ids
            losses["loss_distill"] = lw["distill"] * simcc_distill_loss(
                (pred_x, pred_y), teacher_simcc, ids, self.beta
            )

        _, avg_acc, _ = simcc_pck_accuracy(
            output=to_numpy((pred_x, pred_y)),
            target=to_numpy((gt_x, gt_y)),
            simcc_split_ratio=self.simcc_split_ratio,
            mask=to_numpy(weights) > 0,
        )
        losses["acc_pose"] = torch.tensor(avg_acc, device=gt_x.device)
        return losses


def _label_mean(labels: Tensor) -> Tensor:
    """Position (in bins) of non-negative SimCC target vectors (N, K, W)."""
    total = labels.sum(-1).clamp_min(1e-12)
    bins = torch.arange(labels.shape[-1], dtype=labels.dtype, device=labels.device)
    return (labels * bins).sum(-1) / total


@MODELS.register_module()
class SpineTrackPoseEstimator(TopdownPoseEstimator):
    """Top-down estimator that can distil from a frozen teacher on the same input crops.

    The teacher is attached after construction (`attach_teacher`) and kept out of `state_dict`,
    so checkpoints hold only the student.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._teacher: list[nn.Module] = []  # a list, so nn.Module does not register it
        self._teacher_ids: tuple[int, ...] = ()

    def attach_teacher(self, teacher: nn.Module, body_ids: Sequence[int] = HALPE26_IDS) -> tuple[int, ...]:
        """Use `teacher` (an mmpose top-down SimCC model) for distillation on its body points.

        Distils the first min(teacher keypoints, 26) points, which are COCO-17 / Halpe26 / SpineTrack
        body points by index. Returns the distilled ids.
        """
        head = getattr(teacher, "head", None)
        if not isinstance(head, RTMCCHead):
            raise TypeError(
                f"teacher must be an mmpose top-down model with a SimCC (RTMCCHead) head, "
                f"got head {type(head).__name__}"
            )
        teacher.eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        count = min(int(head.out_channels), len(body_ids))
        self._teacher = [teacher]
        self._teacher_ids = tuple(body_ids[:count])
        return self._teacher_ids

    def detach_teacher(self) -> None:
        self._teacher = []
        self._teacher_ids = ()

    def loss(self, inputs: Tensor, data_samples: Any) -> dict[str, Tensor]:
        feats = self.extract_feat(inputs)
        teacher_simcc = self._teacher_simcc(inputs) if self._teacher else None
        if isinstance(self.head, SpineTrackSimCCHead):
            return self.head.loss(
                feats,
                data_samples,
                train_cfg=self.train_cfg,
                teacher_simcc=teacher_simcc,
                teacher_ids=self._teacher_ids or None,
            )
        return self.head.loss(feats, data_samples, train_cfg=self.train_cfg)

    @torch.no_grad()
    def _teacher_simcc(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        teacher: Any = self._teacher[0]
        tw, th = teacher.head.input_size
        if tuple(inputs.shape[-2:]) != (th, tw):
            inputs = F.interpolate(inputs, size=(th, tw), mode="bilinear", align_corners=False)
        # teacher keypoint i is student keypoint i for the distilled ids (COCO/Halpe26 order)
        pred_x, pred_y = teacher.head.forward(teacher.extract_feat(inputs))
        return pred_x, pred_y
