"""`spinetrack deploy`: the project's flows as Prefect deployments on a process work pool.

A team runs one Prefect server (docker-compose.yml, or `prefect server start`), one or more
`prefect worker start --pool spinetrack` processes on machines that have this checkout, the store
and the images, and starts flow runs from the UI, the API or `prefect deployment run
'ingest-synthetic/ingest' --param render_dirs='["/data/renders/seq1"]'`. The same deployments are
declared in prefect.yaml for `prefect deploy --all`; tests/test_deploy.py checks that both agree.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from flows.app import app
from flows.console import emit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POOL = "spinetrack"
#: Environment a flow run needs from the deployer when the worker's own environment lacks it.
FORWARDED_ENV = ("SPINETRACK_HOME", "SPINETRACK_DB_URL", "SPINETRACK_LS_URL", "SPINETRACK_LS_TOKEN",
                 "SPINETRACK_LS_DOCUMENT_ROOT")


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: which flow (by entrypoint, relative to the checkout) under which name."""

    name: str
    entrypoint: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ("spinetrack",)

    @property
    def flow_attr(self) -> tuple[str, str]:
        path, attr = self.entrypoint.split(":")
        return path.removesuffix(".py").replace("/", "."), attr


#: The deployments of issue 11: ingest, pseudo-label, round, train, release.
DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec("ingest", "flows/synthetic.py:ingest_synthetic",
                   "Ingest rendered sequences (OpenSim IK, projection, visibility) into the store; "
                   "workers/dask_address spread the sequences over a Dask cluster."),
    DeploymentSpec("pseudo-label", "flows/model.py:pseudo_label",
                   "Pseudo-label every unlabelled instance with a registered model."),
    DeploymentSpec("round", "flows/active_learning.py:active_learning_round",
                   "Start, continue or finish the current active-learning round."),
    DeploymentSpec("train", "flows/model.py:train_model",
                   "Train a pose model on the store's accepted labels and register it."),
    DeploymentSpec("release", "flows/release.py:release_dataset",
                   "Publish the store's current labels as an immutable, versioned release."),
)


def require_api_url() -> str:
    """The Prefect server to deploy to: deployments need one (the embedded default has no workers)."""
    from prefect.settings import PREFECT_API_URL

    from schemas.errors import InputError

    url = PREFECT_API_URL.value()
    if not url:
        raise InputError("PREFECT_API_URL", "not set: point it at a Prefect server, e.g. "
                         "http://127.0.0.1:4200/api (docs/deployment.md)", field="PREFECT_API_URL")
    return str(url)


def ensure_process_pool(name: str) -> bool:
    """Create the process work pool `name` with Prefect's default job template; True if created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from schemas.errors import InputError

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            pool = None
        if pool is not None:
            if pool.type != "process":
                raise InputError("--pool", f"work pool {name!r} exists with type {pool.type!r}, "
                                 "not 'process'", field="pool")
            return False
        try:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template(),
                description="SpineTrack flows in local processes (prefect worker start --pool ...)",
            ))
        except ObjectAlreadyExists:  # created by someone else meanwhile
            return False
    return True


def deploy(
    pool: str = DEFAULT_POOL,
    *,
    directory: Path = REPO,
    only: tuple[str, ...] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Create (or update) the deployments on `pool`; {"flow-name/deployment": id}.

    Flow runs start in `directory` (this checkout, on the worker's machine) with `env` added to the
    worker's environment (by default the SPINETRACK_* variables set here).
    """
    from prefect.deployments.runner import RunnerDeployment

    from schemas.errors import InputError

    require_api_url()
    specs = [s for s in DEPLOYMENTS if only is None or s.name in only]
    unknown = set(only or ()) - {s.name for s in DEPLOYMENTS}
    if unknown:
        raise InputError("--only", f"unknown deployment(s) {sorted(unknown)}; known: "
                         f"{[s.name for s in DEPLOYMENTS]}", field="only")
    if env is None:
        env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    ensure_process_pool(pool)
    out: dict[str, str] = {}
    # loading an entrypoint script puts its folder (flows/) first on sys.path, where flows/synthetic.py
    # would shadow the `synthetic` package for this process and every process it spawns: undo that
    saved_path = list(sys.path)
    with contextlib.chdir(directory), _restored(sys.path, saved_path):
        for spec in specs:
            deployment = RunnerDeployment.from_entrypoint(
                spec.entrypoint, spec.name, parameters=spec.parameters, description=spec.description,
                tags=list(spec.tags), work_pool_name=pool,
                job_variables={"working_dir": str(directory), "env": env},
            )
            out[f"{deployment.flow_name}/{spec.name}"] = str(deployment.apply())
    return out


