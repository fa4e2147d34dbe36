"""How fast does the `tiny` model learn on CPU? OKS AP on held-out renders against iterations and time.

Usage: python bench/tiny_learning_curve.py [--iters 300] [--probe 0 25 50 100 150 200 300]
       [--work DIR] [--threads N]

Trains `tiny` once from scratch (pipeline.model.train, the same call the tests and the
active-learning rounds make) on the ground truth of rendered sequences (5 motions x 50 frames) and,
at each probe iteration, scores the model on held-out renders of another motion and other seeds
("mixed", seeds 301/302) with pipeline.evaluate (OKS AP all/body/feet/spine, ground-truth boxes,
flip test). Probe time is excluded from the wall-clock column. Writes
bench/results/tiny_learning_curve.json and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402

from bench.common import Run  # noqa: E402
from pipeline.model.dataset import merge_coco_files  # noqa: E402
from pipeline.model.train import evaluate_model, train  # noqa: E402
from pipeline.store import Store  # noqa: E402
from synthetic.sample_set import store_ground_truth  # noqa: E402

TRAIN_MOTIONS = ("bend", "twist", "walk", "squat", "reach")
RESULTS = REPO / "bench" / "results"


class CurveProbe(Hook):
    """Scores the model at chosen iterations; keeps its own time out of the training clock."""

    priority = "LOWEST"

    def __init__(self, val_ann: Path, at: set[int]) -> None:
        self.val_ann = val_ann
        self.at = at
        self.rows: list[dict[str, Any]] = []
        self.start = 0.0
        self.excluded = 0.0

    def before_train(self, runner: Any) -> None:
        self.start = time.perf_counter()

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        it = runner.iter + 1
        if it not in self.at:
            return
        t0 = time.perf_counter()
        model = runner.model
        metrics = evaluate_model(model, self.val_ann)
        model.train()
        loss = float(outputs["loss_kpt"]) if outputs and "loss_kpt" in outputs else None
        self.rows.append({"iters": it, "train_seconds": round(t0 - self.start - self.excluded, 1),
                          "loss_kpt": loss, **metrics})
        self.excluded += time.perf_counter() - t0
        print(json.dumps(self.rows[-1]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--probe", type=int, nargs="*", default=[25, 50, 100, 150, 200, 300])
    parser.add_argument("--frames", type=int, default=50, help="frames per training sequence")
    parser.add_argument("--work", type=Path, default=Path("/tmp/spinetrack-bench-tiny"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pipeline.model.predict import untrained_model
    from synthetic.sample_set import SequenceSpec, render_set

    if args.threads:
        torch.set_num_threads(args.threads)
    renders = args.work / "renders"
    train_specs = [SequenceSpec(m, 10 + i, args.frames) for i, m in enumerate(TRAIN_MOTIONS)]
    train_folders = render_set(renders, train_specs)
    val_folders = render_set(renders, [SequenceSpec("mixed", s, 15) for s in (301, 302)])
    val_ann = merge_coco_files([f / "ground_truth.json" for f in val_folders], args.work / "val.json")

    home = args.work / f"home-{int(time.time())}"
    store = Store(home=home)
    frames = sum(store_ground_truth(store, f, tag="bench-gt") for f in train_folders)
    rows = [{"iters": 0, "train_seconds": 0.0, "loss_kpt": None,
             **evaluate_model(untrained_model("tiny", seed=args.seed), val_ann)}]
    probe = CurveProbe(val_ann, {p for p in args.probe if 0 < p <= args.iters} | {args.iters})
    bench_run = Run()
    started = time.perf_counter()
    version = train(store, config="tiny", iters=args.iters, seed=args.seed, hooks=[probe])
    total = time.perf_counter() - started
    rows += probe.rows

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "tiny_learning_curve",
        "model": version.name,
        "config": version.config,
        "train_frames": frames,
        "train_sequences": [f.name for f in train_folders],
        "val_sequences": [f.name for f in val_folders],
        "val_instances": len(json.loads(val_ann.read_text())["annotations"]),
        "batch_size": version.config["train_dataloader"]["batch_size"],
        "torch_threads": torch.get_num_threads(),
        "note": "train_seconds excludes probe evaluation; shared 2-core machine, other jobs were running",
        "train_call_seconds": round(total, 1),
        "rows": rows,
    }
    bench_run.write(out, RESULTS / "tiny_learning_curve.json", indent=2)
    plot(rows, RESULTS / "tiny_learning_curve.png")
    print(f"{'iters':>6} {'seconds':>8} {'all':>6} {'body':>6} {'feet':>6} {'spine':>6}")
    for r in rows:
        print(f"{r['iters']:>6} {r['train_seconds']:>8.1f} {r['all_AP']:>6.3f} {r['body_AP']:>6.3f} "
              f"{r['feet_AP']:>6.3f} {r['spine_AP']:>6.3f}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for part in ("all", "body", "feet", "spine"):
        for ax, x in zip(axes, ("iters", "train_seconds"), strict=True):
            ax.plot([r[x] for r in rows], [max(r[f"{part}_AP"], 0.0) for r in rows], marker="o", label=part)
    axes[0].set_xlabel("training iterations")
    axes[1].set_xlabel("training wall time (s, CPU)")
    for ax in axes:
        ax.set_ylabel("OKS AP (held-out renders)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("tiny (SpineTrack RTMPose) learning curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
