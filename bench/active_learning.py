"""Does active learning save human work? The PRODUCTION round against random, over seeds, with intervals.

Smoke (minutes, tiny scale, a try-out --out): python bench/active_learning.py --smoke --out /tmp/al.json
Full (hours, issue 23's design):             python bench/active_learning.py

What runs is the product, not a copy of it: every round is `pipeline.active_learning.loop`'s own
`resolve_settings` → `start_round` → `RoundContext` → `advance_round`, with `RoundSettings` as the
only source of defaults (the bench overrides what it measures: strategy, budget, iterations,
auto-accept, seed, the annotator; and `val_size=0`, see below). Tasks go to a real Label Studio server
this bench starts on 127.0.0.1 (annotation/labelstudio/server.py), pre-annotated by the round's push;
the simulated annotator (annotation/simulated_annotator.py, the only stand-in for people) answers
them through the server's API from the hidden ground truth with click noise; the round's pull
stores them. The pool is pseudo-labelled by the student itself (`--annotator student`, loop.STUDENT),
so the strategies rank by the uncertainty of the model being trained (issue 23, item 2).

The data (one base store, copied for every run so all runs share start models, pool and splits):
- synthetic labels: renders of the independent character (synthetic/character.py) stored with their
  true landmarks (`store_ground_truth`: the loop is measured, not OpenSim IK);
- the pool: for every motion x character kind (`DataSizes.motions` x `characters`), one rendered
  sequence imported as real images with its truth hidden (`import` revisions, never accepted), plus
  the real photos of ../shared/data/real_people whose points map (coco, ochuman);
- the SYNTHETIC validation split: one held-out sequence (another seed) of EVERY kind of the pool, so
  no motion or character is only in validation or only in the pool (>= 200 instances at full scale);
- the REAL validation split: posetrack18, MPII, AI Challenger, CrowdPose and MHP (36 people), imported
  with their own layouts (pipeline/intake/real_samples.py `import_sample`) and pinned to `val`: at
  least 30, so auto-accept can clear its Wilson bound. Real photos carry no spine truth (real spine
  AP is -1). The real validation labels come from the imported files, so the round's `val-set`
  sample is off (`val_size=0`): every human label the bench counts was spent on a pool instance.

Design against noise (issue 23, item 3): `--start-models` start models trained with different seeds
(run seed s starts from start model s mod N, so every strategy sees each start model equally
often), `--seeds` >= 8 per strategy, a pool large enough that the rounds sample at most
`MAX_POOL_SHARE` (20 %) of it (checked), curves over rounds. Per run (strategy x auto-accept x seed)
and round: AP (all, body, feet, spine) on both validation splits as the round's own `evaluate` step
reports them, human labels spent, the correction effort (keypoints moved or placed per task,
pipeline/active_learning/correction_effort.py), auto-accepted labels and how many are good against
the hidden truth, the threshold and Wilson bound the round calibrated, and whose uncertainty the
strategy read (`ranked_by`).

Intervals: seeds are paired (a strategy's seed s and random's seed s share the start model and the
training seeds), and 8 pairs are too few for a percentile bootstrap, whose resamples take at most
8 distinct values and whose intervals are known to be too narrow at that size. The headline
interval is therefore an exact paired sign-flip permutation test (all 2^n sign patterns of the
per-seed differences; under "the strategy is random" each pair's difference is as likely negative
as positive), inverted into a 95 % interval for the mean difference (the shifts it does not reject;
this assumes differences symmetric about their mean). The saving to reach random's final AP uses
the same test on the per-seed annotations needed (pipeline/active_learning/stats.py's rule,
censored at the budget), divided by random's mean need. The percentile bootstrap is kept beside it.
Auto-accept: precision of the auto-accepted labels against the hidden truth, with the one-sided
Wilson lower bound the rounds use (`confidence_z`), and random with auto-accept off as the reference
for the annotations it saved.

Writes bench/results/active_learning.json (+ .png); `--out` elsewhere for a try-out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from bench.common import Run  # noqa: E402
from pipeline import instance_sets  # noqa: E402
from pipeline.active_learning import loop as al  # noqa: E402
from pipeline.active_learning.calibration import wilson_lower_bound  # noqa: E402
from pipeline.active_learning.correction_effort import round_effort  # noqa: E402
from pipeline.active_learning.rounds import get_round  # noqa: E402
from pipeline.active_learning.selection import DEFAULT_STRATEGY, STRATEGIES  # noqa: E402
from pipeline.active_learning.stats import annotations_to_reach, final_difference, savings  # noqa: E402
from pipeline.intake.real_samples import import_sample, real_people_folder, sample_sets  # noqa: E402
from pipeline.splits import assign_splits, assigned_splits  # noqa: E402
from pipeline.store import Store  # noqa: E402

RESULTS = REPO / "bench" / "results"
REAL_PEOPLE = real_people_folder()
METRICS = ("all_AP", "body_AP", "feet_AP", "spine_AP")
PARTS = ("real", "synthetic")
#: Also recorded: mean OKS moves smoothly where AP on a small split moves in coarse steps.
EXTRA = ("mean_oks", "instances")
BASE_INFO = "bench_base.json"
RUN_RECORDS = "bench_run_records.json"  # a finished run's records, with the recipe it ran
#: Real sample sets (pipeline/intake/real_samples.py) in the bench, and the split each is pinned to:
#: the pool's photos, and 36 validation people (halpe is COCO's images again: left out).
REAL_SPLITS = {"coco": "train", "ochuman": "train", "posetrack18": "val", "mpii": "val", "aic": "val",
               "crowdpose": "val", "mhp": "val"}
REAL_SETS = sample_sets(*REAL_SPLITS)
#: Image subsets of the real sample sets are this prefix + the set's name (the pool renders: POOL_SUBSET).
REAL_SUBSET = "real-"
POOL_SUBSET = "pool-render"
BUDGETS = {"smoke": [2], "small": [4], "full": [10, 10, 15, 15, 20]}
ROUND_ITERS = {"smoke": 2, "small": 5, "full": 60}
#: The issue-23 run: random against the uncertainty of the model being trained, TypiClust and the
#: hybrid (diversity and kcenter, at or below random in the previous design, run with --strategies).
DEFAULT_STRATEGIES = ("random", "uncertainty", "typiclust", "hybrid")
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
#: The rounds may sample at most this share of the pool (issue 23: a pool large enough that the
#: strategies have something to choose from to the last round).
MAX_POOL_SHARE = 0.2
#: Headline comparisons: (validation part, metric).
HEADLINES = (("synthetic", "spine_AP"), ("synthetic", "all_AP"), ("real", "body_AP"), ("real", "all_AP"))


@dataclass(frozen=True)
class DataSizes:
    train: tuple[str, ...]  # motions of the synthetic training sequences (the mannequin)
    train_frames: int
    motions: tuple[str, ...]  # motion kinds of the pool AND the synthetic validation split
    characters: tuple[str, ...]  # character kinds of both (synthetic.renderer)
    pool_frames: int  # per pool sequence (one per motion x character)
    val_frames: int  # per held-out validation sequence (one per motion x character, other seed)
    start_iters: int  # training iterations of each start model
    width: int = 320
    height: int = 256

    def kinds(self) -> list[tuple[str, str]]:
        return [(m, c) for m in self.motions for c in self.characters]


ALL_MOTIONS = ("bend", "twist", "walk", "squat", "reach", "mixed")
DATA = {
    "smoke": DataSizes(("bend", "walk"), 6, ("bend", "walk"), ("mannequin", "opensim"), 6, 3, 6, 160, 128),
    "small": DataSizes(("bend", "squat"), 16, ("walk", "twist"), ("mannequin",), 14, 12, 40, 192, 160),
    "full": DataSizes(ALL_MOTIONS, 30, ALL_MOTIONS, ("mannequin", "opensim"), 32, 18, 300),
}


# -- the base store -----------------------------------------------------------------------------------
def _pool_truth(folder: Path) -> Path:
    """The renderer's ground truth without people outside the image (no box, no keypoints)."""
    from synthetic.sample_set import GROUND_TRUTH

    data = json.loads((folder / GROUND_TRUTH).read_text())
    data["annotations"] = [a for a in data["annotations"]
                           if a["bbox"][2] > 1 and a["bbox"][3] > 1 and a.get("num_keypoints", 0) > 0]
    out = folder / "pool_truth.json"
    out.write_text(json.dumps(data) + "\n", encoding="utf-8")
    return out


