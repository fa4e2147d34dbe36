"""Connecting to Label Studio with label-studio-sdk 2.x, and the project SpineTrack labels in.

Both token kinds of Label Studio 1.2x work: a legacy API token (sent as `Token ...`) and a personal
access token (a JWT refresh token; the SDK exchanges it for short-lived access tokens and refreshes them).
The SDK tells them apart by whether the key decodes as a JWT, so callers just pass the key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from sqlalchemy import select

from annotation.labelstudio.config import instructions_html, label_config
from annotation.labelstudio.server import STATE_FILE, LabelStudioServer, LabelStudioUnavailable, health
from pipeline.store import Store
from pipeline.store.models import SyncState, utcnow

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
        raise


def connect(conn: Connection, timeout_s: float = 120.0) -> LabelStudio:
    """An SDK client, after checking the server answers (so `server down` fails before any work)."""
    if not health(conn.url):
        raise LabelStudioUnavailable(
            f"Label Studio at {conn.url} is not reachable (GET {conn.url}/health failed)"
        )
    return LabelStudio(base_url=conn.url, api_key=conn.token, timeout=timeout_s)


def ensure_project(
    store: Store, client: LabelStudio, conn: Connection, title: str = DEFAULT_PROJECT_TITLE
) -> int:
    """The store's Label Studio project (created on first use, its id kept in SyncState per server URL)."""
    key = f"{PROJECT_KEY}:{conn.url}"
    with store.session() as s:
        row = s.get(SyncState, key)
        known = int(row.value["project_id"]) if row is not None else None
    with reaching(conn.url):
        if known is not None:
            try:
                client.projects.get(id=known)
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
    with store.session() as s:
        row = s.get(SyncState, key)
        if row is None:
            s.add(SyncState(key=key, value={"project_id": project_id}, updated_at=utcnow()))
        else:
            row.value = {"project_id": project_id}
            row.updated_at = utcnow()
    return project_id


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
