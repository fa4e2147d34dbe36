"""Label Studio state that vanishes, against a real server of this module's own (issue 20, item 3).

A task deleted by a manager, the project deleted, the token revoked, the server's database reset to
an older backup: human labels already in the store are never revoked because Label Studio forgot
them (only an annotation deleted while its task exists is a revocation), the next push recreates
the open tasks that are missing, and each case is one line saying what happened and what was done.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from annotation.labelstudio.client import LabelStudioRefused, connect, connection_of
from annotation.labelstudio.hooks import LabelStudioHooks
from annotation.labelstudio.pull import pull, stored_project
from annotation.labelstudio.push import push
from annotation.labelstudio.server import LabelStudioServer, ls_venv, start_server, stop_server
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Revision, SyncState
from schemas.keypoints import NUM_KEYPOINTS

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]
REPO = Path(__file__).resolve().parents[1]
PEOPLE = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A server of this module's own: these tests revoke its token and reset its database."""
    if not (ls_venv() / "bin" / "label-studio").is_file():
        pytest.skip(f"Label Studio server virtualenv not present at {ls_venv()}")
    base = tmp_path_factory.mktemp("labelstudio-vanished")
    (base / "docroot").mkdir()
    running = start_server(base / "data", document_root=base / "docroot")
    try:
        yield running
    finally:
        stop_server(running)


def _store(tmp_path: Path, server: LabelStudioServer) -> tuple[Store, list[int], dict[int, int]]:
    """A store with PEOPLE people (one image each) pushed as round-1 tasks: instance -> task id."""
    store = Store.open(home=tmp_path / "home")
    people = []
    for n in range(PEOPLE):
        path = tmp_path / f"person-{n}.png"
        PILImage.new("RGB", (64, 48), (40 * n, 90, 90)).save(path)
        image = store.add_image(path, source="real", subset="people", group_key=f"p{n}", width=64, height=48)
        people.append(store.instance_id(image, "p", meta={"bbox": [4.0, 4.0, 40.0, 40.0]}))
    report = push(store, people, 1, conn=connection_of(server))
    return store, people, dict(report.task_ids)


def _annotate(server: LabelStudioServer, store: Store, task_ids: list[int],
              email: str = "a@x.local") -> list[int]:
    conn = connection_of(server)
    project = stored_project(store, conn)
    assert project is not None
    kps = [10.0, 10.0, 2.0] * NUM_KEYPOINTS
    person = AnnotatorProfile(email=email, pixel_noise=0.0)
    return annotate_tasks(connect(conn), project, lambda _iid: (kps, [4.0, 4.0, 40.0, 40.0]),
                          profile=person, task_ids=task_ids).annotation_ids


def _live(store: Store) -> set[int]:
    """Ids of accepted human revisions not taken back."""
    humans = store.revisions_for(sources=["human"])
    revoked = {r.supersedes for r in humans if r.supersedes is not None}
    return {r.id for r in humans if r.accepted and r.id not in revoked}


def _hooks(server: LabelStudioServer) -> tuple[LabelStudioHooks, list[str]]:
    lines: list[str] = []
    return LabelStudioHooks(connection_of(server), log=lines.append), lines


def test_tasks_deleted_by_a_manager(server: LabelStudioServer, tmp_path: Path) -> None:
    store, people, tasks = _store(tmp_path, server)
    _annotate(server, store, [tasks[people[0]], tasks[people[2]]])
    pull(store, conn=connection_of(server))
    kept = _live(store)
    assert len(kept) == 2
    client = connect(connection_of(server))
    client.tasks.delete(id=str(tasks[people[0]]))  # done: its label is in the store
    client.tasks.delete(id=str(tasks[people[1]]))  # still open

    hooks, lines = _hooks(server)
    hooks.pull(store)
    assert _live(store) == kept  # a deleted task takes no label back
    assert len(lines) == 2, lines
    assert "no longer has 2 of the store's tasks" in lines[0]
    assert "1 done keep their human labels" in lines[0] and "1 open ones will be pushed again" in lines[0]
    assert lines[1].startswith("pushed 1 lost tasks to Label Studio again")
    project = stored_project(store, connection_of(server))
    keys = sorted(t.data["spinetrack_key"] for t in client.tasks.list(project=project, fields="task_only"))
    assert keys == sorted([f"{people[1]}:1", f"{people[2]}:1"])  # the open one is back, once
    hooks.pull(store)
    assert len(lines) == 2  # said once, not at every pull

    # the one true revocation: an annotation deleted while its task exists
    annotation = client.annotations.list(id=tasks[people[2]])[0]
    client.annotations.delete(id=annotation.id)
    assert pull(store, conn=connection_of(server)).revoked == 1
    assert len(_live(store)) == 1


