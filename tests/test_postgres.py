"""The store on a real PostgreSQL server (and SQLite): migrations both ways, concurrent writers.

The store tests themselves (tests/test_store.py) run on both databases; this file adds what only
matters with several writers or a server: the Alembic chain, and two ingest workers in separate
processes writing the same frames at the same moment.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select

from pipeline.store import Store
from pipeline.store.migrate import downgrade, upgrade
from pipeline.store.models import Base, Image, Instance, Revision
from tests.postgres_fixtures import ingest_worker, write_frames_worker

TABLES = {"images", "instances", "revisions", "model_versions", "annotation_tasks", "releases",
          "split_assignments", "rounds", "ingests", "review_tags", "sync_state", "leases"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, home: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{home / 'race.sqlite'}"


def test_migrations_reach_the_models_and_reverse(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        upgrade(engine)
        assert TABLES | {"alembic_version"} <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            # the migrated schema is the models' schema: autogenerate finds nothing to add
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if d[0] in ("add_table", "add_column", "remove_table", "remove_column")] == []
        downgrade(engine, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(engine)  # and up again, on the downgraded database
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def _race(db_url: str, home: Path, batched: tuple[bool, bool], frames: int = 40) -> list[str]:
    frame_list = [(str(home / f"frame_{n:04d}.png"), hashlib.sha256(f"frame {n}".encode()).hexdigest())
                  for n in range(frames)]
    # the same frames in the same order: both race for each one
    return _run_workers(write_frames_worker, [(db_url, str(home), frame_list, b) for b in batched])


def _run_workers(target: Callable[..., None], arguments: list[tuple[Any, ...]]) -> list[str]:
    """Run `target(*args, start, errors)` in one process per args, released at the same moment."""
    ctx = multiprocessing.get_context("spawn")
    start, errors = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=target, args=(*args, start, errors)) for args in arguments]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(timeout=240)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    problems += [f"worker exit code {w.exitcode}" for w in workers if w.exitcode != 0]
    return problems


@pytest.mark.parametrize("batched", [(False, False), (True, False), (True, True)],
                         ids=["one-by-one", "mixed", "batched"])
def test_two_workers_ingesting_the_same_frames(
    db_url: str, home: Path, batched: tuple[bool, bool]
) -> None:
    frames = 40
    with Store.open(db_url, home=home):  # the schema exists before the workers start
        pass
    problems = _race(db_url, home, batched, frames)
    assert problems == []
    with Store.open(db_url, home=home) as store, store.session() as s:
        counts = [s.scalar(select(func.count(Image.id))), s.scalar(select(func.count(Instance.id))),
                  s.scalar(select(func.count(Revision.id))),
                  s.scalar(select(func.count(func.distinct(Revision.instance_id))))]
    # every frame once, both people once, each revision once: no duplicate, none lost
    assert counts == [frames, 2 * frames, 2 * frames, 2 * frames]


def test_two_workers_migrating_a_new_store_at_once(postgres_url: str, home: Path) -> None:
    """Neither worker finds the schema: the migration lock makes the second wait, then reuse it."""
    assert _race(postgres_url, home, (True, False), frames=5) == []
    with Store.open(postgres_url, home=home) as store:
        assert store.count_revisions() == 10


@pytest.mark.slow  # two processes import the OpenSim/ingest stack (~20 s)
def test_two_workers_running_the_real_ingest_on_the_same_sequence(
    db_url: str, home: Path, tmp_path: Path
) -> None:
    from synthetic.ingest import ingest_sequence
    from synthetic.renderer import render_sequence

    folder = render_sequence(tmp_path / "seq", frames=4, seed=11, actors=2, character="opensim")
    with Store.open(db_url, home=home):
        pass
    assert _run_workers(ingest_worker, [(db_url, str(home), str(folder))] * 2) == []
    with Store.open(db_url, home=home) as store:
        labels = store.latest_labels(accepted_only=False)
        with store.session() as s:
            counts = [s.scalar(select(func.count(Image.id))), s.scalar(select(func.count(Revision.id)))]
        keys = [(lab.image_id, lab.instance_key) for lab in labels]
        assert len(keys) == len(set(keys)) and counts[0] == 4 and counts[1] == len(labels) > 0
        # a third, single ingest finds every frame stored: nothing was lost
        again = ingest_sequence(store, folder)
        assert again.status == "unchanged" or again.annotations_added == 0
