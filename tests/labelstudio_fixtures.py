"""A real Label Studio server, started ONCE per test session (start-up costs seconds to minutes).

Images for tasks must live below the server's document root: tests write theirs into
`labelstudio_server.document_root`'s sub-folders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from annotation.labelstudio.server import LabelStudioServer, ls_venv, start_server, stop_server


@pytest.fixture(scope="session")
def labelstudio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    if not (ls_venv() / "bin" / "label-studio").is_file():
        pytest.skip(
            f"Label Studio server virtualenv not present at {ls_venv()} (scripts/bootstrap_labelstudio.sh)"
        )
    base = tmp_path_factory.mktemp("labelstudio")
    root = base / "docroot"
    (root / "images").mkdir(parents=True)
    server = start_server(base / "data", document_root=root, loopback_webhooks=True)
    try:
        yield server
    finally:
        stop_server(server)


def restart(server: LabelStudioServer) -> None:
    """Stop and start the same server (same data, port and token), updating `server` in place."""
    stop_server(server)
    port = int(server.url.rsplit(":", 1)[1])
    again = start_server(
        Path(server.data_dir), document_root=server.document_root, port=port,
        email=server.email, password=server.password, token=server.token,
        loopback_webhooks=True,
    )  # fmt: skip
    server.pid, server.startup_s = again.pid, again.startup_s
