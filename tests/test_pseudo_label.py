"""Pseudo-labelling real samples end to end: import boxes, predict with a real model, store proposals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.active_learning.pseudo_label import external_id, pseudo_label, pseudo_label_quality, spine_stats
from pipeline.intake.real_import import import_coco
from pipeline.model.predict import untrained_model
from pipeline.store import Store
from schemas.keypoints import NUM_KEYPOINTS, SPINE_CHAIN


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return untrained_model("tiny", seed=2)


def test_real_samples_get_proposals_not_labels(store: Store, real_people: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    import_coco(store, real_people / "coco" / "test_coco.json", keep_ground_truth=True)
    summary = pseudo_label(store, tiny, "tiny-untrained", image_source="real", chunk=4, batch_size=3)
    assert (summary.candidates, summary.written, summary.already_done, summary.without_box) == (14, 14, 0, 0)
    assert summary.mean_uncertainty is not None and 0.0 <= summary.mean_uncertainty <= 1.0

    for _img, inst in store.unlabelled_instances():
        rev = store.revisions(inst.id)[-1]
        assert rev.source == "pseudo" and rev.accepted is False
        assert rev.model_version == "tiny-untrained"
        assert rev.external_id == external_id("tiny-untrained", inst.id)
        assert rev.bbox == pytest.approx(inst.meta["bbox"])
        assert len(rev.keypoints) == NUM_KEYPOINTS * 3 and len(rev.scores or []) == NUM_KEYPOINTS
        parts = rev.quality["uncertainty_parts"]
        assert parts["combined"] == pytest.approx(rev.uncertainty)
        assert parts["flip"] is not None and len(parts["per_keypoint"]) == NUM_KEYPOINTS
        assert len(rev.quality["features"]) > 0
    assert store.current_labels() == []  # proposals never count as labels

    again = pseudo_label(store, tiny, "tiny-untrained", image_source="real")
    assert (again.written, again.already_done) == (0, 14)

    quality = pseudo_label_quality(store, "tiny-untrained")
    assert quality.count == 12  # the 14 imported people but the 2 without labelled keypoints
    assert 0.0 <= quality.mean_oks < 1.0
    assert set(quality.by_partition) == {"all", "body", "feet", "spine"}
    assert 0.0 <= quality.ap["all_AP"] <= 1.0 and quality.ap["spine_AP"] == -1.0  # COCO has no spine


def test_human_labels_are_left_alone(store: Store, real_people: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    import_coco(store, real_people / "coco" / "test_coco.json", boxes_only=True)
    _img, first = store.unlabelled_instances()[0]
    human = store.add_revision(first.id, [1.0] * (NUM_KEYPOINTS * 3), first.meta["bbox"], source="human")
    summary = pseudo_label(store, tiny, "tiny-untrained", flip_test=False)
    assert summary.candidates == 13 and summary.written == 13
    assert [r.id for r in store.revisions(first.id)] == [human]
    assert store.current_labels()[0].source == "human"
    rev = store.revisions(store.unlabelled_instances()[0][1].id)[-1]
    assert rev.quality["uncertainty_parts"]["flip"] is None


def test_boxes_fall_back_to_revisions(store: Store, real_people: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    image = real_people / "coco" / "000000000785.jpg"
    img = store.add_image(image, source="real", subset="manual", group_key="manual/785",
                          width=640, height=425)
    boxed = store.instance_id(img, "a")
    store.add_revision(boxed, [0.0] * (NUM_KEYPOINTS * 3), [280.79, 44.73, 218.7, 346.68],
                       source="import", accepted=False)
    store.instance_id(img, "no-box")
    summary = pseudo_label(store, tiny, "tiny-untrained")
    assert (summary.written, summary.without_box) == (1, 1)
    rev = store.revisions(boxed)[-1]
    assert rev.provenance["box_source"] == "revision"
    assert rev.bbox == pytest.approx([280.79, 44.73, 218.7, 346.68])


def test_spine_stats_come_from_synthetic_labels(store: Store) -> None:
    assert spine_stats(store) is None
    rng = np.random.default_rng(0)
    for n in range(25):
        img = store.add_image(f"/nowhere/{n}.png", source="synthetic", subset="train-unreal",
                              group_key="seq", width=100, height=300, sha256=f"{n:064x}")
        inst = store.instance_id(img, "actor0")
        kps = np.zeros((NUM_KEYPOINTS, 3))
        kps[:, 2] = 2
        kps[list(SPINE_CHAIN), 0] = 50 + rng.normal(0, 0.5, len(SPINE_CHAIN))
        kps[list(SPINE_CHAIN), 1] = 250 - 20 * np.arange(len(SPINE_CHAIN))
        store.add_revision(inst, kps.ravel().tolist(), [0, 0, 100, 300], source="synthetic")
    stats = spine_stats(store)
    assert stats is not None and stats.count == 25
    assert (store.home / "stats" / "spine_stats.json").is_file()
    assert np.allclose(stats.ratio_mean, 1 / 8, atol=1e-3)


@pytest.mark.slow
def test_cli_imports_and_pseudo_labels_with_a_registered_model(store: Store, real_people: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from flows.app import app
    from flows.cli import _register
    from pipeline.model.registry import save_model

    save_model(store, tiny, name="tiny-registered", config_name="tiny", config=tiny.cfg, data_snapshot="none")
    _register()
    runner = CliRunner()
    coco = real_people / "coco" / "test_coco.json"
    result = runner.invoke(app, ["import-real", str(coco), "--keep-ground-truth"])  # the old name of --hidden
    assert result.exit_code == 0, result.output
    assert "imported 4 images, 14 instances, 0 with human labels (0 points), 14 hidden ground-truth" \
        in result.output

    result = runner.invoke(app, ["pseudo-label", "--model", "tiny-registered", "--source", "real"])
    assert result.exit_code == 0, result.output
    assert "pseudo-labelled 14 of 14 instances" in result.output
    assert pseudo_label_quality(store, "tiny-registered").count == 12

    result = runner.invoke(app, ["pseudo-label", "--model", "tiny-registered"])
    assert result.exit_code == 0, result.output
    assert "pseudo-labelled 0 of 14 instances (14 already done" in result.output
