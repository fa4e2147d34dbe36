"""The `spinetrack` command as a person meets it: light to start, one line per project error, exit 2,
--debug for the traceback, --json for machines, progress reported through pipeline.progress.

Subprocess tests run the installed entry point (flows.cli:main) in a fresh interpreter, so what
they see is what a user sees; none of them times anything (bench/cli.py measures).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flows.console import PROJECT_ERROR_EXIT, one_line, project_error_kind
from pipeline import progress

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("prefect", "torch", "mmpose", "fiftyone", "label_studio_sdk", "opensim", "sqlalchemy", "cv2")


def _spinetrack(*args: str, home: Path, extra: str = "") -> subprocess.CompletedProcess[str]:
    """Run `spinetrack ARGS` in a new interpreter; prints the heavy modules it imported to fd 3."""
    code = (
        "import sys\n"
        "from flows.cli import main\n"
        f"sys.argv = ['spinetrack', *{list(args)!r}]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        f"    loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "    print('LOADED=' + ','.join(loaded), file=sys.__stderr__)\n"
        + extra
    )
    env = {**os.environ, "SPINETRACK_HOME": str(home), "COLUMNS": "200"}
    env.pop("SPINETRACK_DB_URL", None)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def _loaded(result: subprocess.CompletedProcess[str]) -> list[str]:
    line = next(x for x in result.stderr.splitlines() if x.startswith("LOADED="))
    return [m for m in line.removeprefix("LOADED=").split(",") if m]


def _user_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    out = (result.stdout + result.stderr).splitlines()
    return [x for x in out if x.strip() and not x.startswith("LOADED=")]


def test_help_lists_every_command_without_the_heavy_stack(home: Path) -> None:
    result = _spinetrack("--help", home=home)
    assert result.returncode == 0, result.stderr
    for command in ("ingest", "import-real", "train", "pseudo-label", "push", "pull", "round", "release",
                    "review", "review-sync", "export-coco", "labelstudio", "--json", "--debug"):
        assert command in result.stdout
    assert _loaded(result) == []


def test_a_missing_file_fails_at_once_naming_it(home: Path, tmp_path: Path) -> None:
    result = _spinetrack("import-real", "/nope.json", "--images", str(tmp_path), home=home)
    assert result.returncode == 2
    assert "/nope.json" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert _loaded(result) == []  # no flow, no Prefect server, no model code was started


def test_a_folder_that_is_no_render_is_one_line_and_debug_shows_the_traceback(home: Path,
                                                                               tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    plain = _spinetrack("ingest", str(tmp_path / "empty"), home=home)
    assert plain.returncode == PROJECT_ERROR_EXIT
    lines = _user_lines(plain)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and str(tmp_path / "empty" / "sequence.json") in lines[0]
    assert "prefect" not in _loaded(plain)
    debug = _spinetrack("ingest", str(tmp_path / "empty"), "--debug", home=home)  # flag after the command
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "InputError" in debug.stderr


def test_json_output_is_one_document_on_stdout(home: Path) -> None:
    result = _spinetrack("releases", "--json", home=home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    table = _spinetrack("releases", home=home)
    assert "releases" in table.stdout and "version" in table.stdout


def test_flows_take_their_defaults_from_the_code_they_run() -> None:
    """The CLI repeats a default and a list of names to stay light; they must not drift."""
    from flows.synthetic import DEFAULT_RESIDUAL_THRESHOLD_M
    from synthetic.ingest import DEFAULT_RESIDUAL_THRESHOLD_M as REAL

    assert DEFAULT_RESIDUAL_THRESHOLD_M == REAL
    from flows.active_learning import STRATEGY_NAMES
    from pipeline.active_learning.selection import STRATEGIES

    assert sorted(STRATEGY_NAMES) == sorted(STRATEGIES)


def test_lazy_flows_are_real_prefect_flows_once_used() -> None:
    from prefect import Flow, Task

    from flows.active_learning import round_step
    from flows.synthetic import ingest_sequence_task, ingest_synthetic

    assert isinstance(ingest_synthetic, Flow) and ingest_synthetic.name == "ingest-synthetic"
    assert isinstance(ingest_sequence_task, Task) and ingest_sequence_task.retries == 2
    assert isinstance(round_step, Task)
    assert ingest_synthetic.fn.__name__ == "ingest_synthetic"


def test_errors_are_classified_by_what_the_user_can_do() -> None:
    import httpx
    from sqlalchemy.exc import IntegrityError

    from pipeline.release.build import ReleaseError
    from schemas.errors import InputError

    bad = InputError("renders/a/sequence.json", "missing", field="units")
    assert project_error_kind(bad) == "input"
    assert one_line(bad, "input") == str(bad)
    assert project_error_kind(ReleaseError("release 1.0.0 already exists")) == "release"
    integrity = IntegrityError("INSERT INTO image ...", {}, Exception("UNIQUE constraint failed: image.path"))
    assert project_error_kind(integrity) == "integrity"
    assert "UNIQUE constraint failed" in one_line(integrity, "integrity")
    with socket.socket() as free:  # a port nobody listens on: a real refused connection
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
    assert project_error_kind(refused.value) == "server"
    assert f"127.0.0.1:{port}" in one_line(refused.value, "server")
    try:
        raise RuntimeError("wrapped") from bad
    except RuntimeError as wrapped:
        assert project_error_kind(wrapped) == "input"  # the cause counts
    assert project_error_kind(KeyError("a bug")) is None  # bugs keep their traceback


def test_progress_reports_each_step_to_the_listener() -> None:
    events: list[progress.ProgressEvent] = []
    with progress.listening(events.append):
        assert list(progress.track(["a", "b", "c"], "frames")) == ["a", "b", "c"]
        with progress.step("train", total=None) as advance:
            advance(5)
    frames = [e for e in events if e.label == "frames"]
    assert [(e.done, e.total, e.finished) for e in frames] == [(0, 3, False), (1, 3, False), (2, 3, False),
                                                                (3, 3, False), (3, 3, True)]
    train = [e for e in events if e.label == "train"]
    assert train[-1].done == 5 and train[-1].finished and train[-1].total is None
    assert len({e.key for e in frames}) == 1 and frames[0].key != train[0].key
    events.clear()
    list(progress.track(range(3), "nobody listens"))
    assert events == []


@pytest.mark.slow
def test_a_project_error_inside_a_flow_is_one_line(prefect_harness: None, home: Path) -> None:
    """`release` on an empty store fails inside the Prefect flow: still one line, exit 2."""
    from typer.testing import CliRunner

    from flows.app import app
    from flows.cli import _register

    _register()
    result = CliRunner().invoke(app, ["release", "1.0.0"])
    assert result.exit_code == PROJECT_ERROR_EXIT
    assert "error: the store has no accepted labels to release" in result.output
    assert "Traceback" not in result.output
    refused = CliRunner().invoke(app, ["release", "one"])  # refused before any flow runs
    assert refused.exit_code == PROJECT_ERROR_EXIT and "is not a semantic version" in refused.output


def test_json_stdout_carries_only_the_document(tmp_path: Path) -> None:
    """Libraries print to stdout while a command runs (pycocotools' "loading annotations", mmengine,
    C code writing to fd 1): with --json all of that goes to stderr and stdout parses as JSON."""
    code = (
        "import os, sys\n"
        "from flows.console import STATE, emit, reserve_stdout_for_json\n"
        "STATE.json = True\n"
        "reserve_stdout_for_json()\n"
        "print('loading annotations into memory...')\n"
        "os.write(1, b'a C library writes to fd 1\\n')\n"
        "emit({'release': '0.1.0', 'instances': 3})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"release": "0.1.0", "instances": 3}
    assert "loading annotations into memory..." in proc.stderr and "fd 1" in proc.stderr
