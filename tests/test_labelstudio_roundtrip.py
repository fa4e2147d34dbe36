"""Push -> annotate through the API -> pull, against a real Label Studio server (no mocks)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from annotation.labelstudio.client import (
    connect,
    connection_of,
    create_personal_access_token,
    ensure_project,
)
from annotation.labelstudio.config import OCCLUDED, VISIBILITY, keypoint_controls
from annotation.labelstudio.convert import from_result, region_id, to_percent, to_pixels, to_result
from annotation.labelstudio.pull import DISAGREEMENT_TAG, pull
from annotation.labelstudio.push import NEEDS_FIX, push, push_from_review
from annotation.labelstudio.server import LabelStudioServer, LabelStudioUnavailable, free_port
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, ReviewTag, Revision
from schemas.keypoints import NAMES, NUM_KEYPOINTS
from tests.labelstudio_fixtures import restart

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]
SIZES = [(333, 217), (217, 333), (641, 479), (101, 997), (1000, 3)]


def _make_instances(store: Store, server: LabelStudioServer, n: int, tag: str) -> list[int]:
    """n people on odd-sized PIL images, each with a `pseudo` revision whose numbers have 2 decimals."""
    folder = Path(server.document_root) / "images" / tag
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(tag)
    ids = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        path = folder / f"{i:03d}.png"
        PILImage.new("RGB", (width, height), (i * 5 % 256, 40, 200)).save(path)
        image_id = store.add_image(
            path, source="real", subset="test", group_key=f"{tag}{i}", width=width, height=height
        )
        iid = store.instance_id(image_id, "p0")
        kps: list[float] = []
        for k in range(NUM_KEYPOINTS):
            v = 0.0 if k % 11 == 5 else (1.0 if k % 7 == 3 else 2.0)
            x, y = round(rng.uniform(0, width), 2), round(rng.uniform(0, height), 2)
            kps += [x, y, v] if v > 0 else [0.0, 0.0, 0.0]  # COCO: an unlabelled point is (0, 0, 0)
        box = [round(width * 0.1, 2), round(height * 0.05, 2), round(width * 0.7, 2), round(height * 0.9, 2)]
        store.add_revision(iid, kps, box, source="pseudo", accepted=False, model_version="m-test",
                           scores=[0.5] * NUM_KEYPOINTS, round=1)  # fmt: skip
        ids.append(iid)
    return ids


def _pseudo(store: Store, iid: int) -> Revision:
    return next(r for r in store.revisions(iid) if r.source == "pseudo")


def _humans(store: Store, iid: int) -> list[Revision]:
    return [r for r in store.revisions(iid) if r.source == "human"]


def test_percent_round_trip_is_pixel_exact_on_odd_sizes() -> None:
    rng = random.Random(0)
    for width, height in SIZES:
        for _ in range(2000):
            x, y = round(rng.uniform(0, width), 3), round(rng.uniform(0, height), 3)
            assert to_pixels(to_percent(x, width), width) == x
            assert to_pixels(to_percent(y, height), height) == y


def test_result_conversion_keeps_visibility_and_drops_missing() -> None:
    kps = [0.0] * (NUM_KEYPOINTS * 3)
    kps[0:3] = [10.5, 20.25, 2.0]
    kps[3:6] = [30.0, 40.0, 1.0]
    back = from_result(to_result(kps, [1.0, 2.0, 300.0, 200.0], 333, 217), 333, 217)
    assert back.keypoints == kps
    assert back.bbox == [1.0, 2.0, 300.0, 200.0]


def test_a_box_past_the_image_edge_is_cut_to_the_image() -> None:
    """A truncated person's box (renders, PoseTrack) reaches past the frame; a person in Label
    Studio cannot draw there, and the pull refuses regions more than 1 % outside: the box goes out
    cut to the image, and the cut box comes back."""
    from annotation.labelstudio.convert import result_problem
    from annotation.labelstudio.view import View

    kps = [0.0] * (NUM_KEYPOINTS * 3)
    kps[0:3] = [10.0, 20.0, 2.0]
    for view in (None, View(0, 10, 240, 207)):  # a crop holds its person (view.person_view)
        result = to_result(kps, [-20.0, 15.0, 250.0, 260.0], 333, 217, view=view)
        assert result_problem(result, view, (333, 217)) is None
        assert from_result(result, 333, 217, view).bbox == [0.0, 15.0, 230.0, 202.0]


def test_server_down_error_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    from annotation.labelstudio.client import Connection

    with pytest.raises(LabelStudioUnavailable, match=url):
        connect(Connection(url, "token"))


def test_label_config_accepted_and_both_token_kinds_work(
    store: Store, labelstudio_server: LabelStudioServer
) -> None:
    conn = connection_of(labelstudio_server)
    client = connect(conn)
    project_id = ensure_project(store, client, conn)
    assert ensure_project(store, client, conn) == project_id  # found again, not re-created
    config = client.projects.get(id=project_id).label_config or ""
    for name, control in keypoint_controls().items():
        assert f'value="{name}"' in config and f'name="{control}"' in config
    # a personal access token (JWT refresh) authenticates as the same user as the legacy token
    pat = create_personal_access_token(client)
    pat_client = connect(type(conn)(conn.url, pat, conn.document_root))
    assert pat_client.users.whoami().email == labelstudio_server.email
    assert not pat_client._client_wrapper._tokens_client._use_legacy_token


def test_push_annotate_pull_is_exact_and_idempotent(
    store: Store, labelstudio_server: LabelStudioServer
) -> None:
    conn = connection_of(labelstudio_server)
    client = connect(conn)
    ids = _make_instances(store, labelstudio_server, 50, "rt")
    report = push(store, ids, round=1, conn=conn, client=client)
    assert sorted(report.created) == sorted(ids) and not report.existing
    again = push(store, ids, round=1, conn=conn, client=client)
    assert not again.created and sorted(again.existing) == sorted(ids)
    tasks: list[Any] = list(client.tasks.list(project=report.project_id, fields="all", page_size=100))
    assert len(tasks) == 50
    task_of = {t.data["instance_id"]: t for t in tasks}
    # the prediction is the pseudo label, with model version and score
    first = task_of[ids[0]]
    pred = first.predictions[0]
    pred = pred if isinstance(pred, dict) else pred.dict()
    assert pred["model_version"] == "m-test" and pred["score"] == pytest.approx(0.5)
    assert from_result(pred["result"], 333, 217).keypoints == _pseudo(store, ids[0]).keypoints

    expected: dict[int, list[float]] = {}
    controls = keypoint_controls()
    for n, iid in enumerate(ids[:20]):
        task = task_of[iid]
        width, height = task.data["width"], task.data["height"]
        result = [dict(r) for r in (task.predictions[0] if isinstance(task.predictions[0], dict)
                                    else task.predictions[0].dict())["result"]]  # fmt: skip
        kps = list(_pseudo(store, iid).keypoints)
        if n == 10:  # skipped
            client.annotations.create(id=task.id, result=[], was_cancelled=True)
            continue
        if n < 10:
            moved = {0: (width / 2 + 0.25, height / 3 + 0.5), 29: (1.0, height - 1.0)}
            for k, (x, y) in moved.items():
                kps[3 * k : 3 * k + 2] = [round(x, 3), round(y, 3)]
                for r in result:
                    if r["id"] == region_id(k):
                        r["value"] = {**r["value"], "x": to_percent(x, width), "y": to_percent(y, height)}
            # mark a visible point occluded (spine_02) and delete another (left_wrist)
            occ, gone = NAMES.index("spine_02"), NAMES.index("left_wrist")
            if kps[3 * occ + 2] == 2.0:
                r = next(r for r in result if r["id"] == region_id(occ) and r["type"] == "keypointlabels")
                result.append(
                    {
                        "id": r["id"],
                        "from_name": VISIBILITY,
                        "to_name": "image",
                        "type": "choices",
                        "value": {"x": r["value"]["x"], "y": r["value"]["y"], "choices": [OCCLUDED]},
                    }
                )
                kps[3 * occ + 2] = 1.0
            result = [r for r in result if r["id"] != region_id(gone)]
            kps[3 * gone : 3 * gone + 3] = [0.0, 0.0, 0.0]
            # add a point the model missed (index 5 pattern has v=0 in the pseudo label)
            add = next(k for k in range(NUM_KEYPOINTS) if kps[3 * k + 2] == 0 and k != gone)
            result.append({"id": "added", "from_name": controls[NAMES[add]], "to_name": "image",
                           "type": "keypointlabels", "original_width": width, "original_height": height,
                           "value": {"x": to_percent(7.5, width), "y": to_percent(2.0, height),
                                     "keypointlabels": [NAMES[add]]}})  # fmt: skip
            kps[3 * add : 3 * add + 3] = [7.5, 2.0, 2.0]
        client.annotations.create(id=task.id, result=result, lead_time=12.0)
        expected[iid] = kps

    first_pull = pull(store, conn=conn, client=client)
    assert first_pull.stored == 19 and first_pull.skipped == 1
    for iid, kps in expected.items():
        humans = _humans(store, iid)
        assert len(humans) == 1
        assert humans[0].keypoints == kps  # pixel-exact, visibility included
        assert humans[0].annotator == labelstudio_server.email and humans[0].round == 1
        assert humans[0].accepted and humans[0].status == "ok"
    skipped = _humans(store, ids[10])
    assert len(skipped) == 1 and skipped[0].status == "skipped" and not skipped[0].accepted
    with store.session() as s:
        states: dict[int, str] = dict(
            s.execute(select(AnnotationTask.instance_id, AnnotationTask.state)).tuples().all()
        )
    assert states[ids[10]] == "skipped" and states[ids[0]] == "done" and states[ids[30]] == "open"
    # the current label of an annotated instance is the human one
    labels = {lab.instance_id: lab for lab in store.current_labels()}
    assert labels[ids[0]].source == "human"

    second = pull(store, conn=conn, client=client)
    assert second.stored == 0 and second.skipped == 0
    with store.session() as s:
        assert s.scalar(select(func.count(Revision.id)).where(Revision.source == "human")) == 20

    # re-push after annotation: nothing the annotator touched changes
    before = client.annotations.list(id=task_of[ids[0]].id)
    push(store, ids, round=1, conn=conn, client=client)
    after = client.annotations.list(id=task_of[ids[0]].id)
    assert [a.updated_at for a in after] == [a.updated_at for a in before]


def test_pull_while_down_fails_clearly_then_recovers(
    store: Store, labelstudio_server: LabelStudioServer
) -> None:
    conn = connection_of(labelstudio_server)
    client = connect(conn)
    ids = _make_instances(store, labelstudio_server, 6, "down")
    report = push(store, ids, round=2, conn=conn, client=client)
    truth = {iid: (list(_pseudo(store, iid).keypoints), list(_pseudo(store, iid).bbox)) for iid in ids}
    sim = annotate_tasks(client, report.project_id, truth.get, seed=3,
                         profile=AnnotatorProfile(email="sim@spinetrack.local"))  # fmt: skip
    assert len(sim.annotated) == 6
    from annotation.labelstudio.server import stop_server

    stop_server(labelstudio_server)
    try:
        with pytest.raises(LabelStudioUnavailable, match=labelstudio_server.url):
            pull(store, conn=conn)
        with pytest.raises(LabelStudioUnavailable, match=labelstudio_server.url):
            pull(store, conn=conn, client=client)  # an existing client fails as clearly
    finally:
        restart(labelstudio_server)
    assert all(not _humans(store, iid) for iid in ids)
    recovered = pull(store, conn=conn)
    assert recovered.stored == 6
    by_task = {report.task_ids[iid]: iid for iid in ids}
    for task_id, kps in sim.annotated.items():
        human = _humans(store, by_task[task_id])
        assert len(human) == 1 and human[0].keypoints == kps and human[0].annotator == "sim@spinetrack.local"


def test_review_reopens_and_multiple_annotators_are_compared(
    store: Store, labelstudio_server: LabelStudioServer
) -> None:
    conn = connection_of(labelstudio_server)
    client = connect(conn)
    ids = _make_instances(store, labelstudio_server, 4, "rev")
    report = push(store, ids[:3], round=3, conn=conn, client=client)
    truth = {iid: (list(_pseudo(store, iid).keypoints), list(_pseudo(store, iid).bbox)) for iid in ids}
    careful = AnnotatorProfile(email="a@spinetrack.local", pixel_noise=0.5)
    also_careful = AnnotatorProfile(email="b@spinetrack.local", pixel_noise=0.5)
    sloppy = AnnotatorProfile(email="c@spinetrack.local", pixel_noise=60.0, occlusion_recall=0.0)
    t0, t1 = report.task_ids[ids[0]], report.task_ids[ids[1]]
    annotate_tasks(client, report.project_id, truth.get, profile=careful, seed=1)
    annotate_tasks(client, report.project_id, truth.get, profile=also_careful, seed=1, task_ids=[t0])
    annotate_tasks(client, report.project_id, truth.get, profile=sloppy, seed=1, task_ids=[t1])
    got = pull(store, conn=conn, client=client)
    assert got.stored == 5
    agree = _humans(store, ids[0])
    assert {r.annotator for r in agree} == {"a@spinetrack.local", "b@spinetrack.local"}
    assert all(r.quality["agreement_oks"] > 0.9 and not r.quality["disagreement"] for r in agree)
    disagree = _humans(store, ids[1])
    assert any(r.quality.get("disagreement") for r in disagree)
    assert got.disagreements == [ids[1]]
    with store.session() as s:
        tags = s.scalars(select(ReviewTag).where(ReviewTag.tag == DISAGREEMENT_TAG)).all()
        assert [t.instance_id for t in tags] == [ids[1]]
        # a reviewer asks for fixes: one instance already has a task this round, one has none
        s.add(ReviewTag(instance_id=ids[2], tag=NEEDS_FIX, reviewer="r"))
        s.add(ReviewTag(instance_id=ids[3], tag=NEEDS_FIX, reviewer="r"))
    review = push_from_review(store, 3, conn=conn, client=client)
    assert review.reopened == [ids[2]] and review.created == [ids[3]]
    assert push_from_review(store, 3, conn=conn, client=client).task_ids == {}  # tags consumed
    with store.session() as s:
        assert all(t.pushed for t in s.scalars(select(ReviewTag).where(ReviewTag.tag == NEEDS_FIX)))
    # the reopened task carries the current (human) label as its newest prediction
    task: Any = client.tasks.get(id=str(report.task_ids[ids[2]]))
    newest: Any = max(task.predictions or [], key=lambda p: p["id"] if isinstance(p, dict) else p.id)
    newest = newest if isinstance(newest, dict) else newest.dict()
    assert (
        from_result(newest["result"], 0 + task.data["width"], task.data["height"]).keypoints
        == _humans(store, ids[2])[0].keypoints
    )
    # the annotator fixes the existing annotation: the next pull stores the update as a new revision
    ann = client.annotations.list(id=report.task_ids[ids[2]])[0]
    fixed = [dict(r) for r in ann.result or []]
    client.annotations.update(id=ann.id, result=fixed[:-1])
    assert pull(store, conn=conn, client=client).stored == 1
    assert len(_humans(store, ids[2])) == 2


def test_webhook_triggers_a_pull(store: Store, labelstudio_server: LabelStudioServer) -> None:
    from annotation.labelstudio.webhook import PullOnWebhook

    conn = connection_of(labelstudio_server)
    client = connect(conn)
    ids = _make_instances(store, labelstudio_server, 2, "hook")
    report = push(store, ids, round=4, conn=conn, client=client)
    receiver = PullOnWebhook(lambda: pull(store, conn=conn, client=client)).start()
    try:
        hook_id = receiver.register(client, report.project_id)
        assert receiver.register(client, report.project_id) == hook_id  # registered once
        truth = {iid: (list(_pseudo(store, iid).keypoints), list(_pseudo(store, iid).bbox)) for iid in ids}
        annotate_tasks(client, report.project_id, truth.get, seed=5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(len(_humans(store, i)) for i in ids) < 2:
            time.sleep(0.5)
        assert receiver.received >= 2 and receiver.pulls >= 1 and not receiver.errors
        assert all(len(_humans(store, i)) == 1 for i in ids)
    finally:
        receiver.stop()


def test_cli_push_pull_through_prefect_flows(
    store: Store,
    labelstudio_server: LabelStudioServer,
    prefect_harness: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from flows.app import app
    from flows.cli import _register

    _register()
    monkeypatch.setenv("SPINETRACK_LS_URL", labelstudio_server.url)
    monkeypatch.setenv("SPINETRACK_LS_TOKEN", labelstudio_server.token)
    monkeypatch.setenv("SPINETRACK_LS_DOCUMENT_ROOT", labelstudio_server.document_root)
    ids = _make_instances(store, labelstudio_server, 3, "cli")
    runner = CliRunner()
    pushed = runner.invoke(app, ["push", "--round", "5", *map(str, ids)])
    assert pushed.exit_code == 0, pushed.output
    with store.session() as s:
        rows = s.scalars(select(AnnotationTask).where(AnnotationTask.round == 5)).all()
        assert sorted(r.instance_id for r in rows) == ids and all(r.task_id for r in rows)
        task_ids = [int(r.task_id or 0) for r in rows]
    client = connect(connection_of(labelstudio_server))
    project_id = int(getattr(client.tasks.get(id=str(task_ids[0])), "project", 0) or 0)
    truth = {iid: (list(_pseudo(store, iid).keypoints), list(_pseudo(store, iid).bbox)) for iid in ids}
    annotate_tasks(client, project_id, truth.get, seed=9, task_ids=task_ids)
    pulled = runner.invoke(app, ["pull"])
    assert pulled.exit_code == 0, pulled.output
    assert all(len(_humans(store, i)) == 1 for i in ids)
    status = runner.invoke(app, ["labelstudio", "status"])  # no server recorded for this home
    assert status.exit_code == 1 and "no Label Studio recorded" in status.output
