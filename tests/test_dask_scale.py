"""Scale-out through Dask (prefect-dask): the same results as one process, into the one store.

Real parts: a `distributed.LocalCluster` of 2 worker processes, a standalone `dask scheduler` +
`dask worker` reached by address (as a user's cluster is), OpenSim IK, the SQLite store and the
session's ephemeral Prefect API.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.runners import StoreRef, check_runner_options, task_runner
from pipeline.store import Store
from schemas.errors import InputError
from synthetic.renderer import render_sequence

pytestmark = pytest.mark.slow  # a Dask cluster and the Prefect harness: ~30-60 s on 2 cores


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("dask-renders")
    return [render_sequence(root / f"seq{seed}", frames=4, seed=seed, actors=1 + seed % 2)
            for seed in (21, 22, 23)]


def _content(store: Store) -> dict[str, Any]:
    """Everything the ingest wrote, keyed by what identifies it (not by database ids)."""
    labels = store.latest_labels(accepted_only=False)
    with store.session() as s:
        from pipeline.store.models import IngestRecord

        records = {r.sequence_key: r.summary["annotations_added"] for r in s.query(IngestRecord)}
    return {
        "labels": sorted(
            (lab.provenance["source_sequence"], lab.frame_index, lab.instance_key, tuple(lab.keypoints),
             tuple(lab.bbox), lab.area, lab.image_meta["source_path"], lab.quality["ik_rms_m"])
            for lab in labels
        ),
        "images": len({lab.image_id for lab in labels}),
        "records": records,
    }


def _ingest(
    home: Path, renders: list[Path], monkeypatch: pytest.MonkeyPatch, **runner: Any
) -> dict[str, Any]:
    from flows.synthetic import ingest_synthetic

    home.mkdir()
    monkeypatch.setenv("SPINETRACK_HOME", str(home))
    summaries = ingest_synthetic([str(r) for r in renders], **runner)
    assert [s["sequence_id"] for s in summaries] == [f"synthetic-mixed-{r.name.replace('seq', 'seed')}"
                                                     for r in renders]
    store = Store(home=home)
    try:
        return _content(store)
    finally:
        store.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A scheduler and one worker as separate processes, like a cluster someone else runs."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    commands = [
        ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        ["worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
    ]
    procs = [
        subprocess.Popen([str(bin_dir / "dask"), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, cwd=tmp_path)
        for cmd in commands
    ]
    try:
        from distributed import Client

        deadline = time.monotonic() + 120
        with Client(address, timeout=120) as client:
            while not client.scheduler_info()["workers"]:
                assert time.monotonic() < deadline, "the dask worker did not join within 120 s"
                time.sleep(0.5)
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_two_local_workers_give_the_single_process_result(
    prefect_harness: None, renders: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    single = _ingest(tmp_path / "single", renders, monkeypatch)
    parallel = _ingest(tmp_path / "dask", renders, monkeypatch, workers=2)
    assert single["labels"] and single["records"] == {f"synthetic-mixed-seed{n}": 4 * (1 + n % 2)
                                                        for n in (21, 22, 23)}
    assert parallel == single


def test_existing_cluster_by_address_writes_the_one_store(
    prefect_harness: None, renders: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    dask_cluster: str,
) -> None:
    single = _ingest(tmp_path / "single", renders[:2], monkeypatch)
    remote = _ingest(tmp_path / "remote", renders[:2], monkeypatch, dask_address=dask_cluster)
    assert remote == single
    # the worker process wrote into the flow's store, not into one of its own (its cwd is elsewhere)
    assert not (tmp_path / "spinetrack-data").exists()


def test_runner_options_are_checked() -> None:
    with pytest.raises(InputError, match="at least 1"):
        check_runner_options(0, None)
    with pytest.raises(InputError, match="not both"):
        check_runner_options(2, "tcp://127.0.0.1:8786")
    with pytest.raises(InputError, match="scheduler address"):
        check_runner_options(1, "127.0.0.1:8786")
    assert type(task_runner(1)).__name__ == "ThreadPoolTaskRunner"
    assert type(task_runner(3)).__name__ == "DaskTaskRunner"


def test_store_ref_names_the_flow_store(home: Path) -> None:
    ref = StoreRef.current()
    assert ref.home == str(home) and ref.url == f"sqlite:///{home / 'store.sqlite'}"
    store = ref.open()
    try:
        assert store.url == ref.url
    finally:
        store.close()


def _pseudo_labels(store: Store) -> dict[tuple[str, str], dict[str, Any]]:
    """Every pseudo-label, keyed by (image file, instance key), with what the annotator produced."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for img, inst in store.unlabelled_instances():
        revs = [r for r in store.revisions(inst.id) if r.source == "pseudo"]
        assert len(revs) == 1, f"{img.path} {inst.key}: {len(revs)} pseudo-labels"
        rev = revs[0]
        out[(Path(img.path).name, inst.key)] = {
            "keypoints": rev.keypoints, "scores": rev.scores, "uncertainty": rev.uncertainty,
            "quality": rev.quality, "model_version": rev.model_version, "external_id": rev.external_id,
            "provenance": rev.provenance, "round": rev.round, "accepted": rev.accepted,
        }
    return out


