"""Label Studio at team scale, without a Label Studio server: what it may serve, what it may send
out, and who may call the webhook receiver (a real uvicorn server on loopback, real HTTP)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

from annotation.labelstudio.server import TELEMETRY_OFF, _server_env, media_root, stage_media
from annotation.labelstudio.webhook import SECRET_HEADER, PullOnWebhook
from schemas.errors import InputError


def _post(url: str, body: Mapping[str, object], headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_webhook_needs_the_shared_secret() -> None:
    calls: list[int] = []
    receiver = PullOnWebhook(lambda: calls.append(1), secret="s3cret-value").start()
    try:
        event = {"action": "ANNOTATION_CREATED"}
        assert _post(receiver.url, event, {}) == 401
        assert _post(receiver.url, event, {SECRET_HEADER: "wrong"}) == 401
        time.sleep(1.0)
        assert calls == [] and receiver.received == 0 and receiver.rejected == 2
        assert _post(receiver.url, event, {SECRET_HEADER: "s3cret-value"}) == 200
        assert _post(receiver.url, {"action": "PROJECT_UPDATED"}, {SECRET_HEADER: "s3cret-value"}) == 200
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls == [1] and receiver.received == 1  # other actions are acknowledged, not acted on
        assert receiver.idle.wait(5)
    finally:
        receiver.stop()


def test_webhook_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINETRACK_WEBHOOK_SECRET", "from-env")
    receiver = PullOnWebhook(lambda: None)
    assert receiver.secret == "from-env" and receiver.url.endswith("/labelstudio")
    receiver.stop()


def test_server_serves_only_the_media_folder_and_sends_no_telemetry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY_DSN", "https://key@sentry.example/1")  # a user's shell must not leak in
    home = tmp_path / "home"
    env = _server_env(tmp_path / "ls", media_root(home))
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str((home / "media").resolve())
    for key, value in TELEMETRY_OFF.items():
        assert env[key] == value
    assert env["SENTRY_DSN"] == "" and env["FRONTEND_SENTRY_DSN"] == ""


def test_stage_media_copies_images_into_the_media_folder(tmp_path: Path) -> None:
    outside = tmp_path / "renders" / "seq" / "rgb" / "000001.PNG"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"png bytes")
    digest = hashlib.sha256(b"png bytes").hexdigest()
    root = media_root(tmp_path / "home")
    staged = stage_media(outside, digest, root)
    assert staged == root / digest[:2] / f"{digest}.png"
    assert staged.read_bytes() == b"png bytes" and root in staged.parents
    # a copy, never a link: rewriting the media file cannot reach the image (issue 20)
    assert staged.stat().st_ino != outside.stat().st_ino
    assert stage_media(outside, digest, root) == staged  # idempotent
    staged.write_bytes(b"rewritten")
    assert stage_media(outside, digest, root).read_bytes() == b"png bytes"  # a changed copy is replaced
    with pytest.raises(InputError) as err:  # a source that no longer has the image's hash is refused
        stage_media(outside, "ab" + "0" * 62, root)
    assert err.value.field == "sha256"
