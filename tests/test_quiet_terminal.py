"""A user's terminal shows the product's own output; `--debug` shows everything (pipeline/noise.py).

The end-to-end check runs a real `spinetrack predict` (BlazePose through mediapipe/TFLite, a
registered mmpose model through mmengine/torch) in its own process and expects its one line of
output and nothing else; the same command with `--debug` shows the libraries' lines again. The
other tests show that the filters hide exactly what they list: other warnings, log lines and
printed lines still come through.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pipeline import noise
from pipeline.store import Store

REPO = Path(__file__).resolve().parents[1]

#: Lines that must not reach a user's terminal without --debug (what the libraries used to print).
NOISE = ("Warning:", "warnings.warn", "INFO: Created TensorFlow Lite", "absl::InitializeLog",
         "inference_feedback_manager", "GetPrototype", "pkg_resources", "autocast",
         "FileClient", "loading annotations into memory")


@pytest.fixture()
def predict_home(home: Path) -> tuple[Path, Path]:
    """A store with an (untrained) tiny model registered, and a COCO file of rendered people."""
    from pipeline.model.configs import build_config
    from pipeline.model.registry import build_model, save_model
    from synthetic.sample_set import SequenceSpec, render_set

    (folder,) = render_set(home / "renders", [SequenceSpec("walk", 7, 2, width=160, height=128)])
    cfg = build_config("tiny", work_dir=home / "work")
    with Store.open(home=home) as store:
        save_model(store, build_model(cfg), name="tiny-untrained", config_name="tiny", config=cfg,
                   data_snapshot="none")
    return home, folder


def _predict(home: Path, folder: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPINETRACK_HOME": str(home), "PYTHONWARNINGS": ""}
    env.pop("SPINETRACK_DEBUG", None)
    env.pop("SPINETRACK_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "predict", str(folder / "ground_truth.json"),
         "--images", str(folder), "--out", str(home / "out.json"), "--student", "tiny-untrained", *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_predict_prints_its_own_line_only_and_debug_shows_the_rest(predict_home: tuple[Path, Path]) -> None:
    home, folder = predict_home
    quiet = _predict(home, folder)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == "", quiet.stderr
    (line,) = quiet.stdout.splitlines()
    assert line.startswith("2 persons labelled by combined(") and line.endswith("out.json"), line
    assert len(json.loads((home / "out.json").read_text())) == 2

    loud = _predict(home, folder, "--debug")
    assert loud.returncode == 0, loud.stderr[-3000:]
    shown = [n for n in NOISE if n in loud.stderr + loud.stdout]
    # the libraries still speak with --debug: TFLite/absl from C++, mmengine and mmpose's warnings
    assert {"INFO: Created TensorFlow Lite", "pkg_resources", "autocast"} <= set(shown), loud.stderr


def test_listed_warnings_are_hidden_and_others_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(noise.DEBUG_ENV, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        noise.quiet_warnings("mediapipe")
        module = {"__name__": "google.protobuf.symbol_database"}
        exec("import warnings\nwarnings.warn('SymbolDatabase.GetPrototype() is deprecated. Please ...')",
             module)
        exec("import warnings\nwarnings.warn('something else went wrong')", module)
        warnings.warn("SymbolDatabase.GetPrototype() is deprecated, said by someone else", stacklevel=1)
    texts = [str(w.message) for w in caught]
    assert texts == ["something else went wrong",
                     "SymbolDatabase.GetPrototype() is deprecated, said by someone else"]


def test_every_entry_says_why() -> None:
    entries = [*noise.WARNINGS, *noise.MMENGINE_LOGS, *noise.PRINTS, *noise.NATIVE_STDERR]
    assert all(len(e.reason) > 20 for e in entries)


def test_mmengine_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(noise.DEBUG_ENV, raising=False)
    from mmengine.logging import MMLogger

    import pipeline.model  # noqa: F401  (compat.install: where the filters are installed)

    logger = MMLogger.get_instance("noise-test", logger_name="mmengine")
    seen: list[str] = []
    collect = logging.Handler()
    collect.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.handlers = [collect]
    logger.warning('"FileClient" will be deprecated in future. Please use io functions in ...')
    logger.warning("a checkpoint could not be written")
    monkeypatch.setenv(noise.DEBUG_ENV, "1")
    logger.warning('"HardDiskBackend" is the alias of "LocalBackend" and the former will be deprecated')
    assert seen == ["a checkpoint could not be written",
                    '"HardDiskBackend" is the alias of "LocalBackend" and the former will be deprecated']


def test_printed_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv(noise.DEBUG_ENV, raising=False)
    from xtcocotools.coco import COCO

    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with noise.quiet_prints("cocotools"):
        COCO(str(path))
        print("our own line")
    assert capsys.readouterr().out == "our own line\n"


def test_native_stderr_keeps_other_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(noise.DEBUG_ENV, raising=False)
    code = (
        "import os\nfrom pipeline import noise\n"
        "with noise.quiet_native_stderr('mediapipe'):\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    os.write(2, b'E0000 something real failed\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != noise.DEBUG_ENV}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, check=True)
    assert done.stderr == b"E0000 something real failed\nafter\n"
