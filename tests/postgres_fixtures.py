"""A real PostgreSQL server for the tests: Debian's binaries, `initdb` + `pg_ctl` in a temp folder.

One server per test session, listening on a unix socket only (no TCP port to collide on), with
trust authentication for its own superuser. Each test gets a fresh database on it. PostgreSQL
refuses to run as root (CI runs as root), so there the server runs as `nobody` through `runuser`.
Tests skip with the reason when the binaries or the Python driver (the `postgres` extra) are absent.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The server's superuser (trust authentication over its private socket).
PG_USER = "spinetrack"
PG_PORT = 5432  # only names the socket file; the socket lives in the server's own folder


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: Path
    port: int = PG_PORT
    user: str = PG_USER

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of `database` on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"


def postgres_bin() -> Path | None:
    """The newest installed Debian PostgreSQL bin folder (initdb, pg_ctl), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user(cmd: list[str]) -> list[str]:
    """`cmd` as a non-root user when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "nobody", "--", *cmd]


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throw-away PostgreSQL server for the session (about 2 s), stop it afterwards."""
    pytest.importorskip("psycopg", reason="the `postgres` extra (psycopg) is not installed")
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian package `postgresql`)")
    root = Path(tempfile.mkdtemp(prefix="spinetrack-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
    _run([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
          "--no-sync", "--locale=C"], "initdb")
    options = (f"-c listen_addresses='' -c unix_socket_directories={root} -p {PG_PORT} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
    _run([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"),
          "-w", "-t", "60", "start"], "pg_ctl start")
    try:
        yield PostgresServer(socket_dir=root)
    finally:
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], "pg_ctl stop")
        shutil.rmtree(root, ignore_errors=True)


_database_numbers = itertools.count(1)


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped after the test."""
    import psycopg

    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    admin = dict(host=str(postgres_server.socket_dir), port=postgres_server.port,
                 user=postgres_server.user, dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_frames_worker(url: str, home: str, frames: list[tuple[str, str]], batched: bool,
                        start: object, errors: object) -> None:
    """One concurrent ingest worker (runs in its own process): the frames as ingest writes them,
    two people per frame, one revision each with an external id; any exception goes to `errors`."""
    from pipeline.store import Store
    from pipeline.store.store import NewImage, NewLabel, NewRevision

    try:
        with Store.open(url, home=Path(home)) as store:
            start.wait()  # type: ignore[attr-defined]
            for path, digest in frames:
                image = NewImage(path, "synthetic", "race", "race-seq", 40, 30, sha256=digest)
                if batched:
                    store.add_labels([
                        NewLabel(image, f"actor-{a}", {"actor": a},
                                 NewRevision([1.0, 2.0, 2.0] * 37, [0, 0, 4, 4], source="synthetic",
                                             external_id=f"race:{digest[:12]}:{a}"))
                        for a in range(2)
                    ])
                    continue
                image_id = store.add_image(path, source="synthetic", subset="race", group_key="race-seq",
                                           width=40, height=30, sha256=digest)
                for a in range(2):
                    inst = store.instance_id(image_id, f"actor-{a}", meta={"actor": a})
                    store.add_revision(inst, [1.0, 2.0, 2.0] * 37, [0, 0, 4, 4], source="synthetic",
                                       external_id=f"race:{digest[:12]}:{a}")
    except BaseException as exc:
        errors.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]
        raise


def ingest_worker(url: str, home: str, folder: str, start: object, errors: object) -> None:
    """One concurrent worker running the real synthetic ingest of `folder` (own process)."""
    from pipeline.store import Store
    from synthetic.ingest import ingest_sequence

    try:
        with Store.open(url, home=Path(home)) as store:
            start.wait()  # type: ignore[attr-defined]
            ingest_sequence(store, folder, batch_frames=2)
    except BaseException as exc:
        errors.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]
        raise
