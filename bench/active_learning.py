"""Does our selection beat random? Active-learning rounds on rendered data with known ground truth.

Usage: python bench/active_learning.py [--rounds 3] [--budget 15] [--seeds 0 1]
       [--strategies random uncertainty diversity spine] [--work DIR] [--auto-accept] ...

The data: a few rendered sequences are ingested as synthetic training labels (OpenSim IK) and train
a deliberately weak start model; rendered sequences of OTHER motions and seeds are imported as the
"real" pool with their ground truth hidden (`import` revisions, accepted=False), and one of them is
pinned to `val`: the fixed validation split every round is scored on. The base store is built
once; every (strategy, seed) run starts from a copy of it, so all runs see the same start model,
pool and validation split and differ only in what they select (and the training seed).

Each run walks R rounds of pipeline.active_learning with budget B. Annotation is an in-process
oracle (`OracleAnnotations`): it copies the hidden ground truth of exactly the selected instances
as `human` labels, so the benchmark measures the selection strategies, not Label Studio. By default
auto-accept is off, so the budgeted human labels are the only thing that differs between strategies.
Training: `--batch-size` and `--loss-weights` go to the start model and to every round's retrain
(`retrain_with_batch`: step_retrain plus those two arguments, which RoundSettings lacks).

Output: a table of validation AP (mean ± std over seeds) per strategy and round, how many human
annotations the best strategy needs to reach random's final AP, bench/results/active_learning.json
and bench/results/active_learning.png (AP against cumulative annotations, one line per strategy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from pipeline.active_learning import (  # noqa: E402
    RoundContext,
    RoundSettings,
    pool_instances,
    run_step,
    start_round,
    training_labels,
    validate,
    validation_instances,
)
from pipeline.real_import import import_coco  # noqa: E402
from pipeline.rounds import ROUND_STEPS, finish_step, get_round, step_done  # noqa: E402
from pipeline.selection import STRATEGIES  # noqa: E402
from pipeline.splits import assign_splits  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.store.models import AnnotationTask, Image, Revision  # noqa: E402
from synthetic.sample_set import GROUND_TRUTH, SequenceSpec, render_set  # noqa: E402

RESULTS = REPO / "bench" / "results"
METRICS = ("all_AP", "body_AP", "feet_AP", "spine_AP")
BASE_INFO = "bench_base.json"
POOL_TRUTH = "pool_truth.json"  # the renderer's ground truth minus people outside the image


# -- the oracle annotator ---------------------------------------------------------------------------
@dataclass
class OracleAnnotations:
    """BENCHMARK ONLY: an annotation backend that answers every task with the hidden ground truth.

    `push` records the round's selected instances as AnnotationTask rows (so `pool_instances` never
    offers them again), `annotate` writes each task's hidden `import` revision as an accepted `human`
    revision and closes the task, `pull` has nothing to fetch. A perfect, instant annotator: what a
    strategy gains here is the upper bound of what it gains with people.
    """

    annotator: str = "oracle"
    written: dict[int, int] = field(default_factory=dict)  # round -> human revisions written

    def push(self, store: Store, instance_ids: Sequence[int], number: int) -> dict[str, int]:
        with store.session() as s:
            known = set(s.scalars(select(AnnotationTask.instance_id).where(AnnotationTask.round == number)))
            new = [int(i) for i in dict.fromkeys(instance_ids) if int(i) not in known]
            s.add_all(AnnotationTask(instance_id=i, round=number, state="open", reason="uncertain")
                      for i in new)
        return {"tasks": len(known) + len(new), "created": len(new)}

    def annotate(self, store: Store, number: int) -> int:
        with store.session() as s:
            tasks = list(s.scalars(select(AnnotationTask).where(
                AnnotationTask.round == number, AnnotationTask.state == "open")))
            ids = [t.instance_id for t in tasks]
            truth: dict[int, Revision] = {}
            for hidden in s.scalars(select(Revision).where(
                    Revision.instance_id.in_(ids), Revision.source == "import").order_by(Revision.id)):
                truth[hidden.instance_id] = hidden
        written = 0
        for task in tasks:
            rev = truth.get(task.instance_id)
            if rev is None:
                continue  # no hidden truth: the task stays open, as with an absent annotator
            rid = store.add_revision(
                task.instance_id, rev.keypoints, rev.bbox, area=rev.area, source="human", accepted=True,
                annotator=self.annotator, round=number, provenance={"oracle_of_revision": rev.id},
                external_id=f"oracle:{number}:{task.instance_id}",
            )
            written += rid is not None
        with store.session() as s:
            for task in s.scalars(select(AnnotationTask).where(
                    AnnotationTask.round == number, AnnotationTask.instance_id.in_(list(truth)))):
                task.state = "done"
        self.written[number] = self.written.get(number, 0) + written
        return written

    def pull(self, store: Store) -> None:
        """Nothing to fetch: `annotate` wrote the labels straight into the store."""


# -- the base store -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSizes:
    synthetic: tuple[str, ...]  # motions of the synthetic training sequences
    pool: tuple[str, ...]  # motions of the "real" pool sequences
    val_motion: str
    synthetic_frames: int
    pool_frames: int
    val_frames: int


def _pool_truth(folder: Path) -> Path:
    """The renderer's ground truth without people that are not in the image (no box, no keypoints)."""
    data = json.loads((folder / GROUND_TRUTH).read_text())
    data["annotations"] = [a for a in data["annotations"]
                           if a["bbox"][2] > 1 and a["bbox"][3] > 1 and a.get("num_keypoints", 0) > 0]
    out = folder / POOL_TRUTH
    out.write_text(json.dumps(data) + "\n", encoding="utf-8")
    return out


