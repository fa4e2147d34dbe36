"""Who placed each of a label's 37 points: a person, a render, a model.

A revision may mix sources: an imported COCO person carries the 17 body points a person placed and
nothing else; pseudo-labelling completes it with model points around the person's own. So a
revision can say, point by point, where each came from (`Revision.point_sources`): the words are
`RevisionSource` values (`human`, `synthetic`, `pseudo`, `pseudo-accepted`, ...) and `NONE` ("")
for a point nobody placed. A revision without that list (every one written before it existed, and
every single-source one) has one source: its own, for every point.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.enums import RevisionSource
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS

#: A point nobody placed (no position: the label leaves it to be completed).
NONE = ""
#: The words a point source may be.
WORDS: frozenset[str] = frozenset({NONE, *RevisionSource})


def checked(point_sources: Sequence[str] | None, where: str = "point_sources") -> list[str] | None:
    """`point_sources` as a list of 37 known words (None stays None); InputError otherwise."""
    if point_sources is None:
        return None
    values = [str(v) for v in point_sources]
    if len(values) != NUM_KEYPOINTS:
        raise InputError(where, f"expected {NUM_KEYPOINTS} point sources, got {len(values)}",
                         field="point_sources")
    unknown = sorted(set(values) - WORDS)
    if unknown:
        raise InputError(where, f"unknown point source {unknown[0]!r}", field="point_sources")
    return values


def resolved(point_sources: Sequence[str] | None, source: str) -> list[str]:
    """The source of each point: the stored list, else the revision's own source for all 37."""
    return list(point_sources) if point_sources is not None else [str(source)] * NUM_KEYPOINTS


def human_mask(point_sources: Sequence[str] | None, source: str) -> list[bool]:
    """Which points a person placed."""
    return [s == RevisionSource.HUMAN for s in resolved(point_sources, source)]


def placed_by_people(point_sources: Sequence[str] | None) -> list[int]:
    """The points a revision says a person placed (none when it names no point's source)."""
    return [i for i, word in enumerate(point_sources or ()) if word == RevisionSource.HUMAN]


def as_accepted(point_sources: Sequence[str] | None) -> list[str] | None:
    """The list of an accepted copy of a proposal: its model points become `pseudo-accepted`."""
    if point_sources is None:
        return None
    return [RevisionSource.PSEUDO_ACCEPTED if s == RevisionSource.PSEUDO else s for s in point_sources]


def labelled_counts(point_sources: Sequence[str] | None, source: str,
                    flags: Sequence[float]) -> dict[str, int]:
    """{source: labelled points (v > 0)} of one label."""
    out: dict[str, int] = {}
    for word, flag in zip(resolved(point_sources, source), flags, strict=True):
        if flag > 0:
            out[word] = out.get(word, 0) + 1
    return out