def _copy_real(work: Path, log: Callable[[str], None]) -> list[tuple[str, str]]:
    """The real sample sets, copied below the Label Studio document root (work/real) in the sample
    folder's own layout (import_sample reads them from there); (name, split) of each copied set."""
    if not REAL_PEOPLE.is_dir():
        log(f"no real sample images at {REAL_PEOPLE}: the pool and validation are renders only")
        return []
    out = []
    for sample in REAL_SETS:
        src = REAL_PEOPLE / sample.coco_file
        if not src.is_file():
            log(f"real set {sample.name}: {src} missing, skipped")
            continue
        for rel in (sample.image_dir, sample.coco_file):
            dst = work / "real" / rel
            if (REAL_PEOPLE / rel).is_dir() and not dst.is_dir():
                shutil.copytree(REAL_PEOPLE / rel, dst)
            elif (REAL_PEOPLE / rel).is_file() and not dst.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REAL_PEOPLE / rel, dst)
        out.append((sample.name, REAL_SPLITS[sample.name]))
    return out


def _render_kinds(work: Path, sizes: DataSizes) -> dict[str, list[tuple[Path, str]]]:
    """Training, pool and held-out validation renders; (folder, kind) each, kind = motion/character.
    Seeds differ per part and kind (the folder is named motion-seedN), so no two share frames."""
    from synthetic.sample_set import SequenceSpec, render_set

    def render(part: str, items: list[tuple[str, str, int, int]]) -> list[tuple[Path, str]]:
        specs = [SequenceSpec(m, seed, frames, width=sizes.width, height=sizes.height, character=c)
                 for m, c, seed, frames in items]
        return list(zip(render_set(work / "renders" / part, specs), [f"{m}/{c}" for m, c, _s, _f in items],
                        strict=True))

    kinds = sizes.kinds()
    return {
        "synthetic": render("synthetic", [(m, "mannequin", 100 + i, sizes.train_frames)
                                          for i, m in enumerate(sizes.train)]),
        "pool": render("pool", [(m, c, 200 + i, sizes.pool_frames) for i, (m, c) in enumerate(kinds)]),
        "val": render("synthetic-val", [(m, c, 300 + i, sizes.val_frames) for i, (m, c) in enumerate(kinds)]),
    }


def _fill_store(store: Store, work: Path, renders: dict[str, list[tuple[Path, str]]],
                log: Callable[[str], None]) -> dict[str, str]:
    """Store the renders and import pool and real sets; the split of every group, pinned."""
    from pipeline.intake.real_import import import_coco
    from synthetic.sample_set import store_ground_truth

    pinned: dict[str, str] = {}
    for part, split in (("synthetic", "train"), ("val", "val")):
        for folder, _kind in renders[part]:
            store_ground_truth(store, folder)
            pinned[folder.name] = split
    for folder, _kind in renders["pool"]:
        group = f"pool/{folder.name}"
        import_coco(store, _pool_truth(folder), image_dir=folder, subset=POOL_SUBSET, group=group,
                    keep_ground_truth=True)
        pinned[group] = "train"
    for name, split in _copy_real(work, log):
        group = f"real/{name}"
        import_sample(store, sample_sets(name)[0], work / "real", subset=f"{REAL_SUBSET}{name}", group=group,
                      keep_ground_truth=True)
        pinned[group] = split
    assign_splits(store, pinned, pinned=pinned)
    return pinned


def _train_start_models(store: Store, sizes: DataSizes, config: str, count: int,
                        log: Callable[[str], None]) -> list[dict[str, Any]]:
    """`count` start models on the same synthetic labels, training seeds 0..count-1: the start
    model is a source of noise the comparison must average over, not one fixed draw."""
    from pipeline.model.train import train

    labels = instance_sets.training_labels(store)
    out = []
    for k in range(count):
        t = time.perf_counter()
        version = train(store, config=config, iters=sizes.start_iters, seed=k, labels=labels,
                        name=f"{config}-start-s{k}")
        out.append({"name": version.name, "seed": k, "train_s": round(time.perf_counter() - t, 1)})
        log(f"start model {version.name}: {sizes.start_iters} iterations in {out[-1]['train_s']:.0f} s")
    return out


def build_base(work: Path, sizes: DataSizes, config: str, start_models: int,
               log: Callable[[str], None]) -> dict[str, Any]:
    """Render, store, import, pin splits and train the start models, once (each run's rounds then
    pseudo-label the pool with the round's annotator, `RoundSettings.annotator`).

    Resumable: a finished base (its info file, same recipe) is reused as it is.
    """
    home = work / "base"
    info_file = home / BASE_INFO
    recipe = {"sizes": asdict(sizes), "config": config, "real": [r.name for r in REAL_SETS],
              "start_models": start_models}
    if info_file.is_file():
        info = dict(json.loads(info_file.read_text()))
        if info.get("recipe") == json.loads(json.dumps(recipe)):
            log(f"base store: reusing {home}")
            return info
    shutil.rmtree(home, ignore_errors=True)
    t0 = time.perf_counter()
    renders = _render_kinds(work, sizes)
    log(f"rendered {len(renders['synthetic'])} synthetic, {len(renders['val'])} validation and "
        f"{len(renders['pool'])} pool sequences in {time.perf_counter() - t0:.0f} s")
    os.environ["SPINETRACK_HOME"] = str(home)
    store = Store(home=home)
    pinned = _fill_store(store, work, renders, log)
    validation = {"real": instance_sets.real_validation_instances(store),
                  "synthetic": instance_sets.synthetic_validation_instances(store)}
    labels = instance_sets.training_labels(store)
    pool_ids = instance_sets.pool_instances(store)
    real_pool = _real_photo_instances(store, pool_ids)
    log(f"store: {len(labels)} synthetic training labels; pool {len(pool_ids)} "
        f"({len(real_pool)} real photos); "
        f"validation {len(validation['real'])} real, {len(validation['synthetic'])} synthetic")
    models = _train_start_models(store, sizes, config, start_models, log)
    store.close()
    info = {
        "recipe": recipe, "start_models": models, "synthetic_labels": len(labels),
        "pool_instances": len(pool_ids), "pool_real_photos": len(real_pool),
        "validation_instances": {k: len(v) for k, v in validation.items()},
        "real_sets": [{"name": g.removeprefix("real/"), "split": sp} for g, sp in pinned.items()
                      if g.startswith("real/")],
        "kinds": {f"pool/{f.name}": k for f, k in renders["pool"]} | {f.name: k for f, k in renders["val"]},
        "sequences": {part: [f.name for f, _k in items] for part, items in renders.items()},
        "build_s": round(time.perf_counter() - t0, 1),
    }
    info_file.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def _real_photo_instances(store: Store, ids: Sequence[int]) -> list[int]:
    return [i for i, img in sorted(store.images_of(ids).items()) if str(img.subset).startswith(REAL_SUBSET)]


# -- one run: R production rounds ---------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    strategy: str
    auto_accept: bool
    seed: int

    @property
    def key(self) -> str:
        return f"{self.strategy}|aa-{'on' if self.auto_accept else 'off'}"

    @property
    def folder(self) -> str:
        return f"{self.strategy}-aa{'on' if self.auto_accept else 'off'}-seed{self.seed}"


