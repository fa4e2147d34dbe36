"""One active-learning round over the real pool, as resumable steps, with people who take days.

pseudo-label the pool → calibrate the auto-accept threshold on the real validation split →
auto-accept confident labels → select uncertain ones → push them to Label Studio → collect
corrections until the round's close rule holds → retrain from the previous model → evaluate on the
real (and, beside it, the synthetic) validation split → record.

Each step is idempotent on its own (revisions carry external ids, tasks are unique per instance and
round) and the round records its last finished step (pipeline.active_learning.rounds), so a crash
or Ctrl-C and a re-run continues where it stopped and does nothing twice. `collect` never blocks
for days: it pulls, checks the close rule stored when the round started (`close_when`,
`close_after_s`, or a `--close` request), and otherwise leaves the round `awaiting-annotations` and returns.

Public API for the CLI, flows and benchmarks (the benchmark runs THIS step, not a copy):
`resolve_settings` → `start_round` → `RoundContext` → `advance_round` (or `run_step` per step).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from pipeline.active_learning.calibration import DEFAULT_Z, AcceptThreshold, calibrate_threshold
from pipeline.active_learning.rounds import (
    ROUND_STEPS,
    VALIDATION_REASON,
    close_decision,
    driving,
    drop_unfinished_run,
    finish_step,
    get_round,
    late_labels,
    live_human_revisions,
    open_round,
    round_status,
    start_step,
    step_done,
    task_status,
    update_round,
)
from pipeline.active_learning.selection import (
    DEFAULT_STRATEGY,
    STRATEGY_READS,
    WITH_LABELLED,
    Candidate,
    pose_embedding,
)
from pipeline.active_learning.selection import select as select_instances
from pipeline.active_learning.validation import (
    ValidationResult,
    scoring_runner,
    truth_fingerprint,
    validate,
    validate_annotator,
)
from pipeline.instance_sets import (
    pool_instances,
    real_validation_instances,
    synthetic_validation_instances,
    training_labels,
    val_set_candidates,
)
from pipeline.store import Label, Store
from pipeline.store.lease import Lease
from pipeline.store.models import AnnotationTask, Revision
from schemas.enums import (
    RevisionSource,
    RoundStatus,
    RoundStep,
)
from schemas.keypoints import NUM_KEYPOINTS
from schemas.point_sources import as_accepted


@dataclass(frozen=True)
class RoundSettings:
    """What a round does. The ONE source of defaults for the CLI, the flows and the benchmarks.

    Stored with the round when it starts; a resumed round reads them back (`resolve_settings`), so
    flags given on a later call cannot change a round half-way. `RUN_OPTIONS` are the exceptions:
    they say how this invocation behaves, not what the round is.
    """

    budget: int = 20
    strategy: str = DEFAULT_STRATEGY
    config: str = "blaze37"  # the student: pipeline.model.configs.DEFAULT_CONFIG (tests tie the two)
    train_iters: int = 300
    good_oks: float = 0.75  # a pseudo-label is "good" at or above this OKS
    min_precision: float = 0.9  # lower confidence bound of precision required among the auto-accepted
    confidence_z: float = DEFAULT_Z  # the Wilson bound's quantile (1.645: one-sided 95 %)
    min_real_val: int = 30  # real validation instances needed before anything is auto-accepted
    auto_accept: bool = True
    close_when: float = 1.0  # collection closes when this share of tasks is done or skipped ...
    close_after_s: float | None = None  # ... or this long after the push
    overlap: float = 0.0  # share of tasks given to two annotators (Label Studio overlap)
    val_size: int = 20  # real `val` images sent in the first round to freeze the real validation split
    wait_s: float = 0.0  # this call keeps pulling up to this long before leaving the round waiting
    poll_s: float = 5.0
    seed: int = 0
    image_source: str = "real"
    device: str = "cpu"
    annotator: str = "combined"  # who proposes labels: a pipeline.annotators spec, or STUDENT
    teacher: str | None = None  # optional teacher distilled into the student when retraining

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> RoundSettings:
        """Settings from a stored dict; keys this version does not know are dropped, missing ones default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})


