"""Honest pseudo-labels end to end: points the annotator does not cover stay v=0 from the annotator,
through the store, into the real Label Studio server's pre-annotations, back from an annotator who
accepts them as they are, and into a release (v=0 kept, num_keypoints counts labelled points only).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from annotation.labelstudio.client import connect, connection_of
from annotation.labelstudio.pull import pull
from annotation.labelstudio.push import push
from annotation.labelstudio.server import LabelStudioServer
from pipeline.store import Store
from schemas.keypoints import NAMES, NUM_KEYPOINTS, SPINE_CHAIN

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

IMAGE = "000000000785.jpg"  # one person, all 17 COCO points labelled, well lit
BOX = [280.79, 44.73, 218.7, 346.68]


def _visible(keypoints: list[float]) -> set[int]:
    return {i for i in range(NUM_KEYPOINTS) if keypoints[3 * i + 2] > 0}


def _prediction(task: Any) -> dict[str, Any]:
    pred = task.predictions[0]
    return pred if isinstance(pred, dict) else pred.dict()


def test_uncovered_points_stay_unlabelled_into_label_studio_and_the_release(
    store: Store, labelstudio_server: LabelStudioServer, real_people: Path
) -> None:
    from pipeline.active_learning.pseudo_label import pseudo_label
    from pipeline.annotators import load_annotator
    from pipeline.release.build import create_release

    folder = Path(labelstudio_server.document_root) / "images" / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(shutil.copy(real_people / "coco" / IMAGE, folder / IMAGE))  # below LS's document root
    image_id = store.add_image(path, source="real", subset="e2e", group_key="e2e-785", width=640, height=425)
    iid = store.instance_id(image_id, "p0", meta={"bbox": BOX})

    annotator = load_annotator("combined")  # no store, no student: body (BlazePose) + spine prior
    uncovered = set(range(NUM_KEYPOINTS)) - set(annotator.covers)
    assert {17, 22, 23, 31, 32, 33, 34} <= uncovered and set(SPINE_CHAIN) <= set(annotator.covers)
    assert pseudo_label(store, annotator, instance_ids=[iid]).written == 1
    pseudo = next(r for r in store.revisions(iid) if r.source == "pseudo")
    labelled = _visible(list(pseudo.keypoints))
    assert labelled and not labelled & uncovered, "an uncovered point was stored as labelled"
    assert all(pseudo.keypoints[3 * i : 3 * i + 3] == [0.0, 0.0, 0.0] for i in uncovered)

    conn = connection_of(labelstudio_server)
    client = connect(conn)
    report = push(store, [iid], round=1, conn=conn, client=client)
    tasks: list[Any] = list(client.tasks.list(project=report.project_id, fields="all", page_size=100))
    task = next(t for t in tasks if t.data["instance_id"] == iid)
    result = _prediction(task)["result"]
    points = {r["value"]["keypointlabels"][0] for r in result if r["type"] == "keypointlabels"}
    assert points == {NAMES[i] for i in labelled}, "Label Studio pre-annotates exactly the labelled points"
    assert not points & {NAMES[i] for i in uncovered}

    # an annotator accepts the pre-annotation as it is
    client.annotations.create(id=task.id, result=[dict(r) for r in result], lead_time=3.0)
    assert pull(store, conn=conn, client=client).stored == 1
    human = next(r for r in store.revisions(iid) if r.source == "human")
    assert _visible(list(human.keypoints)) == labelled
    for i in labelled:
        placed = pseudo.keypoints[3 * i : 3 * i + 2]
        assert human.keypoints[3 * i : 3 * i + 2] == pytest.approx(placed, abs=0.01)

    release = create_release(store, "0.1.0", pinned={"e2e-785": "train"}, copy_images=False)
    coco = json.loads((release.path / "annotations" / "train.json").read_text())
    # the store holds this one image (under its content address, so not by its old file name)
    (ann,) = coco["annotations"]
    assert _visible(ann["keypoints"]) == labelled
    assert all(ann["keypoints"][3 * i : 3 * i + 3] == [0, 0, 0] for i in uncovered)
    assert ann["num_keypoints"] == len(labelled) < NUM_KEYPOINTS
