"""Leases: one holder at a time for a piece of work, kept in the store's database.

A lease is a row (`leases`) naming its holder (host, PID, a random token) and an expiry. Taking it
is one conditional write, atomic on SQLite and PostgreSQL alike: the row is taken only when it is
free, expired, or held by a process that is gone (same machine, PID no longer running, or running
a different program since). The holder renews it from a background thread every third of its
time to live, and at every `check`, which also fences: a holder that was paused past its expiry
and replaced finds out before it records anything (`LeaseLost`). A holder killed with SIGKILL
stops renewing: on its own machine the next caller sees the PID is gone and takes over at once;
from another machine, once the lease expires (`SPINETRACK_LEASE_TTL_S`, default 60 s; clocks must
agree to well within that).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from pipeline.store.models import Lease as LeaseRow
from pipeline.store.store import Store

TTL_ENV = "SPINETRACK_LEASE_TTL_S"
DEFAULT_TTL_S = 60.0


def default_ttl() -> float:
    return float(os.environ.get(TTL_ENV, DEFAULT_TTL_S))


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as stored."""

    name: str
    token: str
    host: str
    node: str
    pid: int
    pid_started: str | None
    acquired_at: float
    expires_at: float

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.acquired_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return f"PID {self.pid} on {self.host} since {since}"


class LeaseBusy(RuntimeError):
    """Someone else holds the lease (and is alive, as far as can be told)."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(f"{holder.name} is held by {holder.describe()}")
        self.holder = holder


class LeaseLost(RuntimeError):
    """This process's lease expired and another took it: stop before recording anything."""


def _proc_start(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks after boot, /proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return None


def _node() -> str:
    """This machine and PID namespace: where a stored PID can be checked (containers differ)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = "?"
    return f"{socket.gethostname()}/{boot}/{namespace}"


def is_gone(holder: Holder, node: str | None = None) -> bool:
    """Whether the holder's process is known to be gone: only decidable on its own node."""
    if holder.node != (node or _node()):
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    if _proc_state(holder.pid) in ("Z", "X"):  # killed, not yet reaped by its parent
        return True
    started = _proc_start(holder.pid)
    return holder.pid_started is not None and started is not None and started != holder.pid_started


def holder_of(store: Store, name: str, *, session: Session | None = None) -> Holder | None:
    """The lease's stored holder (it may have expired), or None."""
    def read(s: Session) -> Holder | None:
        row = s.get(LeaseRow, name, populate_existing=True)
        if row is None:
            return None
        return Holder(row.name, row.token, row.host, row.node, row.pid, row.pid_started,
                      row.acquired_at, row.expires_at)

    if session is not None:
        return read(session)
    with store.session() as s:
        return read(s)


class Lease:
    """A lease this process may take, renew, check and let go (a context manager: `held`)."""

    def __init__(self, store: Store, name: str, ttl_s: float | None = None) -> None:
        self.store = store
        self.name = name
        self.ttl_s = ttl_s if ttl_s is not None else default_ttl()
        self.token = secrets.token_hex(16)
        self.pid = os.getpid()
        self.node = _node()
        self.host = socket.gethostname()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kept: contextlib.AbstractContextManager[Lease]

    @property
    def describe(self) -> str:
        return f"PID {self.pid} on {self.host}"

    def acquire(self) -> None:
        """Take the lease or raise LeaseBusy naming who holds it."""
        stale = holder_of(self.store, self.name)
        takeover = stale.token if stale is not None and is_gone(stale, self.node) else None
        now = time.time()
        mine = {"name": self.name, "token": self.token, "host": self.host, "node": self.node,
                "pid": self.pid, "pid_started": _proc_start(self.pid), "acquired_at": now,
                "expires_at": now + self.ttl_s}
        with self.store.session() as s:
            self.store.insert_ignore(s, LeaseRow, [mine], ["name"])
            free = or_(LeaseRow.token == self.token, LeaseRow.expires_at < now,
                       LeaseRow.token == (takeover or self.token))
            s.execute(update(LeaseRow).where(LeaseRow.name == self.name, free)
                      .values({k: v for k, v in mine.items() if k != "name"}))
            holder = holder_of(self.store, self.name, session=s)
        assert holder is not None
        if holder.token != self.token:
            raise LeaseBusy(holder)
        self.lost.clear()

    def check(self, session: Session | None = None) -> None:
        """Renew the lease, in `session` when given (so what the caller records there is fenced);
        LeaseLost if another holder took it meanwhile."""
        with contextlib.ExitStack() as stack:
            s = session if session is not None else stack.enter_context(self.store.session())
            result = s.execute(
                update(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.token == self.token)
                .values(expires_at=time.time() + self.ttl_s)
            )
            renewed = cast(CursorResult[Any], result).rowcount
        if not renewed:
            self.lost.set()
            holder = holder_of(self.store, self.name)
            who = holder.describe() if holder is not None else "nobody"
            raise LeaseLost(f"{self.name}: this process ({self.describe}) lost its lease, now held by {who}")

    def release(self) -> None:
        """Let go (only if still ours): the next caller need not wait for the expiry."""
        with self.store.session() as s:
            row = s.get(LeaseRow, self.name)
            if row is not None and row.token == self.token:
                s.delete(row)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.check()
            except LeaseLost:
                return
            except Exception:  # a database hiccup: try again at the next beat
                continue

    @contextlib.contextmanager
    def kept(self) -> Iterator[Lease]:
        """Renew the (acquired) lease in the background during the block; let it go after."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True, name=f"lease {self.name}")
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.release()

    def __enter__(self) -> Lease:
        self.acquire()
        self._kept = self.kept()
        return self._kept.__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._kept.__exit__(exc_type, exc, tb)


@contextlib.contextmanager
def held(store: Store, name: str, ttl_s: float | None = None) -> Iterator[Lease]:
    """Hold lease `name` for the block (LeaseBusy if another holds it), renewed in the background."""
    with Lease(store, name, ttl_s) as lease:
        yield lease


def holders(store: Store) -> list[Holder]:
    """Every stored lease (expired ones included), by name."""
    with store.session() as s:
        return [Holder(r.name, r.token, r.host, r.node, r.pid, r.pid_started, r.acquired_at, r.expires_at)
                for r in s.scalars(select(LeaseRow).order_by(LeaseRow.name))]


__all__ = ["DEFAULT_TTL_S", "TTL_ENV", "Holder", "Lease", "LeaseBusy", "LeaseLost", "held", "holder_of",
           "holders", "is_gone"]
