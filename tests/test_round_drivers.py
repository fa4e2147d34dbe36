"""One driver per round, against the real Label Studio server (issue 20).

Drivers are real processes, their flows reporting to one real Prefect server: pairs of
`spinetrack round` started together, and the `spinetrack webhook` receiver, which gets an
annotation event with every pair. Whoever holds the round is killed (SIGKILL) as soon as it is
seen running a step past the last kill, so the round is cut at (nearly) every step; a killed
receiver is started again. The simulated annotator (the only stand-in, for the people) answers
every task once the round waits for them.

Afterwards every step finished exactly once and runs never overlapped (the round's `step_runs`
log), the round trained one model, Label Studio holds one task per selected instance, and the
store holds every annotation exactly once.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from annotation.labelstudio.client import Connection, connect, connection_of
from annotation.labelstudio.pull import stored_project
from annotation.labelstudio.server import LabelStudioServer
from annotation.labelstudio.webhook import SECRET_HEADER
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks
from pipeline.active_learning.loop import training_labels
from pipeline.active_learning.rounds import ROUND_STEPS, get_round, live_human_revisions, step_done
from pipeline.intake.real_import import import_coco
from pipeline.splits import assign_splits
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, ModelVersion, Revision, Round
from synthetic.ingest import ingest_sequence
from synthetic.sample_set import SequenceSpec, render_set
from tests.prefect_fixtures import prefect_env

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]
SIZE = {"width": 128, "height": 96}
REPO = Path(__file__).resolve().parents[1]
BUDGET = 10
SECRET = "drivers-test-secret"


def _store(server: LabelStudioServer) -> Store:
    home = Path(server.document_root) / "drivers-home"
    store = Store(home=home)
    for folder in render_set(home / "renders" / "synthetic", [SequenceSpec("mixed", 311, 12, **SIZE)]):
        ingest_sequence(store, folder)
    for folder in render_set(home / "renders" / "pool", [SequenceSpec("walk", 312, 16, **SIZE),
                                                         SequenceSpec("squat", 313, 4, **SIZE)]):
        import_coco(store, folder / "ground_truth.json", image_dir=folder, subset="pool",
                    group=f"pool/{folder.name}", keep_ground_truth=True)
    pinned = {"synthetic-mixed-seed311": "train", "pool/walk-seed312": "train", "pool/squat-seed313": "val"}
    assign_splits(store, pinned, pinned=pinned)
    from pipeline.model.train import train

    train(store, config="tiny", iters=4, labels=training_labels(store), name="tiny-start")
    return store


class Drivers:
    """The processes that may drive round 1, started and killed by the test."""

    def __init__(self, store: Store, server: LabelStudioServer, prefect_api: str) -> None:
        # One Prefect server for every driver: a killed driver takes nothing another one needs.
        self.env = prefect_env(store.home / "prefect", prefect_api)
        self.env.update(SPINETRACK_HOME=str(store.home), SPINETRACK_LS_URL=server.url,
                        SPINETRACK_LS_TOKEN=server.token, SPINETRACK_LS_DOCUMENT_ROOT=server.document_root,
                        SPINETRACK_LEASE_TTL_S="30", SPINETRACK_WEBHOOK_SECRET=SECRET)
        self.env.pop("SPINETRACK_DB_URL", None)
        self.rounds: list[subprocess.Popen[str]] = []
        self.outputs: list[str] = []
        self.killed: dict[int, str] = {}  # pid -> the step it was running
        self.logs = store.home / "driver-logs"
        self.logs.mkdir(exist_ok=True)
        self.numbers = itertools.count()
        self.log_of: dict[int, Path] = {}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.webhook = self._start_webhook()

    def _spawn(self, *args: str) -> subprocess.Popen[str]:
        log = self.logs / f"{next(self.numbers)}-{args[0]}.log"
        with open(log, "w") as out:  # a file, not a pipe: a chatty process never blocks on it
            proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.log_of[proc.pid] = log
        return proc

    def _start_webhook(self) -> subprocess.Popen[str]:
        return self._spawn("webhook", "--port", str(self.port))

    def start_pair(self) -> None:
        flags = ["--budget", str(BUDGET), "--config", "tiny", "--iters", "3", "--close-when", "1.0",
                 "--val-size", "0", "--no-auto-accept", "--model", "tiny-start",
                 "--annotator", "model:tiny-start"]
        self.rounds += [self._spawn("round", *flags) for _ in range(2)]
        self.event()

    def event(self) -> None:
        """An annotation event for the receiver (a real HTTP request; it may still be starting)."""
        body = json.dumps({"action": "ANNOTATION_CREATED"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/labelstudio", data=body, headers={
            SECRET_HEADER: SECRET, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet: the next pair sends another

    def running(self) -> bool:
        return any(p.poll() is None for p in self.rounds)

    def kill(self, pid: int, step: str) -> bool:
        """SIGKILL the driver `pid` (one of ours), as the holder running `step`."""
        if pid == self.webhook.pid:
            os.killpg(pid, signal.SIGKILL)
            self.webhook.wait()
            self.webhook = self._start_webhook()
        elif pid in {p.pid for p in self.rounds if p.poll() is None}:
            os.killpg(pid, signal.SIGKILL)
        else:
            return False
        self.killed[pid] = step
        return True

    def reap(self) -> None:
        """Collect the finished `round` processes: each exits 0 (done, waiting, or told who drives)."""
        for proc in [p for p in self.rounds if p.poll() is not None]:
            out = self.log_of[proc.pid].read_text()
            self.outputs.append(out)
            assert proc.pid in self.killed or proc.returncode == 0, out[-3000:]
            self.rounds.remove(proc)

    def stop(self) -> None:
        for proc in [*self.rounds, self.webhook]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _running_step(rnd: Round | None) -> tuple[int, str] | None:
    runs = (rnd.state or {}).get("step_runs", []) if rnd is not None else []
    if runs and "finished" not in runs[-1]:
        return int(runs[-1]["by"].split()[1]), runs[-1]["step"]
    return None


def test_one_driver_per_round_through_kills_and_webhooks(labelstudio_server: LabelStudioServer,
                                                         prefect_server: str) -> None:
    store = _store(labelstudio_server)
    conn = connection_of(labelstudio_server)
    drivers = Drivers(store, labelstudio_server, prefect_server)
    annotated: list[int] = []
    next_kill = 0  # index of the first step a kill may hit: each kill is at a later step than the last
    deadline = time.monotonic() + 900
    try:
        drivers.start_pair()
        while time.monotonic() < deadline:
            rnd = get_round(store, 1)
            if rnd is not None and rnd.step == ROUND_STEPS[-1]:
                break
            seen = _running_step(rnd)
            if seen is not None and ROUND_STEPS.index(seen[1]) >= next_kill and drivers.kill(*seen):
                next_kill = ROUND_STEPS.index(seen[1]) + 1
                drivers.start_pair()  # two more drivers and an event race for the dead holder's round
            elif not drivers.running() and (seen is None or seen[0] in drivers.killed):
                drivers.reap()
                if rnd is not None and step_done(rnd, "push") and not annotated:
                    annotated = _annotate_all(store, conn)  # the people, once the round waits for them
                drivers.start_pair()
            time.sleep(0.02)
        while drivers.running():
            time.sleep(0.2)
        drivers.reap()
    finally:
        drivers.stop()
    rnd = get_round(store, 1)
    assert rnd is not None and rnd.step == ROUND_STEPS[-1], rnd.step if rnd else None
    print(f"killed holders at: {sorted(drivers.killed.values(), key=ROUND_STEPS.index)}")
    assert len(set(drivers.killed.values())) >= 4, drivers.killed
    busy = [line for text in drivers.outputs for line in text.splitlines()
            if "round 1 is being advanced by PID" in line]
    assert busy, "two drivers started together: one must have been told the other drives"

    runs = rnd.state["step_runs"]
    for step in ROUND_STEPS:  # every step finished exactly once
        assert sum(1 for r in runs if r["step"] == step and "finished" in r) == 1, (step, runs)
    for before, after in itertools.pairwise(runs):  # one at a time: a run ends before the next starts
        if "finished" in before:
            assert before["finished"] <= after["started"], runs
        else:  # interrupted: its driver was killed
            assert int(before["by"].split()[1]) in drivers.killed, (before, drivers.killed)

    with store.session() as s:
        models = list(s.scalars(select(ModelVersion.name).where(ModelVersion.name.like("%-round1-%"))))
        tasks = list(s.scalars(select(AnnotationTask).where(AnnotationTask.round == 1)))
        humans = list(s.scalars(select(Revision).where(Revision.source == "human")))
    assert len(models) == 1 and rnd.model_version == models[0]
    assert len(tasks) == BUDGET and len({t.task_id for t in tasks}) == BUDGET
    project = stored_project(store, conn)
    assert project is not None
    in_label_studio = [task for task in connect(conn).tasks.list(project=project, fields="task_only",
                                                                  page_size=1000)
                       if (task.data or {}).get("round") == 1]  # a late driver may have started round 2
    assert len(in_label_studio) == BUDGET  # no task pushed twice
    assert len(humans) == len(annotated) == BUDGET  # every annotation stored, once
    assert {r.id for r in live_human_revisions(store, 1)} == {r.id for r in humans}
    assert rnd.state["human_labels"] == BUDGET


def _annotate_all(store: Store, conn: Connection) -> list[int]:
    client = connect(conn)
    project = stored_project(store, conn)
    assert project is not None
    with store.session() as s:
        tasks = dict(s.execute(select(AnnotationTask.task_id, AnnotationTask.instance_id)
                               .where(AnnotationTask.round == 1)).tuples().all())
    truth = {rev.instance_id: (list(rev.keypoints), list(rev.bbox))
             for iid in tasks.values() for rev in store.revisions(iid) if rev.source == "import"}
    person = AnnotatorProfile(email="steady-annotator@spinetrack.local", pixel_noise=1.0)
    return annotate_tasks(client, project, truth.get, profile=person,
                          task_ids=sorted(t for t in tasks if t is not None)).annotation_ids
