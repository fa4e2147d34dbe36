"""A set of rendered sample sequences (the demo's and the benchmarks' input, since Unreal cannot run here).

Rendering is resumable: a sequence folder counts as done once both `ground_truth.json` and
`sequence.json` (which the renderer writes last) are there; a half-written folder is rendered again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.store import Store
from synthetic.renderer import render_sequence

GROUND_TRUTH = "ground_truth.json"


@dataclass(frozen=True)
class SequenceSpec:
    """One sequence to render: a motion, a seed, a length (and which character, see synthetic.renderer)."""

    motion: str
    seed: int
    frames: int
    width: int = 320
    height: int = 256
    character: str = "mannequin"

    @property
    def name(self) -> str:
        return f"{self.motion}-seed{self.seed}"


def is_complete(folder: Path, frames: int) -> bool:
    """Whether `folder` holds a finished render of `frames` frames."""
    gt = folder / GROUND_TRUTH
    if not gt.is_file() or not (folder / "sequence.json").is_file():
        return False
    try:
        return len(json.loads(gt.read_text())["images"]) == frames
    except (OSError, ValueError, KeyError):
        return False


def render_set(root: str | Path, specs: list[SequenceSpec]) -> list[Path]:
    """Render every spec under `root/<motion>-seed<seed>`, skipping finished ones; returns the folders."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folders = []
    for spec in specs:
        folder = root / spec.name
        if not is_complete(folder, spec.frames):
            if folder.exists():
                shutil.rmtree(folder)
            render_sequence(folder, frames=spec.frames, seed=spec.seed, motion=spec.motion,
                            width=spec.width, height=spec.height, character=spec.character)
        folders.append(folder)
    return folders


def store_ground_truth(store: Store, folder: Path, *, tag: str = "render-gt") -> int:
    """A render folder's true landmarks as accepted synthetic labels; returns how many.

    This skips OpenSim IK on purpose: model tests and benchmarks measure the model, not the ingest
    (`synthetic.ingest` is the product path). Idempotent through external ids.
    """
    gt = json.loads((folder / GROUND_TRUTH).read_text())
    images = {img["id"]: img for img in gt["images"]}
    ids: dict[int, int] = {}
    for ann in gt["annotations"]:
        img = images[ann["image_id"]]
        if img["id"] not in ids:
            ids[img["id"]] = store.add_image(
                folder / img["file_name"], source="synthetic", subset="train-unreal",
                group_key=folder.name, width=img["width"], height=img["height"],
                frame_index=img.get("frame"),
            )
        inst = store.instance_id(ids[img["id"]], f"actor-{ann.get('actor', 1)}")
        store.add_revision(inst, ann["keypoints"], ann["bbox"], source="synthetic", area=ann["area"],
                           external_id=f"{tag}:{folder.name}:{ann['id']}")
    return len(gt["annotations"])
