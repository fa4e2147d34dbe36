"""The real sample sets: public COCO-style sample files of photographed people (mmpose's test data,
in `../shared/data/real_people` or `$SPINETRACK_REAL_PEOPLE`), and how their keypoints map into
SpineTrack's.

One list for the demo (real images in its pool, the COCO sample scored), the active-learning bench
(real photos in the pool and the validation split) and the annotator bench (body AP per set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Where the sample sets are looked for when $SPINETRACK_REAL_PEOPLE is not set.
DEFAULT_FOLDER = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_people"
FOLDER_ENV = "SPINETRACK_REAL_PEOPLE"


@dataclass(frozen=True)
class RealSampleSet:
    name: str
    coco_file: str  # relative to the sample folder
    image_dir: str  # relative to the sample folder: what the file's `file_name`s are relative to
    #: keypoint slots of the file that are SpineTrack's point of the same index (the rest dropped)
    slots: tuple[int, ...]
    mapping: str  # why those slots

    def as_tuple(self) -> tuple[str, str, str, tuple[int, ...], str]:
        return self.name, self.coco_file, self.image_dir, self.slots, self.mapping


#: Sets whose keypoints map into SpineTrack's first points by index.
REAL_SAMPLE_SETS: tuple[RealSampleSet, ...] = (
    RealSampleSet("coco", "coco/test_coco.json", "coco", tuple(range(17)), "COCO-17"),
    RealSampleSet("ochuman", "ochuman/test_ochuman.json", "ochuman", tuple(range(17)), "COCO-17"),
    RealSampleSet("halpe", "halpe/test_halpe.json", "coco", tuple(range(26)),
                  "Halpe136: first 26 = Halpe26 = SpineTrack 0-25 (COCO-17, head, neck, hip, feet); "
                  "images are COCO's"),
    RealSampleSet("posetrack18", "posetrack18/annotations/test_posetrack18_val.json", "posetrack18",
                  (0, *range(3, 17)),
                  "COCO-17 order, slots 1-2 are head_bottom/head_top (not eyes): left out"),
)

#: Sets whose keypoints do not map by index, and why.
NOT_MAPPED = {
    "crowdpose": "14 points (no nose/eyes/ears; head top and neck of its own), other order",
    "aic": "14 points (no face points; head top, neck), other order",
    "mhp": "16 MPII-style points (no nose/eyes/ears; head top, upper neck, pelvis, thorax)",
    "mpii": "16 points (no nose/eyes/ears; head top, upper neck, pelvis, thorax)",
}


def real_people_folder() -> Path:
    """$SPINETRACK_REAL_PEOPLE, else ../shared/data/real_people beside the repository (may be absent)."""
    return Path(os.environ.get(FOLDER_ENV) or DEFAULT_FOLDER)


def sample_sets(*names: str) -> tuple[RealSampleSet, ...]:
    """The named sets, in the order asked."""
    by_name = {s.name: s for s in REAL_SAMPLE_SETS}
    return tuple(by_name[n] for n in names)
