"""Model flows and commands: training (helper M1's `train_model`) and pseudo-labelling.

Thin Prefect flows over pipeline.model, pipeline.active_learning.pseudo_label, pipeline.intake.real_import and
pipeline.intake.image_import.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from flows import lazy
from flows.app import app
from flows.console import emit

# -- pseudo-labelling (helper M2) ------------------------------------------------------------------


@lazy.flow(name="import-real")
def import_real(
    coco_file: str,
    image_dir: str | None = None,
    subset: str | None = None,
    hidden: bool = False,
    detections: str | None = None,
    min_detection_score: float = 0.0,
    boxes_only: bool = False,
    layout: str | None = None,
) -> dict[str, Any]:
    """Import real images, person boxes and the points people placed (accepted human labels, or
    hidden ground truth) from a COCO file or MPII's json."""
    from pipeline.intake.real_import import import_coco
    from pipeline.store import Store

    summary = import_coco(
        Store(),
        coco_file,
        image_dir=image_dir,
        subset=subset,
        hidden=hidden,
        boxes_only=boxes_only,
        detections=detections,
        min_detection_score=min_detection_score,
        layout=layout,
    )
    return asdict(summary)


@lazy.flow(name="import-images")
def import_images(
    paths: list[str],
    subset: str | None = None,
    detector: str | None = None,
    detections: str | None = None,
    min_score: float | None = None,
    every: int = 1,
    fps: float | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Import photos, folders and videos without annotations; people from a detections file, an
    ONNX detector or BlazePose's (pipeline/intake/image_import.py)."""
    from pipeline.intake.image_import import Sampling
    from pipeline.intake.image_import import import_images as run
    from pipeline.store import Store

    with Store() as store:
        summary = run(store, paths, subset=subset, detector=detector, detections=detections,
                      min_score=min_score, sampling=Sampling(every=every, fps=fps), device=device)
    return asdict(summary)


@lazy.task(name="pseudo-label-chunk", cache_policy="NO_CACHE", retries=1, retry_delay_seconds=2)
def pseudo_label_chunk(
    annotator: str, source: str | None, round: int | None, device: str, student: str | None,
    instance_ids: list[int] | None, store_ref: Any = None,
) -> dict[str, Any]:
    """Pseudo-label `instance_ids` (all unlabelled ones: None); on a Dask worker, in the flow's store."""
    from pipeline.active_learning.pseudo_label import pseudo_label as run
    from pipeline.annotators import load_annotator
    from pipeline.store import Store

    store = store_ref.open() if store_ref is not None else Store()
    try:
        ann = load_annotator(annotator, store, device=device, student=student)
        out = asdict(run(store, ann, image_source=source, round=round, instance_ids=instance_ids))
    finally:
        store.engine.dispose()
    out.pop("revision_ids")
    return out


@lazy.flow(name="pseudo-label")
def pseudo_label(
    annotator: str = "combined",
    source: str | None = None,
    round: int | None = None,
    device: str = "cpu",
    student: str | None = None,
    workers: int = 1,
    dask_address: str | None = None,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """Pseudo-label every unlabelled instance (of `source`, if given) with an annotator spec
    (docs/annotators.md): a registered model name, onnx:/mmpose: files, blazepose, combined.

    `workers` > 1 or `dask_address` spread chunks of `chunk_size` instances over Dask
    (flows/runners.py); every chunk writes the one store."""
    from flows.runners import StoreRef, run_tasks, uses_dask
    from pipeline.store import Store

    if not uses_dask(workers, dask_address):
        return pseudo_label_chunk.fn(annotator, source, round, device, student, None)
    with Store() as store:
        pool = [inst.id for _, inst in store.unlabelled_instances(image_source=source, incomplete=True)]
    ref = StoreRef.current()
    chunks = [pool[i : i + max(1, chunk_size)] for i in range(0, len(pool), max(1, chunk_size))]
    params = [{"annotator": annotator, "source": source, "round": round, "device": device,
               "student": student, "instance_ids": ids, "store_ref": ref} for ids in chunks]
    results = run_tasks(pseudo_label_chunk, params, workers=workers, dask_address=dask_address)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise failed[0]
    return _combine(results)


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of the chunks' summaries (mean uncertainty weighted by labels written)."""
    out: dict[str, Any] = {"model_version": parts[0]["model_version"] if parts else None}
    for key in ("candidates", "written", "already_done", "without_box"):
        out[key] = sum(int(p[key]) for p in parts)
    weighted = [(p["mean_uncertainty"], p["written"]) for p in parts if p["mean_uncertainty"] is not None]
    total = sum(n for _, n in weighted)
    out["mean_uncertainty"] = sum(u * n for u, n in weighted) / total if total else None
    return out


@app.command("import-real")
def import_real_command(
    coco_file: Path = typer.Argument(
        ..., exists=True, dir_okay=False,
        help="COCO-style keypoint JSON (COCO-17, Halpe-26/136, SpineTrack-37, AIC, CrowdPose, MHP, "
             "PoseTrack18) or MPII's json (mmpose's list of joints, center, scale)"),
    images: Path | None = typer.Option(None, exists=True, file_okay=False,
                                       help="folder of the images (default: the JSON's folder)"),
    subset: str | None = typer.Option(None, help="subset name (default: the file's stem)"),
    hidden: bool = typer.Option(
        False, "--hidden", "--keep-ground-truth",
        help="keep the file's keypoints as hidden ground truth for benchmarks (import revisions, not "
             "accepted) instead of human labels"),
    boxes_only: bool = typer.Option(False, "--boxes-only", help="ignore the file's keypoints"),
    detections: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                           help="COCO results file with person boxes to use instead"),
    min_score: float = typer.Option(0.0, help="drop detections below this score"),
    layout: str | None = typer.Option(
        None, "--layout",
        help="the file's keypoint layout: mpii, mhp, aic, crowdpose, posetrack18, coco17, halpe26, "
             "halpe136, coco-wholebody, spinetrack37 (default: from the keypoint count; 14 and 16 "
             "need it)"),
) -> None:
    """Import real images, person boxes and the keypoints people placed (accepted human labels;
    pseudo-labelling completes the other points). Points map only to the SpineTrack point they
    are (docs/pseudo-labelling.md, "Keypoint layouts")."""
    out = import_real(str(coco_file), str(images) if images else None, subset, hidden,
                      str(detections) if detections else None, min_score, boxes_only, layout)
    emit(out, lambda con: con.print(
        f"imported {out['images']} images, {out['instances']} instances, {out['human_revisions']} "
        f"with human labels ({out['human_points']} points), {out['ground_truth_revisions']} hidden "
        f"ground-truth revisions; skipped {len(out['skipped'])}"
    ))


@app.command("import-images")
def import_images_command(
    paths: list[Path] = typer.Argument(..., exists=True, help="image files, folders of them, video files"),
    subset: str | None = typer.Option(None, help="subset name (default: the first path's name)"),
    detector: str | None = typer.Option(
        None, help="blazepose (default: offline, one person per image), onnx:PATH, yolox:PATH, "
                   "rtmdet:PATH or rfdetr:PATH"),
    detections: Path | None = typer.Option(
        None, exists=True, dir_okay=False,
        help="COCO results file with the person boxes (file_name [+ frame_index] or image_id)"),
    min_score: float | None = typer.Option(
        None, help="drop people below this score (default: the detector's own)", show_default=False),
    every: int = typer.Option(1, min=1, help="videos: keep every Nth frame"),
    fps: float | None = typer.Option(None, min=0.0, help="videos: keep N frames per second instead"),
    device: str = typer.Option("cpu", help="ONNX detectors: cpu or cuda[:N]"),
) -> None:
    """Import photos and videos that have no annotations: people found by a detector."""
    from pipeline.intake.media import check_inputs

    check_inputs(paths)  # an unreadable file fails here, before any flow or model starts
    out = import_images([str(p) for p in paths], subset, detector, str(detections) if detections else None,
                        min_score, every, fps, device)
    emit(out, lambda con: con.print(
        f"imported {out['images']} images and {out['frames']} video frames ({out['videos']} videos), "
        f"{out['instances']} people ({out['box_source']}); skipped {len(out['skipped'])}"
        + "".join(f"\n  {line}" for line in out["skipped"][:20])
    ))


@app.command("pseudo-label")
def pseudo_label_command(
    annotator: str | None = typer.Option(None, help="annotator spec (default combined; docs/annotators.md)"),
    model: str | None = typer.Option(None, "--model", help="a registered model (same as --annotator NAME)"),
    source: str | None = typer.Option(None, help="only images of this source: real or synthetic"),
    round: int | None = typer.Option(None, help="active-learning round to record"),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]"),
    student: str | None = typer.Option(None, help="the combined annotator's student (default: current)"),
    workers: int = typer.Option(1, min=1, help="chunks in parallel on a local Dask cluster of N workers"),
    dask_address: str | None = typer.Option(None, help="an existing Dask cluster, e.g. tcp://host:8786"),
) -> None:
    """Store the annotator's proposal (not accepted) with its uncertainty for every unlabelled instance."""
    out = pseudo_label(annotator or model or "combined", source, round, device, student, workers,
                       dask_address)
    mean = out["mean_uncertainty"]
    emit(out, lambda con: con.print(
        f"pseudo-labelled {out['written']} of {out['candidates']} instances "
        f"({out['already_done']} already done, {out['without_box']} without a box)"
        + (f"; mean uncertainty {mean:.3f}" if mean is not None else "")
    ))


