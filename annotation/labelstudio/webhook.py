"""Pull as soon as annotators save: a small ASGI webhook receiver (Starlette on uvicorn).

Label Studio POSTs ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_DELETED to `/labelstudio`;
the receiver only wakes a worker thread that runs `on_change()` (an incremental, idempotent pull, or
`hooks.continue_waiting_round`), so bursts of saves coalesce into one run and a lost webhook is
harmless: the next event or the next `spinetrack pull` catches up.

Authentication: every request must carry the shared secret in the `X-SpineTrack-Secret` header
(`register` tells Label Studio to send it) or as the password of HTTP Basic auth (what Label Studio
sends an ML backend); anything else is answered 401 and ignored. The secret comes from
$SPINETRACK_WEBHOOK_SECRET or is generated per receiver.

The same app serves SpineTrack as Label Studio's ML backend (`ml_backend.py`: `routes` and
`on_event`); its `/webhook` is this receiver too: one receiver for annotation events, not two.
A server posting to 127.0.0.1 must be allowed to (`start_server(..., loopback_webhooks=True)`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from label_studio_sdk import LabelStudio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
#: Label Studio's "Start training" (an ML backend event): continue the waiting round, like a save.
TRAINING_ACTIONS = ("START_TRAINING",)
SECRET_HEADER = "X-SpineTrack-Secret"
#: Largest request body read (an event, or an ML backend request with its tasks): 16 MiB.
MAX_BODY = 16 << 20
SECRET_ENV = "SPINETRACK_WEBHOOK_SECRET"
PATH = "/labelstudio"
#: Where Label Studio sends an ML backend's events (it registers `<backend url>/webhook` itself).
ML_PATH = "/webhook"


def authorized(request: Request, secret: str) -> bool:
    """The shared secret in `X-SpineTrack-Secret`, or as the Basic auth password (any user name):
    Label Studio can send an ML backend only Basic auth."""
    given = request.headers.get(SECRET_HEADER)
    if given is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(value).decode().partition(":")[2] if scheme.lower() == "basic" else ""
        except (binascii.Error, UnicodeDecodeError):
            given = ""
    return hmac.compare_digest(given.encode(), secret.encode())


class PullOnWebhook:
    """Receives Label Studio webhooks and runs `on_change()` after each burst, in one worker thread."""

    def __init__(
        self,
        on_change: Callable[[], Any],
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        secret: str | None = None,
        public_url: str | None = None,
        routes: Sequence[BaseRoute] = (),
        on_event: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> None:
        self._on_change = on_change
        self._routes = list(routes)
        #: other events (Label Studio's TASKS_CREATED ...): True when handled
        self._on_event = on_event
        self.secret = secret or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(24)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.pulls = 0
        self.received = 0
        self.rejected = 0
        self.errors: list[str] = []
        self.idle = threading.Event()
        self.idle.set()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        bound = self._sock.getsockname()[1]
        #: What Label Studio must call (behind a proxy or in compose: `public_url`, e.g. http://webhook:8090)
        self.base_url = public_url.rstrip("/") if public_url else f"http://{host}:{bound}"
        self.url = self.base_url + PATH
        self.app = self._make_app()
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                                     access_log=False))
        self._threads = [
            threading.Thread(target=self._serve, daemon=True, name="webhook-http"),
            threading.Thread(target=self._work, daemon=True, name="webhook-worker"),
        ]

    # -- the ASGI app ----------------------------------------------------------------------------
    def _make_app(self) -> Starlette:
        async def receive(request: Request) -> JSONResponse:
            if not authorized(request, self.secret):
                self.rejected += 1
                return JSONResponse({"error": f"missing or wrong {SECRET_HEADER}"}, status_code=401)
            declared = request.headers.get("content-length", "0")
            if not declared.isdigit() or int(declared) > MAX_BODY:
                return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, status_code=413)
            raw = await request.body()
            if len(raw) > MAX_BODY:  # sent without a length
                return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, status_code=413)
            try:
                body = json.loads(raw or b"{}")
                action = body.get("action")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                return JSONResponse({"error": "body is not a JSON object"}, status_code=400)
            wake = action in ACTIONS or action in TRAINING_ACTIONS
            if wake:
                self.notify()
            handled = self._on_event is not None and not wake and self._on_event(str(action), body)
            return JSONResponse({"accepted": wake or handled})

        async def health(_request: Request) -> JSONResponse:
            # Label Studio's ML backend check reads JSON (label-studio-ml-backend answers the same)
            return JSONResponse({"status": "UP", "model_class": "SpineTrack"})

        return Starlette(routes=[
            Route(PATH, receive, methods=["POST"]), Route(ML_PATH, receive, methods=["POST"]),
            Route("/health", health), Route("/", health), *self._routes,
        ])

    def notify(self) -> None:
        """Wake the worker: it runs `on_change()` once for everything received until it starts."""
        self.received += 1
        self.idle.clear()
        self._wake.set()

    # -- threads ---------------------------------------------------------------------------------
    def _serve(self) -> None:
        self._server.run(sockets=[self._sock])

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.5):
                continue
            self._wake.clear()
            try:
                self._on_change()
                self.pulls += 1
            except Exception as exc:  # keep receiving; the next webhook or pull retries
                self.errors.append(f"{exc.__class__.__name__}: {exc}")
            if not self._wake.is_set():
                self.idle.set()

    def start(self, timeout_s: float = 30.0) -> PullOnWebhook:
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._threads[0].is_alive():
                raise RuntimeError(f"webhook receiver did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.should_exit = True
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join(timeout=10)
        self._sock.close()

    def serve_forever(self, on_started: Callable[[], Any] | None = None) -> None:
        """Block until interrupted (`spinetrack webhook`, `spinetrack serve`); `on_started` runs once
        the port answers (Label Studio checks an ML backend as it is connected)."""
        self.start()
        try:
            if on_started is not None:
                on_started()
            while self._threads[0].is_alive():
                self._threads[0].join(timeout=1.0)
        finally:
            self.stop()

    def register(self, client: LabelStudio, project_id: int) -> int:
        """Register this receiver for the project's annotation events (once per URL), sending the
        shared secret as a header; returns the webhook id."""
        headers = {SECRET_HEADER: self.secret}
        for hook in client.webhooks.list(project=str(project_id)):
            if hook.url == self.url and hook.id is not None:
                if (hook.headers or {}) != headers:  # the secret changed: update it
                    client.webhooks.update(id=int(hook.id), url=self.url, headers=headers)
                return int(hook.id)
        hook = client.webhooks.create(
            url=self.url, project=project_id, actions=list(ACTIONS),  # type: ignore[arg-type]
            headers=headers, send_payload=False, send_for_all_actions=False, is_active=True,
        )  # fmt: skip
        return int(hook.id or 0)
