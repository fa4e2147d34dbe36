"""How plausible a predicted pose is as a human body: a density over spine-chain geometry (VL4Pose-like).

A pose model that has never seen a real back often predicts a spine that no person has: a chain
folded onto itself, a neck below the shoulders, a lumbar curve twice as long as the thorax. The
synthetic subset knows what spines look like (every render carries an OpenSim-fitted skeleton), so
we learn that once and score every prediction against it: low likelihood = implausible = worth a
human look, whatever the model's own confidence says.

Features (`pose_features`), in the body's own frame so that position, scale and in-plane rotation
do not matter: origin at the sacrum (`hip`, 19), unit length and "up" from the sacrum to C7
(`neck`, 18); in that frame the 2D positions of the lumbar/thoracic/cervical points, the head and
the shoulders and hips, plus log(torso length / sqrt(box area)). The density is a Gaussian mixture
(EM in numpy, covariances shrunk towards their diagonal because the synthetic set is small),
fitted on the synthetic labels and on their mirror images (a mirrored person is a person).

Scores: `nll` (negative log-likelihood, for ranking: unbounded, so poses less plausible than any
render still rank among themselves), `implausibility` in [0, 1] (the share of synthetic labels that
are more plausible: a number that means the same in every round), and a per-keypoint part (how far
each point sits from where the best mixture component expects it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from schemas.keypoint_array import keypoint_rows
from schemas.keypoints import FLIP_PAIRS, INDEX, NUM_KEYPOINTS

Array = NDArray[np.float64]

ORIGIN = INDEX["hip"]  # sacrum
AXIS = INDEX["neck"]  # C7
#: Points whose position in the body frame is a feature (origin and axis end are fixed by the frame).
FEATURE_POINTS: tuple[int, ...] = tuple(INDEX[n] for n in (
    "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck_02", "neck_03", "head",
    "left_shoulder", "right_shoulder", "left_hip", "right_hip",
))
#: Points that must be labelled for a label to be used in fitting.
REQUIRED_POINTS: tuple[int, ...] = (ORIGIN, AXIS, *FEATURE_POINTS)
NUM_FEATURES = 2 * len(FEATURE_POINTS) + 1
#: A torso shorter than this share of the box scale is a collapsed skeleton: no frame to measure in.
MIN_TORSO = 1e-3
#: The spread every feature is given at least (torso lengths, and log-scale units for the size
#: feature): how precisely any label can place a point. Renders of one rigid pelvis vary by less,
#: and without a floor a 1-px offset there would count as wildly implausible.
FEATURE_FLOOR = 0.05
STATS_FILE = Path("stats") / "pose_prior.json"


def _box_scale(bbox: ArrayLike) -> float:
    _x, _y, w, h = (float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(4))
    return math.sqrt(max(w * h, 1e-12))


def pose_features(keypoints: ArrayLike, bbox: ArrayLike) -> Array | None:
    """The body-frame feature vector of one pose ((37, 2|3) or flat triplets, pixels), or None
    when the sacrum and C7 coincide (no frame)."""
    pts = keypoint_rows(keypoints)[:, :2]
    axis = pts[AXIS] - pts[ORIGIN]
    length = float(np.linalg.norm(axis))
    scale = _box_scale(bbox)
    if length <= MIN_TORSO * scale:
        return None
    up = axis / length
    right = np.array([up[1], -up[0]])  # perpendicular, fixed handedness
    rel = (pts[list(FEATURE_POINTS)] - pts[ORIGIN]) / length
    local = np.stack([rel @ right, rel @ up], axis=1)
    return np.concatenate([local.ravel(), [math.log(length / scale)]])


def mirrored(keypoints: ArrayLike) -> Array:
    """The pose of the mirrored person: x negated, left and right swapped (a plausible pose too)."""
    pts = keypoint_rows(keypoints).copy()
    pts[:, 0] = -pts[:, 0]
    for a, b in FLIP_PAIRS:
        pts[[a, b]] = pts[[b, a]]
    return pts


def _labelled(keypoints: ArrayLike) -> bool:
    pts = keypoint_rows(keypoints)
    return pts.shape[1] < 3 or bool((pts[list(REQUIRED_POINTS), 2] > 0).all())


# -- the Gaussian mixture -------------------------------------------------------------------------------
def _log_gauss(x: Array, mean: Array, cov: Array) -> Array:
    """log N(x | mean, cov) for each row of x."""
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (x - mean).T)
    maha = (z**2).sum(axis=0)
    logdet = 2.0 * float(np.log(np.diag(chol)).sum())
    return -0.5 * (maha + logdet + x.shape[1] * math.log(2 * math.pi))


def _shrunk(cov: Array, shrinkage: float, reg: float | Array) -> Array:
    diag = np.diag(np.diag(cov))
    return (1.0 - shrinkage) * cov + shrinkage * diag + np.diag(np.broadcast_to(reg, (len(cov),)))


def _component_logs(x: Array, weights: Array, means: Array, covs: Array) -> Array:
    return np.stack([math.log(w) + _log_gauss(x, m, c) for w, m, c in zip(weights, means, covs, strict=True)],
                    axis=1)


def _logsumexp(a: Array) -> Array:
    top = a.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=1, keepdims=True))).ravel()


def fit_mixture(x: Array, components: int, *, seed: int = 0, iters: int = 100, shrinkage: float = 0.3,
                reg: float | Array = 1e-3, tol: float = 1e-4) -> tuple[Array, Array, Array]:
    """EM for a Gaussian mixture on standardised rows of `x`; k-means++-style start, seeded.
    `reg` (a number or one per column) is added to every covariance's diagonal."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    k = max(1, min(components, n))
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(axis=1) for c in centres], axis=0)
        centres.append(x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)])
    means = np.stack(centres)
    start_cov = np.asarray(np.cov(x.T, bias=True), dtype=np.float64).reshape(d, d)
    covs = np.stack([_shrunk(start_cov, shrinkage, reg)] * k)
    weights = np.full(k, 1.0 / k)
    previous = -np.inf
    for _ in range(iters):
        logs = _component_logs(x, weights, means, covs)
        total = _logsumexp(logs)
        resp = np.exp(logs - total[:, None])
        mass = resp.sum(axis=0) + 1e-12
        weights = np.maximum(mass / n, 1e-6)
        weights /= weights.sum()
        means = (resp.T @ x) / mass[:, None]
        covs = np.stack([
            _shrunk(((resp[:, j, None] * (x - means[j])).T @ (x - means[j])) / mass[j], shrinkage, reg)
            for j in range(k)
        ])
        mean_ll = float(total.mean())
        if mean_ll - previous < tol:
            break
        previous = mean_ll
    return weights, means, covs