def _dask_picklable() -> None:
    from flows.runners import dask_picklable

    dask_picklable(pseudo_label_chunk, pseudo_label)


_dask_picklable()


# -- training (helper M1) ---------------------------------------------------------------------------


@lazy.flow(name="train-model")
def train_model(
    config: str = "blaze37",  # pipeline.model.configs.DEFAULT_CONFIG (tests/test_blaze37.py ties them)
    iters: int | None = None,
    parent: str | None = None,
    teacher: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    val_ann: str | None = None,
    batch_size: int | None = None,
    init_checkpoint: str | None = None,
) -> dict[str, Any]:
    """Train `config` on the store's current accepted labels and register the model."""
    from pipeline.model.train import train
    from pipeline.store import Store

    version = train(
        Store(),
        config=config,
        iters=iters,
        parent=parent,
        teacher=teacher,
        seed=seed,
        device=device,
        val_ann=val_ann,
        batch_size=batch_size,
        init_checkpoint=init_checkpoint,
    )
    return {
        "name": version.name,
        "config": version.config_name,
        "parent": version.parent,
        "data_snapshot": version.data_snapshot,
        "metrics": version.metrics,
        "checkpoint": version.checkpoint_path,
    }


#: A config whose default schedule (iterations x batch) is larger than this is sized for a GPU.
CPU_DEFAULT_SAMPLES = 100_000


