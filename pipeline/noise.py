"""Third-party noise: the warnings and log lines of our libraries that tell a SpineTrack user nothing.

A user's terminal shows the product's own output; `spinetrack --debug` (which sets
`SPINETRACK_DEBUG=1`, inherited by every process it starts) shows everything. Each entry below
names one message, the library that says it, and why it is safe to hide. Nothing is silenced by
category or library alone, so a real error, or a warning not listed here, still shows.

The filters are installed where the library is loaded or called, not once for the process:

- `quiet_warnings(library)`: Python warnings (`WARNINGS`), when the library is imported
  (`pipeline.model.compat.install` for mmengine/mmpose, the BlazePose annotator for mediapipe);
- `quiet_mmengine_logs()`: mmengine's own logger lines (`MMENGINE_LOGS`), for the loggers mmengine
  creates (the training Runner's);
- `quiet_prints(library)`: lines a library `print`s on stdout (`PRINTS`), around the call;
- `quiet_native_stderr(library)`: lines C++ code writes to file descriptor 2 (`NATIVE_STDERR`:
  TFLite, absl), around the call; every other line is written back to stderr unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

#: Set by `spinetrack --debug`: install nothing, show everything.
DEBUG_ENV = "SPINETRACK_DEBUG"


@dataclass(frozen=True)
class KnownWarning:
    library: str
    category: type[Warning]
    message: str  # regex, matched at the start of the warning's text
    module: str  # regex, the module the warning is attributed to
    reason: str


@dataclass(frozen=True)
class KnownLine:
    library: str
    pattern: str  # regex, matched at the start of the line
    reason: str


WARNINGS: tuple[KnownWarning, ...] = (
    KnownWarning("mmengine", UserWarning, r"pkg_resources is deprecated as an API",
             r"mmengine\.utils\.package_utils",
             "mmengine 0.10.7 looks installed packages up through setuptools' pkg_resources; the "
             "stack pins setuptools<81, which still has it (docs/stack.md)"),
    KnownWarning("mmpose", FutureWarning, r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated",
             r"mmpose\.models\.",
             "mmpose 1.3.2's CSP layers use torch's old autocast spelling, which torch 2.x still runs "
             "the same way (and which does nothing on CPU)"),
    KnownWarning("mediapipe", UserWarning, r"SymbolDatabase\.GetPrototype\(\) is deprecated",
             r"google\.protobuf\.symbol_database",
             "mediapipe 0.10.14 calls protobuf's deprecated lookup on every image; the pinned protobuf "
             "5.29 still answers it"),
)

WARNINGS += (
    KnownWarning("torch.onnx", Warning, r"Converting a tensor to a Python boolean might cause the trace",
             r"pipeline\.model\.",
             "the converted BlazePose networks check their input shape in forward(); onnxruntime's "
             "copy is exported for that one shape, so the check being traced as a constant is right"),
    KnownWarning("torch.onnx", DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export",
             r"pipeline\.model\.onnx_runner",
             "the dynamo exporter needs onnxscript, which the pinned stack does not ship "
             "(pipeline/model/onnx_runner.py)"),
)

MMENGINE_LOGS: tuple[KnownLine, ...] = (
    KnownLine("mmengine", r'"FileClient" will be deprecated in future',
         "mmengine's own CheckpointHook builds a FileClient before every training run; we pass no "
         "file client arguments and save no checkpoints through it"),
    KnownLine("mmengine", r'"HardDiskBackend" is the alias of "LocalBackend"',
         "said by the same FileClient (its default disk backend), not by our code"),
    KnownLine("mmengine", r"[\w.]+ is skipped since its requires_grad=False$",
         "mmengine's optimizer names every parameter it leaves out: blaze37 freezes BlazePose's "
         "early stages on purpose (docs/model.md), 150 lines a training run"),
)

PRINTS: tuple[KnownLine, ...] = tuple(
    KnownLine("cocotools", pattern,
         "pycocotools/xtcocotools print their progress when mmpose loads a COCO file; the training "
         "files are ours and load in milliseconds")
    for pattern in (r"loading annotations into memory\.\.\.$", r"Done \(t=[0-9.]+s\)$",
                    r"creating index\.\.\.$", r"index created!$")
)

NATIVE_STDERR: tuple[KnownLine, ...] = (
    KnownLine("mediapipe", r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
         "TFLite says which CPU kernels BlazePose's graphs use, once per graph"),
    KnownLine("mediapipe", r"WARNING: All log messages before absl::InitializeLog\(\) is called are written "
         r"to STDERR$",
         "absl says nobody configured its logging (mediapipe does not), before its first line"),
    KnownLine("mediapipe", r"W0000 [0-9:. ]+\s+\d+ inference_feedback_manager\.cc:\d+\] Feedback manager "
         r"requires a model with a single signature inference\. Disabling support for feedback tensors\.$",
         "TFLite's feedback tensors are an optimisation BlazePose's multi-signature graphs cannot use"),
)


def debug() -> bool:
    """`spinetrack --debug`: every filter here stands aside."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _of(entries: tuple[KnownLine, ...], library: str) -> re.Pattern[str] | None:
    patterns = [e.pattern for e in entries if e.library == library]
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