def start_model_of(base: dict[str, Any], seed: int) -> str:
    """Run seed s starts from start model s mod N: every strategy meets each start model equally often."""
    models = base["start_models"]
    return str(models[seed % len(models)]["name"])


def _auto_accepted_quality(store: Store, number: int, good_oks: float) -> dict[str, Any]:
    """How many of the round's auto-accepted labels are good (OKS >= good_oks) against hidden truth."""
    from pipeline.evaluate import expected_oks

    auto = store.revisions_for(sources=["pseudo-accepted"], round=number)
    truth = store.latest_revisions([a.instance_id for a in auto], sources=["import"])
    oks = [expected_oks(a.keypoints, truth[a.instance_id].keypoints,
                        area=float(truth[a.instance_id].area or 1.0)) for a in auto if a.instance_id in truth]
    oks = [v for v in oks if not math.isnan(v)]
    good = sum(1 for v in oks if v >= good_oks)
    return {"auto_accepted_scored": len(oks), "auto_accepted_good": good,
            "auto_accepted_precision": good / len(oks) if oks else None}


def _metrics(values: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {part: {k: float((values.get(part) or {}).get(k, math.nan)) for k in (*METRICS, *EXTRA)}
            for part in PARTS}


def finished_records(done_file: Path, recipe: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A finished run's records, when it ran this recipe."""
    if not done_file.is_file():
        return None
    saved = json.loads(done_file.read_text())
    return list(saved["records"]) if saved.get("recipe") == json.loads(json.dumps(recipe)) else None


def run_recipe(base: dict[str, Any], spec: RunSpec, budgets: Sequence[int], round_iters: int, config: str,
               annotator: str, min_real_val: int, teacher: str | None) -> dict[str, Any]:
    """What a run's records depend on: a finished run with the same recipe is reused."""
    recipe = {"base": base.get("recipe"), "start_model": start_model_of(base, spec.seed),
              "budgets": list(budgets), "round_iters": round_iters, "config": config, "annotator": annotator,
              "min_real_val": min_real_val, "spec": asdict(spec)}
    if teacher is not None:  # only then: runs recorded before the option existed stay reusable
        recipe["teacher"] = teacher
    return recipe


def run_one(work: Path, base: dict[str, Any], spec: RunSpec, budgets: Sequence[int], round_iters: int,
            config: str, annotator: str, hooks: Any, min_real_val: int, log: Callable[[str], None],
            step_log: Callable[[str], None], teacher: str | None = None) -> list[dict[str, Any]]:
    """R production rounds on a fresh copy of the base store; one record per round (0 = start model).

    A finished run leaves its records (with the recipe it ran) in its folder; a re-run of the bench
    with the same recipe reads them back instead of running again, so a long bench that was cut
    short continues with the first unfinished run.
    """
    from annotation.simulated_annotator import AnnotatorProfile

    home = work / "runs" / spec.folder
    model = start_model_of(base, spec.seed)
    recipe = run_recipe(base, spec, budgets, round_iters, config, annotator, min_real_val, teacher)
    done_file = home / RUN_RECORDS
    finished = finished_records(done_file, recipe)
    if finished is not None:
        log(f"  {spec.folder:<28} finished before: records reused")
        return finished
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(work / "base", home)
    os.environ["SPINETRACK_HOME"] = str(home)
    store = Store(home=home)
    profile = AnnotatorProfile(pixel_noise=1.5, skip_rate=0.0)
    records: list[dict[str, Any]] = []
    cumulative = effort_total = 0
    for number, budget in enumerate(budgets, start=1):
        t = time.perf_counter()
        given = {"budget": budget, "strategy": spec.strategy, "config": config, "train_iters": round_iters,
                 "auto_accept": spec.auto_accept, "seed": spec.seed, "val_size": 0,
                 "min_real_val": min_real_val, "annotator": annotator, "teacher": teacher}
        settings, _ignored = al.resolve_settings(store, number, given)
        al.start_round(store, number, settings, model)

        def annotate(st: Store, n: int, _seed: int = spec.seed) -> Any:
            return hooks.simulate(st, n, profile=profile, seed=1000 * _seed + n)

        ctx = al.RoundContext(store=store, settings=settings, number=number, push=hooks.push, pull=hooks.pull,
                              annotate=annotate, log=step_log)
        status = al.advance_round(ctx)
        rnd = get_round(store, number)
        assert rnd is not None
        state = dict(rnd.state or {})
        if str(status) != "complete":
            raise RuntimeError(f"{spec.folder} round {number} ended {status}: {state.get('awaiting')}")
        if number == 1:
            records.append({"round": 0, "budget": 0, "human_labels": 0, "cumulative": 0, "effort": 0,
                            "effort_deleted": 0,
                            "cumulative_effort": 0, "metrics": _metrics(state.get("start_metrics") or {})})
        model = str(state["model_version"])
        labels = int(state.get("human_labels", 0))
        effort = round_effort(store, number)
        cumulative += labels
        effort_total += effort.moved
        records.append({
            "round": number, "budget": budget, "human_labels": labels, "cumulative": cumulative,
            "effort": effort.moved, "effort_deleted": effort.deleted, "effort_per_task": effort.per_task,
            "effort_by_group": effort.by_group,
            "cumulative_effort": effort_total,
            "auto_accepted": int(state.get("auto_accepted", 0)),
            "auto_accept_off": state.get("auto_accept_off"),
            **_auto_accepted_quality(store, number, settings.good_oks),
            "threshold": state.get("threshold"), "ranked_by": state.get("ranked_by"),
            "train_labels": int(state.get("train_labels", 0)), "model": model,
            "metrics": _metrics(dict(rnd.metrics or {})), "seconds": round(time.perf_counter() - t, 1),
        })
        r = records[-1]
        log(f"  {spec.folder:<28} round {number}: +{labels} labels ({cumulative}), effort {effort.moved} kp, "
            f"auto {r['auto_accepted']}, synthetic spine AP {r['metrics']['synthetic']['spine_AP']:.3f}, "
            f"real body AP {r['metrics']['real']['body_AP']:.3f} [{r['seconds']:.0f} s]")
    store.close()
    done_file.write_text(json.dumps({"recipe": recipe, "records": records}, default=str) + "\n",
                         encoding="utf-8")
    return records


@dataclass(frozen=True)
class RunJob:
    """What every run shares; picklable, so a worker process can run a RunSpec from it."""
    work: Path
    base: dict[str, Any]
    budgets: Sequence[int]
    round_iters: int
    config: str
    annotator: str
    conn: Any  # annotation.labelstudio.client.Connection
    min_real_val: int
    teacher: str | None
    verbose: bool
    epoch: float  # time.time() of the bench's start: log lines count from it

    def run(self, spec: RunSpec) -> list[dict[str, Any]]:
        from annotation.labelstudio.hooks import LabelStudioHooks

        def log(msg: str) -> None:
            print(f"[{time.time() - self.epoch:6.0f} s] {msg}", flush=True)

        def quiet(_msg: str) -> None:
            """Round steps' own log lines, dropped unless --verbose."""

        return run_one(self.work, self.base, spec, self.budgets, self.round_iters, self.config,
                       self.annotator, LabelStudioHooks(self.conn), self.min_real_val, log,
                       log if self.verbose else quiet, teacher=self.teacher)


def _one_thread() -> None:
    """A worker's torch on one thread: `workers` processes share the cores (training already
    takes cores - 1 threads; inference would take them all)."""
    import warnings

    import torch

    torch.set_num_threads(1)
    # mmengine tells every spawned process that it switches its own start method to fork
    warnings.filterwarnings("ignore", message="Multi-processing start method")


def run_all(job: RunJob, specs: Sequence[RunSpec],
            workers: int) -> Iterator[tuple[RunSpec, list[dict[str, Any]]]]:
    """Every run's records, in `specs` order; `workers` > 1 runs that many at once in spawned
    processes (each run has its own store copy and Label Studio project, so they share nothing)."""
    if workers <= 1:
        for spec in specs:
            yield spec, job.run(spec)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        futures = [pool.submit(job.run, spec) for spec in specs]
        for spec, future in zip(specs, futures, strict=True):
            yield spec, future.result()


# -- summaries ----------------------------------------------------------------------------------------
Runs = dict[str, dict[int, list[dict[str, Any]]]]  # run key -> seed -> records


def curve(records: Sequence[dict[str, Any]], part: str, metric: str) -> tuple[list[float], list[float]]:
    return ([float(r["cumulative"]) for r in records], [float(r["metrics"][part][metric]) for r in records])


def mean_curves(runs: Runs) -> dict[str, list[dict[str, Any]]]:
    """Per run key and round: mean and std over seeds of annotations, effort and every metric."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, by_seed in runs.items():
        rows = []
        for recs in zip(*by_seed.values(), strict=True):
            row: dict[str, Any] = {"round": recs[0]["round"],
                                   "cumulative": float(np.mean([r["cumulative"] for r in recs])),
                                   "effort": float(np.mean([r["effort"] for r in recs])),
                                   "effort_deleted": float(np.mean([r["effort_deleted"] for r in recs])),
                                   "cumulative_effort": float(np.mean([r["cumulative_effort"]
                                                                       for r in recs]))}
            effort = np.array([r["cumulative_effort"] for r in recs], dtype=float)
            row["cumulative_effort_std"] = float(effort.std())
            for part in PARTS:
                for m in (*METRICS, "mean_oks"):
                    v = np.array([r["metrics"][part][m] for r in recs], dtype=float)
                    row[f"{part}_{m}"] = float(v.mean())
                    row[f"{part}_{m}_std"] = float(v.std())
            rows.append(row)
        out[key] = rows
    return out


def sign_flip(diffs: Sequence[float], level: float = 0.95, exact_up_to: int = 16,
              draws: int = 20000) -> dict[str, Any]:
    """Exact paired sign-flip permutation test of mean(diffs) = 0, and its inversion: the 95 %
    interval of shifts d whose test of mean(diffs - d) = 0 is not rejected (two-sided).

    Under "no difference" each pair's sign is a coin flip, so the 2^n sign patterns are equally
    likely: exact at any n, where a percentile bootstrap over 8 pairs is too narrow. Beyond
    `exact_up_to` pairs, `draws` random patterns (seeded) stand in for all of them.
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "pairs": 0}
    if n <= exact_up_to:
        signs = 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(draws, n))

    def p_value(shift: float) -> float:
        x = d - shift
        return float(np.mean(np.abs(signs @ x) >= abs(float(x.sum())) - 1e-12))

    alpha = 1.0 - level
    centre = float(d.mean())
    span = float(np.ptp(d)) + abs(centre) + 1e-9

    def edge(direction: float) -> float:
        inside, outside = centre, centre + direction * span
        while p_value(outside) > alpha:  # widen until rejected (differences all equal: never)
            outside = centre + 2.0 * (outside - centre)
            if abs(outside - centre) > 1e6 * span:  # too few pairs to ever reject (n <= 4)
                return math.copysign(math.inf, direction)
        for _ in range(50):
            mid = 0.5 * (inside + outside)
            inside, outside = (mid, outside) if p_value(mid) > alpha else (inside, mid)
        return inside

    return {"mean": centre, "ci_low": edge(-1.0), "ci_high": edge(1.0), "p_value": p_value(0.0),
            "pairs": n, "test": "paired sign-flip permutation" + (" (exact)" if n <= exact_up_to else "")}


