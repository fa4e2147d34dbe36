"""`spinetrack backup` / `spinetrack restore`: a store lost and brought back (issue 20).

A store with a release and a round waiting for annotators (real Label Studio) is backed up, then
its whole home is deleted (renders, images, database, models). Restored into a new home, every
release is rebuilt byte for byte and the waiting round continues: the people's annotations are
pulled, the round retrains from the restored start model and completes. On PostgreSQL the
database travels through pg_dump / pg_restore. A damaged backup or a restore over an existing
store is refused with one line naming the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from annotation.labelstudio.client import connect, connection_of
from annotation.labelstudio.hooks import LabelStudioHooks
from annotation.labelstudio.pull import stored_project
from annotation.labelstudio.server import LabelStudioServer
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks
from pipeline.active_learning.loop import (
    RoundContext,
    advance_round,
    resolve_settings,
    start_round,
    training_labels,
)
from pipeline.active_learning.rounds import ROUND_STEPS, get_round, live_human_revisions
from pipeline.backup import backup, restore
from pipeline.intake.real_import import import_coco
from pipeline.release.build import create_release, get_release, verify_release
from pipeline.splits import assign_splits
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Image, ModelVersion
from schemas.enums import RoundStatus
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS
from synthetic.ingest import ingest_sequence
from synthetic.sample_set import SequenceSpec, render_set
from tests.postgres_fixtures import PostgresServer

REPO = Path(__file__).resolve().parents[1]
SIZE = {"width": 96, "height": 80}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _spinetrack(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPINETRACK_HOME": str(home)}
    env.pop("SPINETRACK_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def _fill(store: Store, root: Path, *, pool: bool) -> None:
    for folder in render_set(root / "synthetic", [SequenceSpec("mixed", 321, 10, **SIZE)]):
        ingest_sequence(store, folder)
    groups = {"synthetic-mixed-seed321": "train"}
    if pool:
        for folder in render_set(root / "pool", [SequenceSpec("walk", 322, 12, **SIZE),
                                                 SequenceSpec("squat", 323, 4, **SIZE)]):
            import_coco(store, folder / "ground_truth.json", image_dir=folder, subset="pool",
                        group=f"pool/{folder.name}", keep_ground_truth=True)
        groups |= {"pool/walk-seed322": "train", "pool/squat-seed323": "val"}
    assign_splits(store, groups, pinned=groups)


def _round(store: Store, server: LabelStudioServer) -> RoundContext:
    given = {"budget": 6, "config": "tiny", "train_iters": 2, "close_when": 1.0, "val_size": 0,
             "auto_accept": False}
    settings, _ = resolve_settings(store, 1, given)
    start_round(store, 1, settings, "tiny-start")
    hooks = LabelStudioHooks(connection_of(server))
    return RoundContext(store=store, settings=settings, number=1, push=hooks.push, pull=hooks.pull,
                        log=lambda _m: None)


@pytest.mark.slow
@pytest.mark.labelstudio
def test_a_lost_store_comes_back_with_its_releases_and_its_waiting_round(
    labelstudio_server: LabelStudioServer, tmp_path: Path,
) -> None:
    old_home, new_home = tmp_path / "old-home", tmp_path / "new-home"
    store = Store.open(home=old_home)
    _fill(store, old_home / "renders", pool=True)
    from pipeline.model.train import train

    train(store, config="tiny", iters=2, labels=training_labels(store), name="tiny-start")
    release = create_release(store, "0.1.0").path
    released = _files(release)
    assert advance_round(_round(store, labelstudio_server)) == RoundStatus.AWAITING_ANNOTATIONS
    store.close()

    done = _spinetrack(old_home, "backup", str(tmp_path / "backup"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "releases 0.1.0" in done.stdout
    shutil.rmtree(old_home)  # renders, the store's images, database, models: all gone

    done = _spinetrack(new_home, "restore", str(tmp_path / "backup"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rebuilt byte for byte: 0.1.0" in " ".join(done.stdout.split())
    again = _spinetrack(new_home, "restore", str(tmp_path / "backup"))  # never over a store
    assert again.returncode == 2 and "a store exists here" in again.stdout + again.stderr

    restored = Store.open(home=new_home)
    rebuilt = get_release(restored, "0.1.0").path
    assert rebuilt == new_home / "releases" / "0.1.0" and _files(rebuilt) == released
    assert verify_release(rebuilt) == []
    with restored.session() as s:
        paths = [Path(p) for p in s.scalars(select(Image.path))]
        assert paths and all(p.is_file() and p.is_relative_to(new_home) for p in paths)
        start = s.get(ModelVersion, "tiny-start")
        assert start is not None and Path(start.checkpoint_path).is_relative_to(new_home)

    # the people finish the round's tasks; the restored store pulls them and completes the round
    conn = connection_of(labelstudio_server)
    project = stored_project(restored, conn)
    assert project is not None
    with restored.session() as s:
        tasks = dict(s.execute(select(AnnotationTask.task_id, AnnotationTask.instance_id)
                               .where(AnnotationTask.round == 1)).tuples().all())
    truth = {rev.instance_id: (list(rev.keypoints), list(rev.bbox))
             for iid in tasks.values() for rev in restored.revisions(iid) if rev.source == "import"}
    made = annotate_tasks(connect(conn), project, truth.get, profile=AnnotatorProfile(pixel_noise=1.0),
                          task_ids=sorted(t for t in tasks if t is not None)).annotation_ids
    assert advance_round(_round(restored, labelstudio_server)) == RoundStatus.COMPLETE
    rnd = get_round(restored, 1)
    assert rnd is not None and rnd.step == ROUND_STEPS[-1]
    assert len(live_human_revisions(restored, 1)) == len(made) == len(tasks) == 6
    assert rnd.model_version is not None and (new_home / "models").is_dir()
    restored.close()


def test_postgres_store_through_pg_dump_and_back(postgres_url: str, postgres_server: PostgresServer,
                                                 tmp_path: Path) -> None:
    import psycopg

    old_home, new_home = tmp_path / "old-home", tmp_path / "new-home"
    store = Store.open(postgres_url, home=old_home)
    _fill(store, old_home / "renders", pool=False)
    release = create_release(store, "1.0.0").path
    released = _files(release)
    summary = backup(store, tmp_path / "backup")
    store.close()
    assert summary.database == "postgresql" and summary.releases == ["1.0.0"]
    shutil.rmtree(old_home)

    name = f"restored_{os.getpid()}"
    target = postgres_server.url(name)
    admin = dict(host=str(postgres_server.socket_dir), port=postgres_server.port,
                 user=postgres_server.user, dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        restore(tmp_path / "backup", home=new_home, url=target)
        with Store.open(target, home=new_home) as restored:
            assert _files(get_release(restored, "1.0.0").path) == released
        with pytest.raises(InputError) as err:  # never over a store
            restore(tmp_path / "backup", home=new_home, url=target)
        assert err.value.field == "SPINETRACK_DB_URL"
    finally:
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_damaged_backup_is_refused_naming_the_file(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"an image")
    image = store.add_image(path, source="real", subset="s", group_key="g", width=2, height=2)
    store.add_revision(store.instance_id(image, "p"), [1.0, 1.0, 2.0] * NUM_KEYPOINTS, [0, 0, 2, 2],
                       source="human", annotator="a")
    backup(store, tmp_path / "backup")
    with pytest.raises(InputError) as err:
        backup(store, tmp_path / "backup")
    assert err.value.field == "DIR"
    damaged = next((tmp_path / "backup" / "objects").rglob("*.png"))
    damaged.chmod(0o644)
    damaged.write_bytes(b"bit rot")
    with pytest.raises(InputError) as err:
        restore(tmp_path / "backup", home=tmp_path / "elsewhere")
    assert err.value.path == str(damaged) and err.value.field == "sha256"
    assert not (tmp_path / "elsewhere" / "store.sqlite").exists()
