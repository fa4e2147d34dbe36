"""A model to take away (issue 21, item 3): a registered model as ONNX or an mmpose checkpoint,
with its metainfo and a model card.

`export_model(store, NAME, fmt, OUT)` fills the folder OUT with

    NAME.onnx  or  NAME.pth + config.py   the weights (ONNX: pipeline.annotators.onnx.export_onnx;
                                           pth: an mmengine checkpoint and an mmpose inference
                                           config, stock types for RTMPose-family models)
    metainfo.py                           the 37 keypoints in mmpose's dataset_info form
    MODEL_CARD.md, model_card.json        what it is, what it was trained on (which release),
                                           metrics on which validation split, and the licence of
                                           the weights it started from

The ONNX file runs through the project's own `onnx:PATH` annotator, the pair through
`mmpose:config.py,NAME.pth`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.annotators.onnx import export_onnx
from pipeline.model.registry import LoadedModel, load_model, read_meta
from pipeline.model.train import evaluate_model
from pipeline.release.build import get_release, list_releases
from pipeline.release.kit import METAINFO, STOCK_TYPES, ConfigVariable, config_text, metainfo_text
from pipeline.store import Store, file_sha256
from schemas.errors import InputError

FORMATS = ("onnx", "pth")
CARD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
CONFIG = "config.py"
#: The project's own licence (pyproject.toml), for weights it trained from random initialisation.
PROJECT_LICENCE = "Apache-2.0"


@dataclass(frozen=True)
class ExportedModel:
    folder: Path
    model_file: Path
    card: dict[str, Any]


def export_model(store: Store, name: str, fmt: str, out: str | Path, *,
                 val_release: str | None = None) -> ExportedModel:
    """Write model `name` as `fmt` (onnx | pth) with metainfo and model card into folder `out`.

    The card's metrics are measured now on the val split of `val_release` (default: the release
    the model was trained on, else the newest), so they always name the split they come from."""
    if fmt not in FORMATS:
        raise InputError("--format", f"{fmt!r}: choose one of {', '.join(FORMATS)}")
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(folder, "the export folder must be new or empty")
    loaded = load_model(store, name)
    folder.mkdir(parents=True, exist_ok=True)
    model_file = _write_weights(loaded, fmt, folder)
    (folder / METAINFO).write_text(metainfo_text(f"model {name}"))
    card = model_card(store, loaded, fmt, model_file, val_release)
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (folder / CARD).write_text(render_model_card(card))
    return ExportedModel(folder, model_file, card)


def _write_weights(loaded: LoadedModel, fmt: str, folder: Path) -> Path:
    if fmt == "onnx":
        return export_onnx(loaded.module, folder / f"{loaded.name}.onnx")
    path = folder / f"{loaded.name}.pth"
    state = {k: v.detach().cpu() for k, v in loaded.module.state_dict().items()}
    meta = {"spinetrack_model": loaded.name, "config_name": loaded.meta["config_name"],
            "weights_sha256": loaded.sha256}
    torch.save({"state_dict": state, "meta": meta}, path)  # plain data: loads with weights_only=True
    (folder / CONFIG).write_text(inference_config_text(loaded))
    return path


def inference_config_text(loaded: LoadedModel) -> str:
    """An mmpose config for `init_model(config.py, NAME.pth)`: the model, its test pipeline and the
    metainfo; stock mmpose types unless the model needs SpineTrack's (blaze37)."""
    trained = loaded.meta["config"]
    model = json.loads(json.dumps(trained["model"]))
    stock = _types(model) <= _stock_model_types()
    if stock:
        _rename(model)
        model.get("head", {}).pop("loss_weights", None)
    dataset = {"type": "CocoDataset", "metainfo": ConfigVariable("metainfo"),
               "pipeline": list(trained["test_dataloader"]["dataset"]["pipeline"])}
    cfg: dict[str, Any] = {} if stock else {
        "custom_imports": {"imports": ["pipeline.model"], "allow_failed_imports": False}}
    cfg.update(default_scope="mmpose", metainfo={"from_file": f"{{{{fileDirname}}}}/{METAINFO}"},
               model=model, train_dataloader={"dataset": dataset}, test_dataloader={"dataset": dataset})
    header = (f"# SpineTrack model {loaded.name} ({loaded.meta['config_name']}): inference config for\n"
              f"#   mmpose.apis.init_model('{CONFIG}', '{loaded.name}.pth')\n"
              + ("# Stock mmpose types only.\n" if stock else
                 "# NEEDS SpineTrack INSTALLED: its types come in through custom_imports.\n"))
    return config_text(header, cfg)