#: `RoundSettings.annotator` value for "the model being trained": each round's start model
#: pseudo-labels the pool, so selection ranks by that model's own uncertainty (flip disagreement,
#: heatmap peak confidence, anatomy; per-point scores) and features (docs/active-learning.md).
STUDENT = "student"

#: Settings that belong to one invocation (how long it waits), not to the round.
RUN_OPTIONS = frozenset({"wait_s", "poll_s", "device"})


def resolve_settings(
    store: Store, number: int, given: dict[str, Any]
) -> tuple[RoundSettings, dict[str, Any]]:
    """The settings round `number` runs with, and the given ones that were ignored.

    A new round: defaults overridden by `given`. A round that already started: the settings it
    stored, with only `RUN_OPTIONS` taken from `given`; the other differing flags come back as
    ignored (name -> (given, stored)) so the caller can say so.
    """
    given = {k: v for k, v in given.items() if v is not None}
    rnd = get_round(store, number)
    stored = (rnd.state or {}).get("params") if rnd is not None else None
    if not stored:
        return RoundSettings.from_dict(given), {}
    base = RoundSettings.from_dict(stored)
    ignored = {k: (v, stored.get(k)) for k, v in given.items()
               if k not in RUN_OPTIONS and k in stored and stored.get(k) != v}
    runtime = {k: v for k, v in given.items() if k in RUN_OPTIONS}
    return RoundSettings.from_dict({**base.as_dict(), **runtime}), ignored


