"""Fit the shipped spine prior (`pipeline.annotators.spine_prior`) on reference renders.

    python -m synthetic.fit_spine_prior [RENDER_DIR]   # renders kept in RENDER_DIR, else a temp dir

The prior itself is pipeline code (it maps body points to the spine); rendering its training data
is synthetic's, so the fit lives here, above both.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from pipeline.annotators.spine_prior import DEFAULT_FILE, SpinePrior, render_keypoints
from synthetic.sample_set import SequenceSpec, render_set

#: The reference renders the shipped prior is fitted on (motion, seed, frames): every motion, seeds
#: the demo, the tests and the benchmark hold out never use.
DEFAULT_RENDERS = [
    (m, 500 + i, 60) for i, m in enumerate(("bend", "twist", "walk", "squat", "reach", "mixed"))
]


def fit_default_prior(root: str | Path, out: str | Path = DEFAULT_FILE) -> SpinePrior:
    """Render DEFAULT_RENDERS under `root` with the reference renderer and fit the shipped prior."""
    folders = render_set(root, [SequenceSpec(m, s, n) for m, s, n in DEFAULT_RENDERS])
    prior = SpinePrior.fit(render_keypoints(folders), source="reference-renders:" + ",".join(
        f"{m}-seed{s}" for m, s, _ in DEFAULT_RENDERS))
    prior.save(out)
    return prior


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    with tempfile.TemporaryDirectory() as tmp:
        fitted = fit_default_prior(sys.argv[1] if len(sys.argv) > 1 else tmp)
    print(f"fitted on {fitted.count} instances, residual {fitted.residual:.4f} body units -> {DEFAULT_FILE}")