@contextlib.contextmanager
def _restored(items: list[str], saved: list[str]) -> Iterator[None]:
    try:
        yield
    finally:
        items[:] = saved


@app.command("deploy")
def deploy_command(
    pool: str = typer.Option(DEFAULT_POOL, help="process work pool to deploy to (created if missing)"),
    only: list[str] | None = typer.Option(None, help="deploy only these (ingest, pseudo-label, round, "
                                                      "train, release); repeatable"),
) -> None:
    """Register ingest, pseudo-label, round, train and release as deployments on $PREFECT_API_URL."""
    out = deploy(pool, only=tuple(only) if only else None)

    def render(console: Any) -> None:
        for name, deployment_id in out.items():
            console.print(f"deployed [bold]{name}[/bold] ({deployment_id})")
        console.print(f"start a worker: prefect worker start --pool {pool}")

    emit({"pool": pool, "deployments": out}, render)


@app.command("webhook")
def webhook_command(
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 inside a container)"),
    port: int = typer.Option(8090, help="port to listen on"),
    public_url: str | None = typer.Option(None, help="URL Label Studio reaches this receiver at "
                                                      "(default: http://HOST:PORT)"),
) -> None:
    """Receive Label Studio's annotation webhooks (shared secret $SPINETRACK_WEBHOOK_SECRET): each
    burst of saves pulls, and finishes a waiting active-learning round once its close rule holds."""
    from annotation.labelstudio.client import connect
    from annotation.labelstudio.hooks import LabelStudioHooks, continue_waiting_round
    from annotation.labelstudio.pull import stored_project
    from annotation.labelstudio.webhook import SECRET_ENV, PullOnWebhook
    from pipeline.store import Store
    from schemas.errors import InputError

    if not os.environ.get(SECRET_ENV):
        raise InputError(SECRET_ENV, "not set: the receiver only accepts requests carrying this shared "
                         "secret", field=SECRET_ENV)
    store = Store()
    hooks = LabelStudioHooks.from_environment(store)
    receiver = PullOnWebhook(lambda: continue_waiting_round(store, hooks), port, host=host,
                             public_url=public_url or f"http://{host}:{port}")
    project = stored_project(store, hooks.conn)
    if project is not None:
        receiver.register(connect(hooks.conn), project)
    note = "" if project is not None else " (no project yet: run it again after the first push)"
    emit({"url": receiver.url, "project": project},
         lambda con: con.print(f"receiving Label Studio webhooks at {receiver.url}{note}"))
    receiver.serve_forever()


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 inside a container)"),
    port: int = typer.Option(9090, help="port to listen on"),
    public_url: str | None = typer.Option(None, help="URL Label Studio reaches this server at "
                                                      "(default: http://HOST:PORT)"),
    annotator: str | None = typer.Option(None, help="annotator that predicts (default: combined)"),
    device: str = typer.Option("cpu", help="torch device for predictions"),
) -> None:
    """SpineTrack as the Label Studio project's ML backend (settings -> Model), connected on start,
    and its annotation webhook receiver: Label Studio's Basic auth password is
    $SPINETRACK_WEBHOOK_SECRET (generated per run when unset)."""
    from annotation.labelstudio.hooks import LabelStudioHooks
    from annotation.labelstudio.ml_backend import model_server
    from pipeline.annotators.spec import DEFAULT_SPEC
    from pipeline.store import Store

    store = Store()
    server = model_server(store, LabelStudioHooks.from_environment(store), port=port, host=host,
                          public_url=public_url or f"http://{host}:{port}", spec=annotator or DEFAULT_SPEC,
                          device=device)

    def report(srv: Any) -> None:
        url, version = srv.receiver.base_url, srv.model.version()
        emit({"url": url, "project": srv.project_id, "ml_backend": srv.backend_id, "model_version": version},
             lambda con: con.print(f"SpineTrack ML backend {url} connected to Label Studio project "
                                   f"{srv.project_id} (model {version})"))

    server.serve_forever(report)
