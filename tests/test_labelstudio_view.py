"""The annotator's view (issue 22, item 5): a pushed task shows a crop around its person, and every
coordinate maps back to the image exactly. Push and pull run against a real Label Studio server."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from annotation.labelstudio.client import connect, connection_of
from annotation.labelstudio.convert import from_result, region_id, to_percent, to_result
from annotation.labelstudio.pull import pull
from annotation.labelstudio.push import push
from annotation.labelstudio.server import LabelStudioServer
from annotation.labelstudio.view import View, frame_of, person_view, task_view
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks
from pipeline.active_learning.pseudo_label import pseudo_label
from pipeline.intake.real_import import import_coco
from pipeline.store import Store
from schemas.errors import InputError
from schemas.keypoints import INDEX, NUM_KEYPOINTS
from tests.test_human_points import Fixed, _file

SIZES = [(333, 217), (641, 479), (101, 997)]


def _person(rng: random.Random, width: int, height: int) -> tuple[list[float], list[float]]:
    """A small person somewhere in the image: box and 37 points (3 decimals), a few unlabelled."""
    w, h = rng.uniform(8, width / 3), rng.uniform(8, height / 3)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    kps: list[float] = []
    for k in range(NUM_KEYPOINTS):
        v = 0.0 if k % 9 == 4 else (1.0 if k % 5 == 2 else 2.0)
        px, py = round(rng.uniform(x, x + w), 3), round(rng.uniform(y, y + h), 3)
        kps += [px, py, v] if v else [0.0, 0.0, 0.0]
    return kps, [round(x, 3), round(y, 3), round(w, 3), round(h, 3)]


def test_the_crop_holds_the_person_and_maps_back_exactly() -> None:
    rng = random.Random(7)
    for width, height in SIZES:
        for _ in range(300):
            kps, box = _person(rng, width, height)
            view = person_view(kps, box, width, height)
            assert view is not None and view.width * view.height < width * height
            assert view.x >= 0 and view.x + view.width <= width and view.y >= 0
            assert view.y + view.height <= height
            result = to_result(kps, box, width, height, view=view)
            assert {r["original_width"] for r in result if "original_width" in r} == {view.width}
            parsed = from_result(result, width, height, view)
            assert parsed.keypoints == kps and parsed.bbox == box
    assert person_view(None, [0, 0, 300, 200], 333, 217) is None  # most of the image: no crop


def test_a_region_is_read_in_the_frame_it_was_drawn_on() -> None:
    view = View(40, 30, 100, 120)
    kps, box = _person(random.Random(1), 333, 217)
    full = to_result(kps, box, 333, 217)  # an API client that draws on the full image
    assert all(frame_of(r, view, 333, 217) is None for r in full if "original_width" in r)
    assert from_result(full, 333, 217, view).keypoints == kps
    moved = to_result(kps, box, 333, 217, view=View(0, 0, 333, 217))  # same size: the full frame
    assert from_result(moved, 333, 217, View(0, 0, 333, 217)).keypoints == kps


@pytest.mark.parametrize(("view", "field"), [
    ({"x": 0, "y": 0, "width": 10}, "data.view"),
    ({"x": -1, "y": 0, "width": 10, "height": 10}, "data.view"),
    ({"x": 90, "y": 0, "width": 20, "height": 10}, "data.view"),
    ({"x": 0, "y": 0, "width": 1.5, "height": 10}, "data.view"),
    ([0, 0, 10, 10], "data.view"),
])
def test_a_broken_view_is_refused_naming_the_task(view: Any, field: str) -> None:
    with pytest.raises(InputError) as err:
        task_view({"width": 100, "height": 80, "view": view}, "http://ls task 7")
    assert err.value.field == field and "task 7" in str(err.value)
    assert task_view({"width": 100, "height": 80}) is None


def _tasks(client: Any, project: int) -> dict[int, Any]:
    return {int(t.data["instance_id"]): t for t in client.tasks.list(project=project, fields="all",
                                                                      page_size=100)}


def _prediction_result(task: Any) -> list[dict[str, Any]]:
    pred = task.predictions[0]
    return [dict(r) for r in (pred if isinstance(pred, dict) else pred.dict())["result"]]


@pytest.mark.labelstudio
@pytest.mark.slow
def test_pushed_coco_people_fill_the_canvas_and_pull_back_exactly(
    store: Store, real_people: Path, labelstudio_server: LabelStudioServer
) -> None:
    coco, _raw = _file(real_people)
    import_coco(store, coco)  # the people's body points are theirs (given)
    pseudo_label(store, Fixed(range(NUM_KEYPOINTS), confidence=0.9), image_source="real")
    conn = connection_of(labelstudio_server)
    client = connect(conn)
    ids = [inst.id for _, inst in store.instances()]
    report = push(store, ids, round=1, conn=conn, client=client)
    tasks = _tasks(client, report.project_id)
    images = {inst.id: img for img, inst in store.instances()}
    pre = store.latest_revisions(ids, sources=["pseudo"])
    expected: dict[int, list[float]] = {}
    for iid, task in tasks.items():
        img, rev = images[iid], pre[iid]
        view = task_view(task.data)
        if view is None:
            continue
        # the served file is the crop's pixels of the store's image, lossless
        served = Path(conn.document_root or "") / task.data["image"].split("?d=", 1)[1]
        with PILImage.open(img.path) as full, PILImage.open(io.BytesIO(served.read_bytes())) as shown:
            want = full.convert("RGB").crop((view.x, view.y, view.x + view.width, view.y + view.height))
            assert shown.size == (view.width, view.height)
            assert shown.convert("RGB").tobytes() == want.tobytes()
        result = _prediction_result(task)
        assert {r["original_width"] for r in result if "original_width" in r} == {view.width}
        given = {r["value"]["keypointlabels"][0] for r in result if r.get("readonly")
                 and r["type"] == "keypointlabels"}  # fmt: skip
        assert given == set(task.data.get("given_points", []))
        # an annotator accepts the pre-annotation as it is, except one model point moved on the crop
        free = next(k for k in range(NUM_KEYPOINTS) if rev.keypoints[3 * k + 2] > 0
                    and all(not r.get("readonly") for r in result if r["id"] == region_id(k)))  # fmt: skip
        cx, cy = round(view.width / 3, 3), round(view.height / 4, 3)  # crop pixels
        for r in result:
            if r["id"] == region_id(free):
                r["value"] = {**r["value"], "x": to_percent(cx, view.width), "y": to_percent(cy, view.height)}
        client.annotations.create(id=task.id, result=result, lead_time=3.0)
        expected[iid] = [round(v, 3) for v in rev.keypoints]  # Label Studio's 1/1000 px (convert.py)
        expected[iid][3 * free : 3 * free + 2] = [round(view.x + cx, 3), round(view.y + cy, 3)]
    assert len(expected) >= 10  # the sample's people are small: cropped
    assert pull(store, conn=conn, client=client).stored == len(expected)
    for iid, kps in expected.items():
        (human,) = [r for r in store.revisions(iid) if r.source == "human" and r.round == 1]
        assert list(human.keypoints) == kps


@pytest.mark.labelstudio
@pytest.mark.slow
def test_the_simulated_annotator_on_a_cropped_task_pulls_its_own_points(
    store: Store, labelstudio_server: LabelStudioServer
) -> None:
    """An API client drawing on the full image (the simulated annotator) is read in that frame."""
    folder = Path(labelstudio_server.document_root) / "images" / "view-sim"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random("sim")
    truth: dict[int, tuple[list[float], list[float]]] = {}
    for n, (width, height) in enumerate(SIZES):
        path = folder / f"{n}.png"
        PILImage.new("RGB", (width, height), (20 * n, 90, 160)).save(path)
        image_id = store.add_image(path, source="real", subset="test", group_key=f"vs{n}",
                                   width=width, height=height)  # fmt: skip
        iid = store.instance_id(image_id, "p0")
        kps, box = _person(rng, width, height)
        store.add_revision(iid, kps, box, source="pseudo", accepted=False, model_version="m", round=1)
        truth[iid] = (kps, box)
    conn = connection_of(labelstudio_server)
    client = connect(conn)
    report = push(store, list(truth), round=1, conn=conn, client=client)
    assert all(task_view(t.data) is not None for t in _tasks(client, report.project_id).values())
    sim = annotate_tasks(client, report.project_id, truth.get, profile=AnnotatorProfile(pixel_noise=2.0),
                         task_ids=list(report.task_ids.values()))
    pull(store, conn=conn, client=client)
    by_task = {tid: iid for iid, tid in report.task_ids.items()}
    for tid, kps in sim.annotated.items():
        (human,) = [r for r in store.revisions(by_task[tid]) if r.source == "human"]
        assert list(human.keypoints) == pytest.approx(kps, abs=1e-9)
        assert human.keypoints[3 * INDEX["nose"] + 2] == kps[3 * INDEX["nose"] + 2]
