"""Neural annotators: pretrained pose models that pre-label real images (docs/annotators.md).

`load_annotator(spec, store)` turns a spec string into an `Annotator`; see pipeline.annotators.spec.
Heavy libraries (torch, mmpose, mediapipe, onnxruntime) are imported by the annotator that needs them.
"""

from __future__ import annotations

from pipeline.annotators.base import (
    LOW_CONFIDENCE,
    Annotator,
    AnnotatorIdentity,
    BaseAnnotator,
    PersonPose,
)
from pipeline.annotators.spec import available_annotators, load_annotator, parse_spec

__all__ = [
    "LOW_CONFIDENCE",
    "Annotator",
    "AnnotatorIdentity",
    "BaseAnnotator",
    "PersonPose",
    "available_annotators",
    "load_annotator",
    "parse_spec",
]