Curves = Sequence[tuple[list[float], list[float]]]


def needed_per_seed(curves: Curves, target: float, budget: float) -> list[float]:
    """Annotations each seed's curve needs to reach `target` (stats.py's rule: linear between
    rounds, a seed that never reaches it counted at the budget)."""
    out = []
    for xs, ys in curves:
        n = annotations_to_reach(xs, ys, target)
        out.append(budget if math.isnan(n) else min(n, budget))
    return out


def saving_interval(rand: Curves, mine: Curves) -> dict[str, Any]:
    """Saving to reach random's final value (mean over its seeds), with the sign-flip interval of
    the paired per-seed difference in annotations needed, divided by random's mean need."""
    target = float(np.mean([c[1][-1] for c in rand]))
    budget = float(np.mean([c[0][-1] for c in rand]))
    theirs, ours = needed_per_seed(rand, target, budget), needed_per_seed(mine, target, budget)
    base = float(np.mean(theirs))
    test = sign_flip([a - b for a, b in zip(theirs, ours, strict=True)])
    scale = base if base > 0 else math.nan
    return {"target": target, "random_needed": base, "needed": float(np.mean(ours)),
            "saved_fraction": test["mean"] / scale, "ci_low": test["ci_low"] / scale,
            "ci_high": test["ci_high"] / scale, "p_value": test["p_value"], "pairs": test["pairs"],
            "test": test["test"], "supported": bool(test["ci_low"] / scale > 0) if base > 0 else False}


def _headline(rand: list[Any], mine: list[Any], resamples: int) -> dict[str, Any]:
    """One (part, metric): the sign-flip saving and equal-budget difference, the bootstrap beside."""
    finals_r, finals_m = [c[1][-1] for c in rand], [c[1][-1] for c in mine]
    return {"saving": saving_interval(rand, mine),
            "final_difference_test": sign_flip([m - r for r, m in zip(finals_r, finals_m, strict=True)]),
            "savings": savings(rand, mine, resamples=resamples).as_dict(),
            "final_difference": final_difference(finals_r, finals_m, resamples=resamples).as_dict()}


def compare(runs: Runs, resamples: int) -> dict[str, Any]:
    """Savings and equal-budget differences of every run key against random with the same
    auto-accept (and random with auto-accept on against off: what auto-accept saved)."""
    out: dict[str, Any] = {}
    for key, by_seed in runs.items():
        aa = key.split("|")[1]
        base_key = "random|aa-off" if key == "random|aa-on" else f"random|{aa}"
        if key == base_key or base_key not in runs:
            continue
        seeds = sorted(set(by_seed) & set(runs[base_key]))
        if not seeds:
            continue
        entry: dict[str, Any] = {"seeds": seeds, "against": base_key}
        for part, metric in HEADLINES:
            rand = [curve(runs[base_key][s], part, metric) for s in seeds]
            mine = [curve(by_seed[s], part, metric) for s in seeds]
            if any(math.isnan(y) or y < 0 for c in rand + mine for y in c[1]):
                entry[f"{part}_{metric}"] = {"note": f"{part} {metric} not measurable here (no ground truth)"}
                continue
            entry[f"{part}_{metric}"] = _headline(rand, mine, resamples)
        effort_r = [float(runs[base_key][s][-1]["cumulative_effort"]) for s in seeds]
        effort_m = [float(by_seed[s][-1]["cumulative_effort"]) for s in seeds]
        entry["cumulative_effort_difference"] = sign_flip([m - r for r, m in
                                                           zip(effort_r, effort_m, strict=True)])
        out[key] = entry
    return out