class RoundAwaiting(Exception):
    """`collect` found the close rule unmet: the round waits for annotators (no process needed)."""

    def __init__(self, reason: str, status: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class RoundContext:
    """What a step needs: the store, the settings, and the hooks that reach people or servers.

    `push(store, instance_ids, round, reason=..., overlap=...)` and `pull(store)` reach Label Studio
    (annotation.labelstudio.hooks.LabelStudioHooks); `annotate(store, round)` is the simulated
    annotator (benchmarks and the demo only); `close_now` closes collection on this call (`--close`).
    """

    store: Store
    settings: RoundSettings
    number: int
    push: Callable[..., Any]
    pull: Callable[[Store], Any]
    annotate: Callable[[Store, int], Any] | None = None  # simulated annotator (benchmarks, demo)
    log: Callable[[str], None] = print
    state: dict[str, Any] = field(default_factory=dict)
    close_now: bool = False
    lease: Lease | None = None  # the round's lease while this process drives it (rounds.driving)


# -- the steps ------------------------------------------------------------------------------------
def round_annotator(ctx: RoundContext) -> Any:
    """The annotator that proposes this round's labels; `STUDENT` is the round's start model."""
    from pipeline.annotators import load_annotator

    start, spec = ctx.state.get("start_model"), ctx.settings.annotator
    if spec == STUDENT:
        if not start:
            raise ValueError(f"annotator {STUDENT!r} needs a start model to pseudo-label with")
        spec = f"model:{start}"
    return load_annotator(spec, ctx.store, device=ctx.settings.device, student=start)


def step_pseudo_label(ctx: RoundContext) -> dict[str, Any]:
    """Predict the pool (and the first round's real validation sample, for its pre-annotation)."""
    from pipeline.active_learning.pseudo_label import pseudo_label

    annotator = round_annotator(ctx)
    pool = pool_instances(ctx.store, ctx.settings.image_source)
    val_sample = ctx.state.get("val_sample")
    if val_sample is None:
        val_sample = first_round_val_sample(ctx)
    result = pseudo_label(ctx.store, annotator, instance_ids=pool + val_sample, round=ctx.number)
    ctx.log(f"round {ctx.number}: pseudo-labelled {result.written} of {len(pool)} pool instances "
            f"and {len(val_sample)} validation images ({result.already_done} already done, "
            f"{result.without_box} without a box)")
    return {"pool": len(pool), "pseudo_labelled": result.written + result.already_done,
            "val_sample": val_sample, "annotator_version": result.model_version,
            "annotator": annotator.identity.as_json()}


def first_round_val_sample(ctx: RoundContext) -> list[int]:
    """The real `val` images the first round sends, unless a validation set was already sent."""
    with ctx.store.session() as s:
        sent = s.scalar(select(AnnotationTask.id).where(AnnotationTask.reason == VALIDATION_REASON).limit(1))
    if sent is not None or ctx.number != 1:
        return []
    return val_set_candidates(ctx.store, ctx.settings.val_size, seed=ctx.settings.seed)


def _frozen_validation(ctx: RoundContext) -> dict[str, list[int]]:
    return {"real": real_validation_instances(ctx.store),
            "synthetic": synthetic_validation_instances(ctx.store)}


def step_calibrate(ctx: RoundContext) -> dict[str, Any]:
    """Auto-accept threshold from the REAL validation split only; synthetic metrics beside it.

    The threshold is calibrated on the uncertainty of the annotator that pseudo-labels the pool
    (`settings.annotator`, scored as pseudo_label scores it), so threshold and the scores
    auto-accept compares with it are on one scale; the start model's metrics are reported beside."""
    from pipeline.model.registry import load_model

    s = ctx.settings
    frozen = _frozen_validation(ctx)
    truth = _truth_fingerprints(ctx.store, frozen)
    start_metrics = _evaluated_before(ctx, frozen, truth)
    scored_in = ctx.number - 1 if start_metrics is not None else ctx.number
    if start_metrics is None:
        model, _ = load_model(ctx.store, ctx.state["start_model"], device=s.device)
        runner = scoring_runner(model, s.device)
        start_metrics = {part: validate(ctx.store, model, instance_ids=frozen[part], runner=runner).metrics
                         for part in ("real", "synthetic")}
    proposer = ValidationResult({}, [], [])
    if frozen["real"]:
        proposer = validate_annotator(ctx.store, round_annotator(ctx), frozen["real"])
    threshold = calibrate_threshold(proposer.uncertainty, proposer.oks, good_oks=s.good_oks,
                                    min_precision=s.min_precision, min_samples=s.min_real_val,
                                    z=s.confidence_z)
    if threshold.enabled:
        ctx.log(f"round {ctx.number}: auto-accept threshold {threshold.threshold:.3f} (precision "
                f"{threshold.precision:.2f}, lower bound {threshold.precision_lower:.2f}, coverage "
                f"{threshold.coverage:.2f} on {threshold.samples} real validation instances)")
    else:
        ctx.log(f"round {ctx.number}: auto-accept off: {threshold.reason}")
    return {"threshold": threshold.as_dict(), "validation": frozen,
            "start_metrics": start_metrics, "start_metrics_round": scored_in,
            "annotator_metrics": {"real": proposer.metrics}}


def _truth_fingerprints(store: Store, frozen: dict[str, list[int]]) -> dict[str, str]:
    return {part: truth_fingerprint(store, ids) for part, ids in frozen.items()}


def _evaluated_before(ctx: RoundContext, frozen: dict[str, list[int]],
                      truth: dict[str, str]) -> dict[str, Any] | None:
    """The start model's metrics as the previous round's evaluate step measured them, when that
    round trained this very model and scored it on the same instances with the same truth (scoring
    it again would give the same numbers: the most expensive part of calibrate after round 1)."""
    before = get_round(ctx.store, ctx.number - 1) if ctx.number > 1 else None
    if before is None:
        return None
    state, metrics = dict(before.state or {}), dict(before.metrics or {})
    same = (state.get("model_version") == ctx.state.get("start_model") and state.get("validation") == frozen
            and state.get("evaluated_truth") == truth and all(part in metrics for part in frozen))
    return {part: metrics[part] for part in frozen} if same else None


def _pool_predictions(store: Store, model_name: str, pool: Sequence[int]) -> list[Revision]:
    """The pool's proposals by `model_name`, the latest of each instance (a person's new points
    get a new completion: pipeline.active_learning.pseudo_label)."""
    return list(store.latest_revisions(pool, sources=[RevisionSource.PSEUDO],
                                       model_version=model_name).values())


def step_auto_accept(ctx: RoundContext) -> dict[str, Any]:
    t = AcceptThreshold.from_dict(ctx.state["threshold"])
    if not ctx.settings.auto_accept:
        return {"auto_accepted": 0, "auto_accept_off": "disabled in the round's settings"}
    if not t.enabled:
        return {"auto_accepted": 0, "auto_accept_off": t.reason}
    model_name = ctx.state.get("annotator_version", ctx.state["start_model"])  # who proposed them
    pool = pool_instances(ctx.store, ctx.settings.image_source)
    accepted = 0
    for rev in _pool_predictions(ctx.store, model_name, pool):
        if rev.uncertainty is None or not t.accepts(rev.uncertainty):
            continue
        rid = ctx.store.add_revision(
            rev.instance_id, rev.keypoints, rev.bbox, source="pseudo-accepted", accepted=True,
            model_version=model_name, round=ctx.number, scores=rev.scores, uncertainty=rev.uncertainty,
            quality={"threshold": t.threshold, "calibrated_precision": t.precision,
                     "precision_lower_bound": t.precision_lower},
            provenance={"from_revision": rev.id}, external_id=f"auto:{ctx.number}:{rev.instance_id}",
            point_sources=as_accepted(rev.point_sources),  # a completion keeps the person's points
        )
        accepted += rid is not None
    ctx.log(f"round {ctx.number}: auto-accepted {accepted} confident pseudo-labels")
    return {"auto_accepted": accepted}


def candidates(store: Store, model_name: str, pool: Sequence[int]) -> list[Candidate]:
    """Pool predictions as selection candidates (model features when stored, else pose embedding),
    with their frame group and video time so selection can thin near-duplicate frames."""
    out = []
    predictions = _pool_predictions(store, model_name, pool)
    images = store.images_of([rev.instance_id for rev in predictions])
    for rev in predictions:
        image = images.get(rev.instance_id)
        time_s = (image.meta or {}).get("time_s") if image is not None else None
        parts = (rev.quality or {}).get("uncertainty_parts", {})
        per_kp = np.asarray(parts.get("per_keypoint", [rev.uncertainty or 0.0] * NUM_KEYPOINTS), dtype=float)
        feats = (rev.quality or {}).get("features")
        emb = np.asarray(feats, dtype=float) if feats else pose_embedding(
            np.asarray(rev.keypoints).reshape(NUM_KEYPOINTS, 3), rev.bbox)
        out.append(Candidate(rev.instance_id, float(rev.uncertainty or 0.0), per_kp, emb,
                             keypoints=np.asarray(rev.keypoints, dtype=float).reshape(NUM_KEYPOINTS, 3),
                             bbox=tuple(float(v) for v in rev.bbox),
                             group=image.group_key if image is not None else None,
                             time_s=float(time_s) if time_s is not None else None,
                             given=tuple(int(i) for i in (rev.quality or {}).get("human_points", ())),
                             model=model_name))
    from pipeline.active_learning.correction_effort import (
        with_estimates,  # pose prior + expected correction effort
    )

    return with_estimates(store, out)


def labelled_embeddings(store: Store, image_source: str) -> list[np.ndarray]:
    """Where the labelled pool-domain instances (accepted labels of `train` groups from
    `image_source`) sit for TypiClust: the features of each one's latest proposal (the model of the
    round that proposed it), else the pose embedding of its label."""
    labels = [lab for lab in training_labels(store) if lab.image_source == image_source]
    proposals = store.latest_revisions([lab.instance_id for lab in labels], sources=[RevisionSource.PSEUDO])
    out = []
    for lab in labels:
        proposal = proposals.get(lab.instance_id)
        feats = (proposal.quality or {}).get("features") if proposal is not None else None
        out.append(np.asarray(feats, dtype=float) if feats else pose_embedding(
            np.asarray(lab.keypoints, dtype=float).reshape(NUM_KEYPOINTS, 3), lab.bbox))
    return out


def ranked_by(ctx: RoundContext, model_name: str, labelled: int | None) -> dict[str, Any]:
    """Whose numbers the round's strategy read: the proposing model, whether it is the student
    (the model being trained, `start_model`), the candidate fields the strategy reads, and how
    many labelled instances it saw (None: the strategy does not read the labelled set)."""
    student = ctx.state.get("start_model")
    return {"model": model_name, "student": student, "is_student": model_name == student,
            "annotator": ctx.settings.annotator, "strategy": ctx.settings.strategy,
            "reads": list(STRATEGY_READS.get(ctx.settings.strategy, ())), "labelled": labelled}


def step_select(ctx: RoundContext) -> dict[str, Any]:
    s = ctx.settings
    pool = pool_instances(ctx.store, s.image_source)
    model_name = ctx.state.get("annotator_version", ctx.state["start_model"])
    cands = candidates(ctx.store, model_name, pool)
    labelled = labelled_embeddings(ctx.store, s.image_source) if s.strategy in WITH_LABELLED else []
    chosen = select_instances(cands, s.budget, s.strategy, seed=s.seed + ctx.number, labelled=labelled)
    reads = ranked_by(ctx, model_name, len(labelled) if s.strategy in WITH_LABELLED else None)
    ctx.log(f"round {ctx.number}: selected {len(chosen)} of {len(cands)} candidates ({s.strategy}, "
            f"ranked by {'the student ' if reads['is_student'] else ''}{model_name})")
    return {"selected": chosen, "ranked_by": reads}


def step_push(ctx: RoundContext) -> dict[str, Any]:
    """The selection, and the first round's validation sample, as Label Studio tasks of this round."""
    overlap = ctx.settings.overlap
    result = ctx.push(ctx.store, ctx.state["selected"], ctx.number, reason="uncertain", overlap=overlap)
    val_sample = list(ctx.state.get("val_sample") or [])
    val_result = None
    if val_sample:
        val_result = ctx.push(ctx.store, val_sample, ctx.number, reason=VALIDATION_REASON, overlap=overlap)
    ctx.log(f"round {ctx.number}: pushed {len(ctx.state['selected'])} instances and {len(val_sample)} "
            "validation images to Label Studio")
    return {"push": _jsonable(result), "val_push": _jsonable(val_result),
            "pushed_at": datetime.now(UTC).isoformat()}


def human_labels(store: Store, number: int) -> int:
    """Live human labels credited to a round (each Label Studio annotation once, revoked ones not)."""
    return len(live_human_revisions(store, number))


def step_collect(ctx: RoundContext) -> dict[str, Any]:
    """Pull; close when the stored rule holds, else raise RoundAwaiting (the round waits, no process).

    With `wait_s` > 0 this call keeps pulling every `poll_s` until the rule holds or the time is up.
    """
    s = ctx.settings
    if ctx.annotate is not None:
        ctx.annotate(ctx.store, ctx.number)
    close_now = ctx.close_now or bool(ctx.state.get("close_requested"))
    deadline = time.monotonic() + s.wait_s
    while True:
        ctx.pull(ctx.store)
        status = task_status(ctx.store, ctx.number)
        decision = close_decision(status, close_when=s.close_when, close_after_s=s.close_after_s,
                                  close_now=close_now)
        if decision.close or time.monotonic() >= deadline:
            break
        ctx.log(f"round {ctx.number}: waiting ({decision.reason})")
        time.sleep(s.poll_s)
    if not decision.close:
        raise RoundAwaiting(decision.reason, status.as_dict())
    count = human_labels(ctx.store, ctx.number)
    ctx.log(f"round {ctx.number}: collection closed: {decision.reason}; {count} human labels")
    return {"human_labels": count, "open_tasks": status.open, "close_reason": decision.reason,
            "closed_at": datetime.now(UTC).isoformat(), "task_status": status.as_dict()}


def human_labels_by_round(labels: Sequence[Label]) -> dict[str, int]:
    """How many human labels of a training set each round is credited with (late ones included)."""
    counts = Counter(str(lab.round) for lab in labels if lab.source == RevisionSource.HUMAN)
    return dict(sorted(counts.items()))


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
        parent = ctx.state["start_model"]
        start = get_version(ctx.store, parent) if parent else None
        if start is not None and start.config_name != s.config:
            # a new student (e.g. a store that began with `tiny`): it starts from its own weights
            ctx.log(f"round {ctx.number}: the current model {parent} is a {start.config_name!r} model; "
                    f"training a {s.config!r} model from its own start instead of fine-tuning it")
            parent = None
        train(ctx.store, config=s.config, iters=s.train_iters, parent=parent,
              seed=s.seed + ctx.number, device=s.device, labels=labels, name=name, teacher=s.teacher)
        ctx.log(f"round {ctx.number}: trained {name} on {len(labels)} accepted labels")
    return {"model_version": name, "train_labels": len(labels),
            "train_human_labels_by_round": human_labels_by_round(labels)}


def step_evaluate(ctx: RoundContext) -> dict[str, Any]:
    """Headline metrics on the round's frozen REAL validation split; synthetic beside, never mixed."""
    from pipeline.model.registry import load_model

    model, _ = load_model(ctx.store, ctx.state["model_version"], device=ctx.settings.device)
    frozen = ctx.state.get("validation") or _frozen_validation(ctx)
    runner = scoring_runner(model, ctx.settings.device)
    metrics = {part: validate(ctx.store, model, instance_ids=frozen.get(part, []), runner=runner).metrics
               for part in ("real", "synthetic")}
    truth = _truth_fingerprints(ctx.store, {part: frozen.get(part, []) for part in ("real", "synthetic")})
    for part, values in metrics.items():
        ctx.log(f"round {ctx.number}: {part} validation ({int(values.get('instances', 0))} instances) "
                + ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k.endswith("_AP")))
    return {"metrics": metrics, "evaluated_truth": truth}


