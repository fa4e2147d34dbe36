"""Connecting to Label Studio with label-studio-sdk 2.x, and the project SpineTrack labels in.

Both token kinds of Label Studio 1.2x work: a legacy API token (sent as `Token ...`) and a personal
access token (a JWT refresh token; the SDK exchanges it for short-lived access tokens and refreshes them).
The SDK tells them apart by whether the key decodes as a JWT, so callers just pass the key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from sqlalchemy import select

from annotation.labelstudio.config import instructions_html, label_config
from annotation.labelstudio.server import STATE_FILE, LabelStudioServer, LabelStudioUnavailable
from pipeline.store import Store
from pipeline.store.models import SyncState

DEFAULT_PROJECT_TITLE = "SpineTrack keypoints"
PROJECT_KEY = "labelstudio:project"


@dataclass(frozen=True)
class Connection:
    url: str
    token: str
    #: Images are served by Label Studio's local-files storage relative to this folder.
    document_root: str | None = None


def state_path(home: Path) -> Path:
    return home / "labelstudio" / STATE_FILE


def connection_from_env(home: Path | None = None) -> Connection:
    """$SPINETRACK_LS_URL + $SPINETRACK_LS_TOKEN, else the server `spinetrack labelstudio start` recorded."""
    url, token = os.environ.get("SPINETRACK_LS_URL"), os.environ.get("SPINETRACK_LS_TOKEN")
    root = os.environ.get("SPINETRACK_LS_DOCUMENT_ROOT")
    if url and token:
        return Connection(url.rstrip("/"), token, root)
    if home is not None and state_path(home).is_file():
        server = LabelStudioServer.load(state_path(home))
        return Connection(server.url, server.token, root or server.document_root)
    raise LabelStudioUnavailable(
        "no Label Studio configured: set SPINETRACK_LS_URL and SPINETRACK_LS_TOKEN, "
        "or run `spinetrack labelstudio start`"
    )


def connection_of(server: LabelStudioServer) -> Connection:
    return Connection(server.url, server.token, server.document_root)


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn transport failures into one clear error that names the server URL."""
    try:
        yield
    except (httpx.TransportError, ConnectionError) as exc:
        raise LabelStudioUnavailable(
            f"Label Studio at {url} is not reachable ({exc.__class__.__name__}: {exc})"
        ) from exc
    except ApiError as exc:
        if exc.status_code in (502, 503, 504):
            raise LabelStudioUnavailable(f"Label Studio at {url} answered {exc.status_code}") from exc
        if exc.status_code in (401, 403):
            raise LabelStudioRefused(
                f"Label Studio at {url} refused the token (HTTP {exc.status_code}): it was revoked or is "
                "wrong; set SPINETRACK_LS_TOKEN to a valid token (nothing was changed)") from exc
        raise


class LabelStudioRefused(RuntimeError):
    """Label Studio refuses our token (revoked, wrong): one line, exit 2, before the store changes."""


#: Answers worth retrying: rate limiting and a server (or its proxy) that is briefly unavailable.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Methods that may be repeated after a 500 (the server may have done part of the work of a POST).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `attempts` tries in all, waiting base, 2*base, 4*base ... (capped)."""

    attempts: int = 5
    base_s: float = 0.5
    max_s: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_s)
        return float(min(self.base_s * (2**attempt), self.max_s))


def retry_policy_from_env() -> RetryPolicy:
    """$SPINETRACK_LS_RETRIES (attempts) and $SPINETRACK_LS_BACKOFF_S (first wait) tune the policy."""
    return RetryPolicy(
        attempts=max(1, int(os.environ.get("SPINETRACK_LS_RETRIES", "5"))),
        base_s=float(os.environ.get("SPINETRACK_LS_BACKOFF_S", "0.5")),
    )


