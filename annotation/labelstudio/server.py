"""Start and stop a real Label Studio server from its own virtualenv.

Label Studio's pins (Django, numpy ...) clash with the app's, so the server runs as a separate process
from `$SPINETRACK_LS_VENV` (default `<repo>/.venv-labelstudio`) and the app only talks HTTP to it.

A fresh data directory costs a full Django migration (minutes on 2 busy cores), so the first start
migrates once into a template cached per Label Studio version and later starts copy that template:
a test session then pays only the server boot.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.store.objects import read_checked
from pipeline.store.store import file_sha256

REPO = Path(__file__).resolve().parents[2]
DEFAULT_EMAIL = "annotator@spinetrack.local"
STATE_FILE = "server.json"


class LabelStudioUnavailable(RuntimeError):
    """Label Studio cannot be reached (down, wrong URL) or could not be started."""


@dataclass
class LabelStudioServer:
    """A running (or recorded) server: where it listens and how to authenticate."""

    url: str
    token: str
    email: str
    password: str
    data_dir: str
    document_root: str
    pid: int | None = None
    startup_s: float = 0.0
    log_path: str = ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> LabelStudioServer:
        return cls(**json.loads(path.read_text()))


def ls_venv() -> Path:
    return Path(os.environ.get("SPINETRACK_LS_VENV", str(REPO / ".venv-labelstudio")))


def ls_executable() -> Path:
    exe = ls_venv() / "bin" / "label-studio"
    if not exe.is_file():
        raise LabelStudioUnavailable(
            f"Label Studio server not installed at {exe}; run scripts/bootstrap_labelstudio.sh "
            "(or set SPINETRACK_LS_VENV to its virtualenv)"
        )
    return exe


def ls_version() -> str:
    """Installed server version, read from its dist-info (no Django import: that takes seconds)."""
    for meta in (ls_venv() / "lib").glob("python3*/site-packages/label_studio-*.dist-info"):
        return meta.name.removeprefix("label_studio-").removesuffix(".dist-info")
    return "unknown"


def template_dir() -> Path:
    cache = Path(os.environ.get("SPINETRACK_LS_CACHE", Path.home() / ".cache" / "spinetrack"))
    return cache / f"labelstudio-template-{ls_version()}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Telemetry and phone-home settings of Label Studio, all off: every page otherwise tries to reach
#: Sentry, and the server checks PyPI for new versions.
TELEMETRY_OFF = {
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "SENTRY_RATE": "0",
    "FRONTEND_SENTRY_RATE": "0",
    "SENTRY_ENVIRONMENT": "",
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "LABEL_STUDIO_DISABLE_TELEMETRY": "true",
}
MEDIA_DIR = "media"


def media_root(home: Path) -> Path:
    """The only folder a Label Studio started for this store may serve: `$SPINETRACK_HOME/media`."""
    return (home / MEDIA_DIR).resolve()


def stage_media(image_path: str | Path, sha256: str, root: str | Path) -> Path:
    """The image as a file below `root`, named by its content hash, so Label Studio can serve it
    without seeing anything else; idempotent.

    Always a copy of the bytes with the image's sha256, never a hard link: a media file may be
    rewritten (by a person, a tool, a server), and that must not reach the store's copy, the
    source or a release. A media file that no longer has its hash is replaced."""
    src = Path(image_path).resolve()
    base = Path(root).resolve()
    dst = base / sha256[:2] / f"{sha256}{src.suffix.lower()}"
    if dst.is_file() and file_sha256(dst) == sha256:
        return dst
    data, _ = read_checked(src, sha256)
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, dst)
    return dst


def _server_env(data_dir: Path, document_root: Path, loopback_webhooks: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABEL_STUDIO_", "DJANGO_", "SENTRY_", "FRONTEND_SENTRY_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "PYTHONUNBUFFERED": "1",
            **TELEMETRY_OFF,
        }
    )
    if loopback_webhooks:  # Label Studio refuses webhook URLs on 127.0.0.1 unless SSRF checks are off
        env["SSRF_PROTECTION_ENABLED"] = "false"
        env["ML_BLOCK_LOCAL_IP"] = "false"  # and ML backend URLs there (`spinetrack serve`)
    return env


def ensure_template(timeout_s: float = 900.0) -> Path:
    """A migrated, user-less data directory for this server version (built once, then reused)."""
    template = template_dir()
    if (template / "label_studio.sqlite3").is_file() and (template / ".complete").is_file():
        return template
    building = template.with_name(template.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    cmd = [str(ls_executable()), "init", "-q", "--no-browser", "--data-dir", str(building)]
    proc = subprocess.run(
        cmd,
        env=_server_env(building, building),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0 or not (building / "label_studio.sqlite3").is_file():
        raise LabelStudioUnavailable(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr[-2000:]}")
    (building / ".complete").write_text(ls_version())
    shutil.rmtree(template, ignore_errors=True)
    building.rename(template)
    return template


def health(url: str, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def start_server(
    data_dir: str | Path,
    *,
    document_root: str | Path | None = None,
    port: int | None = None,
    email: str = DEFAULT_EMAIL,
    password: str | None = None,
    token: str | None = None,
    timeout_s: float = 600.0,
    loopback_webhooks: bool = False,
) -> LabelStudioServer:
    """Start Label Studio on 127.0.0.1 with SQLite in `data_dir`, a user and a legacy API token.

    `document_root` is the only folder whose images Label Studio may serve (local-files storage);
    use the store's `media_root(home)`: push stages each image there (`stage_media`), so the server
    sees the images it is given and nothing else. Blocks until `/health` answers. `loopback_webhooks` lets
    the server post webhooks to 127.0.0.1 (`webhook.py`) and call an ML backend there (`ml_backend.py`)
    by turning its SSRF protection off: only for a server that itself listens on loopback.
    """
    data = Path(data_dir).resolve()
    root = Path(document_root or data).resolve()
    if not (data / "label_studio.sqlite3").is_file():
        template = ensure_template()
        data.mkdir(parents=True, exist_ok=True)
        shutil.copy2(template / "label_studio.sqlite3", data / "label_studio.sqlite3")
        if (template / ".env").is_file():
            shutil.copy2(template / ".env", data / ".env")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    password = password or secrets.token_urlsafe(12)
    token = token or secrets.token_hex(20)
    log_path = data / "server.log"
    cmd = [
        str(ls_executable()), "start", "--no-browser", "--data-dir", str(data),
        "--internal-host", "127.0.0.1", "--port", str(port),
        "--username", email, "--password", password, "--user-token", token,
        "--enable-legacy-api-token", "--log-level", "WARNING",
    ]  # fmt: skip
    started = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            env=_server_env(data, root, loopback_webhooks),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabelStudioServer(
        url=url, token=token, email=email, password=password, data_dir=str(data),
        document_root=str(root), pid=proc.pid, log_path=str(log_path),
    )  # fmt: skip
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise LabelStudioUnavailable(
                f"Label Studio exited with {proc.returncode} before answering at {url}; see {log_path}:\n"
                + log_path.read_text(errors="replace")[-2000:]
            )
        if health(url, timeout_s=2.0):
            server.startup_s = time.monotonic() - started
            # The user (and its token) is created before the port opens, but be sure it answers.
            return server
        time.sleep(0.5)
    stop_server(server)
    raise LabelStudioUnavailable(f"Label Studio did not answer at {url}/health within {timeout_s:.0f} s")


def stop_server(server: LabelStudioServer, timeout_s: float = 30.0) -> None:
    """Stop the server's whole process group (Django may fork workers)."""
    if server.pid is None:
        return
    try:
        pgid = os.getpgid(server.pid)
    except ProcessLookupError:
        return
    if pgid != server.pid:  # not the group leader we started: refuse to signal someone else's group
        os.kill(server.pid, signal.SIGTERM)
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        _reap(server.pid)
        time.sleep(0.2)
    else:
        os.killpg(pgid, signal.SIGKILL)
    _reap(server.pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