def build_base(work: Path, sizes: DataSizes, *, config: str, start_iters: int, batch_size: int | None,
               log: Callable[[str], None], loss_weights: dict[str, float] | None = None) -> dict[str, Any]:
    """Render, ingest, import, split, train the start model and pseudo-label the pool, once.

    Resumable: a finished base (its info file) is reused as it is.
    """
    home = work / "base"
    info_file = home / BASE_INFO
    recipe = {"sizes": asdict(sizes), "config": config, "start_iters": start_iters, "batch_size": batch_size,
              "loss_weights": loss_weights}
    if info_file.is_file():
        info = dict(json.loads(info_file.read_text()))
        if info.get("recipe") == json.loads(json.dumps(recipe)):
            log(f"base store: reusing {home}")
            return info
        log("base store: built with other settings, building it again")
    if home.exists():
        shutil.rmtree(home)
    renders = work / "renders"
    t0 = time.perf_counter()
    syn_specs = [SequenceSpec(m, 100 + i, sizes.synthetic_frames) for i, m in enumerate(sizes.synthetic)]
    pool_specs = [SequenceSpec(m, 200 + i, sizes.pool_frames) for i, m in enumerate(sizes.pool)]
    val_spec = SequenceSpec(sizes.val_motion, 300, sizes.val_frames)
    syn_dirs = render_set(renders / "synthetic", syn_specs)
    pool_dirs = render_set(renders / "pool", [*pool_specs, val_spec])
    log(f"rendered {len(syn_dirs)} synthetic + {len(pool_dirs)} pool sequences "
        f"in {time.perf_counter() - t0:.0f} s")

    os.environ["SPINETRACK_HOME"] = str(home)
    store = Store(home=home)
    from synthetic.ingest import ingest_sequence  # OpenSim loads slowly: only here

    t = time.perf_counter()
    for folder in syn_dirs:
        ingest_sequence(store, folder)
    log(f"ingested synthetic labels in {time.perf_counter() - t:.0f} s")
    for folder in pool_dirs:
        import_coco(store, _pool_truth(folder), image_dir=folder, subset=f"pool-{folder.name}",
                    keep_ground_truth=True)
    with store.session() as s:
        rows = s.execute(select(Image.group_key, Image.subset, Image.source).distinct()).all()
    val_subset = f"pool-{pool_dirs[-1].name}"
    pinned = {g: ("val" if subset == val_subset else "train") for g, subset, _src in rows}
    assign_splits(store, pinned, pinned=pinned)
    val_ids = validation_instances(store)
    pool_size = len(store.unlabelled_instances(image_source="real")) - len(val_ids)
    labels = training_labels(store)
    log(f"store: {len(labels)} synthetic training labels, pool of {pool_size} real instances, "
        f"{len(val_ids)} validation instances")

    from pipeline.model.registry import load_model
    from pipeline.model.train import train
    from pipeline.pseudo_label import pseudo_label

    t = time.perf_counter()
    version = train(store, config=config, iters=start_iters, seed=0, labels=labels, batch_size=batch_size,
                    loss_weights=loss_weights)
    train_s = time.perf_counter() - t
    model, _ = load_model(store, version.name)
    start_metrics = validate(store, model).metrics
    log(f"start model {version.name}: {start_iters} iters in {train_s:.0f} s; validation "
        + ", ".join(f"{k} {start_metrics.get(k, float('nan')):.3f}" for k in METRICS))
    # round 1 of every run starts by pseudo-labelling the pool with this model: do it once here
    t = time.perf_counter()
    pseudo_label(store, model, version.name, instance_ids=pool_instances(store), round=1)
    log(f"pseudo-labelled the pool with the start model in {time.perf_counter() - t:.0f} s")
    store.engine.dispose()
    info = {
        "recipe": recipe,
        "start_model": version.name,
        "start_metrics": start_metrics,
        "start_train_s": round(train_s, 1),
        "synthetic_labels": len(labels),
        "pool_instances": pool_size,
        "validation_instances": len(val_ids),
        "sequences": {"synthetic": [d.name for d in syn_dirs], "pool": [d.name for d in pool_dirs[:-1]],
                      "val": pool_dirs[-1].name},
        "build_s": round(time.perf_counter() - t0, 1),
    }
    info_file.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


