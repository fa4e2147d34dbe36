"""BlazePose's 33 named landmarks as SpineTrack points: the one mapping every BlazePose user reads.

Only the landmarks that really are SpineTrack points are mapped: the COCO-17 face and limb points,
the heels and the big toes (BlazePose's "foot index" is the tip of the foot, at the big toe). Head
top, neck, sacrum, small toes, the spine and the experimental points have no counterpart.
"""

from __future__ import annotations

from typing import Final

from schemas.keypoints import INDEX

#: BlazePose landmark index -> SpineTrack keypoint index (person's left is left in both).
LANDMARK_TO_SPINETRACK: Final[dict[int, int]] = {
    0: INDEX["nose"],
    2: INDEX["left_eye"],
    5: INDEX["right_eye"],
    7: INDEX["left_ear"],
    8: INDEX["right_ear"],
    11: INDEX["left_shoulder"],
    12: INDEX["right_shoulder"],
    13: INDEX["left_elbow"],
    14: INDEX["right_elbow"],
    15: INDEX["left_wrist"],
    16: INDEX["right_wrist"],
    23: INDEX["left_hip"],
    24: INDEX["right_hip"],
    25: INDEX["left_knee"],
    26: INDEX["right_knee"],
    27: INDEX["left_ankle"],
    28: INDEX["right_ankle"],
    29: INDEX["left_heel"],
    30: INDEX["right_heel"],
    31: INDEX["left_big_toe"],
    32: INDEX["right_big_toe"],
}
#: SpineTrack points BlazePose covers, ascending.
BLAZEPOSE_COVERS: Final[tuple[int, ...]] = tuple(sorted(LANDMARK_TO_SPINETRACK.values()))
