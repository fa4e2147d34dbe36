"""mmpose dataset metainfo for the 37 SpineTrack keypoints, built from `schemas.keypoints`.

mmpose reads keypoint names, flip partners, upper/lower body split (for RandomHalfBody), skeleton,
colours, joint weights and OKS sigmas from this dict; every value comes from the schema so the model,
the exporter and the evaluation can never disagree about an index.
"""

from __future__ import annotations

from typing import Any

from schemas.keypoints import (
    AUTHORS_SKELETON,
    INDEX,
    JOINT_WEIGHTS,
    KEYPOINTS,
    LOWER_BODY_IDS,
    PARTITIONS,
    SIGMAS,
    keypoint_colour,
)

DATASET_NAME = "spinetrack"

#: The authors' lower body (schemas.keypoints.LOWER_BODY_IDS): legs, sacrum and feet.
LOWER_BODY_NAMES = frozenset(KEYPOINTS[i].name for i in LOWER_BODY_IDS)


def _rgb(hex_colour: str) -> list[int]:
    value = hex_colour.lstrip("#")
    return [int(value[i : i + 2], 16) for i in (0, 2, 4)]


def body_part(index: int) -> str:
    """'upper' or 'lower': mmpose's RandomHalfBody crops one of the two halves."""
    return "lower" if KEYPOINTS[index].name in LOWER_BODY_NAMES else "upper"


def dataset_info() -> dict[str, Any]:
    """The metainfo dict in mmpose's dataset_info format (what `parse_pose_metainfo` reads)."""
    keypoint_info = {
        k.index: {
            "name": k.name,
            "id": k.index,
            "color": _rgb(keypoint_colour(k.index)),
            "type": body_part(k.index),
            "swap": k.flip or "",
        }
        for k in KEYPOINTS
    }
    skeleton_info = {
        n: {
            "link": (KEYPOINTS[a].name, KEYPOINTS[b].name),
            "id": n,
            "color": _rgb(keypoint_colour(b if KEYPOINTS[b].group == "spine" else a)),
        }
        for n, (a, b) in enumerate(AUTHORS_SKELETON)
    }
    return {
        "dataset_name": DATASET_NAME,
        "paper_info": {
            "title": "Towards Unconstrained 2D Pose Estimation of the Human Spine",
            "container": "CVPR Workshops 2025",
            "homepage": "https://arxiv.org/abs/2504.08110",
        },
        "keypoint_info": keypoint_info,
        "skeleton_info": skeleton_info,
        "joint_weights": list(JOINT_WEIGHTS),
        "sigmas": list(SIGMAS),
    }


def partitions() -> dict[str, list[int]]:
    """Evaluation partitions (all/body/feet/spine) for mmpose's KeypointPartitionMetric."""
    return {name: list(ids) for name, ids in PARTITIONS.items()}


def upper_lower_ids() -> tuple[list[int], list[int]]:
    upper = [k.index for k in KEYPOINTS if body_part(k.index) == "upper"]
    lower = [k.index for k in KEYPOINTS if body_part(k.index) == "lower"]
    return upper, lower


__all__ = ["DATASET_NAME", "INDEX", "body_part", "dataset_info", "partitions", "upper_lower_ids"]