# -- one (strategy, seed) run -------------------------------------------------------------------------
def retrain_with_batch(ctx: RoundContext, batch_size: int | None,
                       loss_weights: dict[str, float] | None = None) -> dict[str, Any]:
    """pipeline.active_learning.step_retrain with a batch size and loss weights (RoundSettings has
    neither): the same labels, parent, seed and model name, only smaller batches so a round fits 2
    shared CPU cores, and the loss weights the start model was trained with."""
    from pipeline.model.registry import get_version
    from pipeline.model.train import train

    s = ctx.settings
    labels = training_labels(ctx.store)
    name = f"{s.config}-round{ctx.number}-{ctx.store.snapshot_id(labels)[:10]}"
    if get_version(ctx.store, name) is None:
        train(ctx.store, config=s.config, iters=s.train_iters, parent=ctx.state["start_model"],
              seed=s.seed + ctx.number, device=s.device, labels=labels, name=name, batch_size=batch_size,
              loss_weights=loss_weights)
    return {"model_version": name, "train_labels": len(labels)}


def run_round_step(ctx: RoundContext, step: str, batch_size: int | None,
                   loss_weights: dict[str, float] | None = None) -> None:
    """`run_step`, except that `retrain` uses `retrain_with_batch` when a batch size or loss
    weights are given."""
    if step != "retrain" or (batch_size is None and loss_weights is None):
        run_step(ctx, step)
        return
    rnd = get_round(ctx.store, ctx.number)
    assert rnd is not None
    if step_done(rnd, step):
        return
    ctx.state = dict(rnd.state or {})
    produced = retrain_with_batch(ctx, batch_size, loss_weights)
    finish_step(ctx.store, ctx.number, step, **produced)
    ctx.state.update(produced)


