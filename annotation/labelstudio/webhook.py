"""Pull as soon as annotators save: a tiny webhook receiver on loopback.

Label Studio POSTs ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_DELETED to this receiver; it
only wakes a worker that runs the (incremental, idempotent) pull, so bursts of saves coalesce into
one pull and a lost webhook is harmless: the next pull or the next `spinetrack pull` catches up.
The server must be allowed to call loopback (`start_server(..., loopback_webhooks=True)`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from label_studio_sdk import LabelStudio

ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


class PullOnWebhook:
    """Receives Label Studio webhooks on 127.0.0.1 and runs `on_change()` (a pull) after each burst."""

    def __init__(self, on_change: Callable[[], Any], port: int = 0) -> None:
        self._on_change = on_change
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.pulls = 0
        self.received = 0
        self.errors: list[str] = []
        self.idle = threading.Event()
        self.idle.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    action = json.loads(body or b"{}").get("action")
                except json.JSONDecodeError:
                    action = None
                if action in ACTIONS:
                    receiver.received += 1
                    receiver.idle.clear()
                    receiver._wake.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/labelstudio"
        self._threads = [
            threading.Thread(target=self._http.serve_forever, daemon=True),
            threading.Thread(target=self._work, daemon=True),
        ]

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

    def start(self) -> PullOnWebhook:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def register(self, client: LabelStudio, project_id: int) -> int:
        """Register this receiver for the project's annotation events (once per URL); the webhook id."""
        for hook in client.webhooks.list(project=str(project_id)):
            if hook.url == self.url and hook.id is not None:
                return int(hook.id)
        hook = client.webhooks.create(
            url=self.url, project=project_id, actions=list(ACTIONS),  # type: ignore[arg-type]
            send_payload=False, send_for_all_actions=False, is_active=True,
        )  # fmt: skip
        return int(hook.id or 0)
