"""Does active learning save human work? The PRODUCTION round against random, over seeds, with intervals.

Smoke (minutes): python bench/active_learning.py --seeds 2 --rounds 2 --budget small --round-iters small
Full (hours):    python bench/active_learning.py --seeds 5 --rounds 5 --budget full --round-iters full

What runs is the product, not a copy of it: every round is `pipeline.active_learning.loop`'s own
`resolve_settings` → `start_round` → `RoundContext` → `advance_round`, with `RoundSettings` as the
only source of defaults (the bench overrides what it measures: strategy, budget, iterations,
auto-accept, seed; and `val_size=0`, see below). Tasks go to a real Label Studio server this bench
starts on 127.0.0.1 (annotation/labelstudio/server.py), pre-annotated by the round's push; the
simulated annotator (annotation/simulated_annotator.py, the only stand-in for people) answers them
through the server's API from the hidden ground truth with click noise; the round's pull stores them.

The data (one base store, copied for every run so all runs share start model, pool and splits):
- synthetic labels: renders of the independent character (synthetic/character.py) stored with their
  true landmarks (`store_ground_truth`: the loop is measured, not OpenSim IK); one sequence is pinned
  to `val`: the SYNTHETIC validation split (the only one with spine ground truth);
- the pool: renders of other motions and characters imported as real images with their truth hidden
  (`import` revisions, never accepted), plus the real photos of ../shared/data/real_people whose
  COCO-17 ground truth maps in (coco, ochuman in the pool; posetrack18 pinned to `val`: the REAL
  validation split, body points only: real photos carry no spine truth, so real spine AP is -1).
  The real validation labels come from the imported files, so the round's `val-set` sample is off
  (`val_size=0`): every human label the bench counts was spent on a selected pool instance.

Per run (strategy × auto-accept × seed) and round: AP (all, body, feet, spine) on the real and the
synthetic validation split as the round's own `evaluate` step reports them, human labels spent,
auto-accepted labels (and how many of them are good against the hidden truth), and the measured
correction effort (pipeline/active_learning/correction_effort.py: keypoints the annotator moved,
added or deleted against the pre-annotation). Over seeds: annotations each strategy needs to reach
random's final AP with a bootstrap 95 % interval (pipeline/active_learning/stats.py), the
equal-budget difference, and a plot of AP against annotations with bands (mean ± std over seeds).

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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from bench.common import Run  # noqa: E402
from pipeline import instance_sets  # noqa: E402
from pipeline.active_learning import loop as al  # noqa: E402
from pipeline.active_learning.correction_effort import round_effort  # noqa: E402
from pipeline.active_learning.rounds import get_round  # noqa: E402
from pipeline.active_learning.selection import DEFAULT_STRATEGY, STRATEGIES  # noqa: E402
from pipeline.active_learning.stats import final_difference, savings  # noqa: E402
from pipeline.intake.real_samples import real_people_folder, sample_sets  # noqa: E402
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
#: Real sample sets (pipeline/intake/real_samples.py) in the bench, and the split each is pinned to.
REAL_SPLITS = {"coco": "train", "ochuman": "train", "posetrack18": "val"}
REAL_SETS = sample_sets(*REAL_SPLITS)
#: Image subsets of the real sample sets are this prefix + the set's name (the pool renders: POOL_SUBSET).
REAL_SUBSET = "real-"
POOL_SUBSET = "pool-render"
BUDGETS = {"small": [4], "full": [10, 10, 15, 15, 20]}
ROUND_ITERS = {"small": 5, "full": 60}
DEFAULT_STRATEGIES = ("random", "uncertainty", "diversity", "kcenter", "spine", "plausibility", "effort")
#: Headline comparisons: (validation part, metric).
HEADLINES = (("synthetic", "spine_AP"), ("synthetic", "all_AP"), ("real", "body_AP"), ("real", "all_AP"))


@dataclass(frozen=True)
class DataSizes:
    synthetic: tuple[str, ...]  # motions of the synthetic training sequences
    synthetic_frames: int
    val_motion: str  # the synthetic validation sequence
    val_frames: int
    pool: tuple[str, ...]  # motions of the rendered pool sequences
    pool_frames: int
    start_iters: int  # training iterations of the start model
    width: int = 320
    height: int = 256


DATA = {
    "small": DataSizes(("bend", "squat"), 16, "mixed", 12, ("walk", "twist"), 14, 40, 192, 160),
    "full": DataSizes(("bend", "squat", "mixed"), 40, "reach", 40, ("walk", "twist", "reach", "mixed"), 45,
                      150),
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


def _copy_real(work: Path, log: Callable[[str], None]) -> list[tuple[str, Path, Path, str]]:
    """The real sample sets, copied below the Label Studio document root (work/real)."""
    if not REAL_PEOPLE.is_dir():
        log(f"no real sample images at {REAL_PEOPLE}: the pool and validation are renders only")
        return []
    out = []
    for sample in REAL_SETS:
        src = REAL_PEOPLE / sample.coco_file
        if not src.is_file():
            log(f"real set {sample.name}: {src} missing, skipped")
            continue
        dst_dir = work / "real" / sample.name
        if not dst_dir.is_dir():
            shutil.copytree(REAL_PEOPLE / sample.image_dir, dst_dir)
        out.append((sample.name, dst_dir / Path(sample.coco_file).relative_to(sample.image_dir), dst_dir,
                    REAL_SPLITS[sample.name]))
    return out


def build_base(work: Path, sizes: DataSizes, config: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Render, store, import, pin splits and train the start model, once (each run's rounds then
    pseudo-label the pool with the round's annotator, `RoundSettings.annotator`).

    Resumable: a finished base (its info file, same recipe) is reused as it is.
    """
    from pipeline.intake.real_import import import_coco
    from pipeline.model.train import train
    from synthetic.sample_set import SequenceSpec, render_set, store_ground_truth

    home = work / "base"
    info_file = home / BASE_INFO
    recipe = {"sizes": asdict(sizes), "config": config, "real": [r.name for r in REAL_SETS]}
    if info_file.is_file():
        info = dict(json.loads(info_file.read_text()))
        if info.get("recipe") == json.loads(json.dumps(recipe)):
            log(f"base store: reusing {home}")
            return info
    shutil.rmtree(home, ignore_errors=True)
    t0 = time.perf_counter()
    def spec(motion: str, seed: int, frames: int) -> SequenceSpec:
        return SequenceSpec(motion, seed, frames, width=sizes.width, height=sizes.height)

    syn = render_set(work / "renders" / "synthetic",
                     [spec(m, 100 + i, sizes.synthetic_frames) for i, m in enumerate(sizes.synthetic)])
    val = render_set(work / "renders" / "synthetic-val", [spec(sizes.val_motion, 300, sizes.val_frames)])
    pool = render_set(work / "renders" / "pool",
                      [spec(m, 200 + i, sizes.pool_frames) for i, m in enumerate(sizes.pool)])
    log(f"rendered {len(syn)} synthetic, 1 validation and {len(pool)} pool sequences in "
        f"{time.perf_counter() - t0:.0f} s")

    os.environ["SPINETRACK_HOME"] = str(home)
    store = Store(home=home)
    pinned: dict[str, str] = {}
    for folder in syn:
        store_ground_truth(store, folder)
        pinned[folder.name] = "train"
    store_ground_truth(store, val[0])
    pinned[val[0].name] = "val"
    for folder in pool:
        group = f"pool/{folder.name}"
        import_coco(store, _pool_truth(folder), image_dir=folder, subset=POOL_SUBSET, group=group,
                    keep_ground_truth=True)
        pinned[group] = "train"
    real_sets = _copy_real(work, log)
    for name, coco, image_dir, split in real_sets:
        group = f"real/{name}"
        import_coco(store, coco, image_dir=image_dir, subset=f"{REAL_SUBSET}{name}", group=group,
                    keep_ground_truth=True)
        pinned[group] = split
    assign_splits(store, pinned, pinned=pinned)
    validation = {"real": instance_sets.real_validation_instances(store),
                  "synthetic": instance_sets.synthetic_validation_instances(store)}
    labels = instance_sets.training_labels(store)
    pool_ids = instance_sets.pool_instances(store)
    real_pool = _real_photo_instances(store, pool_ids)
    log(f"store: {len(labels)} synthetic training labels; pool {len(pool_ids)} "
        f"({len(real_pool)} real photos); "
        f"validation {len(validation['real'])} real, {len(validation['synthetic'])} synthetic")

    t = time.perf_counter()
    version = train(store, config=config, iters=sizes.start_iters, seed=0, labels=labels,
                    name=f"{config}-start")
    train_s = time.perf_counter() - t
    log(f"start model {version.name}: {sizes.start_iters} iterations in {train_s:.0f} s")
    store.close()
    info = {
        "recipe": recipe, "start_model": version.name, "start_train_s": round(train_s, 1),
        "synthetic_labels": len(labels), "pool_instances": len(pool_ids), "pool_real_photos": len(real_pool),
        "validation_instances": {k: len(v) for k, v in validation.items()},
        "real_sets": [{"name": n, "file": str(c), "split": sp} for n, c, _d, sp in real_sets],
        "sequences": {"synthetic": [d.name for d in syn], "val": val[0].name, "pool": [d.name for d in pool]},
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
    recipe = {"base": base.get("recipe"), "start_model": base.get("start_model"), "budgets": list(budgets),
              "round_iters": round_iters, "config": config, "annotator": annotator,
              "min_real_val": min_real_val, "spec": asdict(spec)}
    if teacher is not None:  # only then: runs recorded before the option existed stay reusable
        recipe["teacher"] = teacher
    done_file = home / RUN_RECORDS
    if done_file.is_file():
        saved = json.loads(done_file.read_text())
        if saved.get("recipe") == json.loads(json.dumps(recipe)):
            log(f"  {spec.folder:<28} finished before: records reused")
            return list(saved["records"])
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(work / "base", home)
    os.environ["SPINETRACK_HOME"] = str(home)
    store = Store(home=home)
    profile = AnnotatorProfile(pixel_noise=1.5, skip_rate=0.0)
    model = str(base["start_model"])
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


def compare(runs: Runs, resamples: int) -> dict[str, Any]:
    """Savings and equal-budget differences of every run key against random with the same auto-accept."""
    out: dict[str, Any] = {}
    for key, by_seed in runs.items():
        strategy, aa = key.split("|")
        base_key = f"random|{aa}"
        if strategy == "random" or base_key not in runs:
            continue
        seeds = sorted(set(by_seed) & set(runs[base_key]))
        if not seeds:
            continue
        entry: dict[str, Any] = {"seeds": seeds}
        for part, metric in HEADLINES:
            name = f"{part}_{metric}"
            rand = [curve(runs[base_key][s], part, metric) for s in seeds]
            mine = [curve(by_seed[s], part, metric) for s in seeds]
            if any(math.isnan(y) or y < 0 for c in rand + mine for y in c[1]):
                entry[name] = {"note": f"{part} {metric} not measurable here (no ground truth)"}
                continue
            sv = savings(rand, mine, resamples=resamples)
            diff = final_difference([c[1][-1] for c in rand], [c[1][-1] for c in mine], resamples=resamples)
            entry[name] = {"savings": sv.as_dict(), "final_difference": diff.as_dict()}
        effort_r = [float(runs[base_key][s][-1]["cumulative_effort"]) for s in seeds]
        effort_m = [float(by_seed[s][-1]["cumulative_effort"]) for s in seeds]
        entry["cumulative_effort_difference"] = final_difference(effort_r, effort_m,
                                                                 resamples=resamples).as_dict()
        out[key] = entry
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


def run_picks(store_file: Path, val_motion: str,
              which: Callable[[Store], list[tuple[str, str]]] = _picked) -> dict[str, Any] | None:
    """What one run sent to annotators, by where it came from: real photos (COCO-17 truth, no
    spine), the pool sequence of the synthetic validation split's motion, other pool renders.
    With `_pool` on the base store: the same shares for the whole pool."""
    if not store_file.is_file():
        return None
    with Store.open(f"sqlite:///{store_file}", home=store_file.parent, migrate=False) as store:
        rows = Counter(which(store))
    total = sum(rows.values())
    if total == 0:
        return None
    real = sum(c for (sub, _g), c in rows.items() if str(sub).startswith(REAL_SUBSET))
    same = sum(c for (sub, g), c in rows.items() if not str(sub).startswith(REAL_SUBSET)
               and str(g).split("/")[-1].startswith(f"{val_motion}-"))
    return {"tasks": total, "real_photo_share": real / total, "val_motion_share": same / total,
            "by_group": {str(g): int(c) for (_s, g), c in sorted(rows.items())}}


def selection_mix(work: Path, runs: Runs, val_motion: str) -> dict[str, Any]:
    """Per strategy: the mean shares of real photos and of validation-motion renders among its picks,
    and across runs, their correlation with the final synthetic spine AP (with a bootstrap interval).

    The pool's share of each is the reference: a uniform pick takes them at that rate.
    """
    per_run: list[tuple[str, dict[str, Any], float]] = []
    for key, by_seed in runs.items():
        strategy, aa = key.split("|")
        for seed, recs in by_seed.items():
            picks = run_picks(work / "runs" / RunSpec(strategy, aa == "aa-on", seed).folder / "store.sqlite",
                              val_motion)
            if picks is not None:
                per_run.append((key, picks, float(recs[-1]["metrics"]["synthetic"]["spine_AP"])))
    pool = run_picks(work / "base" / "store.sqlite", val_motion, _pool)
    out: dict[str, Any] = {"val_motion": val_motion, "by_strategy": {},
                           "pool": {k: v for k, v in (pool or {}).items() if k != "by_group"}}
    for key in runs:
        mine = [p for k, p, _ap in per_run if k == key]
        if mine:
            out["by_strategy"][key] = {
                "runs": len(mine),
                "real_photo_share": float(np.mean([p["real_photo_share"] for p in mine])),
                "val_motion_share": float(np.mean([p["val_motion_share"] for p in mine])),
            }
    if len(per_run) >= 4:
        ap = np.array([a for _k, _p, a in per_run])
        rng = np.random.default_rng(0)
        for name in ("val_motion_share", "real_photo_share"):
            x = np.array([p[name] for _k, p, _a in per_run])
            if x.std() == 0 or ap.std() == 0:
                continue
            boot = []
            for _ in range(5000):
                i = rng.integers(0, len(x), len(x))
                if x[i].std() > 0 and ap[i].std() > 0:
                    boot.append(float(np.corrcoef(x[i], ap[i])[0, 1]))
            out[f"corr_{name}_final_spine_AP"] = {
                "r": float(np.corrcoef(x, ap)[0, 1]), "ci_low": float(np.percentile(boot, 2.5)),
                "ci_high": float(np.percentile(boot, 97.5)), "runs": len(x)}
    return out


def verdict(comparisons: dict[str, Any], aa: str) -> dict[str, Any]:
    """The winner on synthetic spine AP at equal budget, and whether the issue's goal is met."""
    name = "synthetic_spine_AP"
    scored = {k.split("|")[0]: v[name] for k, v in comparisons.items()
              if k.endswith(f"|{aa}") and "final_difference" in v.get(name, {})}
    if not scored:
        return {"auto_accept": aa, "note": "nothing to compare"}
    best = max(scored, key=lambda s: scored[s]["final_difference"]["mean"])
    diff, sv = scored[best]["final_difference"], scored[best]["savings"]
    beats = diff["ci_low"] > 0
    goal = sv["saved_fraction"] >= 0.3 and sv["ci_low"] > 0
    return {
        "auto_accept": aa, "metric": name, "best_strategy": best,
        "final_difference_vs_random": diff, "savings_vs_random": sv,
        "beats_random_at_equal_budget": beats, "goal_30pct_met": goal,
        "default_now": DEFAULT_STRATEGY,
        # issue 13: the default is what wins at equal budget, measured; nothing beating random is random
        "recommend_default": best if beats else "random",
        "note": (f"{best} beats random on {name} at equal budget (interval above 0)" if beats else
                 f"no strategy beats random on {name} at equal budget with an interval above 0 "
                 f"(best: {best}, {diff['mean']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}])"),
    }


COLOURS = {"random": "black", "uncertainty": "#4a90e2", "diversity": "#7ed321", "kcenter": "#9013fe",
           "spine": "#d0021b", "plausibility": "#f5a623", "effort": "#50e3c2"}


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
    done = {k: dict(sorted(v.items())[:seeds]) for k, v in done.items()}
    curves = mean_curves(done)
    comparisons = compare(done, args.resamples)
    modes = sorted({k.split("|")[1] for k in done})
    smoke = args.budget == ["small"] or args.round_iters == "small" or len(args.seeds_list) < 5
    result = {
        "partial": partial,
        "scale": "smoke" if smoke else "full",
        "note": ("SMOKE-SCALE run under load: it shows the benchmark works end to end; its numbers say "
                 "nothing about which strategy wins" if smoke else "full-scale run"),
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
        "selection_mix": selection_mix(args.work.resolve(), done,
                                       str(base.get("recipe", {}).get("sizes", {}).get("val_motion", ""))),
        "runs": {k: {str(s): recs for s, recs in v.items()} for k, v in runs.items()},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    bench_run.write(result, args.out)  # adds load_average (start and end of the run) and machine
    plot(curves, args.out.with_suffix(".png"),
         f"production rounds, budgets {list(budgets)}, {seeds} seed(s), {result['scale']} scale")
    return result


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
    for key, entry in result["comparisons"].items():
        sp = entry.get("synthetic_spine_AP", {})
        if "savings" in sp:
            sv, d = sp["savings"], sp["final_difference"]
            lines.append(f"{key}: synthetic spine AP saving {sv['saved_fraction']:+.0%} "
                         f"[{sv['ci_low']:+.0%}, {sv['ci_high']:+.0%}], at equal budget {d['mean']:+.3f} "
                         f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    mix = result.get("selection_mix") or {}
    if mix.get("by_strategy"):
        pool = mix.get("pool") or {}
        lines.append(f"picks: share of real photos / of {mix['val_motion']!r} renders (the synthetic "
                     f"validation motion); the pool holds {pool.get('real_photo_share', float('nan')):.0%} / "
                     f"{pool.get('val_motion_share', float('nan')):.0%}")
        for key, m in mix["by_strategy"].items():
            lines.append(f"  {key}: {m['real_photo_share']:.0%} / {m['val_motion_share']:.0%}")
        for name in ("val_motion_share", "real_photo_share"):
            c = mix.get(f"corr_{name}_final_spine_AP")
            if c:
                lines.append(f"  correlation of {name} with final synthetic spine AP over {c['runs']} runs: "
                             f"{c['r']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]")
    for mode, v in result["verdict"].items():
        lines.append(f"verdict ({mode}): {v.get('note')}")
    return lines


# -- main ---------------------------------------------------------------------------------------------
def _preset(value: list[str], table: dict[str, Any], what: str) -> Any:
    if len(value) == 1 and value[0] in table:
        return table[value[0]]
    try:
        return [int(v) for v in value]
    except ValueError:
        raise SystemExit(f"--{what}: expected {' or '.join(table)} or integers, got {value}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spinetrack-bench-al"),
                        help="renders, the base store, one store per run, Label Studio data")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per strategy (0 .. N-1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", nargs="+", default=["full"],
                        help="human annotations per round: small (4 each), full (10 10 15 15 20) or integers")
    parser.add_argument("--round-iters", default="full", help="fine-tuning iterations per round: small (5), "
                        "full (60) or an integer")
    parser.add_argument("--data", choices=sorted(DATA), default=None,
                        help="render sizes (default: small with --budget small, else full)")
    parser.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES),
                        choices=sorted(STRATEGIES))
    parser.add_argument("--auto-accept", choices=["off", "on", "both"], default="both")
    parser.add_argument("--config", default=al.RoundSettings().config)
    parser.add_argument("--annotator", default=al.RoundSettings().annotator,
                        help="RoundSettings.annotator: who pre-labels the pool (pipeline.annotators spec)")
    parser.add_argument("--teacher", default=al.RoundSettings().teacher,
                        help="a teacher distilled into the student at every retrain (RoundSettings.teacher, "
                             "e.g. blazepose); default: none, as in the production default")
    parser.add_argument("--start-iters", type=int, default=None,
                        help="training iterations of the start model (default: the data preset's); "
                             "another value builds another base store, so give it its own --work")
    parser.add_argument("--min-real-val", type=int, default=10,
                        help="RoundSettings.min_real_val: the real validation split here is small")
    parser.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples")
    parser.add_argument("--verbose", action="store_true", help="print every round step's log line")
    parser.add_argument("--rebuild", action="store_true",
                        help="build the base store again (finished runs are reused otherwise)")
    parser.add_argument("--out", type=Path, default=RESULTS / "active_learning.json")
    args = parser.parse_args(argv)
    if "random" not in args.strategies:
        parser.error("random must be among --strategies: it is the baseline")
    args.seeds_list = list(range(args.seeds))
    budget_list = _preset(args.budget, BUDGETS, "budget")
    budgets = [budget_list[min(i, len(budget_list) - 1)] for i in range(args.rounds)]
    round_iters = ROUND_ITERS[args.round_iters] if args.round_iters in ROUND_ITERS else int(args.round_iters)
    data = args.data or ("small" if args.budget == ["small"] else "full")
    args.data = data

    started = time.perf_counter()
    bench_run = Run()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", flush=True)

    def quiet(_msg: str) -> None:
        """Round steps' own log lines, dropped unless --verbose."""

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.rebuild:  # a new base invalidates every finished run too
        shutil.rmtree(work / "base", ignore_errors=True)
        shutil.rmtree(work / "runs", ignore_errors=True)
    sizes = DATA[data] if args.start_iters is None else replace(DATA[data], start_iters=args.start_iters)
    base = build_base(work, sizes, args.config, log)
    if base["pool_instances"] < sum(budgets):
        parser.error(f"pool of {base['pool_instances']} instances is smaller than the "
                     f"{sum(budgets)} budgeted")

    import signal

    from annotation.labelstudio.client import connection_of
    from annotation.labelstudio.hooks import LabelStudioHooks
    from annotation.labelstudio.server import start_server, stop_server

    def _terminate(_signum: int, _frame: Any) -> None:
        raise SystemExit(143)  # so `finally` stops the Label Studio server

    signal.signal(signal.SIGTERM, _terminate)
    shutil.rmtree(work / "labelstudio", ignore_errors=True)
    t = time.perf_counter()
    server = start_server(work / "labelstudio", document_root=work)
    log(f"Label Studio answering at {server.url} after {time.perf_counter() - t:.0f} s")
    hooks = LabelStudioHooks(connection_of(server))
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.auto_accept]
    runs: Runs = {}
    try:
        for seed in args.seeds_list:
            for aa in modes:
                for strategy in args.strategies:
                    spec = RunSpec(strategy, aa, seed)
                    runs.setdefault(spec.key, {})[seed] = run_one(
                        work, base, spec, budgets, round_iters, args.config, args.annotator, hooks,
                        args.min_real_val, log,
                        log if args.verbose else quiet, teacher=args.teacher)
            write_results(args, base, runs, budgets, round_iters, started, bench_run, partial=True)
    finally:
        stop_server(server)
    result = write_results(args, base, runs, budgets, round_iters, started, bench_run, partial=False)
    print()
    print("\n".join(summary_lines(result)))
    log(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
