"""A round with people who take their time, against the real Label Studio server.

Round 1 pushes 30 tasks and `spinetrack round` (a real subprocess) returns `awaiting` at once.
10 annotations arrive; a `spinetrack round --wait` process pulls them and is killed (SIGKILL);
15 more arrive and are pulled, one is deleted in Label Studio; `spinetrack round` continues on its close rule
(0.8), retrains, and the store holds exactly the 24 live human labels, all credited to round 1,
one superseded by a revocation. 5 arriving after the retraining are credited to round 1 (late) and
used by round 2's training. The simulated annotator is the only stand-in (for the people).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from annotation.labelstudio.client import connect, connection_of
from annotation.labelstudio.pull import stored_project
from annotation.labelstudio.server import LabelStudioServer
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks
from pipeline.active_learning.rounds import get_round, live_human_revisions
from pipeline.instance_sets import training_labels
from pipeline.intake.real_import import import_coco
from pipeline.splits import assign_splits
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Revision
from synthetic.ingest import ingest_sequence
from synthetic.sample_set import SequenceSpec, render_set

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]
SIZE = {"width": 160, "height": 128}
REPO = Path(__file__).resolve().parents[1]


def _env(store: Store, server: LabelStudioServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SPINETRACK_HOME=str(store.home), SPINETRACK_LS_URL=server.url,
               SPINETRACK_LS_TOKEN=server.token, SPINETRACK_LS_DOCUMENT_ROOT=server.document_root)
    env.pop("SPINETRACK_DB_URL", None)
    return env


def _round(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", "round", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _humans(store: Store) -> list[Revision]:
    with store.session() as s:
        return list(s.scalars(select(Revision).where(Revision.source == "human").order_by(Revision.id)))


def test_round_waits_for_people_and_credits_every_label(labelstudio_server: LabelStudioServer) -> None:
    home = Path(labelstudio_server.document_root) / "waiting-home"
    store = Store(home=home)
    for folder in render_set(home / "renders" / "synthetic", [SequenceSpec("mixed", 301, 16, **SIZE)]):
        ingest_sequence(store, folder)
    for folder in render_set(home / "renders" / "pool", [SequenceSpec("walk", 302, 40, **SIZE),
                                                         SequenceSpec("squat", 303, 8, **SIZE)]):
        import_coco(store, folder / "ground_truth.json", image_dir=folder, subset="pool",
                    group=f"pool/{folder.name}", keep_ground_truth=True)
    pinned = {"synthetic-mixed-seed301": "train", "pool/walk-seed302": "train", "pool/squat-seed303": "val"}
    assign_splits(store, pinned, pinned=pinned)
    from pipeline.model.train import train

    train(store, config="tiny", iters=4, labels=training_labels(store), name="tiny-start")
    env = _env(store, labelstudio_server)
    flags = ["--budget", "30", "--iters", "3", "--close-when", "0.8", "--val-size", "0", "--no-auto-accept",
             "--model", "tiny-start", "--config", "tiny"]

    started = time.monotonic()
    first = _round(env, *flags)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "awaiting" in first.stdout, first.stdout[-2000:]
    awaiting_s = time.monotonic() - started
    rnd = get_round(store, 1)
    assert rnd is not None and rnd.step == "push" and len(rnd.state["selected"]) == 30

    conn = connection_of(labelstudio_server)
    client = connect(conn)
    project = stored_project(store, conn)
    assert project is not None
    with store.session() as s:
        tasks = dict(s.execute(select(AnnotationTask.task_id, AnnotationTask.instance_id)
                               .where(AnnotationTask.round == 1)).tuples().all())
    assert len(tasks) == 30
    truth: dict[int, tuple[list[float], list[float]]] = {}
    for rev in (r for iid in tasks.values() for r in store.revisions(iid) if r.source == "import"):
        truth[rev.instance_id] = (list(rev.keypoints), list(rev.bbox))
    order = sorted(tasks)
    person = AnnotatorProfile(email="slow-annotator@spinetrack.local", pixel_noise=1.0)

    def annotate(task_ids: list[int]) -> list[int]:
        return annotate_tasks(client, project, truth.get, profile=person, task_ids=task_ids).annotation_ids

    annotate(order[:10])
    # a process that keeps pulling (`--wait`), killed once it has stored the first ten
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "round", "--wait", "600", "--budget", "99"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_humans(store)) < 10 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the waiting process should still be waiting (10 of 30 < 0.8)"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(_humans(store)) == 10

    later = annotate(order[10:25])
    pulled = subprocess.run([sys.executable, "-m", "flows.cli", "pull"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)  # as the webhook would
    assert pulled.returncode == 0 and len(_humans(store)) == 25, pulled.stderr[-2000:]
    client.annotations.delete(id=later[-1])  # one stored annotation is deleted in Label Studio
    second = _round(env, "--budget", "7")  # a different flag: the stored settings win
    assert second.returncode == 0, second.stderr[-3000:]
    rnd = get_round(store, 1)
    assert rnd is not None and rnd.step == "record", second.stdout[-2000:]
    assert rnd.budget == 30 and rnd.state["params"]["budget"] == 30
    live = live_human_revisions(store, 1)
    assert len(live) == 24 and all(r.round == 1 for r in live)
    revoked = [r for r in _humans(store) if r.status == "revoked"]
    assert len(revoked) == 1 and revoked[0].supersedes not in {r.id for r in live}
    assert rnd.state["human_labels"] == 24
    assert rnd.state["train_human_labels_by_round"] == {"1": 24}

    annotate(order[25:30])  # late: after round 1 retrained
    third = _round(env, "--budget", "3", "--close", "--iters", "2", "--val-size", "0")
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(live_human_revisions(store, 1)) == 29
    one, two = get_round(store, 1), get_round(store, 2)
    assert one is not None and one.state["late_labels"] == 5
    assert two is not None and two.step == "record"
    assert two.state["train_human_labels_by_round"]["1"] == 29  # round 2 trained on the late five
    print(f"first `round` call returned awaiting after {awaiting_s:.1f} s")
