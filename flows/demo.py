"""`spinetrack demo` (what `make demo` runs): the whole job end to end on the embedded default.

render a synthetic sample set → ingest through OpenSim IK → train the student (blaze37:
BlazePose's own network, converted from the mediapipe wheel, with a 37-point head) → import a
"real" pool (rendered frames with hidden ground truth, plus ../shared/data/real_people when present;
the COCO sample's body points kept as human labels) → complete the COCO people with the combined
annotator (spine prior and student for the points nobody placed) and push them to Label Studio,
each person cropped to fill the view, the human points given, as a round does →
two active-learning rounds → release v0.1.0 → print where everything is, with body AP on the real
COCO sample images (ground-truth boxes) before and after the rounds. Re-running it resumes: every
step is idempotent.

The rounds are driven with the SIMULATED annotator (tasks filled from hidden ground truth), a
benchmark stand-in so that the demo finishes in minutes. The normal path is `spinetrack round`
(push) → people annotate in Label Studio over hours or days → `spinetrack round` again (continue).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flows import lazy
from flows.active_learning import active_learning_round
from flows.app import app
from flows.console import emit
from flows.synthetic import ingest_synthetic
from pipeline.intake.real_samples import real_people_folder, sample_sets

if TYPE_CHECKING:
    from annotation.labelstudio.server import LabelStudioServer
    from pipeline.store import Store

#: Synthetic training/validation sequences (ingested through OpenSim IK): motion, seed, frames.
SYNTHETIC = [("mixed", 11, 60), ("bend", 12, 50), ("twist", 13, 50), ("walk", 14, 50), ("squat", 15, 40)]
#: Rendered frames held out as the "real" pool: other seeds and motions, ground truth hidden.
HELD_OUT = [("reach", 21, 60), ("mixed", 22, 60), ("bend", 23, 50), ("walk", 24, 40)]
#: The real sample sets (pipeline/intake/real_samples.py) imported: OCHuman and PoseTrack18 into
#: the pool with their truth hidden (the simulated annotator answers from it); the COCO sample as a
#: user imports COCO people: their body points kept as human labels, the rest to be completed.
REAL_PEOPLE = ("coco", "ochuman", "posetrack18")
SHOWCASE_SAMPLE = "coco"
#: The COCO people sit in the test split: never trained on, so body AP on them stays a measurement.
SHOWCASE_GROUP = "real-people/coco"
#: The held-out sequences that validate every round (pinned, so the demo always has a val split).
PINNED = {"synthetic-squat-seed15": "val", "held-out/walk-seed24": "val", SHOWCASE_GROUP: "test"}
#: The real images the demo completes with the combined annotator (only the points nobody placed)
#: and pushes to Label Studio, the body points shown as given; the tasks wait there for a person
#: (round 0 is not an active-learning round: nothing closes it).
SHOWCASE_SUBSET = "real-people-coco"
SHOWCASE_ROUND = 0
SHOWCASE_REASON = "showcase"
#: The rounds distil BlazePose's body points on the pool's real images into the student
#: (confidence-weighted hard targets, no human labels needed; docs/annotators.md), on top of the
#: student's own distillation from the frozen network it started from (docs/model.md).
DEFAULT_TEACHER = "blazepose"


def shared_real_people() -> Path | None:
    folder = real_people_folder()
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
    rounds: int = 2, budget: int = 20, train_iters: int = 300, round_iters: int = 100,
    teacher: str | None = None,
) -> dict[str, Any]:
    from prefect import get_run_logger

    from pipeline.active_learning.loop import RoundSettings
    from pipeline.active_learning.rounds import history
    from pipeline.intake.real_import import import_coco
    from pipeline.model.train import train
    from pipeline.release.build import ReleaseError, create_release, get_release, list_releases
    from pipeline.splits import assign_splits
    from pipeline.store import Store
    from synthetic.sample_set import SequenceSpec, render_set

    logger = get_run_logger()
    store = Store()
    home = store.home
    started = time.monotonic()
    steps = StepTimer()

    logger.info("rendering the synthetic sample set and the held-out pool")
    synthetic = render_set(home / "renders" / "synthetic", [SequenceSpec(*s) for s in SYNTHETIC])
    held_out = render_set(home / "renders" / "held-out", [SequenceSpec(*s) for s in HELD_OUT])
    steps.done("render")

    logger.info("ingesting %d synthetic sequences through OpenSim IK", len(synthetic))
    ingest_synthetic([str(p) for p in synthetic])
    steps.done("ingest")

    for folder in held_out:
        import_coco(store, folder / "ground_truth.json", image_dir=folder, subset="held-out",
                    group=f"held-out/{folder.name}", keep_ground_truth=True)
    real = shared_real_people()
    if real is not None:
        for sample in sample_sets(*REAL_PEOPLE):
            if (real / sample.coco_file).is_file():
                given = sample.name == SHOWCASE_SAMPLE  # the body points people placed are labels
                import_coco(store, real / sample.coco_file, image_dir=real / sample.image_dir,
                            subset=f"real-people-{sample.name}", hidden=not given,
                            group=SHOWCASE_GROUP if given else None)
    groups = store.group_keys()
    assign_splits(store, groups, pinned={k: v for k, v in PINNED.items() if k in groups})
    steps.done("import")

    model = store.current_model()
    if model is None:
        logger.info("training the student from BlazePose's network (%d iterations)", train_iters)
        from pipeline.instance_sets import training_labels

        model = train(store, iters=train_iters, seed=0, labels=training_labels(store)).name
    steps.done("train")

    from annotation.labelstudio.server import media_root

    root = media_root(home)  # Label Studio serves only the images pushed to it (linked in there)
    server = ensure_labelstudio(store, root)
    steps.done("labelstudio")
    out: dict[str, Any] = {}
    if real is not None:
        out["showcase"] = showcase_real_images(store, model)
        steps.done("showcase")
        out["body_AP_before"] = body_ap_on_coco(store, model, real)
        logger.info("body AP on the real COCO sample before the rounds: %s", out["body_AP_before"])
        steps.done("body_AP_before")

    logger.info("active-learning rounds with the SIMULATED annotator (a benchmark stand-in; the normal "
                "path is push -> people annotate over days -> `spinetrack round` again)")
    done = sum(1 for r in history(store) if r.step == "record")
    for number in range(done + 1, rounds + 1):
        active_learning_round(RoundSettings(budget=budget, train_iters=round_iters, teacher=teacher),
                              simulate_annotators=True)
        steps.done(f"round{number}")
    if real is not None:
        out["body_AP_after"] = body_ap_on_coco(store, store.current_model() or model, real)
        logger.info("body AP on the real COCO sample after the rounds: %s", out["body_AP_after"])
        steps.done("body_AP_after")

    try:
        release = create_release(store, "0.1.0", notes="make demo: synthetic + two active-learning rounds")
    except ReleaseError:
        if "0.1.0" not in list_releases(store):
            raise
        release = get_release(store, "0.1.0")
    steps.done("release")
    seconds = time.monotonic() - started
    logger.info("demo finished in %.0f s", seconds)
    return {"release": str(release.path), "labelstudio": server.url, "home": str(home),
            "seconds": round(seconds), "step_seconds": steps.seconds, **out}


class StepTimer:
    """Wall seconds of each demo step (a resumed demo shows near-zero for what was done)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.seconds[step] = round(now - self._last, 1)
        self._last = now


