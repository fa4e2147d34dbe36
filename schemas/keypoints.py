"""The SpineTrack keypoint set as data.

Every module that needs a keypoint index, name, sigma, flip partner or skeleton link reads it from
here; nothing else in the project hard-codes an index. Indices 0-25 are exactly Halpe26 (COCO-17
first), so COCO and Halpe26 annotations map in by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Keypoint:
    """One named keypoint of the SpineTrack set."""

    index: int
    name: str
    sigma: float
    meaning: str = ""
    flip: str | None = None
    group: str = "body"  # body | face | feet | spine | extra (for colouring and docs)


KEYPOINTS: Final[tuple[Keypoint, ...]] = (
    Keypoint(0, "nose", 0.026, "tip of the nose", group="face"),
    Keypoint(1, "left_eye", 0.025, "centre of the left eye", "right_eye", "face"),
    Keypoint(2, "right_eye", 0.025, "centre of the right eye", "left_eye", "face"),
    Keypoint(3, "left_ear", 0.035, "left ear (tragus)", "right_ear", "face"),
    Keypoint(4, "right_ear", 0.035, "right ear (tragus)", "left_ear", "face"),
    Keypoint(5, "left_shoulder", 0.079, "left glenohumeral joint", "right_shoulder"),
    Keypoint(6, "right_shoulder", 0.079, "right glenohumeral joint", "left_shoulder"),
    Keypoint(7, "left_elbow", 0.072, "left elbow joint", "right_elbow"),
    Keypoint(8, "right_elbow", 0.072, "right elbow joint", "left_elbow"),
    Keypoint(9, "left_wrist", 0.062, "left wrist joint", "right_wrist"),
    Keypoint(10, "right_wrist", 0.062, "right wrist joint", "left_wrist"),
    Keypoint(11, "left_hip", 0.107, "left hip joint centre", "right_hip"),
    Keypoint(12, "right_hip", 0.107, "right hip joint centre", "left_hip"),
    Keypoint(13, "left_knee", 0.087, "left knee joint", "right_knee"),
    Keypoint(14, "right_knee", 0.087, "right knee joint", "left_knee"),
    Keypoint(15, "left_ankle", 0.089, "left ankle joint", "right_ankle"),
    Keypoint(16, "right_ankle", 0.089, "right ankle joint", "left_ankle"),
    Keypoint(17, "head", 0.026, "top of the head (vertex)", group="spine"),
    Keypoint(18, "neck", 0.04, "C7, the base of the neck", group="spine"),
    Keypoint(19, "hip", 0.07, "sacrum midpoint (between the hip joints)", group="spine"),
    Keypoint(20, "left_big_toe", 0.079, "tip of the left big toe", "right_big_toe", "feet"),
    Keypoint(21, "right_big_toe", 0.079, "tip of the right big toe", "left_big_toe", "feet"),
    Keypoint(22, "left_small_toe", 0.079, "tip of the left small toe", "right_small_toe", "feet"),
    Keypoint(23, "right_small_toe", 0.079, "tip of the right small toe", "left_small_toe", "feet"),
    Keypoint(24, "left_heel", 0.079, "back of the left heel", "right_heel", "feet"),
    Keypoint(25, "right_heel", 0.079, "back of the right heel", "left_heel", "feet"),
    Keypoint(26, "spine_01", 0.10, "L5 vertebral body (lowest lumbar)", group="spine"),
    Keypoint(27, "spine_02", 0.10, "L3 vertebral body (mid lumbar)", group="spine"),
    Keypoint(28, "spine_03", 0.10, "T12/L1 junction (thoracolumbar)", group="spine"),
    Keypoint(29, "spine_04", 0.08, "T8 vertebral body (mid thoracic)", group="spine"),
    Keypoint(30, "spine_05", 0.08, "T3 vertebral body (upper thoracic)", group="spine"),
    Keypoint(31, "left_latissimus", 0.12, "left latissimus dorsi (experimental)",
             "right_latissimus", "extra"),
    Keypoint(32, "right_latissimus", 0.12, "right latissimus dorsi (experimental)",
             "left_latissimus", "extra"),
    Keypoint(33, "left_clavicle", 0.07, "left clavicle midpoint (experimental)",
             "right_clavicle", "extra"),
    Keypoint(34, "right_clavicle", 0.07, "right clavicle midpoint (experimental)",
             "left_clavicle", "extra"),
    Keypoint(35, "neck_02", 0.07, "C3/C4, mid cervical spine", group="spine"),
    Keypoint(36, "neck_03", 0.06, "C1 (atlas), top of the cervical spine", group="spine"),
)

NUM_KEYPOINTS: Final[int] = len(KEYPOINTS)
NAMES: Final[tuple[str, ...]] = tuple(k.name for k in KEYPOINTS)
INDEX: Final[dict[str, int]] = {k.name: k.index for k in KEYPOINTS}
SIGMAS: Final[tuple[float, ...]] = tuple(k.sigma for k in KEYPOINTS)


def _ids(*names: str) -> tuple[int, ...]:
    return tuple(INDEX[n] for n in names)


#: The 9 spine keypoints, sacrum to skull.
SPINE_CHAIN: Final[tuple[int, ...]] = _ids(
    "hip", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck", "neck_02", "neck_03"
)
SPINE_IDS: Final[tuple[int, ...]] = SPINE_CHAIN
BODY_IDS: Final[tuple[int, ...]] = tuple(range(17))  # COCO-17
FEET_IDS: Final[tuple[int, ...]] = tuple(range(20, 26))
HALPE26_IDS: Final[tuple[int, ...]] = tuple(range(26))

#: Evaluation partitions (SPINETRACK.md): all 37, body, feet, spine.
PARTITIONS: Final[dict[str, tuple[int, ...]]] = {
    "all": tuple(range(NUM_KEYPOINTS)),
    "body": BODY_IDS,
    "feet": FEET_IDS,
    "spine": SPINE_IDS,
}

#: Index pairs swapped by a horizontal flip (each pair once, left first).
FLIP_PAIRS: Final[tuple[tuple[int, int], ...]] = tuple(
    (k.index, INDEX[k.flip]) for k in KEYPOINTS if k.flip and k.index < INDEX[k.flip]
)


def flip_permutation() -> tuple[int, ...]:
    """Index permutation that maps keypoints of an image to those of its mirror image."""
    perm = list(range(NUM_KEYPOINTS))
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return tuple(perm)


_LINKS: Final[tuple[tuple[str, str], ...]] = (
    # legs and feet (Halpe26)
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("left_hip", "hip"),
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "hip"),
    ("left_ankle", "left_big_toe"), ("left_ankle", "left_small_toe"), ("left_ankle", "left_heel"),
    ("right_ankle", "right_big_toe"), ("right_ankle", "right_small_toe"),
    ("right_ankle", "right_heel"),
    # arms
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    # face
    ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"),
    ("left_eye", "left_ear"), ("right_eye", "right_ear"),
    # spine chain, skull to sacrum
    ("head", "neck_03"), ("neck_03", "neck_02"), ("neck_02", "neck"), ("neck", "spine_05"),
    ("spine_05", "spine_04"), ("spine_04", "spine_03"), ("spine_03", "spine_02"),
    ("spine_02", "spine_01"), ("spine_01", "hip"),
    # shoulder girdle and back
    ("spine_05", "left_clavicle"), ("spine_05", "right_clavicle"),
    ("left_clavicle", "left_shoulder"), ("right_clavicle", "right_shoulder"),
    ("spine_04", "left_latissimus"), ("spine_04", "right_latissimus"),
)
SKELETON: Final[tuple[tuple[int, int], ...]] = tuple((INDEX[a], INDEX[b]) for a, b in _LINKS)

#: The authors' mmpose metainfo draws 39 links: SKELETON plus these three (SPINETRACK.md). The
#: COCO files keep SKELETON, so released annotation bytes do not depend on how a model draws.
AUTHORS_EXTRA_LINKS: Final[tuple[tuple[int, int], ...]] = tuple(
    (INDEX[a], INDEX[b])
    for a, b in (("head", "nose"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"))
)
AUTHORS_SKELETON: Final[tuple[tuple[int, int], ...]] = SKELETON + AUTHORS_EXTRA_LINKS

#: The authors' per-keypoint training weights (mmpose `joint_weights`), in index order.
JOINT_WEIGHTS: Final[tuple[float, ...]] = (
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.5,
    1.5, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5,
)

#: The authors' half-body split (mmpose RandomHalfBody): hips, knees, ankles, sacrum and feet are
#: the lower body, everything else the upper.
LOWER_BODY_IDS: Final[tuple[int, ...]] = (*range(11, 17), *range(19, 26))

GROUP_COLOURS: Final[dict[str, str]] = {
    "face": "#f5a623",
    "body": "#4a90e2",
    "feet": "#7ed321",
    "spine": "#d0021b",
    "extra": "#9013fe",
}


def keypoint_colour(index: int) -> str:
    """Display colour of a keypoint, by group (Label Studio, FiftyOne, plots)."""
    return GROUP_COLOURS[KEYPOINTS[index].group]


def coco_skeleton_1based() -> list[list[int]]:
    """Skeleton in COCO's category convention (1-based indices)."""
    return [[a + 1, b + 1] for a, b in SKELETON]


def coco_category(ids: Sequence[int] | None = None) -> dict[str, object]:
    """The single `person` category of a SpineTrack COCO file; with `ids`, of those keypoints only
    (a partition scored on its own: their names, and the links between them, renumbered)."""
    if ids is None:
        names, skeleton = list(NAMES), coco_skeleton_1based()
    else:
        position = {i: n for n, i in enumerate(ids)}
        names = [NAMES[i] for i in ids]
        skeleton = [[position[a] + 1, position[b] + 1] for a, b in SKELETON
                    if a in position and b in position]
    return {"id": 1, "name": "person", "supercategory": "person", "keypoints": names, "skeleton": skeleton}
