"""FiftyOne review: dataset contents field by field, saved views, tags back to the store, the App.

Real FiftyOne with its bundled MongoDB (started once for this module, stopped with the process).
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from annotation.fiftyone_review import (
    ACCEPT,
    NEEDS_FIX,
    VIEW_NAMES,
    fiftyone_module,
    keep_serving,
    launch,
    load_into_fiftyone,
    sync_review,
    sync_review_tags,
)
from pipeline.release.build import create_release
from pipeline.store import Store
from pipeline.store.models import ReviewTag, Revision
from schemas.keypoints import GROUP_COLOURS, INDEX, KEYPOINTS, NAMES, NUM_KEYPOINTS, SKELETON

pytestmark = pytest.mark.fiftyone

W, H = 80, 60


@pytest.fixture(scope="module")
def fo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """fiftyone with a database of its own for this module; the datasets made here are deleted."""
    db = tmp_path_factory.mktemp("fiftyone-db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIFTYONE_DATABASE_DIR", str(db))
        module = fiftyone_module(db)
        before = set(module.list_datasets())
        yield module
        for name in set(module.list_datasets()) - before:
            module.delete_dataset(name)
        if module.config.database_name.startswith("spinetrack-") and not before:
            from fiftyone.core.odm.database import get_db_client

            get_db_client().drop_database(module.config.database_name)


@pytest.fixture()
def name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _kps(x0: float, hidden: tuple[int, ...] = ()) -> list[float]:
    out: list[float] = []
    for i in range(NUM_KEYPOINTS):
        out += [0.0, 0.0, 0] if i in hidden else [x0 + i, 10.0 + i / 2, 1 if i == INDEX["nose"] else 2]
    return out


def _image(store: Store, tmp: Path, stem: str, colour: int, **kw: Any) -> int:
    path = tmp / f"{stem}.png"
    PILImage.new("RGB", (W, H), (colour, 20, 30)).save(path)
    return store.add_image(path, width=W, height=H, **kw)


@pytest.fixture()
def small(store: Store, tmp_path: Path) -> dict[str, int]:
    """A synthetic frame, a real image with a corrected and an auto-accepted person, an unlabelled one."""
    ids: dict[str, int] = {}
    syn = _image(store, tmp_path, "syn", 1, source="synthetic", subset="train-unreal", group_key="seq-a",
                 frame_index=3)
    ids["syn"] = store.instance_id(syn, "actor-0")
    ids["syn_rev"] = store.add_revision(
        ids["syn"], _kps(5, hidden=(INDEX["spine_03"],)), [4, 8, 40, 30], source="synthetic",
        quality={"ik_rms_m": 0.004, "ik_max_m": 0.01}) or 0
    real = _image(store, tmp_path, "real", 2, source="real", subset="coco", group_key="video-1")
    ids["fixed"] = store.instance_id(real, "ann-1")
    ids["fixed_pred"] = store.add_revision(
        ids["fixed"], _kps(20), [10, 5, 30, 40], source="pseudo", accepted=False, model_version="m-r0",
        round=1, scores=[0.25] * NUM_KEYPOINTS, uncertainty=0.7) or 0
    ids["fixed_rev"] = store.add_revision(
        ids["fixed"], _kps(22), [12, 6, 30, 40], source="human", annotator="ann1", round=1,
        quality={"agreement_oks": 0.4, "disagreement": True, "annotators": 2}) or 0
    ids["auto"] = store.instance_id(real, "ann-2")
    ids["auto_rev"] = store.add_revision(
        ids["auto"], _kps(30), [20, 10, 20, 20], source="pseudo-accepted", model_version="m-r0", round=1,
        scores=[0.9] * NUM_KEYPOINTS, uncertainty=0.1) or 0
    pool = _image(store, tmp_path, "pool", 3, source="real", subset="yoga", group_key="video-2")
    ids["pool"] = store.instance_id(pool, "det-0")
    ids["pool_pred"] = store.add_revision(
        ids["pool"], _kps(40), [30, 10, 20, 30], source="pseudo", accepted=False, model_version="m-r0",
        round=1, uncertainty=0.9) or 0
    ids["syn_image"], ids["real_image"], ids["pool_image"] = syn, real, pool
    return ids


def _by_image(dataset: Any) -> dict[int, Any]:
    return {s.image_id: s for s in dataset}


def _gt(sample: Any) -> dict[int, Any]:
    return {kp.store_instance_id: kp for kp in sample.ground_truth.keypoints}


def test_working_set_fields(fo: Any, store: Store, small: dict[str, int], name: str) -> None:
    with store.session() as s:  # as the Label Studio pull writes it for a disagreement
        s.add(ReviewTag(instance_id=small["fixed"], tag="annotator-disagreement",
                        reviewer="labelstudio-pull"))
    dataset = load_into_fiftyone(store, name=name)
    assert dataset.persistent and len(dataset) == 3
    assert dataset.default_skeleton.labels == list(NAMES)
    assert [list(e) for e in dataset.default_skeleton.edges] == [[a, b] for a, b in SKELETON]
    assert dataset.skeletons["ground_truth"].labels == list(NAMES)
    samples = _by_image(dataset)

    syn = samples[small["syn_image"]]
    # the store's own copy of the image (pipeline/store/objects.py), read from syn.png
    assert Path(syn.filepath).parent.parent == store.home / "objects"
    source = Path(store.images_of([small["syn"]])[small["syn"]].meta["source_path"])
    assert source.name == "syn.png" and Path(syn.filepath).read_bytes() == source.read_bytes()
    meta = syn.metadata  # from the store and the file: the App shows it, nothing is "None"
    assert (meta.width, meta.height, meta.mime_type) == (W, H, "image/png")
    assert meta.size_bytes == Path(syn.filepath).stat().st_size
    assert (syn.image_source, syn.subset, syn.group_key, syn.frame_index) == ("synthetic", "train-unreal",
                                                                               "seq-a", 3)
    assert syn.revision_sources == ["synthetic"] and syn.ik_residual == pytest.approx(0.004)
    (kp,) = syn.ground_truth.keypoints
    assert (kp.store_instance_id, kp.store_revision_id) == (small["syn"], small["syn_rev"])
    assert kp.source == "synthetic"
    assert len(kp.points) == NUM_KEYPOINTS
    hip = INDEX["hip"]
    assert kp.points[hip] == pytest.approx([(5 + hip) / W, (10 + hip / 2) / H])
    assert all(math.isnan(c) for c in kp.points[INDEX["spine_03"]])  # v=0 -> NaN, order kept
    assert kp.visibility[INDEX["spine_03"]] == 0 and kp.visibility[INDEX["nose"]] == 1
    assert kp.ik_residual == pytest.approx(0.004)
    (spine,) = syn.spine.keypoints  # the spine group again, drawn in its own colour over the body
    spine_names = dataset.skeletons["spine"].labels
    assert set(spine_names) == {k.name for k in KEYPOINTS if k.group == "spine"}
    assert spine.points[spine_names.index("hip")] == pytest.approx(kp.points[hip])
    assert spine.store_instance_id == small["syn"] and spine.instance.id == kp.instance.id
    fields = list(dataset.get_field_schema())  # the App draws the first field on top: spine over body
    assert fields.index("spine") < fields.index("ground_truth")
    stored = list(dataset._sample_collection.find_one({"_id": syn._id}))  # the document's key order
    assert stored.index("spine") < stored.index("ground_truth")
    colours = {f["path"]: f["fieldColor"] for f in dataset.app_config.color_scheme.fields}
    assert colours["spine"] == GROUP_COLOURS["spine"] != colours["ground_truth"] == GROUP_COLOURS["body"]
    (box,) = syn.boxes.detections
    assert box.bounding_box == pytest.approx([4 / W, 8 / H, 40 / W, 30 / H])
    assert box.store_instance_id == small["syn"] and box.instance.id == kp.instance.id
    assert syn.predictions.keypoints == []

    real = samples[small["real_image"]]
    gt = _gt(real)
    assert set(gt) == {small["fixed"], small["auto"]}
    fixed, auto = gt[small["fixed"]], gt[small["auto"]]
    assert (fixed.source, fixed.annotator, fixed.round, fixed.agreement) == ("human", "ann1", 1, 0.4)
    assert fixed.store_revision_id == small["fixed_rev"]
    assert fixed.tags == ["annotator-disagreement"] and auto.tags == []  # open store tags are shown
    assert (auto.source, auto.model_version, auto.uncertainty) == ("pseudo-accepted", "m-r0", 0.1)
    preds = {p.store_instance_id: p for p in real.predictions.keypoints}
    assert preds[small["fixed"]].store_revision_id == small["fixed_pred"]
    assert preds[small["fixed"]].accepted is False
    assert preds[small["fixed"]].confidence == [0.25] * NUM_KEYPOINTS
    assert preds[small["auto"]].store_revision_id == small["auto_rev"]
    assert preds[small["auto"]].accepted is True
    assert real.uncertainty == pytest.approx(0.7)  # the human label's instance, via its proposal
    assert real.agreement == pytest.approx(0.4)
    assert real.annotators == ["ann1"] and real.model_versions == ["m-r0"] and real.round == 1
    assert real.revision_sources == ["human", "pseudo-accepted"] and real.num_instances == 2

    pool = samples[small["pool_image"]]
    assert pool.ground_truth.keypoints == [] and pool.num_instances == 1
    assert [p.store_instance_id for p in pool.predictions.keypoints] == [small["pool"]]
    assert pool.uncertainty == pytest.approx(0.9) and pool.split is None

    views = {v: dataset.load_saved_view(v) for v in dataset.list_saved_views()}
    assert set(views) == set(VIEW_NAMES)
    assert [s.image_id for s in views["most-uncertain"]] == [small["pool_image"], small["real_image"]]
    assert [s.image_id for s in views["annotator-disagreement"]] == [small["real_image"]]
    (accepted,) = list(views["auto-accepted"])
    assert [kp.store_instance_id for kp in accepted.ground_truth.keypoints] == [small["auto"]]
    assert [s.image_id for s in views["source-synthetic"]] == [small["syn_image"]]
    assert len(views["source-real"]) == 2 and len(views["needs-fix"]) == 0
    assert sync_review_tags(store, dataset) == []  # only needs-fix is pulled by default


def test_tags_flow_to_review_tags_once(fo: Any, store: Store, small: dict[str, int], name: str) -> None:
    dataset = load_into_fiftyone(store, name=name)
    samples = _by_image(dataset)
    real = samples[small["real_image"]]
    _gt(real)[small["fixed"]].tags.append(NEEDS_FIX)  # a label tag
    real.save()
    samples[small["syn_image"]].tags.append(NEEDS_FIX)  # a sample tag: every instance on it
    samples[small["syn_image"]].save()
    pool = samples[small["pool_image"]]
    pool.predictions.keypoints[0].tags.append(NEEDS_FIX)  # a proposal of an unlabelled instance
    pool.save()

    rows = sync_review_tags(store, dataset, reviewer="rev1")
    assert sorted(r.instance_id for r in rows) == sorted([small["fixed"], small["syn"], small["pool"]])
    assert sync_review_tags(store, dataset, reviewer="rev1") == []  # idempotent
    with store.session() as s:
        stored = s.scalars(select(ReviewTag)).all()
        assert {(t.instance_id, t.tag, t.reviewer, t.pushed) for t in stored} == {
            (i, NEEDS_FIX, "rev1", False) for i in (small["fixed"], small["syn"], small["pool"])
        }
    assert len(dataset.load_saved_view("needs-fix")) == 3

    # reloading keeps open tags on their labels, so nothing is synced twice
    dataset = load_into_fiftyone(store, name=name)
    assert _gt(_by_image(dataset)[small["real_image"]])[small["fixed"]].tags == [NEEDS_FIX]
    assert _by_image(dataset)[small["pool_image"]].predictions.keypoints[0].tags == [NEEDS_FIX]
    assert sync_review_tags(store, dataset) == []

    # once the instance is relabelled its old tag is closed; tagging the new label is a new review
    store.add_revision(small["fixed"], _kps(24), [12, 6, 30, 40], source="human", annotator="ann2")
    dataset = load_into_fiftyone(store, name=name)
    real = _by_image(dataset)[small["real_image"]]
    assert _gt(real)[small["fixed"]].tags == []
    _gt(real)[small["fixed"]].tags.append(NEEDS_FIX)
    real.save()
    assert [r.instance_id for r in sync_review_tags(store, dataset)] == [small["fixed"]]


def test_decisions_from_fiftyone_keep_needs_fix_out_of_releases(fo: Any, store: Store, small: dict[str, int],
                                                                name: str, tmp_path: Path) -> None:
    """needs-fix in the App -> a `review` revision; the release leaves the instance out and names it;
    accept later (on the reloaded dataset, where needs-fix shows again) -> the next release has it."""
    dataset = load_into_fiftyone(store, name=name)
    real = _by_image(dataset)[small["real_image"]]
    _gt(real)[small["fixed"]].tags.append(NEEDS_FIX)
    real.save()
    synced = sync_review(store, dataset, reviewer="rev1")
    assert [(d.instance_id, d.decision) for d in synced.decisions] == [(small["fixed"], NEEDS_FIX)]
    assert [(t.instance_id, t.tag) for t in synced.tags] == [(small["fixed"], NEEDS_FIX)]
    (review,) = store.revisions_for([small["fixed"]], sources=["review"])
    assert review.id == synced.decisions[0].revision_id and not review.accepted
    assert review.provenance["reviewed_revision"] == small["fixed_rev"] and review.annotator == "rev1"
    again = sync_review(store, dataset, reviewer="rev1")
    assert again.decisions == [] and again.tags == []  # a second sync writes nothing

    first = create_release(store, "1.0.0", copy_images=False)
    assert small["fixed"] not in first.manifest.instance_revisions()
    assert {small["syn"], small["auto"]} <= set(first.manifest.instance_revisions())
    assert first.manifest.excluded_needs_fix == [small["fixed"]]
    assert json.loads((first.path / "manifest.json").read_text())["excluded_needs_fix"] == [small["fixed"]]

    dataset = load_into_fiftyone(store, name=name)  # the reviewer comes back: needs-fix is still shown
    real = _by_image(dataset)[small["real_image"]]
    assert _gt(real)[small["fixed"]].tags == [NEEDS_FIX]
    _gt(real)[small["fixed"]].tags.append(ACCEPT)  # accept wins over the needs-fix still on the label
    real.save()
    synced = sync_review(store, dataset, reviewer="rev1")
    assert [(d.instance_id, d.decision) for d in synced.decisions] == [(small["fixed"], ACCEPT)]
    assert synced.tags == []
    assert sync_review(store, dataset, reviewer="rev1").decisions == []  # accept is current now: once
    with store.session() as s:
        accepted = s.get(Revision, synced.decisions[0].revision_id)
        assert accepted is not None and accepted.accepted and accepted.source == "review"

    second = create_release(store, "1.1.0", copy_images=False)
    assert second.manifest.excluded_needs_fix == []
    assert second.manifest.instance_revisions()[small["fixed"]] == synced.decisions[0].revision_id
    dataset = load_into_fiftyone(store, name=name)  # the accepted label shows without an open tag
    assert _gt(_by_image(dataset)[small["real_image"]])[small["fixed"]].tags == []


def _comparable(value: Any) -> Any:
    """A document with ids, times and the random sort key blanked, NaN as a string, key order dropped."""
    from bson import ObjectId

    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()
                if k not in ("created_at", "last_modified_at", "_rand")}
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    if isinstance(value, ObjectId):
        return "id"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def test_documents_are_the_ones_fiftyone_would_write(fo: Any, store: Store, small: dict[str, int],
                                                     name: str) -> None:
    """The fast path writes plain documents: they must equal what FiftyOne makes of the samples."""
    from annotation.fiftyone.samples import build_samples, latest_predictions, sample_documents

    labels, predictions = store.current_labels(), latest_predictions(store)
    scores: dict[int, tuple[list[float] | None, bool]] = {
        p.revision_id: ([0.25] * NUM_KEYPOINTS, False) for p in predictions}
    tags: dict[int, list[str]] = {small["fixed"]: [str(NEEDS_FIX)], small["pool"]: ["annotator-disagreement"]}
    dataset = fo.Dataset(name)
    docs = sample_documents(labels, predictions, dataset_id=dataset._doc.id, scores=scores, open_tags=tags)
    samples = build_samples(fo, labels, predictions, scores=scores, open_tags=tags)
    theirs = [dataset._make_dict(sample, created_at=1, last_modified_at=1) for sample in samples]
    assert len(docs) == len(theirs) == 3
    for ours, fiftyone_doc in zip(docs, theirs, strict=True):
        assert _comparable(ours) == _comparable(fiftyone_doc)
    one = docs[0]["ground_truth"]["keypoints"][0]
    assert one["instance"] is docs[0]["boxes"]["detections"][0]["instance"]  # one fo.Instance per person


def test_release_dataset_shows_the_released_revisions(fo: Any, store: Store, small: dict[str, int],
                                                       name: str) -> None:
    create_release(store, "1.0.0", copy_images=False)
    store.add_revision(small["fixed"], _kps(50), [1, 1, 10, 10], source="human", annotator="late")
    dataset = load_into_fiftyone(store, release="1.0.0", name=name)
    samples = _by_image(dataset)
    assert set(samples) == {small["syn_image"], small["real_image"]}  # the pool is not released
    fixed = _gt(samples[small["real_image"]])[small["fixed"]]
    assert (fixed.store_revision_id, fixed.annotator) == (small["fixed_rev"], "ann1")
    assert samples[small["real_image"]].split in ("train", "val", "test")
    assert fixed.split == samples[small["real_image"]].split


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _open_tab(port: int, dataset: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """What a browser tab of the App does: subscribe to /events as an App (its first event arrives)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = {"initializer": {"dataset": dataset}, "events": ["state_update"],
            "subscription": uuid.uuid4().hex, "polling": False}
    conn.request("POST", "/events", json.dumps(body),
                 {"Accept": "text/event-stream", "Content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"event:")
    return conn, response


def _close_tab(tab: tuple[http.client.HTTPConnection, http.client.HTTPResponse]) -> None:
    tab[1].close()
    tab[0].close()


def _page(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
        assert response.status == 200
        return bytes(response.read())


@pytest.mark.slow
def test_app_survives_a_reload_of_the_page(fo: Any, store: Store, small: dict[str, int], name: str) -> None:
    """A reload closes the tab's event stream and opens a new one. FiftyOne's default wait returns
    then (the control below); `spinetrack review` (keep_serving) goes on serving."""
    dataset = load_into_fiftyone(store, name=name)
    port = _free_port()
    session = launch(dataset, port=port)
    try:
        assert b"<html" in _page(port).lower()
        deadline = time.monotonic() + 60  # the session's own event stream, on which "App closed" arrives
        while not session._client._connected and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        tab = _open_tab(port, dataset.name)
        serving = threading.Thread(target=keep_serving, args=(session,), daemon=True)
        default = threading.Thread(target=session.wait, args=(1,), daemon=True)
        serving.start()
        default.start()
        time.sleep(1.5)
        assert serving.is_alive() and default.is_alive()  # a tab is open: both wait
        _close_tab(tab)  # the reload: the old page goes ...
        default.join(timeout=20)
        assert not default.is_alive()  # FiftyOne saw the App closed and stopped waiting
        assert serving.is_alive()
        assert b"<html" in _page(port).lower()  # ... and the new page loads from the same App
        _close_tab(_open_tab(port, dataset.name))
        time.sleep(2)
        assert serving.is_alive() and b"<html" in _page(port).lower()
    finally:
        session.close()


@pytest.mark.slow
def test_cli_review_and_sync(prefect_harness: None, fo: Any, store: Store, small: dict[str, int]) -> None:
    from typer.testing import CliRunner

    from flows.app import app
    from flows.cli import _register

    _register()
    runner = CliRunner()
    loaded = runner.invoke(app, ["review", "--no-launch"])
    assert loaded.exit_code == 0, loaded.output
    assert "spinetrack-working" in loaded.output and "most-uncertain" in loaded.output
    dataset = fo.load_dataset("spinetrack-working")
    sample = dataset.match(fo.ViewField("image_id") == small["pool_image"]).first()
    sample.tags.append(NEEDS_FIX)
    sample.save()
    synced = runner.invoke(app, ["review-sync", "--reviewer", "cli-rev"])
    assert synced.exit_code == 0, synced.output
    assert f"1 new review tag(s) on instances [{small['pool']}]" in synced.output
    with store.session() as s:
        rows = [(t.instance_id, t.reviewer) for t in s.scalars(select(ReviewTag))]
    assert rows == [(small["pool"], "cli-rev")]
    missing = runner.invoke(app, ["review", "--release", "9.9.9", "--no-launch"])
    assert missing.exit_code == 2 and "no release '9.9.9'" in missing.output


def test_fiftyone_imports_in_a_process_that_imported_dask_first(tmp_path: Path) -> None:
    """dask's importlib_metadata backport made FiftyOne's `eta` fail at import (KeyError: 'author')."""
    import os
    import subprocess
    import sys

    code = ("import dask, importlib.metadata\n"
            "from pathlib import Path\n"
            "from annotation.fiftyone.setup import fiftyone_module\n"
            f"fo = fiftyone_module(Path({str(tmp_path)!r}))\n"
            "print(fo.__version__)\n")
    env = {**os.environ, "FIFTYONE_DO_NOT_TRACK": "true"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