def _silent(_message: str) -> None:
    """The round steps' own log lines, dropped unless --verbose: the bench prints one line a round."""


def run_strategy(work: Path, base: dict[str, Any], strategy: str, seed: int, settings: RoundSettings,
                 rounds: int, log: Callable[[str], None], step_log: Callable[[str], None] = _silent,
                 batch_size: int | None = None, loss_weights: dict[str, float] | None = None,
                 ) -> list[dict[str, Any]]:
    """R rounds on a fresh copy of the base store; one record per round (round 0 = start model)."""
    home = work / "runs" / f"{strategy}-seed{seed}"
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(work / "base", home)
    os.environ["SPINETRACK_HOME"] = str(home)
    store = Store(home=home)
    oracle = OracleAnnotations()
    records: list[dict[str, Any]] = [{"round": 0, "human_labels": 0, "cumulative": 0, "seconds": 0.0,
                **{k: float(base["start_metrics"].get(k, float("nan"))) for k in METRICS}}]
    model = base["start_model"]
    cumulative = 0
    for number in range(1, rounds + 1):
        t = time.perf_counter()
        start_round(store, number, settings, model)
        ctx = RoundContext(store=store, settings=settings, number=number, push=oracle.push,
                           pull=oracle.pull, annotate=oracle.annotate, log=step_log)
        for step in ROUND_STEPS:
            run_round_step(ctx, step, batch_size, loss_weights)
        rnd = get_round(store, number)
        assert rnd is not None
        state = dict(rnd.state or {})
        model = str(state["model_version"])
        labels = int(state.get("human_labels", 0))
        cumulative += labels
        metrics = dict(rnd.metrics or {})
        records.append({"round": number, "human_labels": labels, "cumulative": cumulative,
                        "auto_accepted": int(state.get("auto_accepted", 0)),
                        "train_labels": int(state.get("train_labels", 0)), "model": model,
                        "seconds": round(time.perf_counter() - t, 1),
                        **{k: float(metrics.get(k, float("nan"))) for k in METRICS}})
        start_ap = records[0]["all_AP"]
        if start_ap > 0.05 and records[-1]["all_AP"] < 0.5 * start_ap:
            log(f"  WARNING: all AP fell from {start_ap:.3f} to {records[-1]['all_AP']:.3f} after "
                "fine-tuning with more labels: does `train(parent=...)` keep the parent's weights?")
        log(f"  {strategy:<11} seed {seed} round {number}: +{labels} labels ({cumulative} total), "
            f"all AP {records[-1]['all_AP']:.3f}, spine AP {records[-1]['spine_AP']:.3f} "
            f"[{records[-1]['seconds']:.0f} s]")
    store.engine.dispose()
    return records


# -- summaries ----------------------------------------------------------------------------------------
def mean_curves(runs: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, list[dict[str, float]]]:
    """Per strategy and round: mean and std over seeds of cumulative labels and each metric."""
    out: dict[str, list[dict[str, float]]] = {}
    for strategy, by_seed in runs.items():
        per_round = zip(*by_seed.values(), strict=True)
        rows = []
        for recs in per_round:
            row: dict[str, float] = {"round": float(recs[0]["round"]),
                                     "cumulative": float(np.mean([r["cumulative"] for r in recs]))}
            for k in METRICS:
                values = np.array([r[k] for r in recs], dtype=float)
                row[k] = float(np.mean(values))
                row[f"{k}_std"] = float(np.std(values))
            rows.append(row)
        out[strategy] = rows
    return out


