"""What a release needs to train as it is: mmpose metainfo and configs (issue 21).

Every release from this version on ships, beside its annotations:

    metainfo.py                      mmpose `dataset_info` (pipeline.model.metainfo: the schema's names,
                                     flip pairs, the authors' 39-link skeleton, sigmas, joint weights,
                                     upper/lower body); plain Python, importable without SpineTrack
    configs/rtmpose-s_spinetrack.py  RTMPose-s in stock mmpose/mmengine types only: trains with a
                                     normal mmpose install and nothing of SpineTrack
    configs/blaze37_spinetrack.py    the project's default student; needs SpineTrack installed
                                     (its modules come in through `custom_imports`)

The configs name the release's own files through `{{fileDirname}}`, which mmengine replaces with the
config's folder when it reads the file, so they work from any working directory and from any copy
of the release. The files are made from the code (configs and schema), not from the store; the
manifest lists and hashes them like every other file, and `reproduce_release` makes them again.
Older releases, made before the kit, are rebuilt without one (`has_kit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from pprint import pformat
from typing import Any

METAINFO = "metainfo.py"
RTMPOSE_S_CONFIG = "configs/rtmpose-s_spinetrack.py"
BLAZE37_CONFIG = "configs/blaze37_spinetrack.py"
KIT_FILES = (METAINFO, RTMPOSE_S_CONFIG, BLAZE37_CONFIG)

#: The release folder, seen from a config in configs/ (mmengine fills in {{fileDirname}}).
RELEASE_ROOT = "{{fileDirname}}/.."
#: Where images of a release made with --no-images are: file_name is relative to $SPINETRACK_HOME.
REFERENCED_IMAGES = "{{$SPINETRACK_HOME:./spinetrack-data}}/"

#: SpineTrack's registered types in a project config -> the stock mmpose type that RTMPose-s uses.
STOCK_TYPES = {
    "SpineTrackPoseEstimator": "TopdownPoseEstimator",
    "SpineTrackSimCCHead": "RTMCCHead",
    "SpineTrackDataset": "CocoDataset",
    "LoadImageCached": "LoadImage",
}

#: The split each data loader reads.
LOADER_SPLITS = {"train_dataloader": "train", "val_dataloader": "val", "test_dataloader": "test"}


class ConfigVariable(str):
    """A config variable: printed bare, so a value can refer to a variable defined above it."""

    def __repr__(self) -> str:
        return str(self)


def has_kit(paths: Iterable[str]) -> bool:
    """Whether a release (its manifest's file paths) was made with the kit: older ones were not."""
    return METAINFO in set(paths)


def changed_kit_files(recorded: Iterable[Any], rebuilt: Iterable[Any]) -> list[str]:
    """Kit files whose (path, sha256) differ between two manifests' `files` (FileEntry lists)."""
    before = {f.path: f.sha256 for f in recorded if f.path in KIT_FILES}
    after = {f.path: f.sha256 for f in rebuilt if f.path in KIT_FILES}
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def card_lines() -> list[str]:
    """The dataset card's part on training with mmpose (for releases that have the kit)."""
    return [
        "### Train with mmpose",
        "",
        f"`{METAINFO}` is the keypoint metainfo in mmpose's `dataset_info` form; the configs in",
        "`configs/` read this release's own files wherever it lies:",
        "",
        "```bash",
        f"python tools/train.py {RTMPOSE_S_CONFIG}   # mmpose's tools/train.py; stock types only",
        "```",
        "",
        "```python",
        "from mmpose.datasets import CocoDataset",
        "val = CocoDataset(ann_file='annotations/val.json', data_root='.', data_mode='topdown',",
        f"                  metainfo=dict(from_file='{METAINFO}'), test_mode=True, pipeline=[])",
        "```",
        "",
        f"`{BLAZE37_CONFIG}` (the project's default student) needs SpineTrack installed.",
        "",
    ]


def write_kit(out: Path, *, version: str, images_copied: bool) -> list[Path]:
    """Write the kit's files into the release folder `out`, read-only; return their paths."""
    written = []
    for name, text in kit_texts(version, images_copied=images_copied).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o444)
        written.append(path)
    return written


def kit_texts(version: str, *, images_copied: bool) -> dict[str, str]:
    """Release-relative file name -> text, for every file of the kit."""
    return {
        METAINFO: metainfo_text(version),
        RTMPOSE_S_CONFIG: config_text(_RTMPOSE_S_HEADER.format(version=version),
                                      rtmpose_s_config(images_copied)),
        BLAZE37_CONFIG: config_text(_BLAZE37_HEADER.format(version=version),
                                    blaze37_config(images_copied)),
    }


def metainfo_text(version: str) -> str:
    """`dataset_info = {...}` in mmpose's metainfo-file form (what `parse_pose_metainfo` reads)."""
    return (
        f"# SpineTrack {version}: the 37 keypoints in mmpose's dataset_info form (names, flip partners,\n"
        "# upper/lower body, the authors' 39-link skeleton, joint weights, OKS sigmas), made from\n"
        "# SpineTrack's schemas/keypoints.py. Plain Python: load it with mmpose as\n"
        "#   metainfo=dict(from_file='metainfo.py')   (a path relative to the working directory)\n"
        "\n" + _assignment("dataset_info", _dataset_info())
    )


