"""A spine-from-body prior: the 9 spine points placed from body points alone.

A student trained on renders has never seen a real back; a body expert (BlazePose) sees real
bodies but has no spine. This prior closes the gap: fitted on synthetic labels (body and spine of
the same person under many cameras and poses), it maps body points to the spine chain, so
annotators of real photos get a plausible spine to correct instead of nothing.

Model: the input points (`INPUT_IDS`: nose, ears, shoulders, hips, knees) are normalised by the
body (origin at the mid-hip, unit = the mid-hip to mid-shoulder distance; no rotation, so the
camera's roll stays a feature), expanded to degree-2 polynomial features and mapped to the 9
normalised spine points by ridge regression. Small (a JSON of coefficients), deterministic, and
fitted in well under a second. Measured in bench/annotators.py on held-out renders from true and
noisy body points against the student's own spine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from schemas.keypoints import INDEX, NUM_KEYPOINTS, SPINE_CHAIN

if TYPE_CHECKING:
    from pipeline.store import Store

INPUT_IDS: tuple[int, ...] = tuple(INDEX[n] for n in (
    "nose", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_hip", "right_hip",
    "left_knee", "right_knee",
))
#: Points that must be present to normalise: shoulders and hips.
ANCHOR_IDS: tuple[int, ...] = tuple(
    INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
OUTPUT_IDS: tuple[int, ...] = SPINE_CHAIN
RIDGE = 1e-3
#: Confidence of a prior point: this times the mean confidence of the body points it came from.
PRIOR_CONFIDENCE = 0.6
MIN_FIT_INSTANCES = 50
DEFAULT_FILE = Path(__file__).with_name("data") / "spine_prior.json"
STORE_FILE = Path("models") / "spine-prior" / "spine_prior.json"


def normalise(points: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """(37, 2) -> (inputs normalised (len(INPUT_IDS), 2), origin (2,), unit length)."""
    hips = points[[INDEX["left_hip"], INDEX["right_hip"]]].mean(axis=0)
    shoulders = points[[INDEX["left_shoulder"], INDEX["right_shoulder"]]].mean(axis=0)
    unit = float(np.linalg.norm(shoulders - hips))
    unit = max(unit, 1e-6)
    return (points[list(INPUT_IDS)] - hips) / unit, hips, unit


def features(normalised: NDArray[np.float64]) -> NDArray[np.float64]:
    """Degree-2 polynomial features of the flattened normalised inputs (with a constant)."""
    f = normalised.reshape(-1)
    upper = np.triu_indices(len(f))
    return np.concatenate([[1.0], f, np.outer(f, f)[upper]])


def _usable(kps: NDArray[np.float64]) -> bool:
    needed = list(INPUT_IDS) + list(OUTPUT_IDS)
    if not (kps[needed, 2] > 0).all():
        return False
    _n, _o, unit = normalise(kps[:, :2])
    return unit > 2.0  # pixels: a torso this short is a degenerate view


@dataclass(frozen=True)
class SpinePrior:
    coefficients: NDArray[np.float64]  # (n_features, 18)
    count: int
    source: str
    residual: float  # training RMS error in body units

    @classmethod
    def fit(cls, keypoints: Iterable[ArrayLike], *, source: str, ridge: float = RIDGE) -> SpinePrior:
        """Fit from labelled instances ((37, 3) or flat triplets) with inputs and spine all labelled."""
        xs, ys = [], []
        for kp in keypoints:
            arr = np.asarray(kp, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
            if not _usable(arr):
                continue
            norm, origin, unit = normalise(arr[:, :2])
            xs.append(features(norm))
            ys.append(((arr[list(OUTPUT_IDS), :2] - origin) / unit).reshape(-1))
        if len(xs) < MIN_FIT_INSTANCES:
            raise ValueError(f"need at least {MIN_FIT_INSTANCES} instances with body and spine labelled, "
                             f"got {len(xs)}")
        x, y = np.stack(xs), np.stack(ys)
        reg = ridge * np.eye(x.shape[1])
        reg[0, 0] = 0.0  # the constant is not shrunk
        coef = np.asarray(np.linalg.solve(x.T @ x + reg * len(x), x.T @ y), dtype=np.float64)
        residual = float(np.sqrt(np.mean((x @ coef - y) ** 2)))
        return cls(coef, len(xs), source, residual)

    def predict(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """(37, 2) body points (image pixels) -> (9, 2) spine points in SPINE_CHAIN order."""
        norm, origin, unit = normalise(points)
        out = features(norm) @ self.coefficients
        return np.asarray(out.reshape(len(OUTPUT_IDS), 2) * unit + origin, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"input_ids": list(INPUT_IDS), "output_ids": list(OUTPUT_IDS), "count": self.count,
                "source": self.source, "residual": self.residual,
                "coefficients": np.round(self.coefficients, 7).tolist()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SpinePrior:
        data = json.loads(Path(path).read_text())
        if tuple(data["input_ids"]) != INPUT_IDS or tuple(data["output_ids"]) != OUTPUT_IDS:
            raise ValueError(f"{path}: spine prior for other keypoints ({data['input_ids']})")
        return cls(np.asarray(data["coefficients"], dtype=np.float64), int(data["count"]),
                   str(data["source"]), float(data["residual"]))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), separators=(",", ":")).encode()).hexdigest()


def fit_from_store(store: Store) -> SpinePrior | None:
    """Fit on the store's synthetic labels (saved under models/spine-prior); None if too few."""
    labels = store.current_labels(image_source="synthetic", revision_sources=("synthetic",))
    try:
        prior = SpinePrior.fit((lab.keypoints for lab in labels), source=f"store:{store.snapshot_id(labels)}")
    except ValueError:
        return None
    prior.save(store.home / STORE_FILE)
    return prior


def load_prior(store: Store | None = None) -> SpinePrior:
    """The store's own prior (fitted on its synthetic labels) when it has enough, else the one
    shipped with the package (fitted on reference renders by `synthetic.fit_spine_prior`)."""
    if store is not None:
        prior = fit_from_store(store)
        if prior is not None:
            return prior
    if not DEFAULT_FILE.is_file():
        raise FileNotFoundError(f"{DEFAULT_FILE}: shipped spine prior missing; run "
                                "`python -m synthetic.fit_spine_prior` to fit it")
    return SpinePrior.load(DEFAULT_FILE)


def prior_status(store: Store | None) -> dict[str, Any]:
    try:
        prior = load_prior(store)
    except (FileNotFoundError, ValueError) as exc:
        return {"available": False, "reason": str(exc)}
    return {"available": True, "name": "spine-prior", "sha256": prior.sha256, "fitted_on": prior.source,
            "instances": prior.count, "covers": ["spine (from body points)"]}


def render_keypoints(folders: Iterable[Path]) -> list[list[float]]:
    """Ground-truth keypoints of render folders (ground_truth.json)."""
    out: list[list[float]] = []
    for folder in folders:
        gt = json.loads((Path(folder) / "ground_truth.json").read_text())
        out.extend(ann["keypoints"] for ann in gt["annotations"])
    return out
