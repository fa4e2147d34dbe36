"""Which uncertain pseudo-labels go to annotators: pluggable selection strategies.

Every strategy sees the same candidates (one per unlabelled instance, with the model's uncertainty,
per-keypoint uncertainty and an embedding; where the round computed them also the pose prior's
implausibility, pipeline/active_learning/plausibility.py, and the expected correction effort,
pipeline/active_learning/correction_effort.py) and returns at most `budget` instance ids, most useful first.
`random` is the baseline every other strategy is measured against (bench/active_learning.py).
`typiclust` and `hybrid` also see the labelled set (the embeddings of what is labelled already):
TypiClust (Hacohen et al. 2022, "Active Learning on a Budget") covers the typical, dense parts of the
pool first, which is what pays while the labelled set is small; `hybrid` switches to uncertainty once
it is not. `STRATEGY_READS` says what each strategy reads of a candidate; whose uncertainty and
features those are is the round's choice (pipeline/active_learning/loop.py, `ranked_by`).

Frames of one video are not independent: whatever the strategy, `select` first keeps, of the
near-duplicates of one frame group (the same place in frames less than NEAR_SECONDS apart), only the
most uncertain one (`thin_near_duplicates`), so a batch is never a run of consecutive frames.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from schemas.keypoints import NUM_KEYPOINTS, SPINE_IDS


@dataclass(frozen=True)
class Candidate:
    """An unlabelled instance as the selector sees it."""

    instance_id: int
    uncertainty: float
    keypoint_uncertainty: np.ndarray  # (37,), higher = less sure
    embedding: np.ndarray  # (D,), for diversity: model features or a pose embedding
    keypoints: np.ndarray | None = None  # (37, 3) predicted, pixels (for the pose prior)
    bbox: tuple[float, ...] | None = None  # the person box [x, y, w, h]
    implausibility: float | None = None  # pose-prior negative log-likelihood (higher = less plausible)
    expected_effort: float | None = None  # expected keypoints a human will correct
    group: str | None = None  # the image's frame group (a video, a render sequence; a photo: itself)
    time_s: float | None = None  # the frame's time in its video (None: not a video frame)
    given: tuple[int, ...] = ()  # points a person placed (a completion): not in doubt, not to correct
    model: str | None = None  # whose proposal (uncertainty, features) this is: a model_version


Strategy = Callable[[Sequence[Candidate], int, np.random.Generator], list[int]]
#: A strategy that also sees the labelled set's embeddings (one (D,) vector per labelled instance).
LabelledStrategy = Callable[[Sequence[Candidate], int, np.random.Generator, Sequence[np.ndarray]], list[int]]

#: TypiClust's neighbourhood for typicality (the paper's k) and the cluster size below which a
#: cluster is taken last (the paper drops clusters of at most 5 as outliers; a small pool has many
#: small clusters, so here they are only ranked after the others).
TYPICALITY_NEIGHBOURS = 20
MIN_CLUSTER_SIZE = 5
#: `hybrid` ranks by TypiClust while fewer than this many instances are labelled, by uncertainty
#: from then on. TypiClust wins in the low-budget regime and loses to uncertainty past it (Hacohen
#: et al. 2022: the cross-over is a few labels per class). 30 is a chosen default, not a measured
#: one: with bench/active_learning.py's budgets (10, 10, 15, 15, 20) it runs TypiClust in the first
#: three rounds and uncertainty in the last two (earlier when auto-accepted labels add to the
#: labelled set), so the bench measures both phases.
HYBRID_SWITCH_AT = 30

#: Two candidates of one frame group are near-duplicates when their frames are at most this far
#: apart and their boxes overlap at least NEAR_IOU: the same person, in the same place, a moment later.
NEAR_SECONDS = 0.5
NEAR_IOU = 0.5


def pose_embedding(keypoints: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    """A translation- and scale-free pose vector: keypoints relative to the box centre / box size.

    Used for diversity when the model gives no features: two frames of the same pose land close.
    """
    kps = np.asarray(keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, -1)[:, :2]
    x, y, w, h = (float(v) for v in bbox)
    scale = max(w, h, 1e-6)
    centre = np.array([x + w / 2, y + h / 2])
    return ((kps - centre) / scale).ravel()


def select_random(cands: Sequence[Candidate], budget: int, rng: np.random.Generator) -> list[int]:
    """The baseline: a uniform sample of the pool."""
    order = rng.permutation(len(cands))[:budget]
    return [cands[i].instance_id for i in order]


def select_uncertain(cands: Sequence[Candidate], budget: int, rng: np.random.Generator) -> list[int]:
    """The `budget` most uncertain instances (ties broken at random)."""
    return _top(cands, np.array([c.uncertainty for c in cands]), budget, rng)


def select_spine(cands: Sequence[Candidate], budget: int, rng: np.random.Generator) -> list[int]:
    """Target the spine: rank by the mean uncertainty of the 9 spine keypoints."""
    spine = np.array([float(np.mean(c.keypoint_uncertainty[list(SPINE_IDS)])) for c in cands])
    return _top(cands, spine, budget, rng)


def select_uncertain_diverse(
    cands: Sequence[Candidate], budget: int, rng: np.random.Generator, pool_factor: int = 3
) -> list[int]:
    """Uncertainty, then diversity: k-center greedy over the `pool_factor * budget` most uncertain.

    The most uncertain instance starts the batch; each next pick maximises its distance (in
    embedding space) to everything picked so far times its uncertainty, so one batch does not hold
    50 near-identical frames of the same sequence, nor far-away frames the model is sure about.
    """
    return _kcenter(cands, np.array([c.uncertainty for c in cands]), budget, rng, pool_factor)


def select_implausible(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
                       pool_factor: int = 3) -> list[int]:
    """The least plausible poses under the synthetic pose prior (VL4Pose-like), k-center diverse.

    The prior's NLL is turned into a rank in [0, 1] within the pool and averaged with the
    uncertainty's rank: an implausible pose the model is also unsure of comes first, and a pose
    the prior cannot tell apart (all plausible) falls back to uncertainty. Candidates without a
    prior score (no synthetic labels yet) rank by uncertainty alone.
    """
    unc = _rank(np.array([c.uncertainty for c in cands]))
    nll = np.array([np.nan if c.implausibility is None else c.implausibility for c in cands], dtype=float)
    if np.isnan(nll).all():
        return _kcenter(cands, unc, budget, rng, pool_factor)
    finite = nll[np.isfinite(nll)]
    top = float(finite.max()) + 1.0 if finite.size else 1.0
    # no body frame (inf) ranks above everything; an unscored candidate ranks lowest
    filled = np.where(np.isnan(nll), -np.inf, np.where(np.isposinf(nll), top, nll))
    return _kcenter(cands, 0.5 * (_rank(filled) + unc), budget, rng, pool_factor)


def select_effort(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
                  pool_factor: int = 3) -> list[int]:
    """Pick what would save most clicks: the highest expected correction effort, k-center diverse.

    An instance where the annotator will move many keypoints is one the model gets badly wrong
    (the correction teaches it most) and one auto-accept must never take; diversity keeps a batch
    from being one hard sequence. Without effort estimates it is `diversity`.
    """
    effort = [c.expected_effort for c in cands]
    if any(e is None for e in effort):
        return select_uncertain_diverse(cands, budget, rng, pool_factor)
    return _kcenter(cands, np.array(effort, dtype=float), budget, rng, pool_factor)


def select_kcenter(cands: Sequence[Candidate], budget: int, rng: np.random.Generator) -> list[int]:
    """Pure k-center greedy coverage of the embedding space (no uncertainty): the diversity-only
    baseline, starting from a random instance."""
    if budget <= 0 or not cands:
        return []
    emb = np.stack([_unit(c.embedding) for c in cands])
    first = int(rng.integers(len(cands)))
    chosen = [first]
    nearest = np.linalg.norm(emb - emb[first], axis=1)
    while len(chosen) < min(budget, len(cands)):
        nxt = int(np.argmax(nearest + rng.random(len(cands)) * 1e-12))
        if nearest[nxt] <= 0:
            rest = [i for i in rng.permutation(len(cands)).tolist() if i not in chosen]
            chosen += rest[: budget - len(chosen)]
            break
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(emb - emb[nxt], axis=1))
    return [cands[i].instance_id for i in chosen]


def select_typiclust(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
                     labelled: Sequence[np.ndarray] = (), neighbours: int = TYPICALITY_NEIGHBOURS,
                     min_cluster_size: int = MIN_CLUSTER_SIZE) -> list[int]:
    """TypiClust (Hacohen et al. 2022): the most typical instance of each of the largest clusters
    that hold no labelled instance yet.

    Pool and labelled embeddings (unit length) are clustered by k-means into labelled + budget
    clusters; clusters are taken uncovered first, then largest first, cycling when the budget
    outlasts them, and those under `min_cluster_size` (outliers) only once the others are spent;
    from each the unpicked pool
    instance of highest typicality (1 / mean distance to its k nearest neighbours in the cluster,
    k = min(`neighbours`, half the cluster)). Dense, representative picks: what a model trained on
    few labels learns most from. Labelled embeddings of another dimension count only in the
    number of clusters (they cannot be placed).
    """
    if budget <= 0 or not cands:
        return []
    pool = np.stack([_unit(c.embedding) for c in cands])
    placed = [_unit(e) for e in labelled if np.asarray(e).size == pool.shape[1]]
    points = np.vstack([pool, *placed]) if placed else pool
    k = min(len(labelled) + budget, len(points))
    assign = kmeans(points, k, rng)
    pool_assign, covered = assign[: len(cands)], np.bincount(assign[len(cands):], minlength=k)
    sizes = np.bincount(assign, minlength=k)
    order = sorted(range(k), key=lambda c: (covered[c], -sizes[c], c))
    large = [c for c in order if sizes[c] >= min_cluster_size]
    small = [c for c in order if sizes[c] < min_cluster_size]
    taken = np.zeros(len(cands), dtype=bool)
    picks: list[int] = []
    for clusters in (large, small):  # small clusters (outliers) only once the large ones are spent
        while len(picks) < budget and _typical_pass(pool, pool_assign, clusters, taken, picks, budget,
                                                    neighbours):
            pass
    return [cands[i].instance_id for i in picks]


def _typical_pass(pool: np.ndarray, assign: np.ndarray, clusters: Sequence[int], taken: np.ndarray,
                  picks: list[int], budget: int, neighbours: int) -> bool:
    """One pick per cluster, in order: its most typical instance not taken yet (TypiClust's pass
    over the sorted clusters). False when no cluster had one left."""
    found = False
    for cluster in clusters:
        members = np.flatnonzero((assign == cluster) & ~taken)
        if members.size == 0 or len(picks) >= budget:
            continue
        best = int(members[np.argmax(typicality(pool[members], neighbours))])
        taken[best] = True
        picks.append(best)
        found = True
    return found


def select_hybrid(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
                  labelled: Sequence[np.ndarray] = (), switch_at: int = HYBRID_SWITCH_AT) -> list[int]:
    """TypiClust while fewer than `switch_at` instances are labelled, uncertainty from then on:
    typical picks teach a model that knows little, uncertain ones a model that knows the typical."""
    if len(labelled) < switch_at:
        return select_typiclust(cands, budget, rng, labelled)
    return select_uncertain(cands, budget, rng)


def typicality(points: np.ndarray, neighbours: int = TYPICALITY_NEIGHBOURS) -> np.ndarray:
    """1 / (mean distance to the k nearest other points + 1e-5), k = min(neighbours, n // 2),
    at least 1 (TypiClust's typicality: the inverse of a k-NN density radius); 1 for a lone point."""
    n = len(points)
    if n <= 1:
        return np.ones(n)
    k = max(1, min(neighbours, n // 2))
    dist = np.sqrt(_sq_dists(points, points))
    nearest = np.sort(dist, axis=1)[:, 1 : k + 1]  # column 0 is the point itself
    return 1.0 / (nearest.mean(axis=1) + 1e-5)


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 4,
           iters: int = 100) -> np.ndarray:
    """Cluster index of every point: Lloyd's k-means from k-means++ seeds, the best of
    `restarts` by inertia (numpy only, seeded by `rng`, so a round's selection is reproducible)."""
    best: tuple[float, np.ndarray] | None = None
    for _ in range(restarts):
        centres = _kmeans_pp(points, k, rng)
        assign = np.zeros(len(points), dtype=int)
        for step in range(iters):
            new = _sq_dists(points, centres).argmin(axis=1)
            if step and np.array_equal(new, assign):
                break
            assign = new
            for c in range(k):
                if (assign == c).any():
                    centres[c] = points[assign == c].mean(axis=0)
        inertia = float(((points - centres[assign]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, assign)
    assert best is not None
    return best[1]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) squared Euclidean distances without an (n, m, D) intermediate."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(sq, 0.0)


def _kmeans_pp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds: each next centre drawn with probability proportional to squared distance."""
    centres = [points[int(rng.integers(len(points)))]]
    nearest = ((points - centres[0]) ** 2).sum(-1)
    for _ in range(1, k):
        total = float(nearest.sum())
        idx = int(rng.choice(len(points), p=nearest / total)) if total > 0 else int(rng.integers(len(points)))
        centres.append(points[idx])
        nearest = np.minimum(nearest, ((points - points[idx]) ** 2).sum(-1))
    return np.array(centres, dtype=np.float64)


STRATEGIES: dict[str, Strategy] = {
    "random": select_random,
    "uncertainty": select_uncertain,
    "diversity": select_uncertain_diverse,
    "spine": select_spine,
    "kcenter": select_kcenter,
    "plausibility": select_implausible,
    "effort": select_effort,
    "typiclust": select_typiclust,
    "hybrid": select_hybrid,
}
#: The strategies that see the labelled set (`select(..., labelled=...)`).
WITH_LABELLED: dict[str, LabelledStrategy] = {"typiclust": select_typiclust, "hybrid": select_hybrid}
#: What each strategy reads of a candidate, so a round can say whose numbers ranked its pool:
#: `uncertainty` and `keypoint_uncertainty` (and the `expected_effort` built from them) are the
#: proposing model's (Candidate.model), `embedding` its pooled features (else a pose embedding),
#: `keypoints` its predicted pose, `labelled` the labelled set's embeddings.
STRATEGY_READS: dict[str, tuple[str, ...]] = {
    "random": (),
    "uncertainty": ("uncertainty",),
    "diversity": ("uncertainty", "embedding"),
    "spine": ("keypoint_uncertainty",),
    "kcenter": ("embedding",),
    "plausibility": ("uncertainty", "keypoints", "embedding"),
    "effort": ("expected_effort", "embedding"),
    "typiclust": ("embedding", "labelled"),
    "hybrid": ("embedding", "labelled", "uncertainty"),
}
#: The default: what wins on spine AP at equal budget in bench/active_learning.py (issue 13; no strategy
#: beat a uniform pick there, docs/active-learning.md "Measured savings"; tests/test_al_stats.py checks).
DEFAULT_STRATEGY = "random"


def select(cands: Sequence[Candidate], budget: int, strategy: str = DEFAULT_STRATEGY,
           seed: int = 0, labelled: Sequence[np.ndarray] = ()) -> list[int]:
    """Pick up to `budget` instance ids from `cands` with the named strategy; `labelled`: the
    embeddings of the instances labelled already (read by `WITH_LABELLED` strategies only)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    if budget <= 0 or not cands:
        return []
    kept, rng = thin_near_duplicates(cands), np.random.default_rng(seed)
    if strategy in WITH_LABELLED:
        return WITH_LABELLED[strategy](kept, budget, rng, labelled)
    return STRATEGIES[strategy](kept, budget, rng)


def thin_near_duplicates(cands: Sequence[Candidate], seconds: float = NEAR_SECONDS,
                         min_iou: float = NEAR_IOU) -> list[Candidate]:
    """The candidates less the near-duplicates of a more uncertain one (same group, frames at most
    `seconds` apart, boxes overlapping by `min_iou`), in their order. Candidates without a group,
    a frame time or a box are all kept: photos and renders are not thinned."""
    kept_times: dict[str, list[float]] = {}
    kept_at: dict[str, list[Candidate]] = {}
    dropped: set[int] = set()
    for i in sorted(range(len(cands)), key=lambda i: -cands[i].uncertainty):
        c = cands[i]
        if c.group is None or c.time_s is None or c.bbox is None:
            continue
        times, near = kept_times.setdefault(c.group, []), kept_at.setdefault(c.group, [])
        lo, hi = bisect.bisect_left(times, c.time_s - seconds), bisect.bisect_right(times, c.time_s + seconds)
        if any(_box_iou(c.bbox, k.bbox) >= min_iou for k in near[lo:hi] if k.bbox is not None):
            dropped.add(i)
            continue
        at = bisect.bisect_right(times, c.time_s)
        times.insert(at, c.time_s)
        near.insert(at, c)
    return [c for i, c in enumerate(cands) if i not in dropped]


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _kcenter(cands: Sequence[Candidate], scores: np.ndarray, budget: int, rng: np.random.Generator,
             pool_factor: int) -> list[int]:
    """k-center greedy over the `pool_factor * budget` highest-scoring candidates, each pick's
    distance to the batch weighted by its score; the top-scoring candidate starts the batch."""
    if budget <= 0 or not cands:
        return []
    pool_ids = _top_indices(scores, min(len(cands), pool_factor * budget), rng)
    emb = np.stack([_unit(cands[i].embedding) for i in pool_ids])
    weight = np.maximum(scores[pool_ids], 1e-6)
    chosen = [0]  # pool is sorted highest score first
    nearest = np.linalg.norm(emb - emb[0], axis=1)
    while len(chosen) < min(budget, len(pool_ids)):
        nxt = int(np.argmax(nearest * weight))
        if nearest[nxt] <= 0:
            # all remaining are duplicates of chosen ones: fall back to score order
            rest = [i for i in range(len(pool_ids)) if i not in chosen]
            chosen += rest[: budget - len(chosen)]
            break
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(emb - emb[nxt], axis=1))
    return [cands[pool_ids[i]].instance_id for i in chosen]


def _rank(values: np.ndarray) -> np.ndarray:
    """Average rank scaled to [0, 1] (ties share a rank); 0 for a single value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size <= 1:
        return np.zeros_like(v)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size)
    ranks[order] = np.arange(v.size, dtype=np.float64)
    for value in np.unique(v):
        tie = v == value
        ranks[tie] = ranks[tie].mean()
    return ranks / (v.size - 1)


def _top_indices(scores: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    jitter = rng.random(len(scores)) * 1e-9  # random tie-break, never reorders distinct scores
    return [int(i) for i in np.argsort(-(scores + jitter), kind="stable")[:k]]


def _top(cands: Sequence[Candidate], scores: np.ndarray, budget: int, rng: np.random.Generator) -> list[int]:
    return [cands[i].instance_id for i in _top_indices(scores, budget, rng)]
