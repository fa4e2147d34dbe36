"""One active-learning round over the real pool, as resumable steps.

pseudo-label the pool → calibrate the auto-accept threshold on the validation split → auto-accept
confident labels → select uncertain ones → push them to Label Studio → collect corrections →
retrain from the previous model → evaluate on the fixed validation split → record.

Each step is idempotent on its own (revisions carry external ids, tasks are unique per instance and
round) and the round records its last finished step (pipeline.rounds), so a crash or Ctrl-C and a
re-run continues where it stopped and does nothing twice.

The validation split is fixed the first time it is needed: instances of groups in the `val` split
that have ground truth (an accepted label, or a hidden `import` revision). Instances of `val` and
`test` groups never enter the pool, and training sees only `train` groups.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from pipeline.calibration import AcceptThreshold, calibrate_threshold
from pipeline.rounds import ROUND_STEPS, finish_step, get_round, open_round, step_done, update_round
from pipeline.selection import DEFAULT_STRATEGY, Candidate, pose_embedding
from pipeline.selection import select as select_instances
from pipeline.splits import assign_splits
from pipeline.store import Label, Store
from pipeline.store.models import AnnotationTask, Image, Instance, Revision, SyncState
from schemas.keypoints import NUM_KEYPOINTS

VALIDATION_KEY = "validation-set"
GROUND_TRUTH_SOURCES = ("synthetic", "import", "human", "review")


@dataclass(frozen=True)
class RoundSettings:
    """What a round does; the defaults are the ones the demo and the benchmark measured."""

    budget: int = 20
    strategy: str = DEFAULT_STRATEGY
    config: str = "tiny"
    train_iters: int = 300
    good_oks: float = 0.75  # a pseudo-label is "good" at or above this OKS
    min_precision: float = 0.9  # share of good labels required among the auto-accepted
    auto_accept: bool = True
    wait_s: float = 0.0  # how long `collect` waits for annotators to finish the round's tasks
    poll_s: float = 5.0
    seed: int = 0
    image_source: str = "real"
    device: str = "cpu"
    annotator: str = "combined"  # the neural annotator that proposes labels (pipeline.annotators spec)
    teacher: str | None = None  # optional teacher distilled into the student when retraining

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RoundContext:
    """What a step needs: the store, the settings, and the hooks that reach people or servers."""

    store: Store
    settings: RoundSettings
    number: int
    push: Callable[[Store, Sequence[int], int], Any]
    pull: Callable[[Store], Any]
    annotate: Callable[[Store, int], Any] | None = None  # simulated annotator (benchmarks, demo)
    log: Callable[[str], None] = print
    state: dict[str, Any] = field(default_factory=dict)


# -- the fixed validation split and the pool --------------------------------------------------------
def _group_splits(store: Store) -> dict[str, str]:
    with store.session() as s:
        groups = list(s.scalars(select(Image.group_key).distinct()))
    return assign_splits(store, groups)


def validation_instances(store: Store) -> list[int]:
    """The fixed validation instances: frozen in the store on first use, identical every round."""
    with store.session() as s:
        row = s.get(SyncState, VALIDATION_KEY)
        if row is not None:
            return [int(i) for i in row.value["instance_ids"]]
    splits = _group_splits(store)
    val_groups = {g for g, sp in splits.items() if sp == "val"}
    with store.session() as s:
        q = (
            select(Instance.id)
            .join(Image, Image.id == Instance.image_id)
            .join(Revision, Revision.instance_id == Instance.id)
            .where(Image.group_key.in_(val_groups), Revision.source.in_(GROUND_TRUTH_SOURCES))
            .distinct()
            .order_by(Instance.id)
        )
        ids = [int(i) for i in s.scalars(q)]
        s.merge(SyncState(key=VALIDATION_KEY, value={"instance_ids": ids, "groups": sorted(val_groups)}))
    return ids


def ground_truth(store: Store, instance_ids: Sequence[int]) -> dict[int, Revision]:
    """The reference label of each instance: its latest accepted label, else its hidden import."""
    out: dict[int, Revision] = {}
    with store.session() as s:
        rows = s.scalars(
            select(Revision)
            .where(Revision.instance_id.in_(list(instance_ids)), Revision.source.in_(GROUND_TRUTH_SOURCES))
            .order_by(Revision.id)
        )
        for rev in rows:
            current = out.get(rev.instance_id)
            # accepted labels win over hidden imports; later wins among equals
            if current is None or rev.accepted or not current.accepted:
                out[rev.instance_id] = rev
    return out


def training_labels(store: Store) -> list[Label]:
    """Everything accepted in `train` groups: synthetic, human, auto-accepted."""
    labels = store.current_labels()
    splits = assign_splits(store, {lab.group_key for lab in labels})
    return [lab for lab in labels if splits[lab.group_key] == "train"]


def pool_instances(store: Store, image_source: str = "real") -> list[int]:
    """Unlabelled instances of `train` groups that were never sent to annotators."""
    pairs = store.unlabelled_instances(image_source=image_source)
    splits = assign_splits(store, {img.group_key for img, _ in pairs})
    with store.session() as s:
        tasked = set(s.scalars(select(AnnotationTask.instance_id)))
    return [inst.id for img, inst in pairs if splits[img.group_key] == "train" and inst.id not in tasked]


# -- scoring a model on the validation split -----------------------------------------------------
@dataclass
class ValidationResult:
    metrics: dict[str, float]
    oks: list[float]
    uncertainty: list[float]


def validate(store: Store, model: Any, *, flip_test: bool = True) -> ValidationResult:
    """Predict the fixed validation instances; AP per partition, and OKS + uncertainty per instance."""
    from pipeline.evaluate import evaluate_keypoints, expected_oks, summary
    from pipeline.model.predict import predict
    from pipeline.pseudo_label import spine_stats
    from pipeline.uncertainty import instance_uncertainty

    ids = validation_instances(store)
    truth = ground_truth(store, ids)
    if not truth:
        return ValidationResult({}, [], [])
    with store.session() as s:
        rows = s.execute(
            select(Instance.id, Image.id, Image.path, Image.width, Image.height)
            .join(Image, Image.id == Instance.image_id)
            .where(Instance.id.in_(list(truth)))
            .order_by(Instance.id)
        ).all()
    stats = spine_stats(store)
    preds = predict(model, [r[2] for r in rows], [[truth[r[0]].bbox] for r in rows], flip_test=flip_test)
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    results: list[dict[str, Any]] = []
    oks: list[float] = []
    unc: list[float] = []
    seen_images: set[int] = set()
    for pred in preds:
        inst_id, image_id, _path, width, height = rows[pred.image_index]
        ref = truth[inst_id]
        if image_id not in seen_images:
            seen_images.add(image_id)
            gt["images"].append({"id": image_id, "width": width, "height": height,
                                 "file_name": str(image_id)})
        gt["annotations"].append({
            "id": inst_id, "image_id": image_id, "category_id": 1, "keypoints": list(ref.keypoints),
            "bbox": list(ref.bbox), "area": ref.area, "iscrowd": 0,
            "num_keypoints": sum(1 for i in range(NUM_KEYPOINTS) if ref.keypoints[3 * i + 2] > 0),
        })
        results.append({"image_id": image_id, "category_id": 1, "keypoints": pred.coco_keypoints(),
                         "score": pred.score})
        value = expected_oks(pred.coco_keypoints(), ref.keypoints, area=ref.area)
        u = instance_uncertainty(pred.plain_keypoints if flip_test else pred.keypoints, pred.confidence,
                                 ref.bbox, flip_keypoints=pred.flip_keypoints, stats=stats).combined
        if not math.isnan(value):
            oks.append(float(value))
            unc.append(float(u))
    metrics = summary(evaluate_keypoints(gt, results))
    metrics["mean_oks"] = float(np.mean(oks)) if oks else float("nan")
    metrics["instances"] = float(len(truth))
    return ValidationResult(metrics, oks, unc)


# -- the steps ------------------------------------------------------------------------------------
def step_pseudo_label(ctx: RoundContext) -> dict[str, Any]:
    from pipeline.model.registry import load_model
    from pipeline.pseudo_label import pseudo_label

    model_name = ctx.state["start_model"]
    model, _meta = load_model(ctx.store, model_name, device=ctx.settings.device)
    pool = pool_instances(ctx.store, ctx.settings.image_source)
    result = pseudo_label(ctx.store, model, model_name, instance_ids=pool, round=ctx.number)
    ctx.log(f"round {ctx.number}: pseudo-labelled {result.written} of {len(pool)} pool instances "
            f"({result.already_done} already done, {result.without_box} without a box)")
    return {"pool": len(pool), "pseudo_labelled": result.written + result.already_done}


def step_calibrate(ctx: RoundContext) -> dict[str, Any]:
    from pipeline.model.registry import load_model

    s = ctx.settings
    model, _ = load_model(ctx.store, ctx.state["start_model"], device=s.device)
    val = validate(ctx.store, model)
    threshold = calibrate_threshold(val.uncertainty, val.oks, good_oks=s.good_oks,
                                    min_precision=s.min_precision)
    ctx.log(f"round {ctx.number}: auto-accept threshold {threshold.threshold:.3f} "
            f"(precision {threshold.precision:.2f}, coverage {threshold.coverage:.2f} on {threshold.samples} "
            "validation instances)")
    return {"threshold": threshold.as_dict(), "start_metrics": val.metrics}


def _pool_predictions(store: Store, model_name: str, pool: Sequence[int]) -> list[Revision]:
    with store.session() as s:
        return list(s.scalars(
            select(Revision)
            .where(Revision.source == "pseudo", Revision.model_version == model_name,
                   Revision.instance_id.in_(list(pool)))
            .order_by(Revision.id)
        ))


def step_auto_accept(ctx: RoundContext) -> dict[str, Any]:
    t = AcceptThreshold(**ctx.state["threshold"])
    if not ctx.settings.auto_accept:
        return {"auto_accepted": 0}
    model_name = ctx.state["start_model"]
    pool = pool_instances(ctx.store, ctx.settings.image_source)
    accepted = 0
    for rev in _pool_predictions(ctx.store, model_name, pool):
        if rev.uncertainty is None or not t.accepts(rev.uncertainty):
            continue
        rid = ctx.store.add_revision(
            rev.instance_id, rev.keypoints, rev.bbox, source="pseudo-accepted", accepted=True,
            model_version=model_name, round=ctx.number, scores=rev.scores, uncertainty=rev.uncertainty,
            quality={"threshold": t.threshold, "calibrated_precision": t.precision},
            provenance={"from_revision": rev.id}, external_id=f"auto:{ctx.number}:{rev.instance_id}",
        )
        accepted += rid is not None
    ctx.log(f"round {ctx.number}: auto-accepted {accepted} confident pseudo-labels")
    return {"auto_accepted": accepted}


def candidates(store: Store, model_name: str, pool: Sequence[int]) -> list[Candidate]:
    """Pool predictions as selection candidates (model features when stored, else pose embedding)."""
    out = []
    for rev in _pool_predictions(store, model_name, pool):
        parts = (rev.quality or {}).get("uncertainty_parts", {})
        per_kp = np.asarray(parts.get("per_keypoint", [rev.uncertainty or 0.0] * NUM_KEYPOINTS), dtype=float)
        feats = (rev.quality or {}).get("features")
        emb = np.asarray(feats, dtype=float) if feats else pose_embedding(
            np.asarray(rev.keypoints).reshape(NUM_KEYPOINTS, 3), rev.bbox)
        out.append(Candidate(rev.instance_id, float(rev.uncertainty or 0.0), per_kp, emb))
    return out


def step_select(ctx: RoundContext) -> dict[str, Any]:
    s = ctx.settings
    pool = pool_instances(ctx.store, s.image_source)
    cands = candidates(ctx.store, ctx.state["start_model"], pool)
    chosen = select_instances(cands, s.budget, s.strategy, seed=s.seed + ctx.number)
    ctx.log(f"round {ctx.number}: selected {len(chosen)} of {len(cands)} candidates ({s.strategy})")
    return {"selected": chosen}


def step_push(ctx: RoundContext) -> dict[str, Any]:
    result = ctx.push(ctx.store, ctx.state["selected"], ctx.number)
    ctx.log(f"round {ctx.number}: pushed {len(ctx.state['selected'])} instances to Label Studio")
    return {"push": _jsonable(result)}


def _round_tasks_open(store: Store, number: int) -> int:
    with store.session() as s:
        return len(list(s.scalars(
            select(AnnotationTask.id).where(AnnotationTask.round == number, AnnotationTask.state == "open"))))


def human_labels(store: Store, number: int) -> int:
    """Human revisions stored for a round (each correction once)."""
    with store.session() as s:
        return len(list(s.scalars(
            select(Revision.id).where(Revision.round == number, Revision.source == "human",
                                      Revision.accepted.is_(True)))))


def step_collect(ctx: RoundContext) -> dict[str, Any]:
    if ctx.annotate is not None:
        ctx.annotate(ctx.store, ctx.number)
    deadline = time.monotonic() + ctx.settings.wait_s
    while True:
        ctx.pull(ctx.store)
        remaining = _round_tasks_open(ctx.store, ctx.number)
        if remaining == 0 or time.monotonic() >= deadline:
            break
        ctx.log(f"round {ctx.number}: waiting for {remaining} open tasks")
        time.sleep(ctx.settings.poll_s)
    count = human_labels(ctx.store, ctx.number)
    ctx.log(f"round {ctx.number}: {count} human corrections stored ({remaining} tasks still open)")
    return {"human_labels": count, "open_tasks": remaining}


def step_retrain(ctx: RoundContext) -> dict[str, Any]:
    """Fine-tune from the round's start model on every accepted `train` label.

    The model's name is derived from the round and the data, so a crash after training but before
    the step was recorded finds the registered model and does not train twice.
    """
    from pipeline.model.registry import get_version
    from pipeline.model.train import train

    s = ctx.settings
    labels = training_labels(ctx.store)
    name = f"{s.config}-round{ctx.number}-{ctx.store.snapshot_id(labels)[:10]}"
    if get_version(ctx.store, name) is None:
        train(ctx.store, config=s.config, iters=s.train_iters, parent=ctx.state["start_model"],
              seed=s.seed + ctx.number, device=s.device, labels=labels, name=name)
        ctx.log(f"round {ctx.number}: trained {name} on {len(labels)} accepted labels")
    return {"model_version": name, "train_labels": len(labels)}


def step_evaluate(ctx: RoundContext) -> dict[str, Any]:
    from pipeline.model.registry import load_model

    model, _ = load_model(ctx.store, ctx.state["model_version"], device=ctx.settings.device)
    metrics = validate(ctx.store, model).metrics
    ctx.log(f"round {ctx.number}: validation " + ", ".join(
        f"{k} {v:.3f}" for k, v in metrics.items() if k.endswith("_AP")))
    return {"metrics": metrics}


def step_record(ctx: RoundContext) -> dict[str, Any]:
    return {"finished": True}


STEPS: dict[str, Callable[[RoundContext], dict[str, Any]]] = {
    "pseudo_label": step_pseudo_label,
    "calibrate": step_calibrate,
    "auto_accept": step_auto_accept,
    "select": step_select,
    "push": step_push,
    "collect": step_collect,
    "retrain": step_retrain,
    "evaluate": step_evaluate,
    "record": step_record,
}
assert tuple(STEPS) == ROUND_STEPS


def start_round(store: Store, number: int, settings: RoundSettings, start_model: str) -> dict[str, Any]:
    """Open (or reopen) round `number` and return its state, with the model it starts from.

    On resume the round keeps the model and settings it started with.
    """
    rnd = open_round(store, number, strategy=settings.strategy, budget=settings.budget,
                     params=settings.as_dict())
    if "start_model" not in (rnd.state or {}):
        rnd = update_round(store, number, start_model=start_model)
    return dict(rnd.state or {})


def run_step(ctx: RoundContext, step: str) -> bool:
    """Run one step unless the round already finished it; returns whether it ran."""
    rnd = get_round(ctx.store, ctx.number)
    if rnd is None:
        raise KeyError(f"round {ctx.number} was never opened")
    if step_done(rnd, step):
        return False
    ctx.state = dict(rnd.state or {})
    produced = STEPS[step](ctx)
    finish_step(ctx.store, ctx.number, step, **produced)
    ctx.state.update(produced)
    return True


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    return str(value)