def step_record(ctx: RoundContext) -> dict[str, Any]:
    return {"finished": True}


#: What runs for each RoundStep (ROUND_STEPS, from the same enum, gives the order).
STEPS: dict[RoundStep, Callable[[RoundContext], dict[str, Any]]] = {
    RoundStep.PSEUDO_LABEL: step_pseudo_label,
    RoundStep.CALIBRATE: step_calibrate,
    RoundStep.AUTO_ACCEPT: step_auto_accept,
    RoundStep.SELECT: step_select,
    RoundStep.PUSH: step_push,
    RoundStep.COLLECT: step_collect,
    RoundStep.RETRAIN: step_retrain,
    RoundStep.EVALUATE: step_evaluate,
    RoundStep.RECORD: step_record,
}


def start_round(store: Store, number: int, settings: RoundSettings, start_model: str) -> dict[str, Any]:
    """Open (or reopen) round `number` and return its state, with the model it starts from.

    On resume the round keeps the model and settings it started with (see `resolve_settings`).
    """
    rnd = open_round(store, number, strategy=settings.strategy, budget=settings.budget,
                     params=settings.as_dict(), state={"start_model": start_model})
    if "start_model" not in (rnd.state or {}):
        rnd = update_round(store, number, start_model=start_model)
    return dict(rnd.state or {})


