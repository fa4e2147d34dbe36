"""Which instances serve what: the training labels, the active-learning pool, the validation splits.

Groups (sequences, videos) are split once and for ever (`pipeline.splits`); on top of that:

- training labels: everything accepted in `train` groups (`training_labels`);
- the pool: unlabelled instances of `train` groups never sent to annotators, and those whose label
  a person left partial (an imported COCO person: no spine), to be completed (`pool_instances`);
- the validation splits: instances of `val` groups with ground truth, real and synthetic apart
  (`real_validation_instances`, `synthetic_validation_instances`), and the real `val` images still
  to be sent for labelling (`val_set_candidates`).

Ground truth is the store's answer (`Store.ground_truth`, `Store.reference_revisions`): this module
only says which instances to ask about. Used by the active-learning round, the teacher (its pool)
and the benchmarks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from pipeline.splits import assign_splits
from pipeline.store import Label, Store
from pipeline.store.models import Revision
from schemas.enums import EVALUATION_TRUTH_SOURCES, REAL_TRUTH_SOURCES, ImageSource

VALIDATION_KEY = "validation-set"
SYNTHETIC_VALIDATION_KEY = "validation-set:synthetic"


def _group_splits(store: Store) -> dict[str, str]:
    return assign_splits(store, store.group_keys())


def _val_groups(store: Store) -> set[str]:
    return {g for g, sp in _group_splits(store).items() if sp == "val"}


def _val_instances_with_truth(store: Store, image_source: str, sources: Sequence[str]) -> list[int]:
    found = store.reference_revisions(sources=sources, group_keys=_val_groups(store),
                                      image_source=image_source)
    return sorted({rev.instance_id for rev in found})


def synthetic_validation_instances(store: Store) -> list[int]:
    """Renders of `val` groups with ground truth: frozen in the store on first use."""
    frozen = store.sync_value(SYNTHETIC_VALIDATION_KEY)
    if frozen is not None:
        return [int(i) for i in frozen["instance_ids"]]
    ids = _val_instances_with_truth(store, ImageSource.SYNTHETIC, EVALUATION_TRUTH_SOURCES)
    store.set_sync_value(SYNTHETIC_VALIDATION_KEY, {"instance_ids": ids})
    return ids


def real_validation_instances(store: Store) -> list[int]:
    """Real images of `val` groups whose label a person made (Label Studio, review, an imported file).

    It grows as `val-set` tasks are answered; each round freezes the set it calibrates and
    evaluates on (round state `validation`), so a round's numbers never move under it.
    """
    return _val_instances_with_truth(store, ImageSource.REAL, REAL_TRUTH_SOURCES)


def validation_instances(store: Store) -> list[int]:
    """Every validation instance with ground truth, real and synthetic (legacy: frozen on first use)."""
    frozen = store.sync_value(VALIDATION_KEY)
    if frozen is not None:
        return [int(i) for i in frozen["instance_ids"]]
    ids = sorted(set(real_validation_instances(store)) | set(synthetic_validation_instances(store)))
    store.set_sync_value(VALIDATION_KEY, {"instance_ids": ids})
    return ids


def ground_truth(store: Store, instance_ids: Sequence[int]) -> dict[int, Revision]:
    """The reference label of each instance: its latest live accepted label, else its hidden import."""
    return store.ground_truth(instance_ids, sources=EVALUATION_TRUTH_SOURCES)


def training_labels(store: Store) -> list[Label]:
    """Everything accepted in `train` groups: synthetic, human (late ones included), auto-accepted."""
    labels = store.current_labels()
    splits = assign_splits(store, {lab.group_key for lab in labels})
    return [lab for lab in labels if splits[lab.group_key] == "train"]


def pool_instances(store: Store, image_source: str = "real") -> list[int]:
    """Unlabelled or partially person-labelled instances of `train` groups never sent to annotators."""
    pairs = store.unlabelled_instances(image_source=image_source, incomplete=True)
    splits = assign_splits(store, {img.group_key for img, _ in pairs})
    tasked = store.tasked_instance_ids()
    return [inst.id for img, inst in pairs if splits[img.group_key] == "train" and inst.id not in tasked]


def val_set_candidates(store: Store, size: int, seed: int = 0) -> list[int]:
    """Up to `size` real instances of `val` groups with no accepted label, never sent before.

    A seeded sample spread over groups (one per group first), so a few long videos cannot fill it.
    """
    if size <= 0:
        return []
    val_groups = _val_groups(store)
    tasked = store.tasked_instance_ids()
    pairs = [(img, inst) for img, inst in store.unlabelled_instances(image_source=ImageSource.REAL)
             if img.group_key in val_groups and inst.id not in tasked]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs)) if pairs else np.array([], dtype=int)
    seen: Counter[str] = Counter()
    ranked = []
    for idx in order:
        img, inst = pairs[int(idx)]
        ranked.append((seen[img.group_key], int(idx), inst.id))
        seen[img.group_key] += 1
    return [iid for _, _, iid in sorted(ranked)[:size]]