def labels_to_reach(curve: Sequence[dict[str, float]], target: float, key: str = "all_AP") -> float | None:
    """Annotations at which a mean curve first reaches `target` (linear between rounds), else None."""
    xs = [c["cumulative"] for c in curve]
    ys = [c[key] for c in curve]
    if ys[0] >= target:
        return xs[0]
    for i in range(1, len(xs)):
        if ys[i] >= target:
            frac = (target - ys[i - 1]) / (ys[i] - ys[i - 1]) if ys[i] != ys[i - 1] else 1.0
            return xs[i - 1] + frac * (xs[i] - xs[i - 1])
    return None


def savings(curves: dict[str, list[dict[str, float]]], key: str = "all_AP") -> dict[str, Any]:
    """The best non-random strategy (final mean AP) and the annotations it saves to reach random's."""
    if "random" not in curves:
        return {"note": "random was not run: nothing to compare against"}
    random_final = curves["random"][-1][key]
    random_total = curves["random"][-1]["cumulative"]
    others = {s: c for s, c in curves.items() if s != "random"}
    if not others:
        return {"note": "only random was run"}
    best = max(others, key=lambda s: others[s][-1][key])
    needed = labels_to_reach(others[best], random_final, key)
    result: dict[str, Any] = {
        "metric": key, "best_strategy": best, "best_final": others[best][-1][key],
        "random_final": random_final, "random_annotations": random_total,
        "best_beats_random": others[best][-1][key] > random_final,
        "annotations_needed": needed,
    }
    if needed is None:
        result["annotations_saved"] = None
        result["note"] = f"{best} never reached random's final {key} {random_final:.3f}"
    else:
        result["annotations_saved"] = random_total - needed
        result["saved_fraction"] = (random_total - needed) / random_total if random_total else 0.0
        result["note"] = (f"{best} reaches random's final {key} {random_final:.3f} after {needed:.1f} "
                          f"annotations instead of {random_total:.0f}")
    return result


