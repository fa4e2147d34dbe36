"""The cyclic garbage collector paused around bulk work.

Reading 60,000 labels, building their COCO entries or FiftyOne documents makes millions of small
lists and dicts, none of them cyclic garbage; the collector, triggered again and again by the
allocations, walks every live object each time: half of a release's label read, half of a
FiftyOne load. Paused, the same work runs at its own cost; it resumes (and collects) after.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block (nesting is fine: the outermost one resumes it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