_installed: set[str] = set()


def quiet_warnings(library: str) -> None:
    """Ignore `library`'s warnings listed in WARNINGS (each by category, text and module)."""
    if debug():
        return
    for entry in WARNINGS:
        if entry.library == library:
            warnings.filterwarnings("ignore", message=entry.message, category=entry.category,
                                    module=entry.module)


class _LogLines(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return debug() or not self.pattern.match(record.getMessage())


def quiet_mmengine_logs() -> None:
    """Drop the MMENGINE_LOGS lines from every mmengine logger, those made later included.

    mmengine's loggers (`MMLogger`) are not in logging's hierarchy: each has its own handlers, so
    the filter goes on each one, and on the ones its constructor makes from now on."""
    pattern = _of(MMENGINE_LOGS, "mmengine")
    if debug() or pattern is None or "mmengine-logs" in _installed:
        return
    from mmengine.logging import MMLogger

    _installed.add("mmengine-logs")
    line_filter = _LogLines(pattern)
    for logger in list(MMLogger._instance_dict.values()):
        logger.addFilter(line_filter)
    original = MMLogger.__init__

    def init(self: MMLogger, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.addFilter(line_filter)

    MMLogger.__init__ = init  # type: ignore[method-assign]


class _LineFilter(io.TextIOBase):
    """A text stream that passes every line not matching `pattern` to `target`."""

    def __init__(self, target: TextIO, pattern: re.Pattern[str]) -> None:
        self.target = target
        self.pattern = pattern
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not self.pattern.match(line):
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending and not self.pattern.match(self.pending):
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()


@contextlib.contextmanager
def quiet_prints(library: str) -> Iterator[None]:
    """While the block runs, lines printed on (Python's) stdout that PRINTS lists for `library` are
    dropped; everything else goes through."""
    pattern = _of(PRINTS, library)
    if debug() or pattern is None:
        yield
        return
    stream = _LineFilter(sys.stdout, pattern)
    try:
        with contextlib.redirect_stdout(stream):  # type: ignore[type-var]
            yield
    finally:
        stream.flush()


_native_lock = threading.RLock()


@contextlib.contextmanager
def quiet_native_stderr(library: str) -> Iterator[None]:
    """While the block runs, file descriptor 2 (where C++ libraries log) goes to a scratch file;
    afterwards every line NATIVE_STDERR does not list for `library` is written back to stderr, in
    order. Python's own sys.stderr is redirected with it, so nothing is lost, only held back until
    the block ends."""
    pattern = _of(NATIVE_STDERR, library)
    if debug() or pattern is None:
        yield
        return
    with _native_lock, tempfile.TemporaryFile(mode="w+b") as scratch:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        scratch.seek(0)
        kept = [line for line in scratch.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not pattern.match(line.rstrip("\n"))]
        if kept:
            os.write(2, "".join(kept).encode())