def _differences(a: Any, b: Any, tol: float, where: str = "") -> list[str]:
    """Where two JSON-like values differ: exactly for everything but floats, floats within `tol`."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], tol, f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, tol, where)]
    if isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool):
        return [] if abs(a - b) <= tol else [f"{where}: {a} != {b}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_pseudo_label_on_two_workers_gives_the_single_process_labels(
    prefect_harness: None, real_people: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The combined annotator (BlazePose + spine prior + a registered student) over chunks on two
    Dask worker processes writes exactly the labels one process writes, once each."""
    import shutil

    from flows.model import pseudo_label
    from pipeline.intake.real_import import import_coco
    from pipeline.model.configs import build_config
    from pipeline.model.predict import untrained_model
    from pipeline.model.registry import save_model

    single = tmp_path / "single"
    monkeypatch.setenv("SPINETRACK_HOME", str(single))
    with Store(home=single) as store:
        import_coco(store, real_people / "coco" / "test_coco.json", image_dir=real_people / "coco",
                    subset="real-people-coco", boxes_only=True)
        save_model(store, untrained_model("tiny", seed=3), name="tiny-dask", config_name="tiny",
                   config=build_config("tiny", work_dir=tmp_path), data_snapshot="test")
    shutil.copytree(single, tmp_path / "dask")
    spec = "combined:student=tiny-dask"

    one = pseudo_label(spec, "real", None, "cpu", None, 1, None, 4)
    with Store(home=single) as store:
        expected = _pseudo_labels(store)
    monkeypatch.setenv("SPINETRACK_HOME", str(tmp_path / "dask"))
    two = pseudo_label(spec, "real", None, "cpu", None, 2, None, 4)
    with Store(home=tmp_path / "dask") as store:
        got = _pseudo_labels(store)

    assert one["written"] == two["written"] == len(expected) == 14
    assert got.keys() == expected.keys()
    # Exactly the same labels, but for float32 noise: the student predicts a chunk of 4 boxes per
    # batch on a worker and the whole pool in one process, and batch size changes the order of
    # float32 sums (measured: scores differ by up to 5e-6, keypoints by under 1e-4 px).
    differing = [d for key in expected for d in _differences(got[key], expected[key], 1e-4, str(key))]
    assert not differing, f"labels from two workers differ: {differing[:5]}"
    # a second parallel run finds every chunk done and writes nothing
    again = pseudo_label(spec, "real", None, "cpu", None, 2, None, 4)
    assert (again["written"], again["already_done"]) == (0, 14)


_EMBEDDED_RUN = """
import json, sys
from flows.synthetic import ingest_synthetic
from prefect import get_client

summaries = ingest_synthetic(sys.argv[1:], workers=2)
with get_client(sync_client=True) as client:  # the flow's temporary server, still up in this process
    runs = client.read_task_runs()
print("RESULT " + json.dumps({"added": [s["annotations_added"] for s in summaries],
                              "task_runs": sorted((r.name, r.state_name) for r in runs)}))
"""


def test_local_workers_report_to_the_embedded_server(renders: list[Path], tmp_path: Path) -> None:
    """The embedded default (no PREFECT_API_URL, no harness): the Dask workers use the flow's
    temporary server. prefect-dask ships settings that name no API, so each worker used to start a
    temporary server of its own on its first task (~9 s each; this test then fails on the count)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"SPINETRACK_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", _EMBEDDED_RUN, *(str(r) for r in renders[:2])], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result["added"] == [8, 4]  # seed 21: two actors, 22: one
    assert result["task_runs"] == sorted([f"ingest {r}", "Completed"] for r in renders[:2])
    logs = out.stdout + out.stderr
    assert logs.count("Starting temporary server") == 1, logs[-3000:]
