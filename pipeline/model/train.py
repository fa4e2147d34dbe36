"""Train (or fine-tune) the SpineTrack model on the store's current accepted labels.

Training always reads a fresh COCO export of `store.current_labels()`, so every model is tied to
a data snapshot id (`store.snapshot_id`) and re-training after new corrections sees them. The loop
is mmengine's Runner (iteration based); the model is built here so that parent weights, a teacher
and a user's pretrained backbone can be attached before the Runner takes over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner, set_random_seed
from torch import nn

from pipeline.coco_writer import coco_result
from pipeline.model import distributed
from pipeline.model.configs import CONFIG_NAMES, DEFAULT_CONFIG, SPECS, ModelSpec, build_config
from pipeline.model.init_checkpoint import init_from_checkpoint
from pipeline.model.losses import SCRATCH_WEIGHTS, SpineTrackPoseEstimator
from pipeline.model.pretrained import ensure_base
from pipeline.model.registry import build_model, get_version, load_model, load_state_dict, save_model
from pipeline.model.teacher_targets import add_teacher_targets, default_pool, repeat_annotations
from pipeline.store import Label, Store
from pipeline.store.models import ModelVersion
from schemas.errors import InputError


@dataclass(frozen=True)
class TeacherSpec:
    """A body-pose teacher outside the registry: an mmpose config file and its checkpoint."""

    config: str | Path
    checkpoint: str | Path


FINE_TUNE_LR_FACTOR = 0.1


def default_threads(device: str) -> int:
    """torch threads for training on the CPU: one core is left to everything else (data loading,
    Label Studio, the Prefect server, other jobs). torch's threads spin while they wait, and when
    they outnumber the free cores a step slows down severalfold: on this 2-core machine with one
    other busy process, 60 tiny iterations took 38.8 s on 2 threads and 18.9 s on 1. On a GPU,
    torch's own setting stands."""
    if device != "cpu":
        return torch.get_num_threads()
    return max(1, (os.cpu_count() or 1) - 1)


def run_name(config: str, snapshot: str, seed: int) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    tag = hashlib.sha256(f"{snapshot}:{seed}:{stamp}".encode()).hexdigest()[:6]
    return f"{config}-{stamp}-{tag}"


def export_training_labels(store: Store, labels: Sequence[Label], out_path: Path) -> Path:
    """The COCO file the model trains on (the lead's exporter: same bytes for the same labels)."""
    from pipeline.export import export_coco

    return export_coco(store, out_path, labels=labels)


def load_teacher(store: Store, teacher: str | TeacherSpec, device: str = "cpu") -> nn.Module:
    """A frozen teacher: a registered model name, or an mmpose config + checkpoint pair."""
    if isinstance(teacher, str):
        model, _ = load_model(store, teacher, device)
        return model
    from pipeline.annotators.mmpose_checkpoint import load_checkpoint_model

    model = load_checkpoint_model(teacher.config, teacher.checkpoint, device=device)
    model.eval()
    return model


def resolve_teacher(store: Store, teacher: Any, device: str = "cpu"
                    ) -> tuple[nn.Module | None, Any | None, dict[str, Any]]:
    """(SimCC torch model for soft targets | None, annotator for hard targets | None, identity).

    `teacher` is a registered model name, a `TeacherSpec`, an annotator spec string (any of
    pipeline.annotators.spec) or an `Annotator`. Annotators backed by a SimCC torch model teach
    with soft targets, all others (BlazePose, ONNX, combined) with hard ones.
    """
    if isinstance(teacher, TeacherSpec):
        return load_teacher(store, teacher, device), None, {
            "kind": "mmpose", "name": f"mmpose:{Path(str(teacher.checkpoint)).stem}",
            "config": str(teacher.config), "checkpoint": str(teacher.checkpoint)}
    annotator = teacher
    if isinstance(teacher, str):
        from pipeline.annotators import load_annotator

        annotator = load_annotator(teacher, store, device=device)
    simcc = getattr(annotator, "simcc_teacher", None)
    if callable(simcc):
        return simcc(), None, annotator.identity.as_json()
    return None, annotator, annotator.identity.as_json()


