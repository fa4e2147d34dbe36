"""Progress of long steps (ingest, train, pseudo-label, push, pull, release, FiftyOne load).

Pipeline, synthetic and annotation code report here; whoever runs them listens. The CLI installs a
listener that draws rich progress bars on a terminal; tests, benches and Prefect workers install
none and the calls cost next to nothing. This module imports nothing of the project, so any layer
may use it (pipeline never imports flows).

    for frame in progress.track(frames, "ingest frames"):   # an iterable of known length
        ...
    with progress.step("train", total=iters) as advance:   # anything else
        advance(1)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ProgressEvent:
    """One report: `done` of `total` units of `label` (total None: unknown); `finished` at the end."""

    key: int
    label: str
    done: int
    total: int | None
    finished: bool = False


Listener = Callable[[ProgressEvent], None]

_listener: Listener | None = None
_lock = threading.Lock()
_next_key = 0


def set_listener(listener: Listener | None) -> Listener | None:
    """Install `listener` (None: nobody listens); returns the one it replaces."""
    global _listener
    with _lock:
        previous, _listener = _listener, listener
    return previous


@contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Install `listener` for the duration of a block."""
    previous = set_listener(listener)
    try:
        yield
    finally:
        set_listener(previous)


def _emit(event: ProgressEvent) -> None:
    listener = _listener
    if listener is not None:
        listener(event)


@contextmanager
def step(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A long step: yields `advance(n)`; the listener hears each advance and the end."""
    global _next_key
    with _lock:
        _next_key += 1
        key = _next_key
    done = 0

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        _emit(ProgressEvent(key, label, done, total))

    _emit(ProgressEvent(key, label, 0, total))
    try:
        yield advance
    finally:
        _emit(ProgressEvent(key, label, done, total, finished=True))


def track(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items`, reporting one unit per item (total: len(items) when it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with step(label, total) as advance:
        for item in items:
            yield item
            advance(1)
