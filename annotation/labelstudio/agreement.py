"""Agreement between annotators of one task: COCO object keypoint similarity with the schema's sigmas.

A keypoint one annotator placed and the other did not counts as full disagreement on that point (0),
so "I cannot see it" vs "it is here" lowers agreement instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from pipeline.evaluate import oks_terms
from schemas.keypoint_array import KeypointArray

#: Pairs of annotations whose mean OKS is below this are sent to review.
DISAGREEMENT_BELOW = 0.8


def oks(a: Sequence[float], b: Sequence[float], area: float) -> float:
    """OKS of two 37 x (x, y, v) labels of one person; `area` is the person's box area in px^2."""
    pa, pb = KeypointArray.from_flat(a), KeypointArray.from_flat(b)
    either = pa.labelled | pb.labelled
    if not either.any():
        return 1.0
    terms = np.where(pa.labelled & pb.labelled, oks_terms(pa.xy, pb.xy, area=max(float(area), 1.0)), 0.0)
    return float(terms[either].mean())


def mean_pairwise_oks(labels: Sequence[Sequence[float]], area: float) -> float | None:
    """Mean OKS over all pairs of annotators; None with fewer than two."""
    pairs = list(combinations(labels, 2))
    if not pairs:
        return None
    return sum(oks(a, b, area) for a, b in pairs) / len(pairs)


def agreement_quality(
    labels: Sequence[Sequence[float]], area: float, below: float = DISAGREEMENT_BELOW
) -> dict[str, object]:
    """The `quality` entry stored on each human revision of a multiply-annotated task."""
    value = mean_pairwise_oks(labels, area)
    if value is None:
        return {}
    return {"agreement_oks": round(value, 6), "disagreement": value < below, "annotators": len(labels)}
