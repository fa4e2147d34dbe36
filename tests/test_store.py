"""The store: idempotent writes, append-only revisions, human labels win over model output."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import inspect

from pipeline.store import Store
from schemas.errors import InputError


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