def _types(node: Any) -> set[str]:
    """Every `type` named anywhere in a config value."""
    if isinstance(node, dict):
        own = {node["type"]} if isinstance(node.get("type"), str) else set()
        return own.union(*(_types(v) for v in node.values()))
    if isinstance(node, list | tuple):
        return set().union(*(_types(v) for v in node))
    return set()


def _stock_model_types() -> set[str]:
    """Types the stock RTMPose-s config of a release uses: a model made of these needs no SpineTrack."""
    return {"TopdownPoseEstimator", "PoseDataPreprocessor", "CSPNeXt", "RTMCCHead", "BN", "SiLU",
            "KLDiscretLoss", "SimCCLabel", *STOCK_TYPES}


def _rename(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") in STOCK_TYPES:
            node["type"] = STOCK_TYPES[node["type"]]
        for value in node.values():
            _rename(value)
    elif isinstance(node, list):
        for value in node:
            _rename(value)


# -- the card -----------------------------------------------------------------------------------
def model_card(store: Store, loaded: LoadedModel, fmt: str, model_file: Path,
               val_release: str | None) -> dict[str, Any]:
    """What the card says, as data (model_card.json)."""
    meta = loaded.meta
    trained_on = releases_with_snapshot(store, meta["data_snapshot"])
    return {
        "name": loaded.name,
        "config": meta["config_name"],
        "format": fmt,
        "file": model_file.name,
        "file_sha256": file_sha256(model_file),
        "weights_sha256": loaded.sha256,
        "input": _input_description(loaded, fmt),
        "training_data": {"snapshot": meta["data_snapshot"], "releases": trained_on,
                          "labels": meta.get("provenance", {}).get("train_labels")},
        "lineage": lineage(store, loaded.name),
        "started_from": started_from(store, loaded.name),
        "validation": validation(store, loaded, val_release or _default_val_release(store, trained_on)),
        "metrics_at_training": meta.get("metrics") or {},
    }


def _default_val_release(store: Store, trained_on: list[str]) -> str | None:
    """The release the model was trained on, else the newest one, else none."""
    candidates = trained_on or list_releases(store)
    return candidates[-1] if candidates else None


def releases_with_snapshot(store: Store, snapshot: str) -> list[str]:
    """Releases whose labels are exactly the ones a model was trained on."""
    return [v for v in list_releases(store) if get_release(store, v).manifest.snapshot_id == snapshot]


def lineage(store: Store, name: str) -> list[str]:
    """The model, its parent, the parent's parent ... (fine-tuning chain, newest first)."""
    chain = [name]
    while (parent := read_meta(store, chain[-1]).get("parent")) and parent not in chain:
        chain.append(parent)
    return chain


def started_from(store: Store, name: str) -> dict[str, Any]:
    """The first weights of the lineage and their licence."""
    root = lineage(store, name)[-1]
    provenance = read_meta(store, root).get("provenance") or {}
    if "pretrained" in provenance:
        base = provenance["pretrained"]
        return {"model": root, "source": base.get("source"), "source_sha256": base.get("source_sha256"),
                "licence": base.get("licence", "not recorded")}
    if "init_checkpoint" in provenance:
        ckpt = provenance["init_checkpoint"]
        return {"model": root, "source": ckpt.get("path"),
                "licence": "not recorded: that of the checkpoint's source"}
    return {"model": root, "source": "random initialisation (trained from scratch)",
            "licence": f"{PROJECT_LICENCE} (SpineTrack's own; no third-party weights)"}


def validation(store: Store, loaded: LoadedModel, version: str | None) -> dict[str, Any]:
    """OKS AP of the model on the val split of release `version`, measured now."""
    if version is None:
        return {"release": None, "split": None, "instances": 0, "metrics": {},
                "note": "no release in the store: not evaluated"}
    release = get_release(store, version)
    instances = release.manifest.counts.splits["val"].instances
    metrics = _evaluate(loaded, release.path, "val") if instances else {}
    return {"release": version, "split": "val", "file": "annotations/val.json", "instances": instances,
            "metrics": metrics}


def _evaluate(loaded: LoadedModel, root: Path, split: str) -> dict[str, float]:
    """evaluate_model on a release split; file names are relative to the release, not its
    annotations/ folder, so a copy with absolute names is scored."""
    coco = json.loads((root / "annotations" / f"{split}.json").read_text())
    for image in coco["images"]:
        image["file_name"] = str(root / image["file_name"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{split}.json"
        path.write_text(json.dumps(coco))
        return evaluate_model(loaded.module, path)


def _input_description(loaded: LoadedModel, fmt: str) -> str:
    w, h = loaded.meta["config"]["spinetrack"]["input_size"]
    if fmt == "onnx":
        crop = (getattr(loaded.module, "test_cfg", None) or {}).get("crop", "box")
        where = ("BlazePose's rotated region of interest around the box (its detector; the file's "
                 "metadata `spinetrack.crop=roi`)" if crop == "roi" else "box padded 1.25x")
        return (f"`input`: (N, 3, {h}, {w}) RGB crop, ImageNet mean/std; {where} "
                "(RTMPose/SpinePose format; run with `--annotator onnx:PATH`)")
    return f"{w}x{h} (w x h) crops through the config's test pipeline (`mmpose:config.py,PATH`)"


def render_model_card(card: dict[str, Any]) -> str:
    """MODEL_CARD.md from the card data."""
    data, start, val = card["training_data"], card["started_from"], card["validation"]
    trained = (", ".join(f"release {v}" for v in data["releases"]) + " (all its splits)"
               if data["releases"] else "store labels that match no release")
    count = f", {data['labels']} labels" if data["labels"] is not None else ""
    lines = [
        f"# {card['name']}",
        "",
        f"SpineTrack 37-keypoint pose model, config `{card['config']}`, as {card['format']}.",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{card['file']}` (sha256 `{card['file_sha256']}`) |",
        f"| input | {card['input']} |",
        f"| training data | {trained}; snapshot `{data['snapshot']}`{count} |",
        f"| lineage | {' <- '.join(card['lineage'])} |",
        f"| started from | model `{start['model']}`: {start['source']} |",
        f"| licence of those weights | {start['licence']} |",
        f"| keypoints | `{METAINFO}` (mmpose dataset_info) |",
        "",
        "## Metrics",
        "",
    ]
    if val["metrics"]:
        lines += [f"OKS AP on release {val['release']}, split `{val['split']}` (`{val['file']}`, "
                  f"{val['instances']} instances, ground-truth boxes, flip test), measured at export:", "",
                  *_metric_rows(val["metrics"].items())]
    else:
        why = val.get("note") or f"release {val['release']} has no val instances"
        lines += [f"Not measured: {why}."]
    if val["release"] in data["releases"]:
        lines += ["", "The model was trained on every split of that release, val included: these "
                  "numbers are not held-out."]
    if card["metrics_at_training"]:
        lines += ["", "Recorded at training (on the file given to `--val-ann`):", "",
                  *_metric_rows(card["metrics_at_training"].items())]
    return "\n".join(lines) + "\n"


def _metric_rows(items: Iterable[tuple[str, Any]]) -> list[str]:
    return ["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in sorted(items))]


__all__ = [
    "FORMATS",
    "ExportedModel",
    "export_model",
    "inference_config_text",
    "lineage",
    "model_card",
    "releases_with_snapshot",
    "render_model_card",
    "started_from",
    "validation",
]
