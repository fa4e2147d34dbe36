"""Scale-out through Dask: ingest and pseudo-label throughput at 1 and 2 workers, and the ratio.

Usage: python bench/scale.py [--sequences 8] [--frames 100] [--pool 1024]
Ingest: `sequences` reference renders ingested by the `ingest-synthetic` flow; pseudo-label: an
untrained `tiny` model registered once, `pool` unlabelled person boxes on the rendered frames,
pseudo-labelled by the `pseudo-label` flow (chunks of pool/8). Each run uses a fresh store; Prefect's
temporary server is started once before any timing (every variant would pay it alike). Two views:

- ``cold``: what one command pays: in this process (`--workers 1`), or `--workers 2` starting a local
  Dask cluster inside the timing (worker processes that import OpenSim or torch themselves);
- ``warm``: throughput once started: this process after one untimed run, against a running 2-worker
  cluster (`--dask-address`) whose workers have imported OpenSim and torch. This is the rate a
  long-lived cluster gives a team; the ratio is the scale-out itself.

The machine has 2 cores: run it with nothing else busy (the load average is recorded).
Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import flows  # noqa: E402, F401  (Prefect settings before prefect loads)
from pipeline.store import Store  # noqa: E402
from pipeline.store.store import NewImage, NewLabel  # noqa: E402
from synthetic.renderer import render_sequence  # noqa: E402


def ingest(renders: list[Path], home: Path, workers: int, address: str | None = None) -> dict[str, Any]:
    from flows.synthetic import ingest_synthetic

    os.environ["SPINETRACK_HOME"] = str(home)
    start = time.perf_counter()
    summaries = ingest_synthetic([str(r) for r in renders], workers=1 if address else workers,
                                 dask_address=address)
    wall = time.perf_counter() - start
    frames = sum(s["frames"] * s["actors"] for s in summaries)
    return {"workers": workers, "frames": frames, "wall_s": round(wall, 2),
            "frames_per_s": round(frames / wall, 2)}


def _warm_worker() -> None:
    """What a worker imports before its first task (run on every worker of the warm cluster)."""
    # the tasks' modules (a worker imports them to unpickle a task), torch + mmpose, OpenSim
    import flows.model
    import flows.synthetic  # noqa: F401
    import pipeline.model.train  # noqa: F401
    import synthetic.alignment
    import synthetic.ingest  # noqa: F401


def _ratio(runs: list[dict[str, Any]], key: str) -> float:
    return round(runs[1][key] / runs[0][key], 2)


def pseudo_pool(home: Path, renders: list[Path], pool: int, model_home: Path) -> None:
    """A store with `pool` unlabelled boxes on the rendered frames and the registered model."""
    shutil.copytree(model_home / "models", home / "models")
    with Store(home=home) as store, Store(home=model_home) as source:
        from pipeline.store.models import ModelVersion

        with source.session() as s:
            rows = list(s.query(ModelVersion))
        with store.session() as s:
            for row in rows:
                s.merge(row)
        images = sorted(p for r in renders for p in (r / "rgb").glob("*.png"))
        labels = [NewLabel(image=NewImage(path=images[n % len(images)], source="real", subset="bench",
                                          group_key=f"v{n % len(images)}", width=320, height=256),
                           instance_key=f"p{n // len(images)}", instance_meta={"bbox": [80, 40, 120, 200]})
                  for n in range(pool)]
        store.add_labels(labels)


def pseudo(home: Path, model: str, workers: int, chunk: int, address: str | None = None) -> dict[str, Any]:
    from flows.model import pseudo_label

    os.environ["SPINETRACK_HOME"] = str(home)
    start = time.perf_counter()
    out = pseudo_label(model, None, None, "cpu", None, 1 if address else workers, address, chunk)
    wall = time.perf_counter() - start
    return {"workers": workers, "instances": out["written"], "wall_s": round(wall, 2),
            "instances_per_s": round(out["written"] / wall, 2)}


def run(sequences: int, frames: int, pool: int, workdir: Path) -> dict[str, Any]:
    from prefect import flow

    renders = [render_sequence(workdir / f"r{n}", frames=frames, seed=40 + n) for n in range(sequences)]
    warmup = [render_sequence(workdir / "warmup", frames=8, seed=39)]
    result: dict[str, Any] = {"sequences": sequences, "frames_per_sequence": frames, "pool": pool}
    os.environ["SPINETRACK_HOME"] = str(workdir / "prefect-warmup")
    flow(name="warm-up")(lambda: None)()  # Prefect's temporary server, once, outside every timing

    cold = [ingest(renders, workdir / f"ingest-cold-{w}", w) for w in (1, 2)]
    ingest(warmup, workdir / "ingest-warmup", 1)  # OpenSim is loaded in this process now
    warm = [ingest(renders, workdir / "ingest-warm-1", 1)]

    from pipeline.model.train import train

    model_home = workdir / "ingest-warm-1"
    with Store(home=model_home) as store:
        model = train(store, config="tiny", iters=1, seed=0, name="scale-bench").name
    chunk = max(1, pool // 8)

    def pseudo_run(name: str, workers: int, address: str | None = None) -> dict[str, Any]:
        home = workdir / f"pseudo-{name}"
        pseudo_pool(home, renders, pool, model_home)
        return pseudo(home, model, workers, chunk, address)

    pseudo_cold = [pseudo_run(f"cold-{w}", w) for w in (1, 2)]
    pseudo_warm = [pseudo_run("warm-1", 1)]  # torch and the model's code are loaded in this process now

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        client.run(_warm_worker)
        warm.append(ingest(renders, workdir / "ingest-warm-2", 2, cluster.scheduler_address))
        pseudo_warm.append(pseudo_run("warm-2", 2, cluster.scheduler_address))

    result["ingest"] = {"cold": cold, "warm": warm}
    result["ingest_ratio_2_vs_1"] = {"cold": _ratio(cold, "frames_per_s"),
                                     "warm": _ratio(warm, "frames_per_s")}
    result["pseudo_label"] = {"cold": pseudo_cold, "warm": pseudo_warm}
    result["pseudo_label_ratio_2_vs_1"] = {"cold": _ratio(pseudo_cold, "instances_per_s"),
                                           "warm": _ratio(pseudo_warm, "instances_per_s")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--pool", type=int, default=1024)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="spinetrack-bench-scale-"))
    load_before = os.getloadavg()[0]
    try:
        result = run(args.sequences, args.frames, args.pool, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_average"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "platform": platform.platform()}
    out = REPO / "bench" / "results" / "scale.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