class StepOutcome:
    RAN = "ran"
    DONE_BEFORE = "done-before"
    AWAITING = "awaiting"



@contextmanager
def holding(ctx: RoundContext) -> Iterator[None]:
    """The round's lease held for the block and lent to `ctx` (its steps record only while held)."""
    with driving(ctx.store, ctx.number) as lease:
        ctx.lease = lease
        try:
            yield
        finally:
            ctx.lease = None

def run_step(ctx: RoundContext, step: str) -> str:
    """Run one step unless the round already finished it.

    Returns StepOutcome.RAN, DONE_BEFORE, or AWAITING (collect's close rule does not hold yet: the
    round is left `awaiting-annotations` with its task status stored, and a later call continues).
    Runs only while this process holds the round's lease (taken here when the caller holds none;
    RoundBusy when another process drives the round), and records nothing once it lost it.
    """
    if ctx.lease is None:  # one step on its own (benchmarks): hold the round for it
        with holding(ctx):
            return run_step(ctx, step)
    rnd = get_round(ctx.store, ctx.number)
    if rnd is None:
        raise KeyError(f"round {ctx.number} was never opened")
    if step_done(rnd, step):
        return StepOutcome.DONE_BEFORE
    ctx.state = dict(rnd.state or {})
    start_step(ctx.store, ctx.number, step, ctx.lease)
    try:
        produced = STEPS[RoundStep(step)](ctx)
    except RoundAwaiting as waiting:
        drop_unfinished_run(ctx.store, ctx.number, step, ctx.lease)
        update_round(ctx.store, ctx.number, lease=ctx.lease, awaiting=waiting.reason,
                     task_status=waiting.status)
        ctx.state.update(awaiting=waiting.reason, task_status=waiting.status)
        ctx.log(f"round {ctx.number}: awaiting annotations: {waiting.reason}")
        return StepOutcome.AWAITING
    finish_step(ctx.store, ctx.number, step, lease=ctx.lease, **produced)
    ctx.state.update(produced)
    return StepOutcome.RAN


