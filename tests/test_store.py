"""The store: idempotent writes, append-only revisions, human labels win over model output.

Every test runs on SQLite and on a real PostgreSQL server (tests/postgres_fixtures.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import inspect, select

from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Image
from pipeline.store.store import IN_CHUNK, NewImage, NewLabel, NewRevision, chunked
from schemas.enums import RevisionSource, RevisionStatus, TaskState
from schemas.errors import InputError


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, home: Path) -> Iterator[Store]:
    """The store on each database the project supports."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with Store.open(url, home=home) as st:
        yield st


def _image(path: Path, colour: int = 10) -> Path:
    PILImage.new("RGB", (40, 30), (colour, 0, 0)).save(path)
    return path


def _kps(value: float) -> list[float]:
    return [value, value + 1, 2] * 37


def test_migrations_create_every_table(store: Store) -> None:
    names = set(inspect(store.engine).get_table_names())
    assert {"images", "instances", "revisions", "model_versions", "annotation_tasks", "releases",
            "split_assignments", "rounds", "ingests", "review_tags", "sync_state"} <= names
    assert "alembic_version" in names


def test_same_image_twice_is_one_image(store: Store, tmp_path: Path) -> None:
    img = _image(tmp_path / "a.png")
    a = store.add_image(img, source="real", subset="coco", group_key="v1", width=40, height=30)
    b = store.add_image(img, source="real", subset="coco", group_key="v1", width=40, height=30)
    assert a == b
    assert store.instance_id(a, "p0") == store.instance_id(a, "p0")
    assert store.instance_id(a, "p0") != store.instance_id(a, "p1")


def test_revisions_append_and_latest_accepted_is_current(store: Store, tmp_path: Path) -> None:
    img = store.add_image(_image(tmp_path / "a.png"), source="real", subset="coco", group_key="v",
                          width=40, height=30)
    inst = store.instance_id(img, "p0")
    r1 = store.add_revision(inst, _kps(1), [0, 0, 10, 10], source="pseudo", accepted=False)
    assert store.current_labels() == []
    r2 = store.add_revision(inst, _kps(2), [0, 0, 10, 10], source="human", annotator="ann1",
                            external_id="ls:1:v1")
    assert r1 is not None and r2 is not None and r2 > r1
    # the same external annotation is stored once
    assert store.add_revision(inst, _kps(3), [0, 0, 10, 10], source="human", external_id="ls:1:v1") is None
    labels = store.current_labels()
    assert [(lab.revision_id, lab.source, lab.keypoints[0]) for lab in labels] == [(r2, "human", 2.0)]
    assert len(store.revisions(inst)) == 2


def test_model_output_never_overrides_a_human_label(store: Store, tmp_path: Path) -> None:
    img = store.add_image(_image(tmp_path / "a.png"), source="real", subset="coco", group_key="v",
                          width=40, height=30)
    inst = store.instance_id(img, "p0")
    store.add_revision(inst, _kps(5), [0, 0, 10, 10], source="human")
    rid = store.add_revision(inst, _kps(9), [0, 0, 10, 10], source="pseudo-accepted", accepted=True)
    assert rid is not None
    (current,) = store.current_labels()
    assert current.source == "human" and current.keypoints[0] == 5.0
    assert store.revisions(inst)[-1].status == "superseded-by-human"


def test_wrong_keypoint_count_is_named(store: Store, tmp_path: Path) -> None:
    img = store.add_image(_image(tmp_path / "a.png"), source="real", subset="coco", group_key="v",
                          width=40, height=30)
    inst = store.instance_id(img, "p0")
    with pytest.raises(InputError, match="keypoints.*expected 111"):
        store.add_revision(inst, [1.0, 2.0, 2.0] * 17, [0, 0, 1, 1], source="human")


def test_unlabelled_pool_and_snapshot(store: Store, tmp_path: Path) -> None:
    img = store.add_image(_image(tmp_path / "a.png"), source="real", subset="coco", group_key="v",
                          width=40, height=30)
    a, b = store.instance_id(img, "a"), store.instance_id(img, "b")
    assert [inst.id for _, inst in store.unlabelled_instances()] == [a, b]
    before = store.snapshot_id()
    store.add_revision(a, _kps(1), [0, 0, 1, 1], source="human")
    assert [inst.id for _, inst in store.unlabelled_instances()] == [b]
    assert store.snapshot_id() != before


