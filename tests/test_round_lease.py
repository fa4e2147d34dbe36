"""One driver per round: the lease in the store's database (pipeline/store/lease.py), on SQLite
and PostgreSQL.

Who may advance a round is exclusive (issue 20): a second driver is told "round N is being advanced
by PID p on host since T" and returns; a holder killed with SIGKILL is replaced at once on its own
machine and after the expiry from another; a holder that lost its lease records nothing more.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from pipeline.active_learning.rounds import RoundBusy, driving, get_round, open_round, update_round
from pipeline.store import Store
from pipeline.store.lease import Lease, LeaseBusy, LeaseLost, holder_of
from pipeline.store.models import Lease as LeaseRow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, home: Path) -> Store:
    url = None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))
    store = Store.open(url, home=home)
    request.addfinalizer(store.close)
    return store


def test_a_second_driver_is_told_who_drives(any_store: Store) -> None:
    open_round(any_store, 3, strategy="random", budget=5)
    with driving(any_store, 3) as lease:
        with pytest.raises(RoundBusy) as busy, driving(any_store, 3):
            pass
        message = str(busy.value)
        assert message.startswith(f"round 3 is being advanced by PID {os.getpid()} on ")
        assert " since 20" in message and message.endswith("Z")
        lease.check()
    with driving(any_store, 3):  # let go at the end of the block: free at once
        pass


def test_a_killed_holder_on_this_machine_is_replaced_at_once(any_store: Store) -> None:
    code = ("import sys, time; from pathlib import Path; from pipeline.store import Store; "
            "from pipeline.store.lease import Lease; "
            "lease = Lease(Store.open(sys.argv[1] or None, home=Path(sys.argv[2])), 'round:1', ttl_s=3600); "
            "lease.acquire(); print('held', flush=True); time.sleep(600)")
    url = "" if any_store.url.startswith("sqlite") else any_store.url
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(any_store.home)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LeaseBusy):
            Lease(any_store, "round:1").acquire()
        os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.2)  # a zombie until reaped: gone all the same
        mine = Lease(any_store, "round:1")
        mine.acquire()  # the hour-long lease of a dead process does not wait for its expiry
        holder = holder_of(any_store, "round:1")
        assert holder is not None and holder.pid == os.getpid()
    finally:
        proc.kill()
        proc.wait()


def test_a_holder_elsewhere_is_waited_for_until_it_expires(any_store: Store) -> None:
    other = Lease(any_store, "round:2", ttl_s=1.5)
    other.node = "another-host/boot/1"  # as if held from another machine: its PID cannot be checked
    other.host = "another-host"
    other.acquire()
    with pytest.raises(LeaseBusy) as busy:
        Lease(any_store, "round:2").acquire()
    assert "another-host" in str(busy.value)
    time.sleep(1.6)  # it stopped renewing (killed, or its machine went down): expired
    Lease(any_store, "round:2").acquire()


def test_a_holder_that_lost_its_lease_records_nothing(any_store: Store) -> None:
    open_round(any_store, 4, strategy="random", budget=5)
    slow = Lease(any_store, "round:4", ttl_s=60)
    slow.acquire()
    with any_store.session() as s:  # paused past its expiry (SIGSTOP, a swapped-out VM)
        s.execute(update(LeaseRow).where(LeaseRow.name == "round:4").values(expires_at=time.time() - 1))
    Lease(any_store, "round:4").acquire()
    with pytest.raises(LeaseLost):
        update_round(any_store, 4, lease=slow, step="pseudo_label", selected=[1, 2])
    rnd = get_round(any_store, 4)
    assert rnd is not None and rnd.step == "started" and "selected" not in rnd.state


def test_the_holder_renews_while_it_works(any_store: Store) -> None:
    with Lease(any_store, "round:5", ttl_s=0.6):
        time.sleep(1.5)  # longer than its time to live: the heartbeat kept it
        with pytest.raises(LeaseBusy):
            Lease(any_store, "round:5").acquire()
