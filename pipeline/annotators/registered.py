"""The project's own models as annotators: a registered model (or any mmpose top-down model in
memory) run through pipeline.model.predict, unchanged in behaviour: flip test, confidence, the
plain/flip halves for uncertainty and pooled features for diversity, all as before.

A 17- or 26-keypoint mmpose model (an official RTMPose COCO / Halpe26 body model) covers only its
first K SpineTrack points; a 37-keypoint model covers all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.annotators.base import AnnotatorIdentity, BaseAnnotator, ImageInput, PersonPose
from schemas.keypoints import NUM_KEYPOINTS

#: How the network runs: torch, or onnxruntime replaying it (about twice as fast on CPU for
#: blaze37; registered models on CPU use it: their weights are fixed).
RUNTIMES = ("torch", "onnx")


def _pad(values: np.ndarray, k: int, fill: float = 0.0) -> np.ndarray:
    """(K, ...) -> (37, ...), rows K.. filled."""
    if k == NUM_KEYPOINTS:
        return np.asarray(values, dtype=np.float64)
    out = np.full((NUM_KEYPOINTS, *values.shape[1:]), fill, dtype=np.float64)
    out[:k] = values
    return out


class ModelAnnotator(BaseAnnotator):
    """An mmpose top-down SimCC model (torch) as an annotator."""

    def __init__(self, model: Any, identity: AnnotatorIdentity, *, flip_test: bool = True,
                 batch_size: int = 32, runtime: str = "torch") -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.model = model
        self.runtime = runtime
        self._runner: Any = None
        self.identity = identity
        self.flip_test = flip_test
        self.batch_size = batch_size
        self.num_keypoints = int(model.head.out_channels)
        self.covers = tuple(range(min(self.num_keypoints, NUM_KEYPOINTS)))

    @property
    def knows_bodies(self) -> bool:
        """Whether its body rows are BlazePose's own network on BlazePose's crops (blaze37 with the
        frozen body expert and region-of-interest crops): then it is as good a body expert as
        mediapipe's BlazePose (bench/results/student.json), and the combined annotator takes its body."""
        expert = getattr(getattr(self.model, "backbone", None), "expert", None)
        crop = (getattr(self.model, "test_cfg", None) or {}).get("crop", "box")
        return expert is not None and crop == "roi"

    def predict(self, image: ImageInput, boxes: Sequence[Sequence[float]]) -> list[PersonPose]:
        return self.predict_many([image], [boxes])

    def predict_many(self, images: Sequence[ImageInput],
                     boxes: Sequence[Sequence[Sequence[float]]]) -> list[PersonPose]:
        from pipeline.model.predict import onnx_runner, predict

        if self.runtime == "onnx" and self._runner is None:
            self._runner = onnx_runner(self.model)  # exported once: the weights never change
        preds = predict(self.model, images, [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes],
                        batch_size=self.batch_size, flip_test=self.flip_test, runner=self._runner)
        k = self.num_keypoints
        covered = np.zeros(NUM_KEYPOINTS, dtype=bool)
        covered[:k] = True
        origin = [self.identity.name if c else "" for c in covered]
        out = []
        for p in preds:
            out.append(PersonPose(
                keypoints=_pad(p.keypoints, k),
                confidence=_pad(p.confidence, k),
                covered=covered.copy(),
                origin=list(origin),
                bbox=np.asarray(p.bbox, dtype=np.float64),
                image_index=p.image_index,
                box_index=p.box_index,
                raw_scores=_pad(p.scores, k),
                flip_keypoints=None if p.flip_keypoints is None else _pad(p.flip_keypoints, k),
                features=p.features,
                detail={"plain_keypoints": _pad(p.plain_keypoints, k)},
            ))
        return out

    def simcc_teacher(self) -> Any:
        """The torch model, for online SimCC distillation (pipeline.model.train)."""
        return self.model


def registered_annotator(store: Any, name: str, *, device: str = "cpu", flip_test: bool = True,
                         batch_size: int = 32) -> ModelAnnotator:
    """A registered model (sha256-verified on load) as an annotator; identity = its registry entry."""
    from pipeline.model.registry import load_model

    model, meta = load_model(store, name, device=device)
    identity = AnnotatorIdentity(f"model:{name}", str(meta["checkpoint_sha256"]), "model")
    return ModelAnnotator(model, identity, flip_test=flip_test, batch_size=batch_size,
                          runtime="onnx" if device == "cpu" else "torch")


def in_memory_annotator(model: Any, name: str, *, flip_test: bool = True,
                        batch_size: int = 32, runtime: str = "torch") -> ModelAnnotator:
    """A model object not (yet) in the registry: its identity hashes its weights (`runtime="onnx"`
    only for a model whose weights will not change afterwards)."""
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return ModelAnnotator(model, AnnotatorIdentity(f"model:{name}", digest.hexdigest(), "model"),
                          flip_test=flip_test, batch_size=batch_size, runtime=runtime)