def test_batched_labels_are_one_write_and_idempotent(store: Store, tmp_path: Path) -> None:
    images = [NewImage(_image(tmp_path / f"f{n}.png", colour=n), source="synthetic", subset="s",
                       group_key="seq", width=40, height=30, frame_index=n) for n in range(3)]
    labels = [NewLabel(img, f"actor-{a}", {"actor": a},
                       NewRevision(_kps(a), [0, 0, 5, 5], source=RevisionSource.SYNTHETIC,
                                   external_id=f"seq:{n}:{a}"))
              for n, img in enumerate(images) for a in range(2)]
    first = store.add_labels(labels)
    assert len({w.image_id for w in first}) == 3 and len({w.instance_id for w in first}) == 6
    assert all(w.revision_id is not None for w in first)
    again = store.add_labels(labels)
    assert [(w.image_id, w.instance_id) for w in again] == [(w.image_id, w.instance_id) for w in first]
    assert all(w.revision_id is None for w in again)  # same external ids: stored once
    assert store.count_revisions(sources=[RevisionSource.SYNTHETIC]) == 6
    assert store.stored_external_ids(prefix="seq:1:") == {"seq:1:0", "seq:1:1"}
    # one-by-one calls find what the batch wrote
    assert store.add_image(images[0].path, source="synthetic", subset="s", group_key="seq",
                           width=40, height=30) == first[0].image_id
    assert store.instance_id(first[0].image_id, "actor-0") == first[0].instance_id


def test_queries_filter_and_chunk_past_the_parameter_limit(store: Store, tmp_path: Path) -> None:
    img = store.add_image(_image(tmp_path / "a.png"), source="real", subset="coco", group_key="v",
                          width=40, height=30)
    count = IN_CHUNK + 7
    written = store.add_labels([
        NewLabel(NewImage(tmp_path / "a.png", "real", "coco", "v", 40, 30), f"p{n}", None,
                 NewRevision(_kps(n), [0, 0, 1, 1], source=RevisionSource.PSEUDO, accepted=False,
                             model_version="m1", round=n % 2))
        for n in range(count)
    ])
    instances = [w.instance_id for w in written]
    assert {w.image_id for w in written} == {img}
    assert len(store.revisions_for(instances)) == count
    assert len(store.revisions_for(instances, round=1)) == count // 2
    assert store.revisions_for(instances, model_version="other") == []
    assert len(store.latest_labels(accepted_only=False, instance_ids=instances)) == count
    assert len(store.images_of(instances)) == count
    rows = store.scalars_in(select(Image.id), Image.id, [img] * 3)
    assert rows == [img]
    assert [len(c) for c in chunked(range(count))] == [IN_CHUNK, 7]


def test_tasks_sync_values_and_group_keys(store: Store, tmp_path: Path) -> None:
    img = store.add_image(_image(tmp_path / "a.png"), source="real", subset="coco", group_key="v9",
                          width=40, height=30)
    a, b = store.instance_id(img, "a"), store.instance_id(img, "b")
    with store.session() as s:
        s.add_all([AnnotationTask(instance_id=a, round=1, state=TaskState.OPEN),
                   AnnotationTask(instance_id=b, round=1, state=TaskState.DONE),
                   AnnotationTask(instance_id=b, round=2, state=TaskState.OPEN)])
    assert [t.instance_id for t in store.tasks(round=1, states=[TaskState.OPEN])] == [a]
    assert len(store.tasks(instance_ids=[b])) == 2
    assert store.tasked_instance_ids() == {a, b}
    assert store.group_keys() == ["v9"]
    assert store.sync_value("cursor") is None
    store.set_sync_value("cursor", {"at": 1})
    store.set_sync_value("cursor", {"at": 2})
    assert store.sync_value("cursor") == {"at": 2}


def test_status_words_are_the_stored_strings(store: Store, tmp_path: Path) -> None:
    img = store.add_image(_image(tmp_path / "a.png"), source="real", subset="coco", group_key="v",
                          width=40, height=30)
    inst = store.instance_id(img, "p0")
    store.add_revision(inst, _kps(1), [0, 0, 1, 1], source=RevisionSource.HUMAN)
    store.add_revision(inst, _kps(2), [0, 0, 1, 1], source=RevisionSource.PSEUDO_ACCEPTED)
    last = store.revisions(inst)[-1]
    assert last.status == RevisionStatus.SUPERSEDED_BY_HUMAN == "superseded-by-human"
    assert last.accepted is False