@dataclass(frozen=True)
class Plausibility:
    """One pose scored against the prior."""

    nll: float  # negative log-likelihood (standardised feature space); inf without a body frame
    implausibility: float  # share of synthetic labels that are more plausible, in [0, 1]
    per_keypoint: Array = field(repr=False)  # (37,) in [0, 1]; 1 = far from where it should be


@dataclass(frozen=True)
class PosePrior:
    """A Gaussian mixture over body-frame spine geometry, fitted on synthetic labels; JSON-saveable."""

    feature_mean: list[float]
    feature_std: list[float]
    weights: list[float]
    means: list[list[float]]
    covariances: list[list[list[float]]]
    nll_quantiles: list[float]  # 101 quantiles of the training NLL (0 %, 1 %, ... 100 %)
    count: int

    @classmethod
    def fit(cls, labels: Iterable[tuple[ArrayLike, ArrayLike]], *, components: int = 3, seed: int = 0,
            mirror: bool = True, folds: int = 3) -> PosePrior:
        """Fit from (keypoints, bbox) pairs; labels missing a required point are skipped.

        The number of components is capped so each has at least 5 samples per feature dimension
        (fewer would fit noise); with very few labels that is one Gaussian. `implausibility` is
        calibrated on held-out poses: the labels (in the order given, so folds follow sequences)
        are cut into `folds` contiguous parts, each scored by a prior fitted on the others, so a
        pose as plausible as an unseen render scores about uniform in [0, 1], not 1.
        """
        rows = []
        for kps, bbox in labels:
            if not _labelled(kps):
                continue
            poses = [keypoint_rows(kps), mirrored(kps)] if mirror else [keypoint_rows(kps)]
            for pose in poses:
                f = pose_features(pose, bbox)
                if f is not None:
                    rows.append(f)
        if len(rows) < NUM_FEATURES + 2:
            raise ValueError(f"need at least {NUM_FEATURES + 2} poses with every spine point labelled, "
                             f"got {len(rows)}")
        x = np.stack(rows)
        step = 2 if mirror else 1  # a pose and its mirror image stay in one fold
        parts = np.array_split(np.arange(len(x) // step), max(1, folds)) if folds > 1 else []
        held_out: list[Array] = []
        for part in parts:
            test = np.concatenate([part * step + i for i in range(step)])
            train = np.setdiff1d(np.arange(len(x)), test)
            if len(train) >= NUM_FEATURES + 2 and len(test):
                held_out.append(cls._fit_rows(x[train], components, seed).nll(x[test]))
        prior = cls._fit_rows(x, components, seed)
        nll = np.concatenate(held_out) if held_out else prior.nll(x)
        return replace(prior, nll_quantiles=np.quantile(nll, np.linspace(0, 1, 101)).tolist())

    @classmethod
    def _fit_rows(cls, x: Array, components: int, seed: int) -> PosePrior:
        # scale by sqrt(std^2 + floor^2) and add floor^2 (in those units) to every covariance: no
        # feature is ever trusted to vary by less than FEATURE_FLOOR
        mean, std = x.mean(axis=0), np.sqrt(x.std(axis=0) ** 2 + FEATURE_FLOOR**2)
        z = (x - mean) / std
        k = max(1, min(components, len(z) // (5 * NUM_FEATURES)))
        weights, means, covs = fit_mixture(z, k, seed=seed, reg=(FEATURE_FLOOR / std) ** 2)
        nll = -_logsumexp(_component_logs(z, weights, means, covs))
        return cls(mean.tolist(), std.tolist(), weights.tolist(), means.tolist(), covs.tolist(),
                   np.quantile(nll, np.linspace(0, 1, 101)).tolist(), len(x))

    def _arrays(self) -> tuple[Array, Array, Array, Array, Array]:
        return (np.asarray(self.feature_mean), np.asarray(self.feature_std), np.asarray(self.weights),
                np.asarray(self.means), np.asarray(self.covariances))

    def nll(self, features: Array) -> Array:
        """Negative log-likelihood of feature rows (raw, unstandardised)."""
        mean, std, weights, means, covs = self._arrays()
        z = (np.atleast_2d(features) - mean) / std
        return -_logsumexp(_component_logs(z, weights, means, covs))

    def implausibility_of(self, nll: float) -> float:
        """The share of training poses with a lower NLL (linear between the stored quantiles)."""
        if not math.isfinite(nll):
            return 1.0
        q = np.asarray(self.nll_quantiles)
        return float(np.interp(nll, q, np.linspace(0.0, 1.0, len(q)), left=0.0, right=1.0))

    def score(self, keypoints: ArrayLike, bbox: ArrayLike) -> Plausibility:
        """Score one pose (pixels); a pose without a body frame is fully implausible."""
        f = pose_features(keypoints, bbox)
        per_kp = np.zeros(NUM_KEYPOINTS)
        if f is None:
            per_kp[list(REQUIRED_POINTS)] = 1.0
            return Plausibility(math.inf, 1.0, per_kp)
        value = float(self.nll(f)[0])
        mean, std, weights, means, covs = self._arrays()
        z = (f - mean) / std
        best = int(np.argmax(_component_logs(z[None, :], weights, means, covs)[0]))
        # per point: chi-square(2) CDF of its two coordinates' squared z under the best component
        z2 = (z - means[best]) ** 2 / np.diag(covs[best])
        point_z2 = z2[:-1].reshape(len(FEATURE_POINTS), 2).sum(axis=1)
        per_point = 1.0 - np.exp(-point_z2 / 2.0)
        per_kp[list(FEATURE_POINTS)] = per_point
        frame = 1.0 - math.exp(-float(z2[-1]) / 2.0)  # torso length: the frame's own points
        per_kp[[ORIGIN, AXIS]] = max(frame, float(per_point.mean()))
        return Plausibility(value, self.implausibility_of(value), per_kp)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PosePrior:
        data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**data)


def fit_store_prior(store: Any, *, min_instances: int = 20, components: int = 3) -> PosePrior | None:
    """The prior fitted on the store's synthetic `train` labels, saved under $SPINETRACK_HOME/stats; the saved
    file is used when the store now holds too few synthetic labels; None when there is neither."""
    from pipeline.splits import assign_splits

    path = Path(store.home) / STATS_FILE
    labels = store.current_labels(image_source="synthetic", revision_sources=("synthetic",))
    splits = assign_splits(store, {lab.group_key for lab in labels})  # never fit on `val`/`test` renders
    usable = [(lab.keypoints, lab.bbox) for lab in labels
              if splits.get(lab.group_key) == "train" and _labelled(lab.keypoints)]
    if len(usable) >= min_instances:
        try:
            prior = PosePrior.fit(usable, components=components)
        except ValueError:
            prior = None
        if prior is not None:
            prior.save(path)
            return prior
    return PosePrior.load(path) if path.is_file() else None


def score_many(prior: PosePrior, poses: Sequence[tuple[ArrayLike, ArrayLike]]) -> list[Plausibility]:
    return [prior.score(k, b) for k, b in poses]
