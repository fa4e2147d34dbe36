"""`spinetrack push`, `spinetrack pull`, `spinetrack labelstudio start|stop|status`: thin Prefect flows.

The work lives in annotation/labelstudio/; these only find the store and the server and report.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from flows import lazy
from flows.app import app
from flows.console import emit, key_value_table, stdout

labelstudio_app = typer.Typer(
    help="Run a local Label Studio server for this SPINETRACK_HOME.", no_args_is_help=True
)
app.add_typer(labelstudio_app, name="labelstudio")


@lazy.flow(name="push-for-annotation")
def push_for_annotation(
    instance_ids: list[int] | None = None, round: int = 1, from_review: bool = False
) -> dict[str, Any]:
    """Send instances (or the reviewer's needs-fix tags) to Label Studio as pre-annotated tasks."""
    from prefect import get_run_logger

    from annotation.labelstudio.client import connection_from_env
    from annotation.labelstudio.push import push, push_from_review
    from pipeline.store import Store

    store = Store()
    conn = connection_from_env(store.home)
    if from_review:
        report = push_from_review(store, round, conn=conn)
    else:
        report = push(store, instance_ids or [], round, conn=conn)
    get_run_logger().info(
        f"pushed: {len(report.created)} new, {len(report.existing)} already there, "
        f"{len(report.reopened)} reopened"
    )
    return asdict(report)


@lazy.flow(name="pull-annotations")
def pull_annotations() -> dict[str, Any]:
    """Store annotations made in Label Studio since the last pull as human revisions."""
    from prefect import get_run_logger

    from annotation.labelstudio.client import connection_from_env
    from annotation.labelstudio.hooks import LabelStudioHooks
    from pipeline.store import Store

    store = Store()
    # what Label Studio lost is one line each, and its lost open tasks are pushed again
    report = LabelStudioHooks(connection_from_env(store.home), log=get_run_logger().warning).pull(store)
    get_run_logger().info(
        f"pulled: {report.stored} corrections, {report.skipped} skipped, {report.already} seen before, "
        f"{len(report.disagreements)} disagreements sent to review"
    )
    return asdict(report)


@app.command("push")
def push_command(
    instance_ids: list[int] = typer.Argument(None, help="instance ids to send (omit with --from-review)"),
    round: int = typer.Option(1, "--round", help="active-learning round the tasks belong to"),
    from_review: bool = typer.Option(False, "--from-review", help="re-open instances tagged needs-fix"),
) -> None:
    """Push instances to Label Studio with the model's prediction as pre-annotation (idempotent)."""
    if not instance_ids and not from_review:
        raise typer.BadParameter("give instance ids or --from-review")
    out = push_for_annotation(list(instance_ids or []), round, from_review)
    emit(out, lambda con: con.print(key_value_table(f"pushed to Label Studio project {out['project_id']}", [
        ("new tasks", len(out["created"])), ("already there (untouched)", len(out["existing"])),
        ("reopened from review", len(out["reopened"])), ("tasks in this push", len(out["task_ids"])),
    ])))


@app.command("pull")
def pull_command() -> None:
    """Pull new and changed annotations from Label Studio (incremental, idempotent)."""
    out = pull_annotations()

    def render(con: Any) -> None:
        con.print(key_value_table(f"pulled from Label Studio project {out['project_id']}", [
            ("tasks seen", out["tasks_seen"]), ("corrections stored", out["stored"]),
            ("skipped / cancelled", out["skipped"]), ("seen in an earlier pull", out["already"]),
            ("disagreements sent to review", len(out["disagreements"])),
            ("tasks not made by push (ignored)", out["foreign_tasks"]),
        ]))
        for note in out["vanished"]["notes"]:  # what Label Studio lost, and what was done
            con.print(f"[yellow]{note}[/]")

    emit(out, render)


def _home() -> Path:
    from pipeline.store import Store

    return Store().home


@labelstudio_app.command("start")
def ls_start(
    document_root: Path = typer.Option(None, help="the only folder it serves (default: HOME/media)"),
    port: int = typer.Option(None, help="port on 127.0.0.1 (default: a free one)"),
) -> None:
    """Start Label Studio (SQLite under SPINETRACK_HOME/labelstudio) and record URL and token."""
    from annotation.labelstudio.client import state_path
    from annotation.labelstudio.server import LabelStudioServer, health, media_root, start_server

    console = stdout()
    home = _home()
    path = state_path(home)
    if path.is_file():
        old = LabelStudioServer.load(path)
        if health(old.url):
            console.print(f"Label Studio already running at {old.url} (pid {old.pid})")
            return
    # it listens on 127.0.0.1 only: let it call `spinetrack serve` / `webhook` there too
    server = start_server(home / "labelstudio", document_root=document_root or media_root(home), port=port,
                          loopback_webhooks=True)
    server.save(path)
    console.print(
        f"Label Studio {server.url} (pid {server.pid}, up in {server.startup_s:.1f} s)\n"
        f"log in as {server.email} / password and token in {path}"
    )


@labelstudio_app.command("stop")
def ls_stop() -> None:
    """Stop the Label Studio this home started."""
    from annotation.labelstudio.client import state_path
    from annotation.labelstudio.server import LabelStudioServer, stop_server

    console = stdout()
    path = state_path(_home())
    if not path.is_file():
        console.print("no Label Studio recorded for this home")
        return
    server = LabelStudioServer.load(path)
    stop_server(server)
    server.pid = None
    server.save(path)
    console.print(f"stopped Label Studio at {server.url}")


@labelstudio_app.command("status")
def ls_status() -> None:
    """Whether the recorded Label Studio answers."""
    from annotation.labelstudio.client import state_path
    from annotation.labelstudio.server import LabelStudioServer, health

    console = stdout()
    path = state_path(_home())
    if not path.is_file():
        console.print("no Label Studio recorded for this home")
        raise typer.Exit(1)
    server = LabelStudioServer.load(path)
    up = health(server.url)
    console.print(f"Label Studio at {server.url}: {'up' if up else 'DOWN'} (pid {server.pid})")
    raise typer.Exit(0 if up else 1)