def evaluate_model(
    model: nn.Module, ann_file: str | Path, *, batch_size: int = 32, flip_test: bool = True
) -> dict[str, float]:
    """OKS AP/AR (all/body/feet/spine) of `model` on a SpineTrack COCO file, with its boxes.

    Uses the project's one evaluation path (pipeline.evaluate on pipeline.model.predict output), so
    training metrics, benchmarks and the active-learning rounds report the same numbers.
    """
    from pipeline.evaluate import evaluate_keypoints, summary
    from pipeline.model.predict import predict

    path = Path(ann_file)
    try:
        gt = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read COCO JSON: {exc}") from exc
    boxes: dict[int, list[list[float]]] = {}
    for ann in gt.get("annotations", []):
        boxes.setdefault(ann["image_id"], []).append(list(ann["bbox"]))
    images = [img for img in gt.get("images", []) if img["id"] in boxes]
    files = [_resolve(path, img["file_name"]) for img in images]
    preds = predict(model, files, [np.asarray(boxes[img["id"]], np.float32) for img in images],
                    batch_size=batch_size, flip_test=flip_test)
    results = [coco_result(images[p.image_index]["id"], p.coco_keypoints(), p.score) for p in preds]
    return {k: round(float(v), 4) for k, v in summary(evaluate_keypoints(gt, results)).items()}


def add_real_crops(store: Store, train_ann: Path, pool: Sequence[int] | None, present: Sequence[int],
                   share: float) -> dict[str, Any]:
    """Real people in the training file, about `share` of its samples: a model that distils its own
    pretrained body knowledge on every crop (blaze37) needs real crops in every batch to keep it
    (renders alone do not anchor it: docs/model.md). `present`: real samples already in the file
    (a teacher's targets); without them the pool's people join unlabelled. No pool, no real crops."""
    ids = tuple(present)
    if not ids:
        instances = list(pool) if pool is not None else default_pool(store)
        if not instances:
            return {"instances": 0, "share": 0.0}
        ids = add_teacher_targets(store, train_ann, instances, annotator=None, identity={"kind": "self"}).ids
    return {"instances": len(ids), "share": round(repeat_annotations(train_ann, ids, share), 3)}


def _resolve(ann_file: Path, file_name: str) -> str:
    name = Path(file_name)
    return str(name if name.is_absolute() else ann_file.parent / name)


def train(
    store: Store,
    *,
    config: str = DEFAULT_CONFIG,
    iters: int | None = None,
    parent: str | None = None,
    teacher: Any | None = None,
    teacher_pool: Sequence[int] | None = None,
    seed: int = 0,
    device: str = "cpu",
    val_ann: str | Path | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    loss_weights: dict[str, float] | None = None,
    labels: Sequence[Label] | None = None,
    init_checkpoint: str | Path | None = None,
    name: str | None = None,
    threads: int | None = None,
    overrides: dict[str, Any] | None = None,
    hooks: Sequence[Hook] | None = None,
) -> ModelVersion:
    """Train `config` on the store's current labels and register the result.

    `parent`: a registered model to fine-tune from (same config). `loss_weights` default to the
    paper's (losses.DEFAULT_WEIGHTS) when fine-tuning and to losses.SCRATCH_WEIGHTS (no spine
    terms) when training from scratch. `teacher`: a registered model, a `TeacherSpec`, an
    annotator spec or an `Annotator` whose body points the pool's real images (`teacher_pool`,
    default the active-learning pool) are distilled from: soft SimCC targets where the teacher is a
    SimCC model, confidence-weighted hard targets otherwise (pipeline.model.teacher_targets).
    `val_ann`: a COCO file scored after training
    (OKS AP all/body/feet/spine goes into the model's metrics). `labels` defaults to every current
    accepted label. Same seed, same data, same machine -> same weights (as far as torch allows).
    """
    labels, snapshot, name = _checked_labels(store, config, labels, name, seed)
    spec = dataclasses.replace(SPECS[config], **(overrides or {}))
    recipe = _recipe(store, config, spec, parent=parent, init_checkpoint=init_checkpoint,
                     loss_weights=loss_weights, lr=lr)
    work_dir = store.home / "models" / "_runs" / name
    work_dir.mkdir(parents=True, exist_ok=True)
    train_ann = export_training_labels(store, labels, work_dir / "train.json")
    provenance: dict[str, Any] = {"train_labels": len(labels), "device": device}
    teacher_model = _add_real_supervision(store, train_ann, spec, teacher, teacher_pool, device, provenance)
    cfg = build_config(
        config,
        work_dir=work_dir,
        train_ann=train_ann,
        iters=iters,
        batch_size=batch_size,
        lr=recipe.lr,
        seed=seed,
        loss_weights=recipe.loss_weights,
        overrides=overrides,
    )
    set_random_seed(seed)  # the model is built before the Runner seeds anything
    model = _prepared_model(store, cfg, config, recipe, init_checkpoint, teacher_model, device, provenance)
    runner = _run(cfg, model, name, hooks, threads or default_threads(device), provenance)
    if isinstance(model, SpineTrackPoseEstimator):
        model.detach_teacher()
    model.eval()
    metrics: dict[str, Any] = evaluate_model(model, val_ann) if val_ann else {}
    version = save_model(
        store,
        model,
        name=name,
        config_name=config,
        config=cfg,
        data_snapshot=snapshot,
        metrics=metrics,
        parent=recipe.parent,
        extra={"provenance": provenance, "seed": seed},
    )
    _close(runner)
    shutil.rmtree(work_dir / "vis_data", ignore_errors=True)
    return version


