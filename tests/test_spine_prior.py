"""The spine-from-body prior on held-out renders: from true body points and from noisy ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.annotators.spine_prior import DEFAULT_FILE, OUTPUT_IDS, SpinePrior, normalise, render_keypoints
from schemas.keypoints import NUM_KEYPOINTS


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    from synthetic.sample_set import SequenceSpec, render_set

    folders = render_set(tmp_path_factory.mktemp("prior"), [SequenceSpec("mixed", 22, 20),
                                                           SequenceSpec("reach", 21, 20)])
    kps = [np.asarray(k, dtype=np.float64).reshape(NUM_KEYPOINTS, 3) for k in render_keypoints(folders)]
    return [k for k in kps if (k[list(OUTPUT_IDS), 2] > 0).all() and (k[[5, 6, 11, 12], 2] > 0).all()]


def _error(prior: SpinePrior, kps: list[np.ndarray], noise: float, seed: int = 0) -> float:
    """Mean spine error in body units (mid-hip to mid-shoulder), body points with `noise` x unit."""
    rng = np.random.default_rng(seed)
    errors = []
    for k in kps:
        _n, _o, unit = normalise(k[:, :2])
        body = k[:, :2] + rng.normal(0, noise * unit, size=(NUM_KEYPOINTS, 2))
        pred = prior.predict(body)
        errors.append(np.linalg.norm(pred - k[list(OUTPUT_IDS), :2], axis=1).mean() / unit)
    return float(np.mean(errors))


def test_shipped_prior_places_the_spine_on_held_out_renders(held_out: list[np.ndarray]) -> None:
    prior = SpinePrior.load(DEFAULT_FILE)
    assert len(held_out) >= 20 and prior.count >= 300
    exact = _error(prior, held_out, 0.0)
    noisy = _error(prior, held_out, 0.05)
    # a constant spine (the mean normalised chain) as the no-information baseline
    mean = SpinePrior(np.zeros_like(prior.coefficients), 0, "mean", 0.0)
    baseline = _error(mean, held_out, 0.0)
    assert exact < 0.1 and noisy < 0.25, (exact, noisy)
    assert exact < 0.5 * baseline


def test_fit_needs_enough_labelled_instances() -> None:
    with pytest.raises(ValueError, match="at least"):
        SpinePrior.fit([np.zeros(NUM_KEYPOINTS * 3)], source="none")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    prior = SpinePrior.load(DEFAULT_FILE)
    again = SpinePrior.load(prior.save(tmp_path / "p.json"))
    assert again.sha256 == prior.sha256
