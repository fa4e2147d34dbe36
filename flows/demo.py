"""`spinetrack demo` (what `make demo` runs): the whole job end to end on the embedded default.

render a synthetic sample set → ingest through OpenSim IK → train the tiny model → import a
"real" pool (rendered frames with hidden ground truth, plus ../shared/data/real_people when present)
→ two active-learning rounds with the simulated annotator against a real Label Studio → release
v0.1.0 → print where everything is. Re-running it resumes: every step is idempotent.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flows import lazy
from flows.active_learning import active_learning_round
from flows.app import app
from flows.console import emit
from flows.synthetic import ingest_synthetic

if TYPE_CHECKING:
    from annotation.labelstudio.server import LabelStudioServer
    from pipeline.store import Store

#: Synthetic training/validation sequences (ingested through OpenSim IK): motion, seed, frames.
SYNTHETIC = [("mixed", 11, 60), ("bend", 12, 50), ("twist", 13, 50), ("walk", 14, 50), ("squat", 15, 40)]
#: Rendered frames held out as the "real" pool: other seeds and motions, ground truth hidden.
HELD_OUT = [("reach", 21, 60), ("mixed", 22, 60), ("bend", 23, 50), ("walk", 24, 40)]
#: Real samples in ../shared/data/real_people whose keypoints map into SpineTrack's by index
#: (COCO-17 order): name, COCO file, image folder, relative to that folder.
REAL_PEOPLE = [("coco", "coco/test_coco.json", "coco"), ("ochuman", "ochuman/test_ochuman.json", "ochuman"),
               ("posetrack18", "posetrack18/annotations/test_posetrack18_val.json", "posetrack18")]
#: The held-out sequences that validate every round (pinned, so the demo always has a val split).
PINNED = {"synthetic-squat-seed15": "val", "held-out/walk-seed24": "val"}


def shared_real_people() -> Path | None:
    here = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("SPINETRACK_REAL_PEOPLE", here.parent / "shared" / "data" / "real_people"))
    return folder if folder.is_dir() else None


def ensure_labelstudio(store: Store, document_root: Path) -> LabelStudioServer:
    """The Label Studio this home recorded, if it still answers; else a new one, left running."""
    from annotation.labelstudio.client import state_path
    from annotation.labelstudio.server import LabelStudioServer, health, start_server

    path = state_path(store.home)
    if path.is_file():
        server = LabelStudioServer.load(path)
        if health(server.url):
            return server
    server = start_server(store.home / "labelstudio", document_root=document_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    server.save(path)
    return server


@lazy.flow(name="demo")
def demo_flow(
    rounds: int = 2, budget: int = 20, train_iters: int = 300, round_iters: int = 150
) -> dict[str, str]:
    from prefect import get_run_logger

    from pipeline.active_learning import RoundSettings
    from pipeline.model.train import train
    from pipeline.real_import import import_coco
    from pipeline.release import ReleaseError, create_release, get_release, list_releases
    from pipeline.rounds import current_model, history
    from pipeline.splits import assign_splits
    from pipeline.store import Store
    from synthetic.sample_set import SequenceSpec, render_set

    logger = get_run_logger()
    store = Store()
    home = store.home
    started = time.monotonic()

    logger.info("rendering the synthetic sample set and the held-out pool")
    synthetic = render_set(home / "renders" / "synthetic", [SequenceSpec(*s) for s in SYNTHETIC])
    held_out = render_set(home / "renders" / "held-out", [SequenceSpec(*s) for s in HELD_OUT])

    logger.info("ingesting %d synthetic sequences through OpenSim IK", len(synthetic))
    ingest_synthetic([str(p) for p in synthetic])

    for folder in held_out:
        import_coco(store, folder / "ground_truth.json", image_dir=folder, subset="held-out",
                    group=f"held-out/{folder.name}", keep_ground_truth=True)
    real = shared_real_people()
    if real is not None:
        for name, coco, images in REAL_PEOPLE:
            if (real / coco).is_file():
                import_coco(store, real / coco, image_dir=real / images, subset=f"real-people-{name}",
                            keep_ground_truth=True)
    with store.session() as s:
        from sqlalchemy import select

        from pipeline.store.models import Image

        groups = list(s.scalars(select(Image.group_key).distinct()))
    assign_splits(store, groups, pinned={k: v for k, v in PINNED.items() if k in groups})

    model = current_model(store)
    if model is None:
        logger.info("training the tiny model from scratch (%d iterations)", train_iters)
        from pipeline.active_learning import training_labels

        model = train(store, config="tiny", iters=train_iters, seed=0, labels=training_labels(store)).name

    root = Path(os.path.commonpath([str(home), *(str(p) for p in ([real] if real else []))]))
    server = ensure_labelstudio(store, root)

    done = sum(1 for r in history(store) if r.step == "record")
    for _ in range(max(0, rounds - done)):
        active_learning_round(RoundSettings(budget=budget, train_iters=round_iters), simulate_annotators=True)

    try:
        release = create_release(store, "0.1.0", notes="make demo: synthetic + two active-learning rounds")
    except ReleaseError:
        if "0.1.0" not in list_releases(store):
            raise
        release = get_release(store, "0.1.0")
    logger.info("demo finished in %.0f s", time.monotonic() - started)
    return {"release": str(release.path), "labelstudio": server.url, "home": str(home)}


@app.command("demo")
def demo_command(
    rounds: int = typer.Option(2, min=1),
    budget: int = typer.Option(20, min=1),
) -> None:
    """Run the whole pipeline end to end on a sample (what `make demo` runs)."""
    out = demo_flow(rounds=rounds, budget=budget)
    emit(out, lambda con: con.print(_done_panel(out)))


def _done_panel(out: dict[str, str]) -> object:
    from rich.panel import Panel

    return Panel.fit(
        f"release:      {out['release']}\n"
        f"Label Studio: {out['labelstudio']} (still running; `spinetrack labelstudio stop` stops it)\n"
        f"FiftyOne:     .venv/bin/spinetrack review --release 0.1.0\n"
        f"store:        {out['home']}",
        title="SpineTrack demo done",
    )
