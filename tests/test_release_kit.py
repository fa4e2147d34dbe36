"""Releases that train as they are (issue 21, item 2): metainfo.py and mmpose configs in every release.

mmpose's own `CocoDataset` loads every annotation file of a release with the shipped metainfo, and
two training iterations of the shipped RTMPose-s config run from a copy of the release folder alone,
in a process where SpineTrack's modules cannot be imported (only mmpose's import shim for this stack,
pipeline/model/compat.py, which a normal mmpose install does not need).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from PIL import Image as PILImage

from pipeline.release import build as release_module
from pipeline.release import kit as release_kit
from pipeline.release.build import ReleaseError, create_release, reproduce_release, verify_release
from pipeline.release.kit import BLAZE37_CONFIG, KIT_FILES, METAINFO, RTMPOSE_S_CONFIG
from pipeline.store import Store
from schemas.keypoints import AUTHORS_SKELETON, FLIP_PAIRS, JOINT_WEIGHTS, LOWER_BODY_IDS, NAMES, SIGMAS

ROOT = Path(__file__).resolve().parents[1]
W, H = 96, 128


def _person(seed: int) -> list[float]:
    """37 (x, y, v) triplets inside a 60 x 100 box at (18, 14)."""
    out: list[float] = []
    for i in range(len(NAMES)):
        out += [float(20 + (seed + 7 * i) % 56), float(16 + (3 * seed + 11 * i) % 96), 2]
    return out


@pytest.fixture()
def released(store: Store, tmp_path: Path) -> Path:
    """Release 0.1.0: in each split one synthetic sequence and one coco and one yoga video (2 frames
    each), so every annotation file of the release has people in it."""
    images = tmp_path / "sources"
    images.mkdir()
    pinned = {}
    groups = [(f"seq-{s}", "synthetic", "train-unreal") for s in range(3)]
    groups += [(f"video-{s}-{sub}", "real", sub) for s in range(3) for sub in ("coco", "yoga")]
    for n, (group, source, subset) in enumerate(groups):
        pinned[group] = ("train", "val", "test")[int(group.split("-")[1])]
        for frame in range(2):
            path = images / f"{group}-{frame}.png"
            PILImage.new("RGB", (W, H), (20 * n, 10 * frame, 90)).save(path)
            image = store.add_image(path, source=source, subset=subset, group_key=group, width=W, height=H,
                                    frame_index=frame)
            store.add_revision(store.instance_id(image, "p0"), _person(n + frame), [18, 14, 60, 100],
                               source="synthetic" if source == "synthetic" else "human",
                               annotator=None if source == "synthetic" else "ann1")
    return create_release(store, "0.1.0", pinned=pinned).path


def test_the_kit_is_in_the_release_and_its_manifest(released: Path, store: Store, tmp_path: Path) -> None:
    manifest = json.loads((released / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert set(KIT_FILES) <= listed
    for name in KIT_FILES:
        assert not os.access(released / name, os.W_OK) or os.geteuid() == 0  # read-only like the rest
    assert verify_release(released) == []
    rebuilt = reproduce_release(store, "0.1.0", tmp_path / "rebuilt")
    for name in KIT_FILES:
        assert (rebuilt / name).read_bytes() == (released / name).read_bytes()
    card = (released / "README.md").read_text()
    assert all(f"`{name}`" in card for name in KIT_FILES)  # the card's file table
    assert "### Train with mmpose" in card


def test_a_changed_kit_is_named_when_reproducing(
    released: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kit is made by code: a release made before a change to it says so, not "the store"."""
    monkeypatch.setattr(release_kit, "metainfo_text", lambda version: "dataset_info = {}\n")
    with pytest.raises(ReleaseError, match=r"other metainfo\.py: these are made by the code"):
        reproduce_release(store, "0.1.0", tmp_path / "rebuilt")


