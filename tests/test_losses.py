"""SpineTrack's extra loss terms, each checked against a value worked out by hand."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from mmengine.structures import InstanceData

from pipeline.model.configs import build_config
from pipeline.model.losses import (
    DEFAULT_WEIGHTS,
    SpineTrackPoseEstimator,
    resample_bins,
    robust_square,
    segment_scale,
    simcc_distill_loss,
    simcc_expectation,
    spine_smoothness_loss,
    spine_structure_loss,
)
from pipeline.model.registry import build_model
from schemas.keypoints import NUM_KEYPOINTS, SPINE_CHAIN


def _pts(*xy: tuple[float, float]) -> torch.Tensor:
    return torch.tensor([list(xy)], dtype=torch.float32)  # (1, K, 2)


def test_default_model_scales_each_term_by_the_paper_weight() -> None:
    """A model built from the default config weighs ground truth 1, structure 0.1, smoothness 0.5
    (the paper's; distillation's 2.5 is checked below): each term is its unit-weight value times that."""
    with torch.random.fork_rng():  # leave the global RNG as it was: later tests build models from it
        model: Any = build_model(build_config("tiny", work_dir="unused"))
        model.eval()
        inputs, samples = _batch(model)
        weighted = model.loss(inputs, samples)
        head: Any = model.head
        assert head.loss_weights == DEFAULT_WEIGHTS
        head.loss_weights.update(gt=1.0, structure=1.0, smoothness=1.0)
        unit = model.loss(inputs, samples)
    assert unit["loss_structure"].item() > 0 and unit["loss_smooth"].item() > 0
    assert weighted["loss_kpt"].item() == pytest.approx(1.0 * unit["loss_kpt"].item(), rel=1e-5)
    assert weighted["loss_structure"].item() == pytest.approx(0.1 * unit["loss_structure"].item(), rel=1e-5)
    assert weighted["loss_smooth"].item() == pytest.approx(0.5 * unit["loss_smooth"].item(), rel=1e-5)


def test_soft_argmax_finds_a_peaked_bin() -> None:
    logits = torch.full((1, 1, 8), -1e4)
    logits[0, 0, 3] = 0.0
    assert simcc_expectation(logits).item() == pytest.approx(3.0)
    uniform = torch.zeros(1, 1, 5)
    assert simcc_expectation(uniform).item() == pytest.approx(2.0)  # mean of 0..4


CHAIN3 = (0, 1, 2)
GT = _pts((0, 0), (0, 10), (0, 20))
ALL = torch.ones(1, 3)


def test_structure_is_zero_for_the_truth_and_scores_length_errors() -> None:
    assert spine_structure_loss(GT, GT, ALL, CHAIN3).item() == pytest.approx(0.0)
    # segments 15 and 5 long where 10 and 10 are true: ((5/10)^2 + (5/10)^2) / 2
    pred = _pts((0, 0), (0, 15), (0, 20))
    assert spine_structure_loss(pred, GT, ALL, CHAIN3).item() == pytest.approx(0.25)


def test_structure_punishes_vertebrae_out_of_order() -> None:
    # first segment runs backwards (0,-10): length right, order term 10/10 = 1;
    # second segment (0,30): relative length error 20/10 = 2 -> rho(2) = 2*2 - 1 = 3 -> mean (1 + 3) / 2
    pred = _pts((0, 0), (0, -10), (0, 20))
    assert spine_structure_loss(pred, GT, ALL, CHAIN3).item() == pytest.approx(2.0)


def test_structure_only_counts_labelled_segments() -> None:
    pred = _pts((0, 0), (0, -10), (0, 20))
    only_first = torch.tensor([[1.0, 1.0, 0.0]])
    assert spine_structure_loss(pred, GT, only_first, CHAIN3).item() == pytest.approx(1.0)
    none = torch.zeros(1, 3)
    pred.requires_grad_(True)
    loss = spine_structure_loss(pred, GT, none, CHAIN3)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert pred.grad is not None and float(pred.grad.abs().sum()) == 0.0


def test_smoothness_is_curvature_relative_to_segment_length() -> None:
    straight = _pts((0, 0), (10, 0), (20, 0), (30, 0))
    assert spine_smoothness_loss(straight, (0, 1, 2, 3)).item() == pytest.approx(0.0)
    # second differences: 0 and (10,0) - 2 (20,0) + (20,10) = (-10, 10), |.| / 10 = sqrt(2)
    # -> rho = 2 sqrt(2) - 1 (past the quadratic zone); mean with the straight triple's 0
    kinked = _pts((0, 0), (10, 0), (20, 0), (20, 10))
    expected = (2 * math.sqrt(2) - 1) / 2
    assert spine_smoothness_loss(kinked, (0, 1, 2, 3)).item() == pytest.approx(expected)
    assert spine_smoothness_loss(kinked * 3.0, (0, 1, 2, 3)).item() == pytest.approx(expected)
    # a gentle bend stays in the quadratic zone: (0,0),(10,0),(20,5) -> |(0,5)| / s, s = mean length
    gentle = _pts((0, 0), (10, 0), (20, 5))
    s = (10 + math.hypot(10, 5)) / 2
    assert spine_smoothness_loss(gentle, (0, 1, 2)).item() == pytest.approx((5 / s) ** 2)
    assert spine_smoothness_loss(gentle, (0, 1, 2), scale=5.0).item() == pytest.approx(1.0)
    only_first_triple = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert spine_smoothness_loss(kinked, (0, 1, 2, 3), only_first_triple).item() == pytest.approx(0.0)


def test_robust_square_is_a_square_near_zero_with_bounded_slope() -> None:
    x = torch.tensor([0.0, 0.5, -1.0, 3.0], requires_grad=True)
    y = robust_square(x)
    assert y.tolist() == pytest.approx([0.0, 0.25, 1.0, 5.0])
    y.sum().backward()
    assert x.grad is not None and x.grad.tolist() == pytest.approx([0.0, 1.0, -2.0, 2.0])


def test_segment_scale_is_the_true_spacing_or_the_default() -> None:
    gt = _pts((0, 0), (0, 10), (0, 30))
    assert segment_scale(gt, ALL, CHAIN3, default=7.0).tolist() == pytest.approx([15.0])
    assert segment_scale(gt, torch.tensor([[1.0, 0.0, 1.0]]), CHAIN3, default=7.0).tolist() == [7.0]


def test_spine_terms_use_the_schema_chain_by_default() -> None:
    pred = torch.zeros(2, NUM_KEYPOINTS, 2)
    for rank, idx in enumerate(SPINE_CHAIN):
        pred[:, idx] = torch.tensor([0.0, 10.0 * rank])
    assert spine_smoothness_loss(pred).item() == pytest.approx(0.0)
    gt = pred.clone()
    gt[:, SPINE_CHAIN[-1], 1] += 10.0  # the top segment is really twice as long
    w = torch.ones(2, NUM_KEYPOINTS)
    # one of the 8 segments: ((10 - 20) / 20)^2 = 0.25 -> mean 0.25 / 8
    assert spine_structure_loss(pred, gt, w).item() == pytest.approx(0.25 / 8)


def test_distillation_kl_by_hand() -> None:
    # teacher p = (0.5, 0.5); student q = (0.75, 0.25) with beta = 1:
    # KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3), averaged over the 2 bins
    teacher_x = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])
    student_x = torch.tensor([[[math.log(3.0), 0.0], [-9.0, 9.0]]])  # keypoint 1 differs wildly
    same_y = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    value = simcc_distill_loss((student_x, same_y), (teacher_x, same_y), ids=(0,), beta=1.0)
    assert value.item() == pytest.approx(0.25 * math.log(4 / 3), rel=1e-5)
    same = simcc_distill_loss((same_y, same_y), (same_y, same_y), ids=(0, 1))
    assert same.item() == pytest.approx(0.0, abs=1e-7)


def test_teacher_bins_are_resampled_to_the_student() -> None:
    uniform = torch.full((1, 1, 4), 0.25)
    out = resample_bins(uniform, 8)
    assert out.shape == (1, 1, 8)
    assert torch.allclose(out, torch.full((1, 1, 8), 1 / 8))


def _batch(model: torch.nn.Module, n: int = 2) -> tuple[torch.Tensor, list]:
    """Inputs and targets as mmpose's pipeline packs them, for a model's codec sizes."""
    from mmpose.structures import PoseDataSample

    head: Any = model.head
    w, h = head.input_size
    ratio = head.simcc_split_ratio
    torch.manual_seed(0)
    samples = []
    for _ in range(n):
        labels = InstanceData()
        labels.keypoint_x_labels = torch.softmax(torch.randn(1, NUM_KEYPOINTS, int(w * ratio)), -1)
        labels.keypoint_y_labels = torch.softmax(torch.randn(1, NUM_KEYPOINTS, int(h * ratio)), -1)
        labels.keypoint_weights = torch.ones(1, NUM_KEYPOINTS)
        sample = PoseDataSample()
        sample.gt_instance_labels = labels
        samples.append(sample)
    return torch.randn(n, 3, h, w), samples


def test_head_adds_weighted_terms_and_distils_from_an_attached_teacher() -> None:
    cfg = build_config("tiny", work_dir="unused")
    model = build_model(cfg)
    assert isinstance(model, SpineTrackPoseEstimator)
    model.eval()  # same BN statistics for student and teacher
    inputs, samples = _batch(model)

    plain = model.loss(inputs, samples)
    assert {"loss_kpt", "loss_structure", "loss_smooth", "acc_pose"} <= set(plain)
    assert "loss_distill" not in plain

    model.attach_teacher(copy.deepcopy(model))
    assert not any(k.startswith("_teacher") for k in model.state_dict())
    same = model.loss(inputs, samples)
    assert same["loss_distill"].item() == pytest.approx(0.0, abs=1e-6)  # a copy teaches nothing new

    other: Any = build_model(cfg)
    other.eval()
    model.attach_teacher(other)
    differs = model.loss(inputs, samples)
    head: Any = model.head
    other_head: Any = other.head
    px, py = head.forward(model.extract_feat(inputs))
    tx, ty = other_head.forward(other.extract_feat(inputs))
    expected = 2.5 * simcc_distill_loss((px, py), (tx, ty), ids=tuple(range(26)), beta=10.0)
    assert differs["loss_distill"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert differs["loss_distill"].item() > 0

    model.head.loss_weights.update(structure=0.0, smoothness=0.0, distill=0.0)
    only_gt = model.loss(inputs, samples)
    assert set(only_gt) == {"loss_kpt", "acc_pose"}
    assert only_gt["loss_kpt"].item() == pytest.approx(plain["loss_kpt"].item(), rel=1e-5)