def _checked_labels(store: Store, config: str, labels: Sequence[Label] | None, name: str | None,
                    seed: int) -> tuple[list[Label], str, str]:
    """The labels to train on, their snapshot id and the run's name; refuses what cannot train."""
    if config not in CONFIG_NAMES:
        raise ValueError(f"unknown model config {config!r}; choose one of {', '.join(CONFIG_NAMES)}")
    labels = list(store.current_labels() if labels is None else labels)
    if not labels:
        raise ValueError(f"the store at {store.home} has no accepted labels to train on")
    snapshot = store.snapshot_id(labels)
    name = name or run_name(config, snapshot, seed)
    if get_version(store, name) is not None:
        raise ValueError(f"model {name!r} is already registered")
    return labels, snapshot, name


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """Where training starts and how hard it pushes: the parent, the loss weights, the rate."""

    parent: str | None
    loss_weights: dict[str, float] | None
    lr: float | None
    from_scratch: bool


def _recipe(store: Store, config: str, spec: ModelSpec, *, parent: str | None,
            init_checkpoint: str | Path | None, loss_weights: dict[str, float] | None,
            lr: float | None) -> _Recipe:
    fine_tune = parent is not None or init_checkpoint is not None
    from_scratch = not fine_tune and not spec.pretrained
    if loss_weights is None and from_scratch:
        loss_weights = dict(SCRATCH_WEIGHTS)
    if lr is None and fine_tune:
        # AdamW moves every weight by about lr per step whatever the gradient: the from-scratch rate
        # would wreck a trained parent in its first steps, so fine-tuning starts ten times lower.
        lr = spec.lr * FINE_TUNE_LR_FACTOR
    if spec.pretrained and not fine_tune:
        parent = ensure_base(store, config).name  # its converted pretrained weights, registered
    return _Recipe(parent, loss_weights, lr, from_scratch)


def _add_real_supervision(store: Store, train_ann: Path, spec: ModelSpec, teacher: Any | None,
                          teacher_pool: Sequence[int] | None, device: str,
                          provenance: dict[str, Any]) -> nn.Module | None:
    """Real people in the training file: the teacher's targets on the pool, and unlabelled real crops
    (`real_share`); returns the teacher's network when it distils online."""
    teacher_model: nn.Module | None = None
    pool = list(teacher_pool) if teacher_pool is not None else None
    real_crops: tuple[int, ...] = ()
    if teacher is not None:
        teacher_model, teacher_annotator, identity = resolve_teacher(store, teacher, device)
        pool = pool if pool is not None else default_pool(store)
        targets = add_teacher_targets(store, train_ann, pool, annotator=teacher_annotator, identity=identity)
        provenance["teacher"] = targets.as_json()
        real_crops = targets.ids
    if spec.real_share > 0:
        provenance["real_crops"] = add_real_crops(store, train_ann, pool, real_crops, spec.real_share)
    return teacher_model