class RetryingTransport(httpx.BaseTransport):
    """Retries connection errors, 429 and 5xx with backoff, then fails with an error naming the server.

    Connection failures before a request was sent, 429 and 502/503/504 are retried for every
    method (the request was not processed); a 500 only for idempotent methods. The last answer is
    returned as is (the SDK then raises its ApiError, which `reaching` turns into a clear message).
    """

    def __init__(self, url: str, policy: RetryPolicy | None = None,
                 inner: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self.policy = policy or retry_policy_from_env()
        self._inner = inner or httpx.HTTPTransport()
        self.retries = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        last_error: Exception | None = None
        for attempt in range(self.policy.attempts):
            try:
                response = self._inner.handle_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                last_error = exc
                if attempt + 1 < self.policy.attempts:
                    self.retries += 1
                    time.sleep(self.policy.delay(attempt))
                continue
            retry = response.status_code in RETRY_STATUSES or (
                response.status_code == 500 and request.method in IDEMPOTENT)
            if not retry or attempt + 1 == self.policy.attempts:
                return response
            response.read()
            response.close()
            self.retries += 1
            time.sleep(self.policy.delay(attempt, response.headers.get("Retry-After")))
        raise LabelStudioUnavailable(
            f"Label Studio at {self.url} is not reachable after {self.policy.attempts} attempts "
            f"({last_error.__class__.__name__}: {last_error})"
        ) from last_error

    def close(self) -> None:
        self._inner.close()


def http_client(url: str, timeout_s: float = 120.0, policy: RetryPolicy | None = None) -> httpx.Client:
    """An httpx client for Label Studio that retries transient failures (see RetryingTransport)."""
    return httpx.Client(transport=RetryingTransport(url, policy), timeout=timeout_s, follow_redirects=True)


def _healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(f"{url}/health").status_code == 200
    except (httpx.HTTPError, LabelStudioUnavailable):
        return False


def connect(conn: Connection, timeout_s: float = 120.0, policy: RetryPolicy | None = None) -> LabelStudio:
    """An SDK client that retries transient failures, after checking the server answers.

    A server that is down fails here, before any work, with an error naming its URL.
    """
    http = http_client(conn.url, timeout_s, policy)
    if not _healthy(http, conn.url):
        http.close()
        raise LabelStudioUnavailable(
            f"Label Studio at {conn.url} is not reachable (GET {conn.url}/health failed)"
        )
    # the transport does the retrying; the SDK's own retries would multiply the attempts
    return LabelStudio(base_url=conn.url, api_key=conn.token, timeout=timeout_s, max_retries=0,
                       httpx_client=http)


def configure_overlap(client: LabelStudio, project_id: int, overlap: float) -> dict[str, Any]:
    """Give a share `overlap` (0..1) of the project's tasks to two annotators (Label Studio's overlap).

    Label Studio keeps `maximum_annotations` per task for a cohort of `overlap_cohort_percentage` % of
    the project's tasks and rearranges the cohort when tasks are imported; 0 means one annotator each.
    """
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be between 0 and 1, got {overlap}")
    maximum = 2 if overlap > 0 else 1
    cohort = round(overlap * 100) if overlap > 0 else 100
    project = client.projects.get(id=project_id)
    if (project.maximum_annotations, project.overlap_cohort_percentage) != (maximum, cohort):
        client.projects.update(id=project_id, maximum_annotations=maximum, overlap_cohort_percentage=cohort)
    return {"maximum_annotations": maximum, "overlap_cohort_percentage": cohort}


def ensure_project(
    store: Store, client: LabelStudio, conn: Connection, title: str = DEFAULT_PROJECT_TITLE
) -> int:
    """The store's Label Studio project (created on first use, its id kept in SyncState per server URL)."""
    key = f"{PROJECT_KEY}:{conn.url}"
    saved = store.sync_value(key) or {}
    known = int(saved["project_id"]) if "project_id" in saved and not saved.get("gone") else None
    with reaching(conn.url):
        if known is not None:
            try:
                found = client.projects.get(id=known)
                made = saved.get("created_at")
                # the same project, not another one that got its id (recreated, database reset)
                if made is None or found.created_at is None or _same_time(found.created_at, made):
                    return known
            except ApiError as exc:
                if exc.status_code != 404:
                    raise
        project = client.projects.create(
            title=title,
            label_config=label_config(),
            expert_instruction=instructions_html(),
            show_instruction=True,
            show_skip_button=True,
            enable_empty_annotation=True,
            maximum_annotations=1,
        )
    project_id = int(project.id or 0)
    made_at = project.created_at.isoformat() if project.created_at is not None else None
    store.set_sync_value(key, {"project_id": project_id, "created_at": made_at})
    return project_id


def _same_time(value: Any, stored: str) -> bool:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when == datetime.fromisoformat(stored)


def project_ids(store: Store) -> list[int]:
    with store.session() as s:
        rows = s.scalars(select(SyncState).where(SyncState.key.like(f"{PROJECT_KEY}:%")))
        return [int(r.value["project_id"]) for r in rows]


def create_personal_access_token(client: LabelStudio) -> str:
    """A personal access token (JWT refresh token) for the client's user; `connect` accepts it too."""
    token = client.tokens.create().token
    if not token:
        raise LabelStudioUnavailable("Label Studio returned no personal access token")
    return str(token)