def test_project_deleted(server: LabelStudioServer, tmp_path: Path) -> None:
    store, people, tasks = _store(tmp_path, server)
    _annotate(server, store, [tasks[people[0]]])
    pull(store, conn=connection_of(server))
    kept = _live(store)
    client = connect(connection_of(server))
    old = stored_project(store, connection_of(server))
    assert old is not None
    client.projects.delete(id=old)

    hooks, lines = _hooks(server)
    hooks.pull(store)
    assert _live(store) == kept and len(kept) == 1
    assert len(lines) == 2, lines
    assert f"Label Studio project {old} at {server.url} is gone" in lines[0]
    assert "the human labels of its 1 done tasks" in lines[0]
    assert "its 2 open tasks go to a new project" in lines[0]
    new = stored_project(store, connection_of(server))
    assert new is not None and new != old and lines[1].endswith(f"(project {new})")
    keys = sorted(t.data["spinetrack_key"] for t in client.tasks.list(project=new, fields="task_only"))
    assert keys == sorted([f"{people[1]}:1", f"{people[2]}:1"])
    hooks.pull(store)
    assert len(lines) == 2


def test_revoked_token(server: LabelStudioServer, tmp_path: Path) -> None:
    store, _people, _tasks = _store(tmp_path, server)

    def counts() -> list[int]:
        with store.session() as s:
            tables = (Revision, AnnotationTask, SyncState)
            return [int(s.scalar(select(func.count()).select_from(t)) or 0) for t in tables]

    before = counts()
    answer = httpx.post(f"{server.url}/api/current-user/reset-token/",
                        headers={"Authorization": f"Token {server.token}"}, timeout=30)
    assert answer.status_code == 201
    old, server.token = server.token, answer.json()["token"]  # the rest of the module uses the new one
    try:
        with pytest.raises(LabelStudioRefused) as refused:
            pull(store, conn=replace(connection_of(server), token=old))
        assert str(refused.value).startswith(f"Label Studio at {server.url} refused the token (HTTP 401)")
        assert counts() == before
        env = {**os.environ, "SPINETRACK_HOME": str(store.home), "SPINETRACK_LS_URL": server.url,
               "SPINETRACK_LS_TOKEN": old, "COLUMNS": "200"}
        env.pop("SPINETRACK_DB_URL", None)
        done = subprocess.run([sys.executable, "-m", "flows.cli", "pull"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        lines = [x for x in (done.stdout + done.stderr).splitlines() if x.strip()]
        assert done.returncode == 2 and len(lines) == 1 and "refused the token (HTTP 401)" in lines[0], lines
        assert counts() == before
    finally:
        assert pull(store, conn=connection_of(server)).project_id is not None  # the new token works


def test_database_reset_to_an_older_backup(server: LabelStudioServer, tmp_path: Path) -> None:
    store, people, tasks = _store(tmp_path, server)
    pull(store, conn=connection_of(server))
    database = Path(server.data_dir) / "label_studio.sqlite3"
    backup = tmp_path / "label_studio.backup.sqlite3"
    with sqlite3.connect(database) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)  # Label Studio's database, after the push, before any annotation
    _annotate(server, store, [tasks[people[0]], tasks[people[1]]])
    pull(store, conn=connection_of(server))
    kept = _live(store)
    assert len(kept) == 2

    stop_server(server)  # the server's database goes back to the backup
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, database)
    again = start_server(Path(server.data_dir), document_root=server.document_root,
                         port=int(server.url.rsplit(":", 1)[1]), email=server.email,
                         password=server.password, token=server.token)
    server.pid, server.startup_s = again.pid, again.startup_s

    hooks, lines = _hooks(server)
    hooks.pull(store)
    assert _live(store) == kept  # Label Studio forgot them; nobody deleted them
    assert any("no longer has 2 annotations the store pulled" in line for line in lines), lines
    # a person annotates again on the reset server: it hands out annotation ids it used before
    _annotate(server, store, [tasks[people[1]]], email="b@x.local")
    hooks.pull(store)
    assert kept <= _live(store) and len(_live(store)) == 3
    assert any("hands out annotation ids it used before" in line for line in lines), lines