def auto_accept_precision(by_seed: dict[int, list[dict[str, Any]]], z: float) -> dict[str, Any]:
    """Precision of every auto-accepted label of a run key against the hidden truth, with the
    one-sided Wilson lower bound the rounds calibrate with (`confidence_z`), and the bounds the
    rounds' own thresholds claimed."""
    recs = [r for recs in by_seed.values() for r in recs if r["round"] > 0]
    good = sum(int(r.get("auto_accepted_good") or 0) for r in recs)
    scored = sum(int(r.get("auto_accepted_scored") or 0) for r in recs)
    claimed = [float(t["precision_lower"]) for r in recs
               if (t := r.get("threshold")) and t.get("enabled") and t.get("precision_lower") is not None]
    return {"auto_accepted": sum(int(r.get("auto_accepted") or 0) for r in recs), "scored": scored,
            "good": good, "precision": good / scored if scored else None,
            "wilson_lower": wilson_lower_bound(good, scored, z) if scored else None, "z": z,
            "rounds_with_threshold": len(claimed), "rounds": len(recs),
            "calibrated_lower_mean": float(np.mean(claimed)) if claimed else None}


def per_strategy(runs: Runs, comparisons: dict[str, Any], z: float) -> dict[str, Any]:
    """The issue's table, per run key: savings to random's final synthetic spine AP and real body
    AP with their intervals, the correction effort, and auto-accept precision."""
    out: dict[str, Any] = {}
    for key, by_seed in runs.items():
        last = [recs[-1] for recs in by_seed.values()]
        tasks = sum(int(r.get("human_labels", 0)) for recs in by_seed.values() for r in recs)
        moved = sum(int(r.get("effort", 0)) for recs in by_seed.values() for r in recs)
        entry = comparisons.get(key, {})
        out[key] = {
            "seeds": sorted(by_seed),
            "saving_synthetic_spine_AP": entry.get("synthetic_spine_AP", {}).get("saving"),
            "saving_real_body_AP": entry.get("real_body_AP", {}).get("saving"),
            "correction_effort": {"cumulative_mean": float(np.mean([r["cumulative_effort"] for r in last])),
                                  "per_task": moved / tasks if tasks else None,
                                  "difference_vs_random": entry.get("cumulative_effort_difference")},
            "auto_accept": auto_accept_precision(by_seed, z) if key.endswith("aa-on") else None,
        }
    return out


def _picked(store: Store) -> list[tuple[str, str]]:
    """(subset, group) of every task a run sent to annotators."""
    images = store.images_of(t.instance_id for t in store.tasks())
    return [(images[t.instance_id].subset, images[t.instance_id].group_key) for t in store.tasks()]


def _pool(store: Store) -> list[tuple[str, str]]:
    """(subset, group) of every person a uniform pick draws from: the real photos and the pool
    renders of `train` groups (the base store, before any round)."""
    pairs = store.instances()
    splits = assigned_splits(store)  # read only: groups never assigned are not counted
    return [(img.subset, img.group_key) for img, _ in pairs
            if splits.get(img.group_key) == "train"
            and (img.subset == POOL_SUBSET or img.subset.startswith(REAL_SUBSET))]


def run_picks(store_file: Path, kinds: dict[str, str],
              which: Callable[[Store], list[tuple[str, str]]] = _picked) -> dict[str, Any] | None:
    """What one run sent to annotators, by where it came from: real photos (no spine truth) and
    each motion/character kind of the pool renders. With `_pool` on the base store: the same
    shares for the whole pool (what a uniform pick takes)."""
    if not store_file.is_file():
        return None
    with Store.open(f"sqlite:///{store_file}", home=store_file.parent, migrate=False) as store:
        rows = Counter(which(store))
    total = sum(rows.values())
    if total == 0:
        return None
    by_kind: Counter[str] = Counter()
    for (sub, group), count in rows.items():
        by_kind["real photo" if str(sub).startswith(REAL_SUBSET) else kinds.get(str(group), "other")] += count
    return {"tasks": total, "real_photo_share": by_kind["real photo"] / total,
            "by_kind": {k: v / total for k, v in sorted(by_kind.items())}}


def selection_mix(work: Path, runs: Runs, kinds: dict[str, str]) -> dict[str, Any]:
    """Per strategy: the mean share of each kind (real photos, motion/character) among its picks,
    and across runs the correlation of the real-photo share with the final synthetic spine AP
    (bootstrap interval over runs). The pool's shares are the reference."""
    per_run: list[tuple[str, dict[str, Any], float]] = []
    for key, by_seed in runs.items():
        strategy, aa = key.split("|")
        for seed, recs in by_seed.items():
            picks = run_picks(work / "runs" / RunSpec(strategy, aa == "aa-on", seed).folder / "store.sqlite",
                              kinds)
            if picks is not None:
                per_run.append((key, picks, float(recs[-1]["metrics"]["synthetic"]["spine_AP"])))
    out: dict[str, Any] = {"pool": run_picks(work / "base" / "store.sqlite", kinds, _pool), "by_strategy": {}}
    for key in runs:
        mine = [p for k, p, _ap in per_run if k == key]
        names = sorted({n for p in mine for n in p["by_kind"]})
        if mine:
            out["by_strategy"][key] = {"runs": len(mine), "by_kind": {
                n: float(np.mean([p["by_kind"].get(n, 0.0) for p in mine])) for n in names}}
    x = np.array([p["real_photo_share"] for _k, p, _a in per_run])
    ap = np.array([a for _k, _p, a in per_run])
    if len(per_run) >= 4 and x.std() > 0 and ap.std() > 0:
        rng = np.random.default_rng(0)
        boot = []
        for _ in range(5000):
            i = rng.integers(0, len(x), len(x))
            if x[i].std() > 0 and ap[i].std() > 0:
                boot.append(float(np.corrcoef(x[i], ap[i])[0, 1]))
        out["corr_real_photo_share_final_spine_AP"] = {
            "r": float(np.corrcoef(x, ap)[0, 1]), "ci_low": float(np.percentile(boot, 2.5)),
            "ci_high": float(np.percentile(boot, 97.5)), "runs": len(x)}
    return out


def verdict(comparisons: dict[str, Any], aa: str) -> dict[str, Any]:
    """The winner on synthetic spine AP at equal budget, and whether the issue's goal is met, both
    by the exact paired sign-flip test (`sign_flip`; the bootstrap stays in the comparisons)."""
    name = "synthetic_spine_AP"
    scored = {k.split("|")[0]: v[name] for k, v in comparisons.items()
              if k.endswith(f"|{aa}") and not k.startswith("random|")
              and "final_difference_test" in v.get(name, {})}
    if not scored:
        return {"auto_accept": aa, "note": "nothing to compare"}
    best = max(scored, key=lambda s: scored[s]["final_difference_test"]["mean"])
    diff, sv = scored[best]["final_difference_test"], scored[best]["saving"]
    beats = diff["ci_low"] > 0
    goal = sv["saved_fraction"] >= 0.3 and sv["ci_low"] > 0
    return {
        "auto_accept": aa, "metric": name, "best_strategy": best, "test": diff.get("test"),
        "final_difference_vs_random": diff, "savings_vs_random": sv,
        "beats_random_at_equal_budget": beats, "goal_30pct_met": goal,
        "default_now": DEFAULT_STRATEGY,
        # issue 13: the default is what wins at equal budget, measured; nothing beating random is random
        "recommend_default": best if beats else "random",
        "note": (f"{best} beats random on {name} at equal budget (interval above 0)" if beats else
                 f"no strategy beats random on {name} at equal budget with an interval above 0 "
                 f"(best: {best}, {diff['mean']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}])"),
    }


