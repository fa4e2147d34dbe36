"""Scale-out through Dask: ingest and pseudo-label throughput at 1 and 2 workers, and the ratio.

Usage: python bench/scale.py [--sequences 4] [--frames 40] [--pool 256]
Ingest: `sequences` reference renders ingested by the `ingest-synthetic` flow in one process, then
with `--workers 2` (a local Dask cluster, started inside the timing: that is what a user pays).
Pseudo-label: an untrained `tiny` model registered once, `pool` unlabelled person boxes on the
rendered frames, pseudo-labelled by the `pseudo-label` flow in one process and with 2 workers
(chunks of pool/4). Each run uses a fresh store. The machine has 2 cores shared with other work:
the load average is recorded, and a ratio near 1 on a loaded machine says little.
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


def ingest(renders: list[Path], home: Path, workers: int) -> dict[str, Any]:
    from flows.synthetic import ingest_synthetic

    os.environ["SPINETRACK_HOME"] = str(home)
    start = time.perf_counter()
    summaries = ingest_synthetic([str(r) for r in renders], workers=workers)
    wall = time.perf_counter() - start
    frames = sum(s["frames"] * s["actors"] for s in summaries)
    return {"workers": workers, "frames": frames, "wall_s": round(wall, 2),
            "frames_per_s": round(frames / wall, 2)}


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


def pseudo(home: Path, model: str, workers: int, chunk: int) -> dict[str, Any]:
    from flows.model import pseudo_label

    os.environ["SPINETRACK_HOME"] = str(home)
    start = time.perf_counter()
    out = pseudo_label(model, None, None, "cpu", None, workers, None, chunk)
    wall = time.perf_counter() - start
    return {"workers": workers, "instances": out["written"], "wall_s": round(wall, 2),
            "instances_per_s": round(out["written"] / wall, 2)}


def run(sequences: int, frames: int, pool: int, workdir: Path) -> dict[str, Any]:
    renders = [render_sequence(workdir / f"r{n}", frames=frames, seed=40 + n) for n in range(sequences)]
    result: dict[str, Any] = {"sequences": sequences, "frames_per_sequence": frames, "pool": pool}
    result["ingest"] = [ingest(renders, workdir / f"ingest-{w}", w) for w in (1, 2)]
    one, two = result["ingest"]
    result["ingest_ratio_2_vs_1"] = round(two["frames_per_s"] / one["frames_per_s"], 2)

    from pipeline.model.train import train

    model_home = workdir / "ingest-1"
    with Store(home=model_home) as store:
        model = train(store, config="tiny", iters=1, seed=0, name="scale-bench").name
    chunk = max(1, pool // 4)
    runs = []
    for w in (1, 2):
        home = workdir / f"pseudo-{w}"
        pseudo_pool(home, renders, pool, model_home)
        runs.append(pseudo(home, model, w, chunk))
    result["pseudo_label"] = runs
    result["pseudo_label_ratio_2_vs_1"] = round(runs[1]["instances_per_s"] / runs[0]["instances_per_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--pool", type=int, default=256)
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
