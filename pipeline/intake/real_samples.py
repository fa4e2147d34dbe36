"""The real sample sets: public COCO-style sample files of photographed people (mmpose's test data,
in `../shared/data/real_people` or `$SPINETRACK_REAL_PEOPLE`), and how their keypoints map into
SpineTrack's.

One list for the demo (real images in its pool, the COCO sample scored), the active-learning bench
(real photos in the pool and the validation split) and the annotator bench (body AP per set:
`REAL_SAMPLE_SETS`, whose keypoints map by index). `LAYOUT_SAMPLE_SETS` (MPII, AI Challenger,
CrowdPose, MHP) map through their layout's table (schemas/layouts.py) and must be imported with
it: `import_sample` does, for every set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.intake.real_import import ImportSummary
    from pipeline.store import Store

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
    #: the file's keypoint layout for import (schemas/layouts.py); None: from the count
    layout: str | None = None
    #: people the file holds with a box and >= 1 labelled point that maps (docs/pseudo-labelling.md)
    people: int = 0

    def as_tuple(self) -> tuple[str, str, str, tuple[int, ...], str]:
        return self.name, self.coco_file, self.image_dir, self.slots, self.mapping


#: Sets whose keypoints map into SpineTrack's first points by index.
REAL_SAMPLE_SETS: tuple[RealSampleSet, ...] = (
    RealSampleSet("coco", "coco/test_coco.json", "coco", tuple(range(17)), "COCO-17", people=12),
    RealSampleSet("ochuman", "ochuman/test_ochuman.json", "ochuman", tuple(range(17)), "COCO-17",
                  people=5),
    RealSampleSet("halpe", "halpe/test_halpe.json", "coco", tuple(range(26)),
                  "Halpe136: first 26 = Halpe26 = SpineTrack 0-25 (COCO-17, head, neck, hip, feet); "
                  "images are COCO's", people=12),
    RealSampleSet("posetrack18", "posetrack18/annotations/test_posetrack18_val.json", "posetrack18",
                  (0, *range(3, 17)),
                  "COCO-17 order, slots 1-2 are head_bottom/head_top (not eyes): left out of the "
                  "by-index slots; the import maps head_top to head", layout="posetrack18", people=14),
)

#: Sets whose keypoints map through their layout's table, not by index (no eyes or ears).
LAYOUT_SAMPLE_SETS: tuple[RealSampleSet, ...] = (
    RealSampleSet("mpii", "mpii/test_mpii.json", "mpii", (),
                  "MPII json: 12 limb joints + head_top -> head", layout="mpii", people=5),
    RealSampleSet("aic", "aic/test_aic.json", "aic", (),
                  "AI Challenger: 12 limb joints + head top -> head", layout="aic", people=9),
    RealSampleSet("crowdpose", "crowdpose/test_crowdpose.json", "crowdpose", (),
                  "CrowdPose: 12 limb joints + head (top) -> head", layout="crowdpose", people=4),
    RealSampleSet("mhp", "mhp/test_mhp.json", "mhp", (),
                  "MHP (MPII's points): 12 limb joints + head_top -> head", layout="mhp", people=4),
)
ALL_SAMPLE_SETS: tuple[RealSampleSet, ...] = REAL_SAMPLE_SETS + LAYOUT_SAMPLE_SETS

#: Sets whose keypoints do not map by index, and why (they import through LAYOUT_SAMPLE_SETS).
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
    """The named sets (any of ALL_SAMPLE_SETS), in the order asked."""
    by_name = {s.name: s for s in ALL_SAMPLE_SETS}
    return tuple(by_name[n] for n in names)


def import_sample(store: Store, sample: RealSampleSet, folder: Path | None = None,
                  **options: Any) -> ImportSummary:
    """Import one sample set from `folder` (default: real_people_folder()) with its own layout,
    so callers need not know which sets need one; `options` go to import_coco (subset, hidden...).
    The importer loads the store (SQLAlchemy): imported here, so the CLI's start stays light."""
    from pipeline.intake.real_import import import_coco

    root = folder or real_people_folder()
    return import_coco(store, root / sample.coco_file, image_dir=root / sample.image_dir,
                       layout=sample.layout, **options)
