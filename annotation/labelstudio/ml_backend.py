"""SpineTrack as Label Studio's ML backend: what project settings -> Model connects to.

Label Studio 1.23 (`ml/api_connector.py`) calls an ML backend over plain HTTP; these answer in the
shapes label-studio-ml-backend's `api.py` uses (its PyPI package is old, so the few routes live here):

    GET  /health                                        -> {"status": "UP"}
    POST /setup    {project, schema, hostname, ...}     -> {"model_version": v}
    POST /predict  {tasks, project, label_config, params}
                   -> {"results": [{result, score, model_version}], "model_version": v}
    POST /train, POST /webhook {action: START_TRAINING} -> the round logic is woken (like a save)
    GET  /versions                                      -> {"versions": [v]}

They are served by the webhook receiver's app (`webhook.PullOnWebhook`): one process, one secret
(Label Studio sends it as the Basic auth password), and the backend's `/webhook`, which Label Studio
registers when a backend is connected, IS the receiver: annotation events reach the round logic once.

Predictions come from the current default annotator (`load_annotator(DEFAULT_SPEC, store)`: the
store's current model is its student, so it is reloaded when that changes), one person per task,
built by the same `convert.prediction` as pushed pre-annotations: `model_version` = the annotator's
identity, a score per point, no point where it covers none (v=0). A task SpineTrack pushed is
predicted on the store's image in its instance's box; a task a person imported by hand on the image
Label Studio serves (read below its document root, else downloaded from Label Studio with the
token) in the box of the best person BlazePose's detector finds (`pipeline.intake.detectors`), else the
whole image. Tasks imported by hand get predictions as they arrive: on Label Studio's TASKS_CREATED
event the backend asks it to "Retrieve predictions" for them, which calls /predict.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from annotation.labelstudio.client import Connection, connect, ensure_project, http_client, reaching
from annotation.labelstudio.config import keypoint_controls
from annotation.labelstudio.convert import prediction
from annotation.labelstudio.hooks import LabelStudioHooks, continue_waiting_round
from annotation.labelstudio.server import LabelStudioUnavailable
from annotation.labelstudio.view import View, task_view
from annotation.labelstudio.webhook import (
    ACTIONS,
    ML_PATH,
    PATH,
    SECRET_ENV,
    SECRET_HEADER,
    PullOnWebhook,
    authorized,
)
from pipeline.annotators import Annotator
from pipeline.annotators.spec import DEFAULT_SPEC, load_annotator
from pipeline.intake.media import read_image
from pipeline.store import Store
from pipeline.store.models import Instance
from schemas.errors import InputError

log = logging.getLogger(__name__)

TITLE = "SpineTrack"
BASIC_USER = "spinetrack"
LOCAL_FILES = "/data/local-files/"
RETRIEVE_ACTION = "retrieve_tasks_predictions"
#: Events the backend's webhook carries: the receiver's annotation events, and new tasks.
HOOK_ACTIONS = (*ACTIONS, "TASKS_CREATED")
_UNSET = object()


@dataclass(frozen=True)
class TaskImage:
    """The pixels a task shows and the person box to predict in."""

    pixels: NDArray[np.uint8]  # BGR
    box: list[float]  # x, y, w, h
    origin: str  # "store" | "document-root" | "label-studio"
    view: View | None = None  # a pushed task's crop (view.py): the prediction goes on it


class SpineTrackModel:
    """The default annotator behind Label Studio's ML backend calls, reloaded when the store's
    current model (its student) changes; one prediction at a time (the annotators are not shared
    between threads)."""

    def __init__(self, store: Store, conn: Connection, client: LabelStudio, *, spec: str = DEFAULT_SPEC,
                 device: str = "cpu", detector: str | None = None) -> None:
        self.store, self.conn, self.client = store, conn, client
        self.spec, self.device, self.detector_spec = spec, device, detector
        self._lock = threading.Lock()
        self._annotator: Annotator | None = None
        self._student: object = _UNSET
        self._detector: Any = None
        #: where each predicted task's image came from (TaskImage.origin), oldest first
        self.origins: list[str] = []

    def annotator(self) -> Annotator:
        """The annotator for the store's current model (loaded now if that changed)."""
        with self._lock:
            student = self.store.current_model()
            if self._annotator is None or student != self._student:
                self._annotator = load_annotator(self.spec, self.store, device=self.device)
                self._student = student
            return self._annotator

    def version(self) -> str:
        """What /setup answers, fast (Label Studio waits 3 s): the loaded annotator's identity; a new
        current model is loaded in the background, and /predict waits for it."""
        loaded = self._annotator
        if loaded is None:
            return self.annotator().identity.version
        if self.store.current_model() != self._student and not self._lock.locked():
            threading.Thread(target=self.annotator, daemon=True, name="ml-backend-reload").start()
        return loaded.identity.version

    def predict(self, tasks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One prediction per task, in order; `{}` for a task whose image cannot be read (Label Studio
        skips it and can retrieve it again later)."""
        annotator = self.annotator()
        version = annotator.identity.version
        out: list[dict[str, Any]] = []
        with self._lock:
            for task in tasks:
                try:
                    image = self.task_image(task)
                except (InputError, OSError, ValueError, LabelStudioUnavailable) as exc:
                    log.warning("task %s: no image to predict on (%s)", task.get("id"), exc)
                    out.append({})
                    continue
                self.origins.append(image.origin)
                height, width = image.pixels.shape[:2]
                pose = annotator.predict(image.pixels, [image.box])[0]
                scores = [float(c) for c in pose.confidence]
                out.append(prediction(pose.coco_keypoints(width, height), image.box, width, height,
                                      model_version=version, score=pose.score, scores=scores,
                                      view=image.view))
        return out

    # -- images ----------------------------------------------------------------------------------
    def task_image(self, task: dict[str, Any]) -> TaskImage:
        """The task's image and person box: the store's for a task SpineTrack pushed, else the file
        Label Studio serves and the detector's best person (the whole image without one)."""
        data = task.get("data") or {}
        pushed = self._pushed(data)
        if pushed is not None:
            return pushed
        url = str(data.get("image") or "")
        if not url:
            raise InputError(f"task {task.get('id')}", "no `image` in the task data", field="image")
        local = self._local_file(url)
        pixels = read_image(local) if local is not None else self._download(url)
        return TaskImage(pixels, self._person_box(pixels), "document-root" if local else "label-studio")

    def _pushed(self, data: dict[str, Any]) -> TaskImage | None:
        """A pushed task (its `spinetrack_key`) whose instance and image are in this store."""
        iid, image_id = data.get("instance_id"), data.get("image_id")
        if data.get("spinetrack_key") is None or iid is None:
            return None
        img = self.store.images_of([int(iid)]).get(int(iid))
        if img is None or img.id != image_id:
            return None  # another store's task: predict on what Label Studio shows
        with self.store.session() as s:
            inst = s.get(Instance, int(iid))
            boxes = self.store.instance_boxes([inst]) if inst is not None else {}
        box = boxes.get(int(iid), ([0.0, 0.0, float(img.width), float(img.height)], "image"))[0]
        return TaskImage(read_image(Path(img.path)), box, "store", task_view(data, f"task of {iid}"))

    def _local_file(self, url: str) -> Path | None:
        """A local-files URL's file below the document root, when this machine sees that root."""
        parts = urlsplit(url)
        if not parts.path.endswith(LOCAL_FILES) or not self.conn.document_root:
            return None
        rel = (parse_qs(parts.query).get("d") or [""])[0]
        root = Path(self.conn.document_root).resolve()
        path = (root / rel).resolve()
        return path if rel and root in path.parents and path.is_file() else None

    def _download(self, url: str) -> NDArray[np.uint8]:
        """An image Label Studio serves (uploads, local files), fetched with the API token; other
        hosts are refused: the backend fetches nothing Label Studio does not serve."""
        base = urlsplit(self.conn.url)
        parts = urlsplit(url)
        if parts.scheme and (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise InputError(url, f"not served by Label Studio at {self.conn.url}", field="image")
        # the SDK's own auth header: a legacy token, or an access token it refreshed from a JWT
        auth = self.client._client_wrapper.get_headers()["Authorization"]
        with http_client(self.conn.url, timeout_s=60.0) as http, reaching(self.conn.url):
            resp = http.get(self.conn.url + parts.path + (f"?{parts.query}" if parts.query else ""),
                            headers={"Authorization": auth})
        if resp.status_code != 200:
            raise InputError(url, f"Label Studio answered {resp.status_code}", field="image")
        pixels = cv2.imdecode(np.frombuffer(resp.content, dtype=np.uint8), cv2.IMREAD_COLOR)
        if pixels is None:
            raise InputError(url, "not an image", field="image")
        return np.asarray(pixels, dtype=np.uint8)

    def _person_box(self, pixels: NDArray[np.uint8]) -> list[float]:
        """The best person the detector finds (one person per task), else the whole image."""
        if self._detector is None:
            from pipeline.intake.detectors import load_detector

            self._detector = load_detector(self.detector_spec, device=self.device)
        found = self._detector.detect(pixels)
        height, width = pixels.shape[:2]
        return [float(v) for v in found[0].bbox] if found else [0.0, 0.0, float(width), float(height)]


def schema_problem(schema: str) -> str | None:
    """Why a project's labeling config is not one SpineTrack predicts for (None: it is)."""
    missing = sorted({c for c in keypoint_controls().values() if f'name="{c}"' not in schema})
    return f"not a SpineTrack labeling config (no {', '.join(missing[:3])} ...)" if missing else None


def backend_routes(model: SpineTrackModel, secret: str, on_train: Callable[[], None]) -> list[BaseRoute]:
    """The ML backend's routes; each needs the secret (Basic auth password) but /health (webhook.py)."""

    def refused(request: Request) -> JSONResponse | None:
        if authorized(request, secret):
            return None
        return JSONResponse({"error": f"missing or wrong Basic auth password or {SECRET_HEADER}"},
                            status_code=401)

    async def body(request: Request) -> dict[str, Any]:
        try:
            value = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    async def setup(request: Request) -> JSONResponse:
        if (no := refused(request)) is not None:
            return no
        problem = schema_problem(str((await body(request)).get("schema") or ""))
        if problem:
            return JSONResponse({"error": problem}, status_code=400)
        return JSONResponse({"model_version": await run_in_threadpool(model.version)})

    async def predict(request: Request) -> JSONResponse:
        if (no := refused(request)) is not None:
            return no
        tasks = (await body(request)).get("tasks") or []
        tasks = [tasks] if isinstance(tasks, dict) else list(tasks)
        results = await run_in_threadpool(model.predict, tasks)
        versions = {r["model_version"] for r in results if r}
        return JSONResponse({"results": results, "model_version": next(iter(versions), None)})

    async def train(request: Request) -> JSONResponse:
        if (no := refused(request)) is not None:
            return no
        on_train()  # the round retrains when its close rule holds; a click does not skip the rule
        return JSONResponse({}, status_code=201)

    async def versions(request: Request) -> JSONResponse:
        if (no := refused(request)) is not None:
            return no
        return JSONResponse({"versions": [await run_in_threadpool(model.version)]})

    async def metrics(request: Request) -> JSONResponse:
        return refused(request) or JSONResponse({})

    return [Route("/setup", setup, methods=["POST"]), Route("/predict", predict, methods=["POST"]),
            Route("/train", train, methods=["POST"]), Route("/versions", versions, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"])]


class RetrieveOnImport:
    """Tasks a person imported (TASKS_CREATED without a SpineTrack key) -> Label Studio's "Retrieve
    predictions" action on them, which calls /predict; in a worker thread, so the event is answered
    at once. Pushed tasks arrive with their pre-annotation and are left alone."""

    def __init__(self, client: LabelStudio, conn: Connection, project_id: int) -> None:
        self.client, self.conn, self.project_id = client, conn, project_id
        self._queue: queue.Queue[list[int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, daemon=True, name="ml-backend-retrieve")
        self.requested: list[int] = []
        self.errors: list[str] = []

    def handle(self, action: str, body: dict[str, Any]) -> bool:
        """The receiver's hook for events other than annotations (runs on its event loop: no I/O)."""
        project = body.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if action != "TASKS_CREATED" or project_id not in (None, self.project_id):
            return False
        ids = [int(t["id"]) for t in body.get("tasks") or []
               if isinstance(t, dict) and t.get("id") is not None
               and "spinetrack_key" not in (t.get("data") or {})]
        if ids:
            self._queue.put(ids)
        return True

    def _work(self) -> None:
        while (ids := self._queue.get()) is not None:
            self.requested.extend(ids)
            try:
                with reaching(self.conn.url):
                    self.client.actions.create(id=RETRIEVE_ACTION, project=self.project_id,
                                               selected_items={"all": False, "included": ids})
            except Exception as exc:  # keep serving; a person can still press "Retrieve predictions"
                self.errors.append(f"{exc.__class__.__name__}: {exc}")
                log.warning("retrieving predictions for tasks %s failed: %s", ids, exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread.ident is not None:
            self._thread.join(timeout=10)


def own_webhook(client: LabelStudio, project_id: int, base_url: str, secret: str) -> int:
    """The one webhook of the project to this app: `<base>/webhook` (Label Studio creates it for an
    ML backend, sending everything without the secret) carries the secret, the annotation events and
    TASKS_CREATED; a receiver hook at `<base>/labelstudio` is removed (it would double every event)."""
    url, headers = base_url + ML_PATH, {SECRET_HEADER: secret}
    settings: dict[str, Any] = dict(url=url, headers=headers, actions=list(HOOK_ACTIONS), send_payload=True,
                                    send_for_all_actions=False, is_active=True)
    hook_id: int | None = None
    for hook in client.webhooks.list(project=str(project_id)):
        if hook.id is None:
            continue
        if hook.url == url and hook_id is None:
            hook_id = int(hook.id)
            client.webhooks.update(id=hook_id, **settings)
        elif hook.url in (url, base_url + PATH):
            client.webhooks.delete(id=int(hook.id))
    if hook_id is None:
        hook_id = int(client.webhooks.create(project=project_id, **settings).id or 0)
    return hook_id


def connect_backend(client: LabelStudio, project_id: int, base_url: str, secret: str, *,
                    title: str = TITLE) -> int:
    """Make this app the project's ML backend `title` (Basic auth: the secret as password), once:
    an existing one of that title is pointed here. Label Studio checks /health and /setup while
    connecting, so the app must already answer. Returns the backend's id."""
    auth: dict[str, Any] = dict(url=base_url, auth_method="BASIC_AUTH", basic_auth_user=BASIC_USER,
                                basic_auth_pass=secret, title=title, is_interactive=False)
    try:
        mine = [b for b in client.ml.list(project=project_id) if b.title == title and b.id is not None]
        if mine:
            backend_id = int(mine[0].id or 0)
            client.ml.update(id=backend_id, project=project_id, **auth)
            old = str(mine[0].url or "").rstrip("/")
            if old and old != base_url:  # the old address's webhook would only fail
                for hook in client.webhooks.list(project=str(project_id)):
                    if hook.id is not None and hook.url == old + ML_PATH:
                        client.webhooks.delete(id=int(hook.id))
        else:
            backend_id = int(client.ml.create(project=project_id, **auth).id or 0)
    except ApiError as exc:
        if exc.status_code == 400:
            raise LabelStudioUnavailable(
                f"Label Studio refused the ML backend at {base_url}: {exc.body}") from exc
        raise
    own_webhook(client, project_id, base_url, secret)
    return backend_id


@dataclass
class ModelServer:
    """The receiver app with the ML backend on it, connected to the store's Label Studio project."""

    receiver: PullOnWebhook
    model: SpineTrackModel
    importer: RetrieveOnImport
    client: LabelStudio
    project_id: int
    backend_id: int | None = None

    def connect(self) -> int:
        """Load the annotator (so /setup answers in time), then connect the backend."""
        self.model.annotator()
        self.importer.start()
        with reaching(self.model.conn.url):
            self.backend_id = connect_backend(self.client, self.project_id, self.receiver.base_url,
                                              self.receiver.secret)
        return self.backend_id

    def start(self) -> ModelServer:
        self.receiver.start()
        try:
            self.connect()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.importer.stop()
        self.receiver.stop()

    def serve_forever(self, report: Callable[[ModelServer], Any] = lambda _server: None) -> None:
        """Connect once the port answers, `report`, then block until interrupted (`spinetrack serve`)."""

        def started() -> None:
            self.connect()
            report(self)

        try:
            self.receiver.serve_forever(on_started=started)
        finally:
            self.importer.stop()


def model_server(store: Store, hooks: LabelStudioHooks, *, port: int = 0, host: str = "127.0.0.1",
                 public_url: str | None = None, secret: str | None = None, spec: str = DEFAULT_SPEC,
                 device: str = "cpu", detector: str | None = None) -> ModelServer:
    """The app `spinetrack serve` runs: annotation events -> `continue_waiting_round`, the ML backend
    routes, new hand-imported tasks -> predictions; the project is created if it does not exist."""
    secret = secret or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(24)
    client = connect(hooks.conn)
    project_id = ensure_project(store, client, hooks.conn)
    model = SpineTrackModel(store, hooks.conn, client, spec=spec, device=device, detector=detector)
    importer = RetrieveOnImport(client, hooks.conn, project_id)
    holder: list[PullOnWebhook] = []
    receiver = PullOnWebhook(lambda: continue_waiting_round(store, hooks), port, host=host, secret=secret,
                             public_url=public_url, on_event=importer.handle,
                             routes=backend_routes(model, secret, lambda: holder[0].notify()))
    holder.append(receiver)
    return ModelServer(receiver, model, importer, client, project_id)