def limits(runs: Runs, comparisons: dict[str, Any], pool: int, aa: str = "aa-on",
           part: str = "synthetic", metric: str = "spine_AP", goal: float = 0.3) -> dict[str, Any]:
    """What bounds the comparison, in numbers (issue 23: not a guess): how much random's curve
    rises (the slope a strategy can beat), how far seeds scatter (the noise floor), what a 30 %
    saving would need at equal budget, and how much of the pool the rounds sample."""
    rand = runs.get(f"random|{aa}", {})
    if not rand:
        return {"note": f"no random|{aa} runs"}
    starts = [float(recs[0]["metrics"][part][metric]) for recs in rand.values()]
    finals = [float(recs[-1]["metrics"][part][metric]) for recs in rand.values()]
    budget = float(np.mean([recs[-1]["cumulative"] for recs in rand.values()]))
    gains = [f - s for s, f in zip(starts, finals, strict=True)]
    slope = float(np.mean(gains)) / budget if budget else math.nan
    # a linear curve reaching random's final with `goal` fewer annotations is ahead by this much
    needed = slope * goal * budget
    spreads = {}
    for key, entry in comparisons.items():
        test = (entry.get(f"{part}_{metric}") or {}).get("final_difference_test")
        if key.endswith(f"|{aa}") and not key.startswith("random|") and test:
            spreads[key.split("|")[0]] = {"mean": test["mean"],
                                          "half_width": 0.5 * (test["ci_high"] - test["ci_low"])}
    floor = float(np.median([v["half_width"] for v in spreads.values()])) if spreads else math.nan
    return {
        "metric": f"{part}_{metric}", "random_start_mean": float(np.mean(starts)),
        "random_final_mean": float(np.mean(finals)), "random_gain": sign_flip(gains),
        "slope_per_annotation": slope, "budget": budget,
        "difference_needed_for_goal": needed,
        "random_final_sd_over_seeds": float(np.std(finals, ddof=1)) if len(finals) > 1 else math.nan,
        "equal_budget_differences": spreads, "noise_floor_half_width": floor,
        "pool_instances": pool, "sampled_share": budget / pool if pool else math.nan,
        "note": (f"random gains {np.mean(gains):+.3f} {metric} over {budget:.0f} annotations "
                 f"({slope:+.5f} per annotation): a strategy that reached random's final with "
                 f"{goal:.0%} fewer annotations would be about {needed:+.3f} ahead at equal budget, "
                 f"against a 95 % interval half-width of {floor:.3f} for the paired differences "
                 f"over {len(rand)} seeds"),
    }


def auto_accept_verdict(runs: Runs, comparisons: dict[str, Any], z: float) -> dict[str, Any]:
    """Issue 23, items 4 and 5: what auto-accept did over every run with it on (labels accepted,
    their precision against the hidden truth with the Wilson bound, annotations saved against random
    without it) and the setting that follows. Nothing accepted means on and off ran the same procedure."""
    settings = al.RoundSettings()
    on = {k: v for k, v in runs.items() if k.endswith("|aa-on")}
    if not on:
        return {"note": "no run with auto-accept on"}
    pooled = auto_accept_precision({i: recs for i, recs in enumerate(
        recs for by_seed in on.values() for recs in by_seed.values())}, z)
    recs = [r for by_seed in on.values() for recs in by_seed.values() for r in recs if r["round"] > 0]
    lowers = [float(t.get("precision_lower") or 0.0) for r in recs if (t := r.get("threshold"))]
    out: dict[str, Any] = {**pooled, "min_precision": settings.min_precision,
                           "best_calibrated_lower": max(lowers) if lowers else None,
                           "default_now": settings.auto_accept}
    if pooled["auto_accepted"] == 0:
        return out | {
            "saved_annotations": 0, "recommend_auto_accept": settings.auto_accept,
            "note": (f"no round's threshold reached precision {settings.min_precision:.2f} at the Wilson "
                     f"lower bound on the real validation split (best "
                     f"{out['best_calibrated_lower'] or 0:.2f} over {len(recs)} rounds): auto-accept "
                     f"accepted nothing, so it saved and cost nothing and "
                     f"on and off ran the same procedure; the default stands (its bound is the safeguard)")}
    saving = comparisons.get("random|aa-on", {}).get("synthetic_spine_AP", {}).get("saving")
    if saving is None:
        return out | {"recommend_auto_accept": settings.auto_accept,
                      "note": "labels were auto-accepted but random without auto-accept was not run: "
                              "rerun with --aa-baseline always to measure the saving"}
    holds = pooled["wilson_lower"] is not None and pooled["wilson_lower"] >= settings.min_precision
    return out | {"saved_annotations_fraction": saving, "recommend_auto_accept": bool(holds),
                  "note": (f"auto-accepted labels are {pooled['precision']:.2f} precise against the hidden "
                           f"truth (Wilson lower {pooled['wilson_lower']:.2f}, needs "
                           f"{settings.min_precision:.2f}): auto-accept "
                           + ("keeps its promise" if holds else "does not keep its promise: off"))}


COLOURS = {"random": "black", "uncertainty": "#4a90e2", "diversity": "#7ed321", "kcenter": "#9013fe",
           "spine": "#d0021b", "plausibility": "#f5a623", "effort": "#50e3c2", "typiclust": "#8b572a",
           "hybrid": "#bd10e0"}


#: The narrowest AP axis the plot draws (AP units).
MIN_AP_SPAN = 0.05


def plot(curves: dict[str, list[dict[str, Any]]], out_png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("synthetic_spine_AP", "spine AP, synthetic val"),
              ("synthetic_all_AP", "all AP, synthetic val"),
              ("real_body_AP", "body AP, real val"),
              ("cumulative_effort", "keypoints corrected (cumulative)")]
    modes = sorted({k.split("|")[1] for k in curves})
    fig, axes = plt.subplots(len(modes), len(panels), figsize=(4.2 * len(panels), 3.4 * len(modes)), dpi=90,
                             squeeze=False)
    for row, mode in enumerate(modes):
        for col, (key, label) in enumerate(panels):
            ax = axes[row][col]
            for run_key, rows in curves.items():
                strategy, aa = run_key.split("|")
                if aa != mode:
                    continue
                xs = np.array([r["cumulative"] for r in rows])
                ys = np.array([r[key] for r in rows])
                sd = np.array([r.get(f"{key}_std", 0.0) for r in rows])
                colour = COLOURS.get(strategy)
                ax.plot(xs, ys, marker="o", ms=3, label=strategy, color=colour,
                        linestyle="--" if strategy == "random" else "-")
                ax.fill_between(xs, ys - sd, ys + sd, color=colour, alpha=0.12)
            ax.set_title(f"{label} ({mode})", fontsize=9)
            ax.set_xlabel("human annotations (cumulative)", fontsize=8)
            if key.endswith("_AP"):  # a flat curve should look flat, not like a trend of 0.001
                low, high = ax.get_ylim()
                if high - low < MIN_AP_SPAN:
                    mid = 0.5 * (low + high)
                    ax.set_ylim(mid - 0.5 * MIN_AP_SPAN, mid + 0.5 * MIN_AP_SPAN)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def write_results(args: argparse.Namespace, base: dict[str, Any], runs: Runs, budgets: Sequence[int],
                  round_iters: int, started: float, bench_run: Run, *, partial: bool) -> dict[str, Any]:
    """Curves, comparisons, verdict, JSON and plot from the runs so far (after every run, so a
    cut-short bench still leaves its numbers; `partial` marks such a file)."""
    done = {k: v for k, v in runs.items() if v}
    seeds = min(len(v) for v in done.values())
    done = {k: dict(sorted(v.items())[:seeds]) for k, v in done.items()}  # whole seeds of every key
    curves = mean_curves(done)
    comparisons = compare(done, args.resamples)
    modes = sorted({k.split("|")[1] for k in done})
    smoke = (args.smoke or args.data != "full" or list(budgets) != BUDGETS["full"]
             or round_iters != ROUND_ITERS["full"] or len(args.seeds_list) < 8)
    z = al.RoundSettings().confidence_z
    validation = base.get("validation_instances", {})
    result = {
        "partial": partial,
        "scale": "smoke" if smoke else "full",
        "note": ("SMOKE-SCALE run: it shows the benchmark works end to end; its numbers say nothing "
                 "about which strategy wins" if smoke else
                 f"full-scale run, PARTIAL: {seeds} of {len(args.seeds_list)} seeds" if partial
                 else "full-scale run"),
        "seeds": sorted(next(iter(done.values()))),  # those every run key finished (partial: fewer)
        "seeds_planned": args.seeds_list,
        "validation": {"synthetic_instances": validation.get("synthetic"),
                       "real_instances": validation.get("real"),
                       "kinds": sorted(set(base.get("kinds", {}).values())),
                       "real_sets": [r["name"] for r in base.get("real_sets", []) if r["split"] == "val"]},
        "start_models": base.get("start_models"),
        "pool": {"instances": base.get("pool_instances"), "real_photos": base.get("pool_real_photos"),
                 "sampled_share": sum(budgets) / max(1, int(base.get("pool_instances") or 1))},
        "intervals": "exact paired sign-flip permutation test over seeds, inverted to a 95 % interval "
                     "(bench/active_learning.py sign_flip); percentile bootstrap beside it",
        "strategies": per_strategy(done, comparisons, z),
        "settings": {"seeds": args.seeds_list, "rounds": len(budgets), "budgets": list(budgets),
                     "round_iters": round_iters, "strategies": args.strategies,
                     "auto_accept": args.auto_accept,
                     "config": args.config, "annotator": args.annotator, "data": args.data,
                     "min_real_val": args.min_real_val, "teacher": args.teacher,
                     "start_iters": base.get("recipe", {}).get("sizes", {}).get("start_iters"),
                     "resamples": args.resamples, "round_settings_defaults": al.RoundSettings().as_dict()},
        "base": base,
        "curves": curves,
        "comparisons": comparisons,
        "verdict": {m: verdict(comparisons, m) for m in modes},
        "auto_accept": auto_accept_verdict(done, comparisons, z),
        "limits": {m: limits(done, comparisons, int(base.get("pool_instances") or 0), aa=m) for m in modes},
        "selection_mix": selection_mix(args.work.resolve(), done, dict(base.get("kinds", {}))),
        "runs": {k: {str(s): recs for s, recs in v.items()} for k, v in runs.items()},
        "wall_s": round(time.perf_counter() - started, 1),  # this call's (a reusing call: the summary)
        "compute": compute_seconds(base, done, args.workers),
    }
    bench_run.write(finite(result), args.out)  # adds load_average (start and end) and machine
    plot(curves, args.out.with_suffix(".png"),
         f"production rounds, budgets {list(budgets)}, {seeds} seed(s), {result['scale']} scale")
    return result


