"""Keypoint layouts of other datasets, and which SpineTrack point each of their points is.

Data, not code: `spinetrack import-real` maps a file's points through these tables, and
docs/pseudo-labelling.md prints them. A point maps only to the SpineTrack point it really is (same
landmark definition); everything else is listed in `unmapped` with the reason. Point names and
orders follow mmpose's dataset metainfo (configs/_base_/datasets/*.py); `aliases` are the spellings
the datasets' own files use. Sides are the person's own (left = the person's left), as in COCO.

Where mmpose's Halpe26 training mix (RTMPose body8-halpe26) maps a point that is not SpineTrack's
(MPII upper_neck and AIC/CrowdPose neck onto Halpe's neck), this table does not: SpineTrack's neck
is C7, a spine landmark the synthetic subset places on the vertebra.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from schemas.keypoints import INDEX, NAMES, NUM_KEYPOINTS


@dataclass(frozen=True)
class Layout:
    """One dataset's keypoint layout and its map onto SpineTrack's 37 points."""

    name: str
    dataset: str
    count: int  # keypoints per annotation in a file of this layout
    names: tuple[str, ...]  # the first len(names) points' names (the rest: `unmapped`)
    to: Mapping[str, str]  # layout point name -> SpineTrack point name, where they are the same point
    unmapped: Mapping[str, str] = field(default_factory=dict)  # point (or range) -> why no counterpart
    aliases: tuple[tuple[str, ...], ...] = ()  # other spellings of `names` found in real files

    def pairs(self) -> tuple[tuple[int, int], ...]:
        """(index in the file, SpineTrack index) of every mapped point, in file order."""
        return tuple((i, INDEX[self.to[n]]) for i, n in enumerate(self.names) if n in self.to)

    def knows(self, names: tuple[str, ...]) -> bool:
        """Whether a file's point names are this layout's (any spelling)."""
        wanted = tuple(normal_name(n) for n in names)
        return any(wanted == tuple(normal_name(n) for n in spelled)
                   for spelled in (self.names, *self.aliases))


def normal_name(name: str) -> str:
    """'Right-ankle', 'Right Ankle' and 'right_ankle' are one name."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _same(names: tuple[str, ...]) -> dict[str, str]:
    return {n: n for n in names}


_LIMBS: Final[tuple[str, ...]] = NAMES[5:17]  # shoulders ... ankles, COCO order
_MPII_NAMES: Final[tuple[str, ...]] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis",
    "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder",
    "left_shoulder", "left_elbow", "left_wrist",
)
_MPII_UNMAPPED: Final[dict[str, str]] = {
    "pelvis": "the midpoint between the hip joints; SpineTrack's hip is the sacrum (posterior, "
              "not the hip-joint midpoint)",
    "thorax": "the top of the chest between the shoulders, on the front; SpineTrack's neck is C7 "
              "on the back of the neck",
    "upper_neck": "the top of the neck under the chin; no SpineTrack point is there (neck is C7, "
                  "the neck's base; neck_03 is C1, a vertebra inside the head-neck junction)",
}
_NECK_UNMAPPED: Final[str] = ("the middle of the neck between head and shoulders, not a vertebra; "
                              "SpineTrack's neck is C7 (the neck's base, on the back)")
_WHOLEBODY_FEET: Final[tuple[str, ...]] = (
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)
_POSETRACK_NAMES: Final[tuple[str, ...]] = ("nose", "head_bottom", "head_top", *NAMES[3:17])


LAYOUTS: Final[dict[str, Layout]] = {lay.name: lay for lay in (
    Layout("coco17", "COCO keypoints (also OCHuman)", 17, NAMES[:17], _same(NAMES[:17])),
    Layout("halpe26", "Halpe26 (SpineTrack 0-25 by definition)", 26, NAMES[:26], _same(NAMES[:26])),
    Layout("halpe136", "Halpe full body", 136, NAMES[:26], _same(NAMES[:26]),
           {"26-135": "68 face and 42 hand points: no SpineTrack counterpart"}),
    Layout("coco-wholebody", "COCO-WholeBody", 133, (*NAMES[:17], *_WHOLEBODY_FEET),
           _same((*NAMES[:17], *_WHOLEBODY_FEET)),
           {"23-132": "68 face and 42 hand points: no SpineTrack counterpart"}),
    Layout("spinetrack37", "SpineTrack", NUM_KEYPOINTS, NAMES, _same(NAMES)),
    Layout("posetrack18", "PoseTrack18 (COCO order, slots 1-2 are head points)", 17,
           _POSETRACK_NAMES, {**_same(NAMES[3:17]), "nose": "nose", "head_top": "head"},
           {"head_bottom": "the bottom of the head (chin line); no SpineTrack point is there"}),
    Layout("mpii", "MPII Human Pose (mmpose's json: joints, joints_vis, center, scale)", 16,
           _MPII_NAMES, {**_same(_LIMBS), "head_top": "head"}, _MPII_UNMAPPED),
    Layout("mhp", "MHP (COCO-style, MPII's 16 points and order)", 16,
           _MPII_NAMES, {**_same(_LIMBS), "head_top": "head"}, _MPII_UNMAPPED),
    Layout("aic", "AI Challenger", 14,
           ("right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
            "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
            "left_ankle", "head_top", "neck"),
           {**_same(_LIMBS), "head_top": "head"}, {"neck": _NECK_UNMAPPED}),
    Layout("crowdpose", "CrowdPose", 14, (*_LIMBS, "top_head", "neck"),
           {**_same(_LIMBS), "top_head": "head"}, {"neck": _NECK_UNMAPPED},
           aliases=((*_LIMBS, "head", "neck"),)),
)}

#: Counts that name one layout; the others (14: aic/crowdpose, 16: mpii/mhp) need it said.
BY_COUNT: Final[dict[int, str]] = {17: "coco17", 26: "halpe26", 133: "coco-wholebody",
                                    136: "halpe136", NUM_KEYPOINTS: "spinetrack37"}


def layouts_with(count: int) -> tuple[str, ...]:
    """The layouts whose files have `count` keypoints per annotation."""
    return tuple(name for name, lay in LAYOUTS.items() if lay.count == count)


def layout_named_by(names: tuple[str, ...]) -> Layout | None:
    """The layout whose point names a file's category lists (None: not one of ours)."""
    return next((lay for lay in LAYOUTS.values() if lay.knows(names)), None)
