"""TypiClust and the hybrid on hand-made feature sets whose answer is known by hand.

Clusters sit on far-apart axes of the feature space (1.4 apart after unit scaling, against a
spread of 0.01), so k-means finds them from any seed. Each cluster is its centre plus points 0.01
from it along orthogonal directions, so the centre is its most typical point by a margin: its mean
distance to any k nearest neighbours is 0.01, another point's at least (0.01 + 0.0141) / 2 (k >= 2
for clusters of 4 or more).
Every property is checked for ten seeds, so none hangs on one seed's draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.active_learning.selection import (
    HYBRID_SWITCH_AT,
    STRATEGIES,
    WITH_LABELLED,
    Candidate,
    select,
    typicality,
)
from pipeline.store import Store
from schemas.keypoints import NUM_KEYPOINTS

AXES = 6  # cluster axes 0-3, the outlier's 4, the far labelled set's 5
SPREAD = 6  # dimensions of a cluster's own shape
DIMS = AXES + SPREAD
SEEDS = range(10)
#: A dense cluster's shape: the centre, then 0.1 along +-e_1, +-e_2, ... of its own dimensions
#: (against the axis length 10: 0.01 after unit scaling).
SHAPE = [(0, 0.0)] + [(d, sign * 0.1) for d in range(SPREAD) for sign in (1, -1)]


def _vector(axis: int, dim: int = 0, offset: float = 0.0) -> np.ndarray:
    v = np.zeros(DIMS)
    v[axis] = 10.0
    v[AXES + dim] = offset
    return v


def _cluster(first_id: int, axis: int, size: int, uncertainty: float = 0.1) -> list[Candidate]:
    """`size` candidates around axis `axis`; the first (its centre) has id `first_id`."""
    return [Candidate(first_id + n, uncertainty, np.zeros(NUM_KEYPOINTS), _vector(axis, *SHAPE[n]))
            for n in range(size)]


def _pool() -> list[Candidate]:
    """Three dense clusters: 12 around axis 0 (centre id 0), 9 around axis 1 (centre 100), 6
    around axis 2 (centre 200), and 5 around axis 3 (centre 300)."""
    return _cluster(0, 0, 12) + _cluster(100, 1, 9) + _cluster(200, 2, 6) + _cluster(300, 3, 5)


def test_typicality_is_highest_at_the_centre() -> None:
    points = np.array([_vector(0, *xy) for xy in SHAPE])
    t = typicality(points)
    assert int(np.argmax(t)) == 0
    assert t[0] > 1.15 * np.sort(t)[-2]  # a margin, not a tie broken by rounding


@pytest.mark.parametrize("seed", SEEDS)
def test_one_most_typical_pick_per_dense_cluster_largest_first(seed: int) -> None:
    assert select(_pool(), 4, "typiclust", seed=seed) == [0, 100, 200, 300]


@pytest.mark.parametrize("seed", SEEDS)
def test_uncovered_clusters_come_first(seed: int) -> None:
    # one labelled instance in the largest cluster (axis 0): it is covered, the others go first
    labelled = [_vector(0, 5, 0.05)]
    assert select(_pool(), 3, "typiclust", seed=seed, labelled=labelled) == [100, 200, 300]
    # covering two clusters leaves the other two first, then the covered ones, largest first
    labelled = [_vector(0, 5, 0.05), _vector(1, 5, 0.05)]
    assert select(_pool(), 2, "typiclust", seed=seed, labelled=labelled) == [200, 300]


def test_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(7)
    cands = [Candidate(i, 0.5, np.zeros(NUM_KEYPOINTS), rng.normal(size=DIMS)) for i in range(60)]
    for seed in SEEDS:
        first = select(cands, 8, "typiclust", seed=seed)
        assert select(cands, 8, "typiclust", seed=seed) == first
        assert len(first) == 8 == len(set(first))


def _with_outlier() -> list[Candidate]:
    """The pool plus one far, very uncertain instance (id 999) that typicality never prefers."""
    outlier = Candidate(999, 0.99, np.zeros(NUM_KEYPOINTS), _vector(4))
    return [*_pool(), outlier]


@pytest.mark.parametrize("seed", SEEDS)
def test_hybrid_switches_to_uncertainty_at_the_threshold(seed: int) -> None:
    far = [_vector(5)] * (HYBRID_SWITCH_AT - 1)  # labelled elsewhere: no cluster of the pool
    before = select(_with_outlier(), 2, "hybrid", seed=seed, labelled=far)
    assert before == select(_with_outlier(), 2, "typiclust", seed=seed, labelled=far)
    assert before[0] != 999  # the lone outlier is a cluster of one: after every larger cluster
    after = select(_with_outlier(), 2, "hybrid", seed=seed, labelled=[*far, _vector(5)])
    assert after == select(_with_outlier(), 2, "uncertainty", seed=seed)
    assert after[0] == 999


@pytest.mark.parametrize("strategy", sorted(WITH_LABELLED))
def test_budget_pool_and_near_duplicates_are_respected(strategy: str) -> None:
    pool = _pool()
    for budget in (1, 5, len(pool) + 10):
        picked = select(pool, budget, strategy, seed=1)
        assert len(picked) == min(budget, len(pool)) == len(set(picked))
        assert set(picked) <= {c.instance_id for c in pool}
    assert select(pool, 0, strategy) == [] and select([], 3, strategy) == []
    # the centre of the largest cluster is a near-duplicate frame of a more uncertain one: thinned
    # before any strategy runs, so neither TypiClust nor the hybrid can pick it
    box = (0.0, 0.0, 10.0, 10.0)
    frames = [Candidate(c.instance_id, c.uncertainty, c.keypoint_uncertainty, c.embedding, bbox=box,
                        group="video", time_s=0.1 * n) if c.instance_id in (0, 1) else c
              for n, c in enumerate(pool)]
    frames[1] = Candidate(1, 0.9, frames[1].keypoint_uncertainty, frames[1].embedding, bbox=box,
                          group="video", time_s=0.1)
    picked = select(frames, 4, strategy, seed=1)
    assert 0 not in picked and len(picked) == 4


@pytest.mark.parametrize("seed", SEEDS)
def test_outliers_wait_until_the_dense_clusters_are_spent(seed: int) -> None:
    # 4 clusters for 5 groups: the outlier is a cluster of one (taken last), or merged into a
    # small cluster (6 or 5 + 1: which of the two is then larger is the draw's); either way the
    # dense clusters give their most typical instances, the largest first
    picked = select(_with_outlier(), 4, "typiclust", seed=seed)
    assert picked[:2] == [0, 100] and sorted(picked) == [0, 100, 200, 300]


def test_both_are_registered_strategies() -> None:
    assert set(WITH_LABELLED) <= set(STRATEGIES)
    # without a labelled set they still run (the round passes one; other callers need not)
    assert STRATEGIES["typiclust"](_pool(), 4, np.random.default_rng(0)) == [0, 100, 200, 300]


def test_the_round_places_labelled_instances_and_names_whose_numbers_it_read(store: Store,
                                                                               tmp_path: Path) -> None:
    from pipeline.active_learning.loop import (
        STUDENT,
        RoundContext,
        RoundSettings,
        candidates,
        labelled_embeddings,
        ranked_by,
    )
    from pipeline.splits import assign_splits

    ids = []
    for n in range(2):
        image = tmp_path / f"{n}.png"
        image.write_bytes(f"image {n}".encode())
        img = store.add_image(image, source="real", subset="photos", group_key=f"g{n}", width=100, height=100)
        ids.append(store.instance_id(img, "person", meta={"bbox": [10.0, 10.0, 50.0, 80.0]}))
    assign_splits(store, ["g0", "g1"], pinned={"g0": "train", "g1": "train"})
    kps, box = [50.0, 50.0, 2.0] * NUM_KEYPOINTS, [10.0, 10.0, 50.0, 80.0]
    for iid, feats in zip(ids, ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), strict=True):
        store.add_revision(iid, kps, box, source="pseudo", accepted=False, model_version="student-1",
                           uncertainty=0.5, quality={"features": feats})
    store.add_revision(ids[0], kps, box, source="human", accepted=True, external_id="ls:1:v1")
    # the labelled person sits where its proposal's features put it; the other is the pool
    placed = labelled_embeddings(store, "real")
    assert len(placed) == 1 and np.allclose(placed[0], [1.0, 0.0, 0.0])
    (cand,) = candidates(store, "student-1", [ids[1]])
    assert cand.model == "student-1" and np.allclose(cand.embedding, [0.0, 1.0, 0.0])
    # the round records whose numbers its strategy read
    ctx = RoundContext(store, RoundSettings(strategy="hybrid", annotator=STUDENT), 1, push=print, pull=print,
                       state={"start_model": "student-1"})
    record = ranked_by(ctx, "student-1", len(placed))
    assert record["is_student"] and record["model"] == "student-1" and record["labelled"] == 1
    assert record["reads"] == ["embedding", "labelled", "uncertainty"]
    assert not ranked_by(ctx, "combined(blazepose+model:student-1)@abc", 1)["is_student"]