def compute_seconds(base: dict[str, Any], runs: Runs, workers: int) -> dict[str, Any]:
    """How long the bench takes, from the rounds' own wall times (a reusing call's wall_s only
    measures the summary): the base, the rounds, and what that makes with `workers` at once."""
    rounds = [float(r.get("seconds") or 0.0) for by_seed in runs.values() for recs in by_seed.values()
              for r in recs if r["round"] > 0]
    build = float(base.get("build_s") or 0.0)
    return {"base_build_s": build, "rounds": len(rounds), "round_s_total": round(sum(rounds), 1),
            "round_s_mean": round(float(np.mean(rounds)), 1) if rounds else None, "workers": workers,
            "estimated_wall_h": round((build + sum(rounds) / max(1, workers)) / 3600.0, 2)}


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: standard JSON (an interval too wide to bound, a
    saving against a random that needed nothing, a metric without ground truth)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"scale: {result['scale']} - {result['note']}", ""]
    lines.append("| run | annotations | effort (kp) | synthetic spine AP | synthetic all AP | real body AP |")
    lines.append("|---|---|---|---|---|---|")
    for key, rows in result["curves"].items():
        r = rows[-1]
        lines.append(f"| {key} | {r['cumulative']:.0f} | {r['cumulative_effort']:.0f} | "
                     f"{r['synthetic_spine_AP']:.3f} ± {r['synthetic_spine_AP_std']:.3f} | "
                     f"{r['synthetic_all_AP']:.3f} ± {r['synthetic_all_AP_std']:.3f} | "
                     f"{r['real_body_AP']:.3f} ± {r['real_body_AP_std']:.3f} |")
    lines.append("")
    lines.append("| run | saving to random's final spine AP | saving to random's final real body AP "
                 "| keypoints corrected per task | auto-accept precision (Wilson lower) |")
    lines.append("|---|---|---|---|---|")
    for key, m in result["strategies"].items():
        aa = m.get("auto_accept") or {}
        prec = (f"{aa['precision']:.2f} ({aa['wilson_lower']:.2f}) of {aa['scored']}"
                if aa.get("precision") is not None else "-")
        per_task = m["correction_effort"]["per_task"]
        lines.append(f"| {key} | {_saving_text(m.get('saving_synthetic_spine_AP'))} | "
                     f"{_saving_text(m.get('saving_real_body_AP'))} | "
                     f"{'-' if per_task is None else f'{per_task:.1f}'} | {prec} |")
    mix = result.get("selection_mix") or {}
    for key, m in (mix.get("by_strategy") or {}).items():
        lines.append(f"picks of {key}: " + ", ".join(f"{k} {v:.0%}" for k, v in m["by_kind"].items()))
    for mode, v in result["verdict"].items():
        lines.append(f"verdict ({mode}): {v.get('note')}")
    for mode, v in (result.get("limits") or {}).items():
        lines.append(f"limits ({mode}): {v.get('note')}")
    lines.append(f"auto-accept: {(result.get('auto_accept') or {}).get('note')}")
    return lines


def _saving_text(sv: dict[str, Any] | None) -> str:
    if not sv or sv.get("saved_fraction") is None or math.isnan(sv["saved_fraction"]):
        return "- (random's target needed no annotations)" if sv else "-"
    return f"{sv['saved_fraction']:+.0%} [{sv['ci_low']:+.0%}, {sv['ci_high']:+.0%}]"


# -- main ---------------------------------------------------------------------------------------------
def _preset(value: list[str], table: dict[str, Any], what: str) -> Any:
    if len(value) == 1 and value[0] in table:
        return table[value[0]]
    try:
        return [int(v) for v in value]
    except ValueError:
        raise SystemExit(f"--{what}: expected {' or '.join(table)} or integers, got {value}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spinetrack-bench-al"),
                        help="renders, the base store, one store per run, Label Studio data")
    parser.add_argument("--smoke", action="store_true",
                        help="the whole pipeline at tiny scale in minutes (2 seeds, 2 rounds of 2, 2 "
                             "iterations, 1 start model, random/uncertainty/typiclust/hybrid, smoke "
                             "data): it shows the bench works, its numbers mean nothing")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per strategy, 0 .. N-1 [8]")
    parser.add_argument("--start-models", type=int, default=None,
                        help="start models trained with seeds 0 .. N-1; run seed s starts from s mod N [2]")
    parser.add_argument("--rounds", type=int, default=None, help="[5]")
    parser.add_argument("--budget", nargs="+", default=None,
                        help="human annotations per round: smoke (2), small (4), full (10 10 15 15 20) or "
                             "integers [full]")
    parser.add_argument("--round-iters", default=None, help="fine-tuning iterations per round: smoke (2), "
                        "small (5), full (60) or an integer [full]")
    parser.add_argument("--data", choices=sorted(DATA), default=None, help="render sizes [full]")
    parser.add_argument("--strategies", nargs="+", default=None, choices=sorted(STRATEGIES),
                        help=f"[{' '.join(DEFAULT_STRATEGIES)}]")
    parser.add_argument("--auto-accept", choices=["off", "on", "both"], default="on",
                        help="on: every strategy with auto-accept, plus random without it as the "
                             "reference for what auto-accept saves (see --aa-baseline)")
    parser.add_argument("--aa-baseline", choices=["auto", "always", "never"], default="auto",
                        help="random without auto-accept, the reference for what auto-accept saved: "
                             "auto runs it for the seeds where random with auto-accept accepted a label "
                             "(where it accepted none, the two are the same procedure) [auto]")
    parser.add_argument("--config", default=al.RoundSettings().config)
    parser.add_argument("--annotator", default=al.STUDENT,
                        help="RoundSettings.annotator: who pre-labels the pool and whose uncertainty the "
                             "strategies read [student: the model being trained]")
    parser.add_argument("--teacher", default=al.RoundSettings().teacher,
                        help="a teacher distilled into the student at every retrain (RoundSettings.teacher, "
                             "e.g. blazepose); default: none, as in the production default")
    parser.add_argument("--start-iters", type=int, default=None,
                        help="training iterations of each start model (default: the data preset's)")
    parser.add_argument("--min-real-val", type=int, default=al.RoundSettings().min_real_val,
                        help="RoundSettings.min_real_val (the real validation split holds 36 people)")
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples [5000]")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="runs at once, each in its own process on one torch thread (runs are "
                             "independent: own store copy, own Label Studio project; about 1.6 GB "
                             f"each) [{DEFAULT_WORKERS}: the cores, at most 4]")
    parser.add_argument("--report", action="store_true",
                        help="write the results of the runs finished so far and stop (runs nothing: "
                             "look at a bench that is still running)")
    parser.add_argument("--verbose", action="store_true", help="print every round step's log line")
    parser.add_argument("--rebuild", action="store_true",
                        help="build the base store again (finished runs are reused otherwise)")
    parser.add_argument("--out", type=Path, default=RESULTS / "active_learning.json")
    return parser


