"""The model registry: trained weights + JSON metadata under $SPINETRACK_HOME/models/NAME/.

A checkpoint is a plain `state_dict` (`weights.pt`) read back with `torch.load(weights_only=True)`
after its sha256 matched the one recorded in the store: no pickled code ever runs, and a file that
changed on disk is refused. `meta.json` holds what is needed to rebuild and to trace the model: the
config name and full config, the data snapshot id the model was trained on, metrics and parent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from sqlalchemy import select
from torch import nn

from pipeline.store import Store
from pipeline.store.models import ModelVersion
from pipeline.store.store import file_sha256

WEIGHTS = "weights.pt"
META = "meta.json"


class ModelIntegrityError(RuntimeError):
    """A registered checkpoint is missing or its bytes differ from the registered sha256."""


def models_dir(store: Store) -> Path:
    return store.home / "models"


def model_dir(store: Store, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid model name {name!r}")
    return models_dir(store) / name


def json_safe(value: Any) -> Any:
    """Config values as plain JSON (tuples become lists, numpy numbers become floats)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def config_dict(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    raw = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    return json_safe(raw)  # type: ignore[no-any-return]


def get_version(store: Store, name: str) -> ModelVersion | None:
    with store.session() as s:
        return s.get(ModelVersion, name)


def list_versions(store: Store) -> list[ModelVersion]:
    """Registered models, oldest first."""
    with store.session() as s:
        return list(s.scalars(select(ModelVersion).order_by(ModelVersion.created_at, ModelVersion.name)))


def save_model(
    store: Store,
    model: nn.Module,
    *,
    name: str,
    config_name: str,
    config: Config | dict[str, Any],
    data_snapshot: str,
    metrics: dict[str, Any] | None = None,
    parent: str | None = None,
    extra: dict[str, Any] | None = None,
) -> ModelVersion:
    """Write weights + meta.json and register a `ModelVersion`; the same name is written once."""
    existing = get_version(store, name)
    if existing is not None:
        raise ValueError(f"model {name!r} is already registered ({existing.checkpoint_path})")
    folder = model_dir(store, name)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS
    tmp = weights.with_suffix(".tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, tmp)
    os.replace(tmp, weights)  # a crash never leaves a half-written weights.pt behind
    digest = file_sha256(weights)
    meta = {
        "name": name,
        "config_name": config_name,
        "config": config_dict(config),
        "data_snapshot": data_snapshot,
        "metrics": json_safe(metrics or {}),
        "parent": parent,
        "checkpoint": WEIGHTS,
        "checkpoint_sha256": digest,
        **json_safe(extra or {}),
    }
    (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    version = ModelVersion(
        name=name,
        config_name=config_name,
        config=meta["config"],
        parent=parent,
        data_snapshot=data_snapshot,
        metrics=meta["metrics"],
        checkpoint_path=str(weights),
        checkpoint_sha256=digest,
    )
    with store.session() as s:
        s.add(version)
    return version


def read_meta(store: Store, name: str) -> dict[str, Any]:
    version = get_version(store, name)
    if version is None:
        raise KeyError(f"no model named {name!r} in the registry at {models_dir(store)}")
    meta_path = Path(version.checkpoint_path).with_name(META)
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update(
        name=version.name,
        config_name=version.config_name,
        config=version.config,
        data_snapshot=version.data_snapshot,
        metrics=version.metrics,
        parent=version.parent,
        checkpoint_path=version.checkpoint_path,
        checkpoint_sha256=version.checkpoint_sha256,
    )
    return meta


def load_state_dict(
    store: Store, name: str, device: str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The verified weights of a registered model (sha256 checked before unpickling)."""
    meta = read_meta(store, name)
    path = Path(meta["checkpoint_path"])
    if not path.is_file():
        raise ModelIntegrityError(f"{path}: checkpoint of model {name!r} is missing")
    digest = file_sha256(path)
    if digest != meta["checkpoint_sha256"]:
        raise ModelIntegrityError(
            f"{path}: sha256 {digest} differs from the registered {meta['checkpoint_sha256']}; "
            "refusing to load"
        )
    state = torch.load(path, map_location=device, weights_only=True)
    return state, meta


def build_model(config: Config | dict[str, Any], device: str = "cpu") -> nn.Module:
    """Build an (untrained) model from a SpineTrack config, ready for mmpose's inference API."""
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.registry import MODELS
    from mmpose.utils import register_all_modules

    from pipeline.model.metainfo import dataset_info

    register_all_modules(init_default_scope=True)
    cfg = Config(config_dict(config))
    info = dataset_info()
    # JSON turned the integer keypoint ids into strings: take the metainfo from the schema again
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if key in cfg:
            cfg[key]["dataset"]["metainfo"] = info
    model = MODELS.build(cfg.model)
    model.cfg = cfg  # what mmpose.apis.inference_topdown reads (test pipeline)
    model.dataset_meta = parse_pose_metainfo(info)
    return model.to(device)


@dataclass(frozen=True)
class LoadedModel:
    """A registered model in memory, travelling with its name, metadata and checkpoint sha256.

    Unpacks as `(module, meta)`, as `load_model` returned before, so older callers keep working.
    """

    module: nn.Module
    name: str
    meta: dict[str, Any]
    sha256: str

    def __iter__(self) -> Iterator[Any]:
        return iter((self.module, self.meta))


def load_model(store: Store, name: str, device: str = "cpu") -> LoadedModel:
    """A registered model in eval mode on `device`, with its metadata (config, snapshot, metrics)."""
    state, meta = load_state_dict(store, name, device)
    model = build_model(meta["config"], device)
    model.load_state_dict(state, strict=True)
    model.eval()
    return LoadedModel(module=model, name=name, meta=meta, sha256=str(meta["checkpoint_sha256"]))
