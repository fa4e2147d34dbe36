"""SpineTrack as Label Studio's ML backend, against the real Label Studio server: connected to the
project (settings -> Model shows its model version), tasks a person imports by hand (a local-files
URL, an uploaded file) get a SpineTrack prediction through the backend as they arrive, a pushed task
is predicted on the store's image, and annotation events still reach the round logic through the
same app (one webhook, one receiver)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from annotation.labelstudio.client import connect, connection_of
from annotation.labelstudio.convert import from_result
from annotation.labelstudio.hooks import LabelStudioHooks
from annotation.labelstudio.ml_backend import TITLE, ModelServer, connect_backend, model_server
from annotation.labelstudio.push import push
from annotation.labelstudio.server import LabelStudioServer, free_port
from annotation.labelstudio.view import View, task_view
from annotation.labelstudio.webhook import ML_PATH, SECRET_HEADER
from pipeline.store import Store
from schemas.keypoints import NAMES, NUM_KEYPOINTS

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
IMAGE = "000000000785.jpg"  # one person, well lit
BOX = [280.79, 44.73, 218.7, 346.68]  # its COCO box (640 x 425 image)
SECRET = "ml-backend-test-secret"


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _as_dict(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else dict(item.dict())


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.fixture()
def backend(store: Store, labelstudio_server: LabelStudioServer) -> Iterator[ModelServer]:
    server = model_server(store, LabelStudioHooks(connection_of(labelstudio_server)), secret=SECRET).start()
    try:
        yield server
    finally:
        server.stop()


def _check_prediction(pred: dict[str, Any], version: str, uncovered: set[int],
                      view: View | None = None) -> None:
    assert pred["model_version"] == version and 0 < pred["score"] <= 1
    result = pred["result"]
    (box,) = [r for r in result if r["type"] == "rectanglelabels"]
    points = {r["value"]["keypointlabels"][0]: r for r in result if r["type"] == "keypointlabels"}
    assert points and not set(points) & {NAMES[i] for i in uncovered}, "an uncovered point was drawn"
    assert all(0 <= r["score"] <= 1 for r in points.values()), "every point carries its own score"
    x, y = from_result(result, 640, 425, view).keypoints[:2]  # the nose, in pixels of the image
    assert BOX[0] <= x <= BOX[0] + BOX[2] and BOX[1] <= y <= 425  # on the person: inside the COCO box
    shown = (view.width, view.height) if view is not None else (640, 425)  # percent of what the task shows
    assert (box["original_width"], box["original_height"]) == shown


def test_label_studio_gets_spinetrack_predictions_through_the_ml_backend(
    store: Store, labelstudio_server: LabelStudioServer, backend: ModelServer, real_people: Path
) -> None:
    conn = connection_of(labelstudio_server)
    client = connect(conn)
    project, version = backend.project_id, backend.model.version()
    uncovered = set(range(NUM_KEYPOINTS)) - set(backend.model.annotator().covers)
    base = backend.receiver.base_url

    # connected: settings -> Model lists it with the annotator's identity as its model version
    (ml,) = client.ml.list(project=project)
    assert ml.title == TITLE and ml.url == base and ml.auth_method == "BASIC_AUTH"
    assert ml.state == "CO" and client.ml.get(id=int(ml.id or 0)).model_version == version
    (hook,) = client.webhooks.list(project=str(project))  # one receiver for every event
    assert hook.url == base + ML_PATH and hook.headers == {SECRET_HEADER: SECRET}
    assert {"ANNOTATION_CREATED", "TASKS_CREATED"} <= set(hook.actions or [])
    assert connect_backend(client, project, base, SECRET) == ml.id  # connecting again changes nothing
    assert len(client.ml.list(project=project)) == 1 and len(client.webhooks.list(project=str(project))) == 1

    # authenticated: nothing but /health answers without the secret
    assert _post(base + "/predict", {"tasks": []}, {}) == 401
    wrong = base64.b64encode(b"spinetrack:wrong").decode()
    assert _post(base + "/setup", {"schema": ""}, {"Authorization": f"Basic {wrong}"}) == 401
    assert httpx.get(base + "/health").json()["status"] == "UP"
    auth = {"Authorization": "Basic " + base64.b64encode(f"spinetrack:{SECRET}".encode()).decode()}
    assert _post(base + "/setup", {"schema": "<View></View>"}, auth) == 400  # not a SpineTrack project

    # a task imported by hand (JSON, a local-files URL): predicted as it arrives
    folder = Path(labelstudio_server.document_root) / "images" / "ml-backend"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(real_people / "coco" / IMAGE, folder / IMAGE)
    url = f"/data/local-files/?d=images/ml-backend/{IMAGE}"
    imported = client.projects.import_tasks(id=project, request=[{"image": url}],  # type: ignore[list-item]
                                            return_task_ids=True)
    (task_id,) = getattr(imported, "task_ids", None) or []
    preds = _wait("a prediction on the imported task", lambda: list(client.predictions.list(task=task_id)))
    assert task_id in backend.importer.requested  # Label Studio retrieved it from the backend
    _check_prediction(_as_dict(preds[0]), version, uncovered)

    # a file uploaded by hand: the backend downloads it from Label Studio with the token
    with (real_people / "coco" / IMAGE).open("rb") as fh:
        resp = httpx.post(f"{conn.url}/api/projects/{project}/import?return_task_ids=true",
                          files={"file": (IMAGE, fh, "image/jpeg")},
                          headers={"Authorization": f"Token {conn.token}"}, timeout=60)
    assert resp.status_code == 201, resp.text
    (uploaded,) = resp.json()["task_ids"]
    preds = _wait("a prediction on the uploaded task", lambda: list(client.predictions.list(task=uploaded)))
    _check_prediction(_as_dict(preds[0]), version, uncovered)
    assert {"document-root", "label-studio"} <= set(backend.model.origins)

    # a pushed task comes with its own pre-annotation (none here): left alone on import; Retrieve
    # predictions predicts it on the store's image in the instance's box
    path = folder / "pushed.jpg"
    shutil.copy(real_people / "coco" / IMAGE, path)
    image_id = store.add_image(path, source="real", subset="ml", group_key="ml-785", width=640, height=425)
    iid = store.instance_id(image_id, "p0", meta={"bbox": BOX})
    pushed = push(store, [iid], round=1, conn=conn, client=client).task_ids[iid]
    time.sleep(1.0)
    assert not list(client.predictions.list(task=pushed)) and pushed not in backend.importer.requested
    client.actions.create(id="retrieve_tasks_predictions", project=project,
                          selected_items={"all": False, "included": [pushed]})
    (pred,) = [_as_dict(p) for p in client.predictions.list(task=pushed)]
    view = task_view(client.tasks.get(id=str(pushed)).data)  # the crop the pushed task shows (view.py)
    assert view is not None
    _check_prediction(pred, version, uncovered, view)
    assert backend.model.origins[-1] == "store"
    assert from_result(pred["result"], 640, 425, view).bbox == pytest.approx(BOX, abs=1e-3)

    # annotation events reach the round logic through the same app: the save is pulled
    pulls = backend.receiver.pulls
    client.annotations.create(id=pushed, result=pred["result"], lead_time=2.0)
    _wait("the webhook's pull", lambda: backend.receiver.pulls > pulls and backend.receiver.idle.is_set())
    assert [r.source for r in store.revisions(iid)] == ["human"] and not backend.receiver.errors

    # Label Studio's "Start training" wakes the same round logic (it retrains when its rule holds)
    pulls = backend.receiver.pulls
    assert _post(base + "/train", {"project": str(project)}, auth) == 201
    _wait("the pull a training request runs", lambda: backend.receiver.pulls > pulls)


def test_spinetrack_serve_connects_itself_to_the_project(tmp_path: Path, labelstudio_server: LabelStudioServer
                                                         ) -> None:
    """The one documented command: `spinetrack serve` creates the project if needed, connects
    itself as its ML backend and prints where, with the model version Label Studio shows."""
    port = free_port()
    env = {**os.environ, "SPINETRACK_HOME": str(tmp_path / "home"), "SPINETRACK_WEBHOOK_SECRET": SECRET,
           "SPINETRACK_LS_URL": labelstudio_server.url, "SPINETRACK_LS_TOKEN": labelstudio_server.token,
           "SPINETRACK_LS_DOCUMENT_ROOT": labelstudio_server.document_root}
    env.pop("SPINETRACK_DB_URL", None)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "--json", "serve", "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        text = _wait("spinetrack serve to connect", lambda: proc.poll() is None and '"ml_backend"' in
                     log.read_text() and log.read_text(), timeout_s=90)
        out = json.loads(text[text.index("{"):])
        assert out["url"] == f"http://127.0.0.1:{port}"
        (ml,) = connect(connection_of(labelstudio_server)).ml.list(project=out["project"])
        assert (ml.id, ml.url, ml.model_version) == (out["ml_backend"], out["url"], out["model_version"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
