"""The default SpineTrack full-body OpenSim model: one import for its anatomy and its builder.

The anatomy (proportions, markers, capsules, lumbar shares) lives in `synthetic.anatomy` and has no
OpenSim dependency; `synthetic.opensim_builder` turns it into an ``osim.Model``. This module keeps the
old import path working for both.
"""

from __future__ import annotations

from synthetic.anatomy import (
    DEFAULT_MODEL_NAME,
    JOINT_RANGES_DEG,
    LUMBAR_DOFS,
    LUMBAR_LEVELS,
    LUMBAR_ROM_DEG,
    LUMBAR_TOTALS,
    REFERENCE_HEIGHT_M,
    Capsule,
    DefaultAnatomy,
    bone_names,
    capsules_in_ground,
    default_anatomy,
    default_axis_scale_segments,
    default_scale_segments,
    expand_pose,
    landmark_names,
    lumbar_coordinate,
    lumbar_share,
)
from synthetic.opensim_builder import (
    attach_markers,
    body_transforms,
    build_default_model,
    marker_positions,
    pose_state,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "JOINT_RANGES_DEG",
    "LUMBAR_DOFS",
    "LUMBAR_LEVELS",
    "LUMBAR_ROM_DEG",
    "LUMBAR_TOTALS",
    "REFERENCE_HEIGHT_M",
    "Capsule",
    "DefaultAnatomy",
    "attach_markers",
    "body_transforms",
    "bone_names",
    "build_default_model",
    "capsules_in_ground",
    "default_anatomy",
    "default_axis_scale_segments",
    "default_scale_segments",
    "expand_pose",
    "landmark_names",
    "lumbar_coordinate",
    "lumbar_share",
    "marker_positions",
    "pose_state",
]
