"""Shared fixtures: a fresh store per test, paths to the shared real samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import flows  # noqa: F401  (sets Prefect's start-up settings before anything imports prefect)
import synthetic.opensim_runtime  # noqa: F401  (before any test imports opensim: its faster binding)
from pipeline.store import Store

pytest_plugins = ["tests.labelstudio_fixtures", "tests.postgres_fixtures", "tests.prefect_fixtures"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_PEOPLE = SHARED / "data" / "real_people"
RAJAGOPAL = SHARED / "opensim" / "Rajagopal2016.osim"


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SPINETRACK_HOME for the test."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("SPINETRACK_HOME", str(path))
    monkeypatch.delenv("SPINETRACK_DB_URL", raising=False)
    return path


@pytest.fixture()
def store(home: Path) -> Iterator[Store]:
    with Store.open(home=home) as st:
        yield st


@pytest.fixture()
def real_people() -> Path:
    if not REAL_PEOPLE.is_dir():
        pytest.skip(f"real samples not present at {REAL_PEOPLE}")
    return REAL_PEOPLE


@pytest.fixture()
def rajagopal_model() -> Path:
    if not RAJAGOPAL.is_file():
        pytest.skip(f"Rajagopal2016 model not present at {RAJAGOPAL}")
    return RAJAGOPAL


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One real, ephemeral Prefect API for the whole session (starting one costs 10-30 s)."""
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(updates={PREFECT_HOME: tmp_path_factory.mktemp("prefect")}), \
            prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop Prefect's temporary API servers now, quietly, while pytest's streams are still open.

    Each one registers `atexit(stop)`, which logs "Stopping temporary server" through a handler
    bound to pytest's captured stderr: by then closed, so Python printed a "--- Logging error ---"
    traceback after the test summary. Runs before the terminal summary is written.
    """
    import logging
    import sys

    if "prefect" not in sys.modules:
        return
    from prefect.server.api.server import SubprocessASGIServer, subprocess_server_logger

    level = subprocess_server_logger.level
    subprocess_server_logger.setLevel(logging.WARNING)
    try:
        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()
    finally:
        subprocess_server_logger.setLevel(level)
    for handler in logging.getLogger().handlers:  # nothing Prefect logs after the summary is wanted
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setLevel(logging.CRITICAL + 1)