def _prepared_model(store: Store, cfg: Config, config: str, recipe: _Recipe,
                    init_checkpoint: str | Path | None, teacher_model: nn.Module | None, device: str,
                    provenance: dict[str, Any]) -> nn.Module:
    """The model built from `cfg`, with its starting weights and its teacher attached."""
    model = build_model(cfg, device)
    if not recipe.from_scratch:
        # Initialise before loading weights: mmengine's Runner.train() calls model.init_weights(),
        # which re-randomises a model not yet marked initialised and would silently throw away the
        # parent's (or the checkpoint's) weights. From scratch the Runner initialises as usual.
        model.init_weights()  # type: ignore[operator]  # mmengine BaseModule method
    if recipe.parent is not None:
        parent_state, parent_meta = load_state_dict(store, recipe.parent, device)
        if parent_meta["config_name"] != config:
            raise ValueError(
                f"parent {recipe.parent!r} is a {parent_meta['config_name']!r} model; "
                f"cannot fine-tune it as {config!r}"
            )
        model.load_state_dict(parent_state, strict=True)
    elif init_checkpoint is not None:
        report = init_from_checkpoint(model, init_checkpoint)
        provenance["init_checkpoint"] = {"path": str(init_checkpoint), **report.as_json()}
    if teacher_model is not None:
        if not isinstance(model, SpineTrackPoseEstimator):
            raise TypeError("distillation needs a SpineTrackPoseEstimator model")
        ids = model.attach_teacher(teacher_model)
        provenance["teacher"]["distilled_ids"] = list(ids)
    return model


def _run(cfg: Config, model: nn.Module, name: str, hooks: Sequence[Hook] | None, threads: int,
         provenance: dict[str, Any]) -> Runner:
    """mmengine's training loop on `threads` torch threads; seconds and iterations into provenance."""
    runner = _runner(cfg, model, name)
    for hook in hooks or ():
        runner.register_hook(hook, priority="LOW")
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    provenance["threads"] = threads
    torch.set_num_threads(threads)
    try:
        runner.train()
    finally:
        torch.set_num_threads(previous_threads)
    provenance["train_seconds"] = round(time.perf_counter() - started, 2)
    provenance["iters"] = int(cfg.train_cfg.max_iters)
    return runner


def _runner(cfg: Config, model: nn.Module, name: str) -> Runner:
    """mmengine's Runner from our config, around the model built (and prepared) here."""
    # The Runner gets only the config keys it reads itself (the model wrapper under torchrun): given
    # the whole config it formats it with yapf three times (dump, log, visualizer), ~10 s each on
    # these cores, for every model trained. The full config is kept in the model's meta.json.
    wrapper = distributed.model_wrapper_cfg()
    runner_cfg = Config({"model_wrapper_cfg": wrapper}) if wrapper is not None else None
    optional = {
        key: cfg.get(key)
        for key in (
            "val_dataloader", "val_cfg", "val_evaluator", "test_dataloader", "test_cfg", "test_evaluator"
        )
    }
    if optional["val_dataloader"] is None:
        optional.update(val_cfg=None, val_evaluator=None)
    return Runner(
        model=model,
        work_dir=cfg.work_dir,
        train_dataloader=cfg.train_dataloader,
        train_cfg=cfg.train_cfg,
        optim_wrapper=cfg.optim_wrapper,
        param_scheduler=cfg.param_scheduler,
        default_hooks=cfg.default_hooks,
        # torchrun with several processes: mmengine's own distributed launcher (pipeline/model/distributed.py)
        launcher=distributed.launcher(),
        env_cfg=distributed.env_cfg(cfg.env_cfg),
        log_processor=cfg.log_processor,
        log_level=cfg.log_level,
        visualizer=None,
        default_scope=cfg.default_scope,
        randomness=cfg.randomness,
        experiment_name=name,
        cfg=runner_cfg,
        **optional,
    )


def _close(runner: Runner) -> None:
    """Release the run's log file handle (long-lived processes train many models)."""
    import logging

    for handler in list(runner.logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            runner.logger.removeHandler(handler)
