"""Where a flow's tasks run: in the flow's own process, or on a Dask cluster (prefect-dask).

`--workers N` (N > 1) starts a local Dask cluster of N single-threaded worker processes for the
flow run and stops it afterwards; `--dask-address tcp://host:8786` sends the tasks to a cluster that
already runs (a user's `dask scheduler` + `dask worker`s, a dask-kubernetes or dask-jobqueue cluster;
docs/deployment.md). Every worker opens the one store named by the flow (`StoreRef`), so a worker
on another machine needs the same `SPINETRACK_DB_URL` (PostgreSQL) and the images under the same
paths (a shared volume).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from schemas.errors import InputError

if TYPE_CHECKING:
    from pipeline.store import Store


@dataclass(frozen=True)
class StoreRef:
    """Enough to open the flow's store in another process or on another machine."""

    home: str
    url: str

    @classmethod
    def current(cls) -> StoreRef:
        from pipeline.store.store import default_url, spinetrack_home

        home = spinetrack_home()
        return cls(home=str(home), url=default_url(home))

    def open(self) -> Store:
        from pipeline.store import Store

        os.environ.setdefault("SPINETRACK_HOME", self.home)  # for code that reads the home itself
        return Store(self.url, home=Path(self.home))


def check_runner_options(workers: int, dask_address: str | None) -> None:
    if workers < 1:
        raise InputError("--workers", f"must be at least 1, got {workers}", field="workers")
    if dask_address is not None:
        if workers > 1:
            raise InputError("--dask-address", "give either --workers or --dask-address, not both",
                             field="dask_address")
        if "://" not in dask_address:
            raise InputError("--dask-address", f"expected a scheduler address such as tcp://host:8786, "
                             f"got {dask_address!r}", field="dask_address")


def uses_dask(workers: int, dask_address: str | None) -> bool:
    return dask_address is not None or workers > 1


def task_runner(workers: int = 1, dask_address: str | None = None) -> Any:
    """The Prefect task runner for these options (single process: a one-thread pool, in order)."""
    check_runner_options(workers, dask_address)
    if not uses_dask(workers, dask_address):
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if dask_address is not None:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,  # IK and inference are CPU-bound: one task per process
            "processes": True,
            "dashboard_address": None,  # nothing listens beyond the scheduler on loopback
            "host": "127.0.0.1",
        },
    )


def run_tasks(
    task: Any, parameters: Sequence[dict[str, Any]], *, workers: int = 1, dask_address: str | None = None
) -> list[Any]:
    """Run `task` once per parameter set (inside a flow); results in order, a failed run's exception
    in its place (the caller decides what a failure means).

    One process: the runs happen one after the other in the flow's process, as before. Dask: all are
    submitted at once to the cluster (started here for `workers` > 1, and stopped afterwards).
    """
    task = getattr(task, "real", task)  # a flows.lazy task stands for the prefect Task
    if not uses_dask(workers, dask_address):
        check_runner_options(workers, dask_address)
        return [task(**p, return_state=True).result(raise_on_failure=False) for p in parameters]
    with task_runner(workers, dask_address) as runner, _workers_report_here(dask_address):
        futures = [runner.submit(task, p) for p in parameters]
        return [f.result(raise_on_failure=False) for f in futures]


def _is_loopback(dask_address: str | None) -> bool:
    """A cluster started here (None) or one whose scheduler listens on this machine's loopback."""
    if dask_address is None:
        return True
    host = urlsplit(dask_address).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _workers_report_here(dask_address: str | None) -> AbstractContextManager[Any]:
    """Dask workers on this machine report their task runs to the flow's Prefect API.

    prefect-dask ships the flow's settings with every task. In the embedded default they name no
    API, so each worker started a temporary Prefect server of its own on its first task: about 9 s
    a worker on this machine, more than the work of a typical call. With the flow's API URL (its
    temporary server, or the one configured) in those settings they use the flow's server. A remote
    cluster cannot reach this machine's loopback: it needs PREFECT_API_URL set to a server it can
    reach (docs/deployment.md), and is left alone.
    """
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ctx = FlowRunContext.get()
    if ctx is None or PREFECT_API_URL.value() or not _is_loopback(dask_address):
        return nullcontext()
    return temporary_settings(updates={PREFECT_API_URL: str(ctx.client.api_url).rstrip("/")})


def dask_picklable(*objects: Any) -> None:
    """Let Dask pickle these flows.lazy tasks and flows (and the flows.lazy flow they run in).

    Call at the end of the defining module, so every process that imports it (the client, the Dask
    scheduler, the workers) agrees. prefect-dask ships the task and the flow-run context (holding
    the flow) to the workers, and pickle stores a function by module and qualified name. The module
    attribute of that name is the lazy wrapper, not the function, so pickle refuses it ("not the same
    object") and cloudpickle copies the function by value, lazy wrappers and all. So the function
    is also kept under a private module attribute, `_<name>_fn`, and named after it.
    """
    for obj in objects:
        fn = getattr(obj, "__wrapped__", None)  # set by functools.update_wrapper in flows.lazy
        module = sys.modules.get(getattr(fn, "__module__", ""))
        if fn is None or module is None or fn.__qualname__.startswith("_") or "." in fn.__qualname__:
            continue
        name: str = fn.__qualname__
        if getattr(module, name, None) is obj:
            alias = f"_{name}_fn"
            setattr(module, alias, fn)
            fn.__qualname__ = alias
