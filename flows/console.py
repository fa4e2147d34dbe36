"""What a person sees from `spinetrack`: one error line, progress bars, a table or JSON.

- Errors: a project error (bad input, a server that does not answer, a store integrity error, a
  refused release) is printed as one line naming the file/field/server, exit code 2. `--debug`
  shows the traceback and Prefect's full logs. Anything else is a bug and keeps its traceback.
- Progress: pipeline code reports through `pipeline.progress`; on a terminal this draws rich bars
  on stderr, elsewhere (pipes, CI, `--json`) nothing.
- Output: `emit(data, render)` prints JSON on stdout with `--json`, else calls `render` (a table).

Everything heavy (prefect, rich's progress) is imported only when a command runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

if TYPE_CHECKING:
    from rich.console import Console
    from typer._click.core import Context  # typer 0.29 ships its own click

#: Exit code of a project error (bad input, server down, integrity); click uses 2 for usage errors too.
PROJECT_ERROR_EXIT = 2
#: Global flags also accepted after the command name (`spinetrack pull --json`).
GLOBAL_FLAGS = ("--debug", "--json")


@dataclass
class CliState:
    debug: bool = False
    json: bool = False
    running: bool = False  # a command is running (Prefect's console is quietened only then)
    out: Any = None  # with --json: the real stdout, kept for the one JSON document


STATE = CliState()


def reserve_stdout_for_json() -> None:
    """With `--json`, stdout carries the JSON document only: whatever else writes to file
    descriptor 1 while a command runs (pycocotools' prints, mmengine's and C libraries' logs) is
    sent to stderr, and `emit` writes to the descriptor kept aside."""
    if STATE.out is not None:
        return
    try:
        if sys.stdout.fileno() != 1:
            return
    except (AttributeError, OSError, ValueError):  # captured (a test's CliRunner): nothing to guard
        return
    sys.stdout.flush()
    STATE.out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)


def stdout() -> Console:
    from rich.console import Console

    return Console(soft_wrap=True)


def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


# -- output ---------------------------------------------------------------------------------------
def emit(data: Any, render: Callable[[Console], None] | None = None) -> None:
    """Machine output with `--json` (one JSON document on stdout), else `render` (or pretty JSON)."""
    if STATE.json:
        out = STATE.out or sys.stdout
        out.write(json.dumps(data, indent=2, default=str, sort_keys=True) + "\n")
        out.flush()
        return
    console = stdout()
    if render is None:
        console.print_json(json.dumps(data, default=str))
    else:
        render(console)


def key_value_table(title: str, rows: Sequence[tuple[str, Any]]) -> Any:
    """A two-column rich table (what, how many) for summaries."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, "-" if value is None else str(value))
    return table


# -- errors -----------------------------------------------------------------------------------------
#: Exception classes (module.qualname, anywhere in the MRO) that are the user's or the environment's
#: fault, not a bug. Matched by name so that the handler imports nothing heavy.
PROJECT_ERRORS = {
    "schemas.errors.InputError": "input",
    "pipeline.release.build.ReleaseError": "release",
    "sqlalchemy.exc.IntegrityError": "integrity",
    "sqlalchemy.exc.OperationalError": "database",
    "httpx.ConnectError": "server",
    "httpx.ConnectTimeout": "server",
    "requests.exceptions.ConnectionError": "server",
    "urllib.error.URLError": "server",
    "builtins.ConnectionRefusedError": "server",
    "annotation.labelstudio.server.LabelStudioUnavailable": "server",
    "annotation.labelstudio.client.LabelStudioRefused": "project",
    "flows.console.ProjectError": "project",
}


class ProjectError(RuntimeError):
    """A command refuses to go on for a reason the user can fix (printed as one line, exit 2)."""


def project_error_kind(exc: BaseException) -> str | None:
    """What kind of project error `exc` (or an exception it was raised from) is; None for a bug."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for cls in type(current).__mro__:
            kind = PROJECT_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
            if kind is not None:
                return kind
        current = current.__cause__ or current.__context__
    return None


def _server_of(exc: BaseException) -> str | None:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    return str(url) if url is not None else None


def one_line(exc: BaseException, kind: str) -> str:
    """The single line printed for a project error."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if kind == "server":
        server = _server_of(exc)
        return f"server not reachable{f' at {server}' if server else ''}: {message}"
    if kind == "integrity":
        return f"store integrity error: {message.split(' [SQL')[0]}"
    if kind == "database":
        return f"store database error: {message.split(' [SQL')[0]}"
    return message  # InputError and ReleaseError already name the file, field or version


# -- Prefect's console output -------------------------------------------------------------------------
class _NoTraceback(logging.Filter):
    """Drops tracebacks, and flow/task failure lines, from Prefect's console (the CLI prints the
    error once, itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not STATE.running or STATE.debug:
            return True
        if record.exc_info and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            return False  # "Encountered exception during execution": the CLI prints that error once
        if record.name.startswith(("prefect.flow_runs", "prefect.task_runs")) and str(
                record.msg).startswith("Finished in state Failed"):
            return False  # the same error again: the command reports what failed
        record.exc_info = None
        record.exc_text = None
        return True


def quiet_prefect() -> None:
    """Without --debug: Prefect's console shows warnings and errors, without tracebacks.

    Set before prefect is imported (the CLI imports it only when a flow first runs); the logs still
    reach the Prefect API in full.
    """
    if STATE.debug:
        return
    if "prefect" not in sys.modules:  # the `spinetrack` process; in tests prefect is configured already
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows import lazy

    lazy.on_prefect_loaded(_strip_tracebacks)
    if "prefect" in sys.modules:
        _strip_tracebacks()


def _strip_tracebacks() -> None:
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, _NoTraceback) for f in handler.filters
        ):
            handler.addFilter(_NoTraceback())


# -- progress bars ----------------------------------------------------------------------------------
@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """rich bars on stderr for every `pipeline.progress` step while the block runs."""
    from pipeline import progress

    if not enabled:
        yield
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=stderr(), transient=False)
    tasks: dict[int, Any] = {}

    def listen(event: progress.ProgressEvent) -> None:
        if event.key not in tasks:
            tasks[event.key] = bars.add_task(event.label, total=event.total)
        bars.update(tasks[event.key], completed=event.done, total=event.total)
        if event.finished:
            bars.update(tasks[event.key], total=event.done if event.total is None else event.total)
            bars.stop_task(tasks[event.key])

    with bars, progress.listening(listen):
        yield


def bars_wanted() -> bool:
    """Bars only on a terminal, and never with --json."""
    return not STATE.json and sys.stderr.isatty()


# -- the command group -----------------------------------------------------------------------------
class SpineTrackGroup(TyperGroup):
    """The root command: global flags anywhere on the line, and the one error handler."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            head, tail = args[:cut], args[cut:]
        else:
            head, tail = args, []
        flags = [a for a in head if a in GLOBAL_FLAGS]
        rest = [a for a in head if a not in GLOBAL_FLAGS]
        return super().parse_args(ctx, flags + rest + tail)

    def invoke(self, ctx: Context) -> Any:
        try:
            STATE.running = True
            with progress_bars(bars_wanted()):
                return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except Exception as exc:
            kind = project_error_kind(exc)
            if kind is None or STATE.debug:
                raise
            from rich.markup import escape

            stderr().print(f"[bold red]error:[/bold red] {escape(one_line(exc, kind))}", highlight=False)
            raise typer.Exit(PROJECT_ERROR_EXIT) from exc
        finally:
            STATE.running = False
