"""The store on a real PostgreSQL server (and SQLite): migrations both ways, concurrent writers.

The store tests themselves (tests/test_store.py) run on both databases; this file adds what only
matters with several writers or a server: the Alembic chain, and two ingest workers in separate
processes writing the same frames at the same moment.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select

from pipeline.store import Store
from pipeline.store.migrate import downgrade, upgrade
from pipeline.store.models import Base, Image, Instance, Revision
from tests.postgres_fixtures import write_frames_worker

TABLES = {"images", "instances", "revisions", "model_versions", "annotation_tasks", "releases",
          "split_assignments", "rounds", "ingests", "review_tags", "sync_state"}


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
    ctx = multiprocessing.get_context("spawn")
    start, errors = ctx.Event(), ctx.Queue()
    orders = [frame_list, frame_list]  # the same frames in the same order: both race for each one
    workers = [ctx.Process(target=write_frames_worker, args=(db_url, str(home), order, b, start, errors))
               for order, b in zip(orders, batched, strict=True)]
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