def advance_round(ctx: RoundContext, run: Callable[[RoundContext, str], str] | None = None) -> RoundStatus:
    """Run the round's remaining steps until it completes or waits for annotators; its status.

    `run` runs one step (default `run_step`; the Prefect flow passes its task wrapper). One driver
    at a time: the round's lease is held throughout, and RoundBusy says who holds it when another
    process does (a `--close` asked for here is stored first, so that driver sees it).
    """
    run = run or run_step
    if ctx.close_now:
        update_round(ctx.store, ctx.number, close_requested=True)  # survives a killed process
    with holding(ctx):
        return _advance(ctx, run)


def _advance(ctx: RoundContext, run: Callable[[RoundContext, str], str]) -> RoundStatus:
    """The steps of `advance_round`, under its lease."""
    for step in ROUND_STEPS:
        if run(ctx, step) == StepOutcome.AWAITING:
            return RoundStatus.AWAITING_ANNOTATIONS
    for earlier in range(1, ctx.number + 1):  # late labels of earlier rounds arrived meanwhile
        if get_round(ctx.store, earlier) is not None:
            refresh_round_report(ctx.store, earlier)
    rnd = get_round(ctx.store, ctx.number)
    assert rnd is not None
    return round_status(rnd)


def refresh_round_report(store: Store, number: int) -> dict[str, Any]:
    """Recount a round's human labels, late arrivals included (called by every later round too)."""
    rnd = get_round(store, number)
    if rnd is None:
        raise KeyError(f"round {number} was never opened")
    report: dict[str, Any] = {"human_labels_now": human_labels(store, number),
                              "late_labels": late_labels(store, rnd),
                              "task_status_now": task_status(store, number).as_dict()}
    update_round(store, number, **report)
    return report


def push_validation_set(store: Store, push: Callable[..., Any], size: int, *, round: int, model_name: str,
                        device: str = "cpu", seed: int = 0, overlap: float | None = None) -> list[int]:
    """`spinetrack val-set`: send `size` real `val` images to Label Studio, pre-annotated by `model_name`.

    Their human labels join the real validation split (`real_validation_instances`); they are
    credited to `round` like any task, and never enter training (their groups are `val`).
    """
    from pipeline.active_learning.pseudo_label import pseudo_label
    from pipeline.model.registry import load_model

    chosen = val_set_candidates(store, size, seed=seed)
    if not chosen:
        return []
    model, _meta = load_model(store, model_name, device=device)
    pseudo_label(store, model, model_name, instance_ids=chosen, round=round)
    push(store, chosen, round, reason=VALIDATION_REASON, overlap=overlap)
    return chosen


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