def table(curves: dict[str, list[dict[str, float]]], seeds: int) -> str:
    lines = ["| strategy | round | annotations | " + " | ".join(METRICS) + " |",
             "|---|---|---|" + "---|" * len(METRICS)]
    for strategy, rows in curves.items():
        for r in rows:
            vals = " | ".join(f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in METRICS)
            lines.append(f"| {strategy} | {int(r['round'])} | {r['cumulative']:.0f} | {vals} |")
    lines.append(f"(mean ± std over {seeds} seed(s); round 0 is the start model)")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict[str, float]]], out_png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    colours = {"random": "black", "uncertainty": "#4a90e2", "diversity": "#7ed321", "spine": "#d0021b"}
    for ax, key in zip(axes, ("all_AP", "spine_AP"), strict=True):
        for strategy, rows in curves.items():
            xs = [r["cumulative"] for r in rows]
            ys = [r[key] for r in rows]
            err = [r[key + "_std"] for r in rows]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=strategy,
                        color=colours.get(strategy), linestyle="--" if strategy == "random" else "-")
        ax.set_xlabel("human annotations (cumulative)")
        ax.set_ylabel(f"{key} (validation split)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


# -- main ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spinetrack-bench-al"),
                        help="renders, the base store and one store per run (a finished base is reused)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=15, help="human annotations per round")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--strategies", nargs="+", default=["random", "uncertainty", "diversity", "spine"],
                        choices=sorted(STRATEGIES))
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--start-iters", type=int, default=150, help="training iterations of the start model")
    parser.add_argument("--round-iters", type=int, default=30, help="fine-tuning iterations per round")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="training batch size (0: the config's own; the round's retrain step has none)")
    parser.add_argument("--loss-weights", type=json.loads, default=None,
                        help='JSON loss weights for every training, '
                             'e.g. \'{"structure": 0, "smoothness": 0}\'')
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--auto-accept", action="store_true",
                        help="also auto-accept confident pseudo-labels (default off: only the budget "
                             "differs)")
    parser.add_argument("--synthetic", nargs="+", default=["bend", "squat"],
                        help="motions of the synthetic training sequences")
    parser.add_argument("--pool", nargs="+", default=["walk", "twist", "reach", "mixed"],
                        help="motions of the real-pool sequences")
    parser.add_argument("--val-motion", default="mixed")
    parser.add_argument("--synthetic-frames", type=int, default=40)
    parser.add_argument("--pool-frames", type=int, default=50)
    parser.add_argument("--val-frames", type=int, default=60)
    parser.add_argument("--verbose", action="store_true", help="print every round step's log line")
    parser.add_argument("--rebuild", action="store_true", help="build the base store again")
    parser.add_argument("--out", type=Path, default=RESULTS / "active_learning.json")
    args = parser.parse_args(argv)
    if "random" not in args.strategies:
        parser.error("random must be among --strategies: it is the baseline")

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    if args.rebuild and (args.work / "base").exists():
        shutil.rmtree(args.work / "base")
    sizes = DataSizes(tuple(args.synthetic), tuple(args.pool), args.val_motion, args.synthetic_frames,
                      args.pool_frames, args.val_frames)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    batch = args.batch_size or None
    base = build_base(args.work, sizes, config=args.config, start_iters=args.start_iters, batch_size=batch,
                      log=log, loss_weights=args.loss_weights)
    if base["pool_instances"] < args.rounds * args.budget:
        parser.error(f"pool of {base['pool_instances']} instances is smaller than rounds x budget")

    runs: dict[str, dict[int, list[dict[str, Any]]]] = {s: {} for s in args.strategies}
    for seed in args.seeds:
        for strategy in args.strategies:
            settings = RoundSettings(budget=args.budget, strategy=strategy, config=args.config,
                                     train_iters=args.round_iters, auto_accept=args.auto_accept, seed=seed)
            runs[strategy][seed] = run_strategy(args.work, base, strategy, seed, settings, args.rounds, log,
                                                step_log=log if args.verbose else _silent, batch_size=batch,
                                                loss_weights=args.loss_weights)
            write_results(args, base, runs, started, partial=True)

    curves, saved, png = write_results(args, base, runs, started, partial=False)
    print()
    print(table(curves, len(args.seeds)))
    print()
    for key, sv in saved.items():
        gain = sv.get("annotations_saved")
        extra = f" -> saves {gain:.1f} annotations ({sv['saved_fraction']:.0%})" if gain is not None else ""
        print(f"{key}: {sv.get('note')}{extra}")
    log(f"wrote {args.out} and {png}")


def write_results(args: argparse.Namespace, base: dict[str, Any],
                  runs: dict[str, dict[int, list[dict[str, Any]]]], started: float, *, partial: bool,
                  ) -> tuple[dict[str, list[dict[str, float]]], dict[str, dict[str, Any]], Path]:
    """Curves, savings, JSON and plot from the runs so far (after every run, so a cut-short bench
    still leaves its numbers; `partial` marks such a file)."""
    done = {s: by_seed for s, by_seed in runs.items() if by_seed}
    seeds = min(len(by_seed) for by_seed in done.values())
    done = {s: dict(list(by_seed.items())[:seeds]) for s, by_seed in done.items()}  # equal seeds each
    curves = mean_curves(done)
    saved = {key: savings(curves, key) for key in ("all_AP", "spine_AP")}
    png = plot(curves, args.out.with_suffix(".png"),
               f"active learning, budget {args.budget}/round, {seeds} seed(s), "
               f"auto-accept {'on' if args.auto_accept else 'off'}")
    result = {
        "partial": partial,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "base": base,
        "curves": curves,
        "runs": {s: {str(seed): recs for seed, recs in by_seed.items()} for s, by_seed in runs.items()},
        "savings": saved,
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg_1m": round(os.getloadavg()[0], 2), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=_json_default) + "\n", encoding="utf-8")
    return curves, saved, png


def _json_default(value: Any) -> Any:
    return str(value)


if __name__ == "__main__":
    main()