def test_a_loaded_model_travels_with_its_name_and_metadata(home: Path) -> None:
    import torch

    from pipeline.model.predict import untrained_model
    from pipeline.model.registry import LoadedModel, load_model, save_model

    with Store.open(home=home) as st:
        model = untrained_model("tiny")
        version = save_model(st, model, name="tiny-t", config_name="tiny", config=model.cfg,
                             data_snapshot="snap1", metrics={"all_AP": 0.5})
        loaded = load_model(st, "tiny-t")
        assert isinstance(loaded, LoadedModel)
        assert loaded.name == "tiny-t" and loaded.sha256 == version.checkpoint_sha256
        assert loaded.meta["data_snapshot"] == "snap1" and loaded.meta["metrics"] == {"all_AP": 0.5}
        first = next(iter(model.state_dict().values()))
        assert torch.equal(next(iter(loaded.module.state_dict().values())), first)
        module, meta = loaded  # the old (module, meta) unpacking still works
        assert module is loaded.module and meta is loaded.meta


def test_batched_revisions_keep_the_one_by_one_rules(store: Store, tmp_path: Path) -> None:
    img = store.add_image(_image(tmp_path / "a.png"), source="real", subset="coco", group_key="v",
                          width=40, height=30)
    a, b = store.instance_id(img, "a"), store.instance_id(img, "b")
    store.add_revision(b, _kps(1), [0, 0, 1, 1], source=RevisionSource.HUMAN)
    ids = store.add_revisions([
        (a, NewRevision(_kps(2), [0, 0, 1, 1], source=RevisionSource.HUMAN, external_id="ls:1")),
        (a, NewRevision(_kps(3), [0, 0, 1, 1], source=RevisionSource.PSEUDO_ACCEPTED)),  # after a person
        (b, NewRevision(_kps(4), [0, 0, 1, 1], source=RevisionSource.PSEUDO_ACCEPTED)),  # stored person
        (a, NewRevision(_kps(5), [0, 0, 1, 1], source=RevisionSource.HUMAN, external_id="ls:1")),  # again
    ])
    assert ids[0] is not None and ids[1] is not None and ids[2] is not None and ids[3] is None
    assert [r.status for r in store.revisions_for([a, b], sources=[RevisionSource.PSEUDO_ACCEPTED])] == [
        RevisionStatus.SUPERSEDED_BY_HUMAN, RevisionStatus.SUPERSEDED_BY_HUMAN]
    assert {lab.instance_id: lab.keypoints[0] for lab in store.current_labels()} == {a: 2.0, b: 1.0}
    again = NewRevision(_kps(6), [0, 0, 1, 1], source="human", external_id="ls:1")
    assert store.add_revisions([(a, again)]) == [None]


_OPEN_STORE = """
import sys
from pathlib import Path
from pipeline.store import Store
Store(home=Path(sys.argv[1])).close()
"""


def _open_in_process(home: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("SPINETRACK_DB_URL", None)
    return subprocess.Popen([sys.executable, "-c", _OPEN_STORE, str(home)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_new_sqlite_store_opened_by_several_processes_at_once(tmp_path: Path) -> None:
    """Dask workers (or two commands) opening a new store at once: one migrates, the others wait
    on the file lock and find it at head. Without the lock one of them failed with "table
    alembic_version already exists" (2 of 18 processes in 6 trials of 3)."""
    import fcntl

    home = tmp_path / "held"
    home.mkdir()
    lock = home / "store.sqlite.migrate-lock"
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        waiting = _open_in_process(home)
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=5)  # it waits for the migration lock
        fcntl.flock(fh, fcntl.LOCK_UN)
    assert waiting.wait(timeout=120) == 0, waiting.communicate()[1][-2000:]

    for trial in range(3):
        home = tmp_path / f"race{trial}"
        procs = [_open_in_process(home) for _ in range(4)]
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
        with Store(home=home) as store:
            assert "revisions" in inspect(store.engine).get_table_names()
