"""Prefect deployments for a team: a real `prefect server start` on loopback and a real process worker.

`spinetrack deploy` registers the deployments; a worker (`prefect worker start --pool ...`) picks up
a run of the ingest deployment, runs it in a subprocess in this checkout, and the run's Markdown
artifact is read back through the server's API. prefect.yaml (for `prefect deploy --all`) must
declare the same deployments.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flows.deploy import DEFAULT_POOL, DEPLOYMENTS, REPO, deploy
from schemas.errors import InputError
from tests.prefect_fixtures import BIN, prefect_env, stop_process_group

pytestmark = pytest.mark.slow  # a Prefect server (10-30 s to start) and a worker running one ingest
@pytest.fixture()
def worker(prefect_server: str, tmp_path: Path) -> Iterator[Path]:
    """A process worker on the spinetrack pool; yields its log file."""
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", DEFAULT_POOL, "--type", "process",
             "--limit", "1"],
            env=prefect_env(tmp_path / "worker-home", prefect_server), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
        )
    try:
        yield log_path
    finally:
        stop_process_group(proc)


def test_deployment_run_of_ingest_completes_and_its_artifact_is_readable(
    prefect_server: str, worker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from synthetic.renderer import render_sequence

    render = render_sequence(tmp_path / "render", frames=3, seed=5, motion="squat")
    home = tmp_path / "team-store"
    monkeypatch.setenv("SPINETRACK_HOME", str(home))
    monkeypatch.delenv("SPINETRACK_DB_URL", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        created = deploy()
        assert set(created) == {"ingest-synthetic/ingest", "pseudo-label/pseudo-label",
                                "active-learning-round/round", "train-model/train", "release-dataset/release"}
        again = deploy(only=("ingest",))  # idempotent: the same deployment is updated, not duplicated
        assert again == {"ingest-synthetic/ingest": created["ingest-synthetic/ingest"]}

        run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: a FlowRun
            "ingest-synthetic/ingest", parameters={"render_dirs": [str(render)]}, timeout=420,
            poll_interval=2)
        assert run.state is not None and run.state.is_completed(), (
            f"{run.state}\nworker log:\n{worker.read_text(errors='replace')[-4000:]}")
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            deployment = client.read_deployment_by_name("ingest-synthetic/ingest")
    assert deployment.work_pool_name == DEFAULT_POOL
    assert deployment.entrypoint == "flows/synthetic.py:ingest_synthetic"
    assert deployment.job_variables["env"]["SPINETRACK_HOME"] == str(home)
    [artifact] = [a for a in artifacts if a.key == "ingest-synthetic"]
    assert "synthetic-squat-seed5" in str(artifact.data) and "| spine |" in str(artifact.data)
    # the worker's flow run wrote the deployer's store
    from pipeline.store import Store

    with Store(home=home) as store:
        assert len(store.current_labels()) == 3


def test_deploy_needs_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    no_server = temporary_settings(updates={PREFECT_API_URL: ""})
    with no_server, pytest.raises(InputError, match="PREFECT_API_URL"):
        deploy()


def test_prefect_yaml_declares_the_same_deployments() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in config["deployments"]}
    assert set(declared) == {spec.name for spec in DEPLOYMENTS}
    for spec in DEPLOYMENTS:
        entry = declared[spec.name]
        assert entry["entrypoint"] == spec.entrypoint
        assert entry["work_pool"]["name"] == DEFAULT_POOL
        path, attr = spec.entrypoint.split(":")
        assert (REPO / path).is_file() and f"def {attr}(" in (REPO / path).read_text()
    assert json.dumps(config["pull"])  # a pull step puts flow runs in the checkout
