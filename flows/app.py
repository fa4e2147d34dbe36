"""The `spinetrack` Typer application that every flows module adds its commands to.

Kept light: importing it (and every flows module) must not import prefect, torch, FiftyOne or the
Label Studio SDK, so `spinetrack --help` and argument errors answer at once (bench/cli.py).
"""

from __future__ import annotations

import os

import typer

from flows.console import STATE, SpineTrackGroup, quiet_prefect, reserve_stdout_for_json
from pipeline import noise

app = typer.Typer(
    name="spinetrack",
    cls=SpineTrackGroup,
    help="Build SpineTrack spine-keypoint datasets: render ingest, active learning, releases, review.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks and Prefect's full logs"),
    json_output: bool = typer.Option(False, "--json", help="print machine-readable JSON on stdout"),
) -> None:
    """Build SpineTrack spine-keypoint datasets: render ingest, active learning, releases, review.

    Errors in your input (a file, a field, a server that does not answer) print one line and exit
    with code 2; --debug shows the traceback. Both flags may also follow the command name.
    """
    STATE.debug = debug
    STATE.json = json_output
    if debug:  # third-party warnings and log lines too, in this process and those it starts
        os.environ[noise.DEBUG_ENV] = "1"
    if json_output:
        reserve_stdout_for_json()
    quiet_prefect()
