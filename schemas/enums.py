"""The project's vocabulary: every string that is stored or compared across modules, as one enum each.

They are `StrEnum`s, so a member equals the string stored in the database (``RevisionSource.HUMAN ==
"human"``): rows written before these enums existed read back unchanged, and SQL filters take members.
"""

from __future__ import annotations

from enum import StrEnum


class ImageSource(StrEnum):
    """Where an image comes from."""

    SYNTHETIC = "synthetic"  # a render (Unreal or the reference renderer)
    REAL = "real"  # a photograph


class RevisionSource(StrEnum):
    """Who produced a revision (one label proposal for one person)."""

    SYNTHETIC = "synthetic"  # render + OpenSim fit
    IMPORT = "import"  # ground truth from an input COCO file (kept hidden: not accepted)
    PSEUDO = "pseudo"  # a model / neural annotator proposal
    PSEUDO_ACCEPTED = "pseudo-accepted"  # a confident proposal accepted under the calibrated threshold
    HUMAN = "human"  # an annotator in Label Studio
    REVIEW = "review"  # a reviewer's decision in FiftyOne (accept / needs-fix)


#: Sources whose revisions a person made.
HUMAN_SOURCES: tuple[RevisionSource, ...] = (RevisionSource.HUMAN, RevisionSource.REVIEW)
#: Sources a model made.
PREDICTION_SOURCES: tuple[RevisionSource, ...] = (RevisionSource.PSEUDO, RevisionSource.PSEUDO_ACCEPTED)
#: Sources that are ground truth for *evaluation* (validation, benchmarks): what a person or a render says.
EVALUATION_TRUTH_SOURCES: tuple[RevisionSource, ...] = (
    RevisionSource.SYNTHETIC, RevisionSource.IMPORT, RevisionSource.HUMAN, RevisionSource.REVIEW,
)
#: What a person says about a real image: the real validation split's reference labels.
REAL_TRUTH_SOURCES: tuple[RevisionSource, ...] = (
    RevisionSource.IMPORT, RevisionSource.HUMAN, RevisionSource.REVIEW,
)
#: Sources that are hidden truth for *simulation* (the simulated annotator reads them; never training).
HIDDEN_TRUTH_SOURCES: tuple[RevisionSource, ...] = (RevisionSource.IMPORT, RevisionSource.SYNTHETIC)


class RevisionStatus(StrEnum):
    """The state a revision was written in (revisions are append-only; a later one supersedes)."""

    OK = "ok"
    SKIPPED = "skipped"  # the annotator skipped the task
    CANCELLED = "cancelled"
    FLAGGED = "flagged"  # e.g. an IK residual above the threshold
    SUPERSEDED_BY_HUMAN = "superseded-by-human"  # a model output written after a person's label
    REVOKED = "revoked"  # the annotation was deleted or rejected in Label Studio


class RoundStep(StrEnum):
    """The steps of an active-learning round, in order."""

    PSEUDO_LABEL = "pseudo_label"  # predict the unlabelled real pool with the current model
    CALIBRATE = "calibrate"  # choose the auto-accept threshold on the validation split
    AUTO_ACCEPT = "auto_accept"  # confident pseudo-labels become pseudo-accepted revisions
    SELECT = "select"  # choose `budget` uncertain instances
    PUSH = "push"  # send them to Label Studio with the prediction as pre-annotation
    COLLECT = "collect"  # wait for / pull human corrections
    RETRAIN = "retrain"  # fine-tune from the previous model on everything accepted
    EVALUATE = "evaluate"  # AP on the fixed validation split
    RECORD = "record"  # the round is complete


def step_reached(last_finished: str, step: str) -> bool:
    """Whether a round whose last finished step is `last_finished` ("started": none yet) has
    finished `step` (steps finish in RoundStep order)."""
    if last_finished == "started":
        return False
    order = list(RoundStep)
    return order.index(RoundStep(last_finished)) >= order.index(RoundStep(step))


class RoundStatus(StrEnum):
    """Where a round stands, as shown to the user."""

    STARTED = "started"
    RUNNING = "running"
    AWAITING_ANNOTATIONS = "awaiting-annotations"
    COMPLETE = "complete"


class TaskState(StrEnum):
    """A Label Studio task as the store sees it."""

    OPEN = "open"
    DONE = "done"
    SKIPPED = "skipped"
    REOPENED = "reopened"


class ReviewTag(StrEnum):
    """Tags and decisions a reviewer gives in FiftyOne."""

    NEEDS_FIX = "needs-fix"
    ACCEPT = "accept"
