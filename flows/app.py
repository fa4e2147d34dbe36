"""The `spinetrack` Typer application that every flows module adds its commands to."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="spinetrack",
    help="Build SpineTrack spine-keypoint datasets: render ingest, active learning, releases, review.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