def _resolve(args: argparse.Namespace) -> tuple[list[int], int]:
    """Fill the options --smoke sets (a value given explicitly wins); budgets and round iterations."""
    smoke = args.smoke
    defaults = {"seeds": 2 if smoke else 8, "start_models": 1 if smoke else 2, "rounds": 2 if smoke else 5,
                "budget": ["smoke" if smoke else "full"], "round_iters": "smoke" if smoke else "full",
                "data": "smoke" if smoke else "full", "resamples": 200 if smoke else 5000,
                "strategies": list(DEFAULT_STRATEGIES)}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.seeds_list = list(range(args.seeds))
    budget_list = _preset(args.budget, BUDGETS, "budget")
    budgets = [budget_list[min(i, len(budget_list) - 1)] for i in range(args.rounds)]
    iters = ROUND_ITERS[args.round_iters] if args.round_iters in ROUND_ITERS else int(args.round_iters)
    return budgets, iters


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Every run, seed by seed (a bench cut short has whole seeds of every strategy)."""
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.auto_accept]
    specs = []
    for seed in args.seeds_list:
        if args.auto_accept == "on" and args.aa_baseline == "always":
            specs.append(RunSpec("random", False, seed))
        specs += [RunSpec(strategy, aa, seed) for aa in modes for strategy in args.strategies]
    return specs


def baseline_specs(args: argparse.Namespace, runs: Runs) -> list[RunSpec]:
    """`--aa-baseline auto`: random without auto-accept for the seeds where random with it
    accepted a label; where it accepted none, the two runs are the same procedure (auto-accept
    changes nothing but what it accepts): running it again would only draw the annotator's click
    noise and the training's float order anew, around a difference that is zero by construction."""
    if args.auto_accept != "on" or args.aa_baseline != "auto":
        return []
    with_aa = runs.get("random|aa-on", {})
    return [RunSpec("random", False, seed) for seed, recs in sorted(with_aa.items())
            if any(int(r.get("auto_accepted") or 0) > 0 for r in recs)]


def report(args: argparse.Namespace, work: Path, sizes: DataSizes, budgets: Sequence[int], round_iters: int,
           started: float, bench_run: Run) -> None:
    """`--report`: the results of the finished runs of this recipe, without running anything."""
    info_file = work / "base" / BASE_INFO
    if not info_file.is_file():
        raise SystemExit(f"{info_file}: no base store here yet (run the bench first)")
    base = dict(json.loads(info_file.read_text()))
    runs: Runs = {}
    specs = run_specs(args) + [RunSpec("random", False, seed) for seed in args.seeds_list]
    for spec in specs:
        recipe = run_recipe(base, spec, budgets, round_iters, args.config, args.annotator, args.min_real_val,
                            args.teacher)
        records = finished_records(work / "runs" / spec.folder / RUN_RECORDS, recipe)
        if records is not None:
            runs.setdefault(spec.key, {})[spec.seed] = records
    if not runs.get("random|aa-on") and not runs.get("random|aa-off"):
        raise SystemExit(f"{work / 'runs'}: no finished random run of this recipe yet")
    planned = {spec.key for spec in run_specs(args)}
    complete = all(len(runs.get(key, {})) == len(args.seeds_list) for key in planned)
    result = write_results(args, base, runs, budgets, round_iters, started, bench_run, partial=not complete)
    print("\n".join(summary_lines(result)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    budgets, round_iters = _resolve(args)
    if "random" not in args.strategies:
        parser.error("random must be among --strategies: it is the baseline")
    started = time.perf_counter()
    bench_run = Run()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", flush=True)

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.rebuild:  # a new base invalidates every finished run too
        shutil.rmtree(work / "base", ignore_errors=True)
        shutil.rmtree(work / "runs", ignore_errors=True)
    sizes = DATA[args.data]
    if args.start_iters is not None:
        sizes = replace(sizes, start_iters=args.start_iters)
    if args.report:
        report(args, work, sizes, budgets, round_iters, started, bench_run)
        return
    base = build_base(work, sizes, args.config, args.start_models, log)
    if sum(budgets) > MAX_POOL_SHARE * base["pool_instances"]:
        parser.error(f"the rounds would sample {sum(budgets)} of a pool of {base['pool_instances']}: more "
                     f"than {MAX_POOL_SHARE:.0%} (issue 23); a larger --data preset or smaller budgets")

    import signal

    from annotation.labelstudio.client import connection_of
    from annotation.labelstudio.server import start_server, stop_server

    def _terminate(_signum: int, _frame: Any) -> None:
        raise SystemExit(143)  # so `finally` stops the Label Studio server

    signal.signal(signal.SIGTERM, _terminate)
    shutil.rmtree(work / "labelstudio", ignore_errors=True)
    t = time.perf_counter()
    server = start_server(work / "labelstudio", document_root=work)
    log(f"Label Studio answering at {server.url} after {time.perf_counter() - t:.0f} s")
    specs = run_specs(args)
    runs: Runs = {spec.key: {} for spec in specs}
    job = RunJob(work, base, budgets, round_iters, args.config, args.annotator, connection_of(server),
                 args.min_real_val, args.teacher, args.verbose, time.time() - (time.perf_counter() - started))
    try:
        for spec, records in run_all(job, specs, args.workers):
            runs[spec.key][spec.seed] = records
            if all(spec.seed in v for v in runs.values()):
                write_results(args, base, runs, budgets, round_iters, started, bench_run, partial=True)
        baseline = baseline_specs(args, runs)
        if baseline:
            log(f"random with auto-accept accepted labels for seeds {[s.seed for s in baseline]}: "
                f"running random without it for them")
            for spec, records in run_all(job, baseline, args.workers):
                runs.setdefault(spec.key, {})[spec.seed] = records
            for seed, recs in runs["random|aa-on"].items():  # nothing accepted: the same procedure
                runs["random|aa-off"].setdefault(seed, recs)
    finally:
        stop_server(server)
    result = write_results(args, base, runs, budgets, round_iters, started, bench_run, partial=False)
    print()
    print("\n".join(summary_lines(result)))
    log(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