def rtmpose_s_config(images_copied: bool) -> dict[str, Any]:
    """The project's rtmpose-s config, in stock mmpose types, reading this release's files."""
    cfg = _release_config("rtmpose-s", images_copied)
    cfg.pop("spinetrack", None)
    _walk(cfg, _stock_type)
    cfg["model"]["head"].pop("loss_weights", None)
    for loader, split in LOADER_SPLITS.items():
        evaluator = loader.replace("_dataloader", "_evaluator")
        if evaluator in cfg:  # OKS AP over all 37 points, with the metainfo's sigmas
            cfg[evaluator] = {"type": "CocoMetric", "ann_file": f"{RELEASE_ROOT}/annotations/{split}.json"}
    return cfg


def blaze37_config(images_copied: bool) -> dict[str, Any]:
    """The project's blaze37 config, reading this release's files; SpineTrack's types stay."""
    cfg = _release_config("blaze37", images_copied)
    return {"custom_imports": {"imports": ["pipeline.model"], "allow_failed_imports": False}, **cfg}


def _release_config(name: str, images_copied: bool) -> dict[str, Any]:
    """build_config(name) with every data loader on a split of the release and the variables
    `data_root`, `image_prefix`, `metainfo` (defined at the top of the file) in place."""
    cfg = _project_config(name)
    for loader, split in LOADER_SPLITS.items():
        dataset = cfg[loader]["dataset"]
        dataset.update(data_root=ConfigVariable("data_root"), ann_file=f"annotations/{split}.json",
                       data_prefix={"img": ConfigVariable("image_prefix")},
                       metainfo=ConfigVariable("metainfo"))
    return {
        "data_root": RELEASE_ROOT,
        "image_prefix": "" if images_copied else REFERENCED_IMAGES,
        "metainfo": {"from_file": f"{RELEASE_ROOT}/{METAINFO}"},
        **cfg,
    }


def _dataset_info() -> dict[str, Any]:
    """pipeline.model.metainfo.dataset_info(), the one the project trains with."""
    # pipeline.model imports mmpose (seconds): only writing a kit pays for it, never reading a release
    from pipeline.model.metainfo import dataset_info

    return dataset_info()


def _project_config(name: str) -> dict[str, Any]:
    """The project's own config `name` (pipeline.model.configs), on the release's split files."""
    from pipeline.model.configs import build_config  # mmpose: see _dataset_info

    return build_config(name, work_dir=f"work_dirs/{name}_spinetrack", train_ann="annotations/train.json",
                        val_ann="annotations/val.json", num_workers=4).to_dict()


def _stock_type(node: dict[str, Any]) -> None:
    if node.get("type") in STOCK_TYPES:
        node["type"] = STOCK_TYPES[node["type"]]


def _walk(value: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    """Call `visit` on every dict inside `value`."""
    if isinstance(value, dict):
        visit(value)
        children: Iterable[Any] = value.values()
    elif isinstance(value, list | tuple):
        children = value
    else:
        return
    for child in children:
        _walk(child, visit)


def config_text(header: str, cfg: dict[str, Any]) -> str:
    """An mmengine config file: the header, then one `name = value` per top-level key."""
    return header + "\n" + "".join(_assignment(key, value) for key, value in cfg.items())


def _assignment(name: str, value: Any) -> str:
    """`name = value`, the value's continuation lines indented under its first character."""
    prefix = f"{name} = "
    text = pformat(value, width=100 - len(prefix), sort_dicts=False)
    return prefix + text.replace("\n", "\n" + " " * len(prefix)) + "\n"


_RTMPOSE_S_HEADER = """\
# RTMPose-s (CSPNeXt + SimCC head) for SpineTrack {version}: 37 keypoints, input 192x256 (w x h).
# Stock mmpose 1.x / mmengine types only: it trains without SpineTrack installed.
#   python tools/train.py configs/rtmpose-s_spinetrack.py --work-dir work_dirs/spinetrack  (mmpose's)
# {{{{fileDirname}}}} is this file's folder (mmengine fills it in), so every path points into the
# release wherever it is. From SpineTrack's rtmpose-s config (pipeline/model/configs.py) with
# RTMPose's own head and loss (SpineTrack's distillation and spine terms need SpineTrack), BN
# instead of SyncBN, no pretrained weights and iteration-based training. To start from ImageNet/COCO
# weights, add to model['backbone']: init_cfg=dict(type='Pretrained', prefix='backbone.',
#   checkpoint='https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/'
#              'cspnext-s_udp-aic-coco_210e-256x192-92f5a029_20230130.pth')
"""

_BLAZE37_HEADER = """\
# blaze37 for SpineTrack {version}: SpineTrack's default student (BlazePose's network + a 37-row
# heatmap head). NEEDS SpineTrack INSTALLED: its model, dataset and metric types are registered by
# `pipeline.model` (custom_imports below), and the BlazePose weights come from the mediapipe wheel.
# Without SpineTrack, train configs/rtmpose-s_spinetrack.py instead.
#   spinetrack train --config blaze37   (the project's own way), or mmpose's tools/train.py
# {{{{fileDirname}}}} is this file's folder (mmengine fills it in), so every path points into the release.
"""

__all__ = [
    "BLAZE37_CONFIG",
    "KIT_FILES",
    "METAINFO",
    "RTMPOSE_S_CONFIG",
    "STOCK_TYPES",
    "ConfigVariable",
    "blaze37_config",
    "card_lines",
    "changed_kit_files",
    "config_text",
    "has_kit",
    "kit_texts",
    "metainfo_text",
    "rtmpose_s_config",
    "write_kit",
]