def refuse_gpu_schedule_on_cpu(config: str, device: str, iters: int | None, batch_size: int | None) -> None:
    """A GPU-sized default schedule (rtmpose-s/-m: 100,000 iterations at batch 256) is not run on a
    CPU by default (days, and batches that do not fit): the user names the CPU schedule instead."""
    from pipeline.model.configs import SPECS
    from schemas.errors import InputError

    spec = SPECS.get(config)
    if spec is None or device.startswith("cuda") or spec.iters * spec.batch_size <= CPU_DEFAULT_SAMPLES:
        return
    missing = [flag for flag, value in (("--iters", iters), ("--batch-size", batch_size)) if value is None]
    if missing:
        raise InputError(f"--config {config}", (
            f"its default schedule is {spec.iters:,} iterations at batch {spec.batch_size}, sized for a GPU; "
            f"on --device {device} give {' and '.join(missing)} (e.g. --iters 2000 --batch-size 16), "
            "or train with --device cuda"))


@app.command("train")
def train_command(
    config: str = typer.Option("blaze37", help="model config: blaze37 (the default student: BlazePose's "
                               "network, CPU minutes), tiny (from scratch, seconds), rtmpose-s/-m (GPU)"),
    iters: int | None = typer.Option(None, help="training iterations (default: the config's)"),
    parent: str | None = typer.Option(None, help="registered model to fine-tune from"),
    teacher: str | None = typer.Option(
        None, help="annotator spec whose body points of the pool's real images are distilled "
        "(registered model, onnx:, mmpose:, blazepose, combined)"),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda:0"),
    val_ann: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                        help="COCO file to score the model on (OKS AP per part)"),
    batch_size: int | None = typer.Option(None, help="batch size (default: the config's)"),
    init_checkpoint: Path | None = typer.Option(
        None, exists=True, dir_okay=False,
        help="pretrained mmpose checkpoint (e.g. RTMPose body) to start from; body rows of the head copied",
    ),
) -> None:
    """Train a pose model on the current accepted labels and register it (models/NAME/)."""
    refuse_gpu_schedule_on_cpu(config, device, iters, batch_size)
    out = train_model(config, iters, parent, teacher, seed, device, str(val_ann) if val_ann else None,
                      batch_size, str(init_checkpoint) if init_checkpoint else None)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(out["metrics"].items()) if k.endswith("_AP"))
    emit(out, lambda con: con.print(
        f"registered model [bold]{out['name']}[/bold] (data snapshot {out['data_snapshot']})"
        + (f": {metrics}" if metrics else "")))