def showcase_real_images(store: Store, model: str) -> dict[str, Any]:
    """Complete the real COCO sample persons with the combined annotator (student = `model`): the
    points their human labels lack; push them to Label Studio, the human points as given, exactly
    as a round's push does."""
    from annotation.labelstudio.hooks import LabelStudioHooks
    from pipeline.active_learning.pseudo_label import pseudo_label
    from pipeline.annotators import load_annotator

    ids = [inst.id for img, inst in store.unlabelled_instances(image_source="real", incomplete=True)
           if img.subset == SHOWCASE_SUBSET]
    annotator = load_annotator("combined", store, student=model)
    labelled = pseudo_label(store, annotator, instance_ids=ids)
    report = LabelStudioHooks.from_environment(store).push(store, ids, SHOWCASE_ROUND, reason=SHOWCASE_REASON)
    return {"annotator": annotator.identity.name, "instances": len(ids),
            "pseudo_labelled": labelled.written + labelled.already_done,
            "tasks": sorted(int(t) for t in report.task_ids.values())}


def body_ap_on_coco(store: Store, model: str, real: Path) -> dict[str, float | None]:
    """Body AP (ground-truth boxes) on the COCO sample: the student alone, and the combined
    annotator that pre-labels real images (with that student)."""
    from pipeline.annotators import load_annotator
    from pipeline.annotators.coco_eval import score_on_coco

    (sample,) = sample_sets("coco")
    coco, images = real / sample.coco_file, real / sample.image_dir
    out: dict[str, float | None] = {"model": None, "combined": None}
    for label, spec in (("model", f"model:{model}"), ("combined", f"combined:student={model}")):
        out[label] = score_on_coco(load_annotator(spec, store), coco, images)["body_AP"]
    return out


@app.command("demo")
def demo_command(
    rounds: int = typer.Option(2, min=1),
    budget: int = typer.Option(20, min=1),
    teacher: str = typer.Option(DEFAULT_TEACHER, help="annotator whose body points are distilled into the "
                                "student in the rounds (pipeline.annotators spec; 'none': no teacher)"),
) -> None:
    """Run the whole pipeline end to end on a sample (what `make demo` runs)."""
    out = demo_flow(rounds=rounds, budget=budget, teacher=None if teacher.lower() == "none" else teacher)
    emit(out, lambda con: con.print(_done_panel(out)))


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _done_panel(out: dict[str, Any]) -> object:
    from rich.panel import Panel

    real = ""
    if "body_AP_before" in out:
        before, after = out["body_AP_before"], out.get("body_AP_after", {})
        show = out.get("showcase", {})
        real = (
            "body AP on the real COCO sample (ground-truth boxes), before -> after the rounds:\n"
            f"  student            {_ap(before['model'])} -> {_ap(after.get('model'))}\n"
            f"  combined annotator {_ap(before['combined'])} -> {_ap(after.get('combined'))}\n"
            f"Label Studio: {len(show.get('tasks', []))} real COCO persons, their body points given,\n"
            f"  the rest pre-labelled by the combined annotator, waiting for a person\n"
            f"  (reason '{SHOWCASE_REASON}')\n"
        )
    return Panel.fit(
        real +
        "rounds here used the SIMULATED annotator (a benchmark stand-in); the normal path:\n"
        "  `spinetrack round` (push) -> people annotate in Label Studio over days\n"
        "  -> `spinetrack round` again (continue)\n"
        f"release:      {out['release']}\n"
        f"Label Studio: {out['labelstudio']} (still running; `spinetrack labelstudio stop` stops it)\n"
        f"FiftyOne:     .venv/bin/spinetrack review --release 0.1.0\n"
        f"store:        {out['home']}\n"
        f"demo time:    {out.get('seconds', '?')} s",
        title="SpineTrack demo done",
    )