def test_a_release_made_before_the_kit_is_rebuilt_without_one(
    store: Store, released: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Older releases stay as they are: reproduce gives their files back, and no kit."""
    monkeypatch.setattr(release_module, "write_kit", lambda out, **_: [])
    store.add_revision(store.current_labels()[0].instance_id, _person(99), [18, 14, 60, 100], source="human",
                       annotator="ann2")
    made = create_release(store, "0.2.0")
    assert not any((made.path / name).exists() for name in KIT_FILES)
    assert "Train with mmpose" not in (made.path / "README.md").read_text()
    monkeypatch.undo()
    rebuilt = reproduce_release(store, "0.2.0", tmp_path / "rebuilt")
    assert not any((rebuilt / name).exists() for name in KIT_FILES)
    assert verify_release(made.path) == []


def test_the_metainfo_is_the_authors(released: Path) -> None:
    info = Config.fromfile(str(released / METAINFO)).dataset_info
    kps = info["keypoint_info"]
    assert [kps[i]["name"] for i in range(len(NAMES))] == list(NAMES)
    assert info["sigmas"] == list(SIGMAS) and info["joint_weights"] == list(JOINT_WEIGHTS)
    assert len(info["skeleton_info"]) == 39
    assert [tuple(NAMES.index(n) for n in s["link"]) for s in info["skeleton_info"].values()] == list(
        AUTHORS_SKELETON)
    assert {(a, NAMES.index(kps[a]["swap"])) for a, _ in FLIP_PAIRS} == set(FLIP_PAIRS)
    assert [i for i in range(len(NAMES)) if kps[i]["type"] == "lower"] == list(LOWER_BODY_IDS)


def test_the_blaze37_config_reads_the_release(released: Path) -> None:
    """The default student's config needs SpineTrack (custom_imports) and points into the release."""
    cfg = Config.fromfile(str(released / BLAZE37_CONFIG))
    assert cfg.custom_imports["imports"] == ["pipeline.model"]
    assert cfg.model["type"] == "Blaze37Estimator"
    for split in ("train", "val", "test"):
        dataset = cfg[f"{split}_dataloader"]["dataset"]
        ann = Path(dataset["data_root"], dataset["ann_file"]).resolve()
        assert ann == released / "annotations" / f"{split}.json"
        assert Path(dataset["metainfo"]["from_file"]).resolve() == released / METAINFO


#: Run in a copy of the release folder: load every annotation file with mmpose's CocoDataset and the
#: release's metainfo, then train the shipped RTMPose-s config for 2 iterations and test it.
TRAIN_FROM_THE_RELEASE = r"""
import glob, importlib.abc, importlib.util, json, sys

compat_path, work_dir = sys.argv[1:3]
# this stack only (no compiled mmcv ops, mmdet, torchvision): mmpose's import shim, loaded as a file
spec = importlib.util.spec_from_file_location("spinetrack_compat", compat_path)
compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compat)
compat.install()


class NoSpineTrack(importlib.abc.MetaPathFinder):
    # from here on nothing of SpineTrack can be imported: the release must do without it
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipeline", "schemas", "synthetic", "annotation", "flows", "bench"):
            raise ImportError(f"{name}: SpineTrack is not available to a release")
        return None


sys.meta_path.insert(0, NoSpineTrack())
for name in [m for m in sys.modules if m.split(".")[0] in ("pipeline", "schemas")]:
    del sys.modules[name]  # the shim's own helpers go too; mmpose keeps what it bound

from mmengine.config import Config
from mmengine.runner import Runner
from mmpose.datasets import CocoDataset

report = {"files": {}}
for ann in sorted(glob.glob("annotations/*.json")):
    dataset = CocoDataset(ann_file=ann, data_root=".", data_mode="topdown", test_mode=True,
                          metainfo=dict(from_file="metainfo.py"), pipeline=[])
    meta = dataset.metainfo
    report["files"][ann] = len(dataset)
    report["meta"] = {"num_keypoints": meta["num_keypoints"], "links": len(meta["skeleton_links"]),
                      "flip_indices": meta["flip_indices"], "sigmas": len(meta["sigmas"]),
                      "weights": [float(w) for w in meta["dataset_keypoint_weights"]]}

cfg = Config.fromfile("configs/rtmpose-s_spinetrack.py")
cfg.work_dir = work_dir
cfg.train_cfg.max_iters = 2
cfg.train_dataloader.batch_size = 2
for loader in ("train_dataloader", "test_dataloader"):
    cfg[loader].num_workers = 0
    cfg[loader].persistent_workers = False
cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # the test split is scored below instead
runner = Runner.from_cfg(cfg)
runner.train()
report["iters"] = runner.iter
report["test"] = {k: float(v) for k, v in runner.test().items()}
report["spinetrack_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "schemas"))
print("REPORT " + json.dumps(report))
"""


def test_mmpose_loads_and_trains_from_the_release_folder_alone(released: Path, tmp_path: Path) -> None:
    copy = tmp_path / "downloaded" / "spinetrack-0.1.0"
    shutil.copytree(released, copy)  # elsewhere, no store next to it
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINETRACK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_FROM_THE_RELEASE, str(ROOT / "pipeline/model/compat.py"),
         str(tmp_path / "work")],
        cwd=copy, env=env, capture_output=True, text=True, timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-6000:]
    report = json.loads(lines[-1].removeprefix("REPORT "))
    counts = {f"annotations/{p.name}": len(json.loads(p.read_text())["annotations"])
              for p in sorted((copy / "annotations").glob("*.json"))}
    assert report["files"] == counts and min(counts.values()) > 0  # every file, every person
    meta = report["meta"]
    assert (meta["num_keypoints"], meta["links"], meta["sigmas"]) == (37, 39, 37)
    assert meta["weights"] == pytest.approx(JOINT_WEIGHTS)  # mmpose keeps them as float32
    flips = list(range(37))
    for a, b in FLIP_PAIRS:
        flips[a], flips[b] = b, a
    assert meta["flip_indices"] == flips
    assert report["iters"] == 2
    assert "coco/AP" in report["test"]  # OKS AP with the release's sigmas, on test.json
    assert report["spinetrack_modules"] == []
    assert (copy / RTMPOSE_S_CONFIG).is_file()
