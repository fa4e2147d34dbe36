"""Grouped, stable train/val/test splits.

The unit of a split is a group (Image.group_key: one rendered sequence or one source video), so
near-identical frames never land on both sides of an evaluation. A group's split is written to the
store the first time it is seen (SplitAssignment) and never changes afterwards, so a later release
with more data keeps every old group where it was and the validation set stays comparable across
rounds. A new group's split comes from a hash of its key, so the same key gets the same split in
any store.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

from sqlalchemy import select

from pipeline.store import Store
from pipeline.store.models import SplitAssignment

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Fractions for exactly train/val/test, each in [0, 1], summing to 1."""
    if set(fractions) != set(SPLITS):
        raise ValueError(f"split fractions must name exactly {SPLITS}, got {sorted(fractions)}")
    values = {name: float(fractions[name]) for name in SPLITS}
    if any(not 0.0 <= v <= 1.0 for v in values.values()):
        raise ValueError(f"split fractions must lie in [0, 1], got {values}")
    if not math.isclose(sum(values.values()), 1.0, abs_tol=1e-9):
        raise ValueError(f"split fractions must sum to 1, got {sum(values.values())}")
    return values


def parse_fractions(text: str) -> dict[str, float]:
    """'80/10/10' or '0.8,0.1,0.1' (train, val, test) -> fractions."""
    parts = [p for p in text.replace("/", ",").split(",") if p.strip()]
    if len(parts) != 3:
        raise ValueError(f"expected three numbers train/val/test, got {text!r}")
    numbers = [float(p) for p in parts]
    total = sum(numbers)
    if total <= 0:
        raise ValueError(f"split fractions must be positive, got {text!r}")
    return check_fractions(dict(zip(SPLITS, (n / total for n in numbers), strict=True)))


def hash_split(group_key: str, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> str:
    """The split a new group gets: its key hashed to a point in [0, 1), cut by the fractions."""
    fractions = check_fractions(fractions)
    digest = hashlib.sha256(group_key.encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0**64
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if point < edge:
            return name
    return next(name for name in reversed(SPLITS) if fractions[name] > 0)


def assigned_splits(store: Store, group_keys: Iterable[str] | None = None) -> dict[str, str]:
    """Splits already fixed in the store (all of them, or those of `group_keys`)."""
    q = select(SplitAssignment.group_key, SplitAssignment.split)
    if group_keys is None:
        with store.session() as s:
            return dict(s.execute(q).tuples().all())
    return dict(store.rows_in(q, SplitAssignment.group_key, sorted(set(group_keys))))


def assign_splits(
    store: Store,
    group_keys: Iterable[str],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    *,
    pinned: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The split of every group in `group_keys`, fixing new groups' splits in the store.

    Groups that already have a split keep it, whatever `fractions` say now. `pinned` puts new
    groups into a chosen split (e.g. a hand-picked test set); pinning an already assigned group to
    another split is refused, since that would move its frames across an old evaluation boundary.
    """
    fractions = check_fractions(fractions)
    keys = sorted(set(group_keys))
    pinned = dict(pinned or {})
    for key, split in pinned.items():
        if split not in SPLITS:
            raise ValueError(f"group {key!r} pinned to unknown split {split!r}; expected one of {SPLITS}")
    existing = assigned_splits(store, keys + sorted(pinned))
    for key, split in pinned.items():
        if key in existing and existing[key] != split:
            raise ValueError(
                f"group {key!r} is already in split {existing[key]!r}; splits never change once assigned"
            )
    new = {k: pinned.get(k) or hash_split(k, fractions) for k in keys if k not in existing}
    if new:
        with store.session() as s:
            # another process may assign some meanwhile: its split is kept, ours skipped
            rows = [{"group_key": k, "split": v} for k, v in sorted(new.items())]
            store.insert_ignore(s, SplitAssignment, rows, ["group_key"])
        existing = assigned_splits(store, keys)
    return {k: existing[k] for k in keys}
