"""Alembic migrations, run programmatically so opening a store always brings it to head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

#: PostgreSQL advisory-lock key held while migrating, so workers opening a new store at once
#: migrate it one after the other (the second finds it at head) instead of racing on CREATE TABLE.
MIGRATION_LOCK = 0x5350494E

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on a file beside a SQLite database while it migrates.

    SQLite runs CREATE TABLE outside a transaction here (Python's sqlite3 opens one only before
    DML), so two processes opening a new store at once (Dask workers, two commands) both created
    `alembic_version` and one failed ("table alembic_version already exists"). With the lock the
    second waits, then finds the store at head.
    """
    database = engine.url.database or ""
    if engine.dialect.name != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = Path(database).with_name(Path(database).name + ".migrate-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind `engine` to `revision` (a no-op when already there).

    Safe when several processes open a new store at once: PostgreSQL migrates under an advisory
    lock, SQLite under a file lock beside the database.
    """
    cfg = alembic_config()
    with _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the database behind `engine` to `revision` (tests check every step reverses)."""
    cfg = alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)
