"""Annotator specs: the one string `pseudo-label`, `round`, `predict`, `train --teacher` take.

    model:NAME                 a registered model (a bare NAME works too when it is registered)
    onnx:PATH[,flip][,bgr]     an RTMPose/SpinePose ONNX file (17, 26 or 37 keypoints)
    mmpose:CONFIG.py,CKPT.pth  an mmpose top-down SimCC checkpoint (official RTMPose COCO/Halpe26)
    blazepose                  BlazePose (mediapipe 0.10.14): COCO-17, heels, big toes
    spine-prior                BlazePose body + the spine-from-body prior
    combined[:spine=prior|student][,body=auto|student|SPEC]
                               body from a body expert, spine from the prior or the student,
                               everything else from the student (the default). body=auto: the
                               student when it carries BlazePose's network and crops (blaze37:
                               it matches mediapipe's BlazePose on the COCO sample and beats it on
                               OCHuman and PoseTrack18, bench/results/student.json), else BlazePose

The student is `student=` (a registered model name), else the store's current model; a combined
annotator without a student covers body and spine only. Bad specs raise InputError (exit code 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from schemas.errors import InputError

if TYPE_CHECKING:
    from pipeline.annotators.base import Annotator
    from pipeline.store import Store

KINDS = ("model", "onnx", "mmpose", "blazepose", "spine-prior", "combined")
#: combined's default body source: the student where it knows bodies, else BlazePose
AUTO_BODY = "auto"
DEFAULT_SPEC = "combined"
#: Annotators whose weights never change under a name: their poses are cached per image and box.
FIXED_EXPERTS = ("onnx", "mmpose", "blazepose")
#: Where `spinetrack annotators` looks for ONNX / mmpose files besides explicit paths.
ANNOTATOR_DIR_ENV = "SPINETRACK_ANNOTATORS"


@dataclass(frozen=True)
class AnnotatorSpec:
    kind: str
    paths: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # registered model name
    text: str = ""


def parse_spec(text: str) -> AnnotatorSpec:
    """Parse without loading anything (see the module docstring for the grammar)."""
    raw = (text or "").strip()
    if not raw:
        raise InputError("--annotator", "empty annotator spec")
    kind, _, rest = raw.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        # a bare name is a registered model
        return AnnotatorSpec("model", name=raw, text=raw)
    parts = [p.strip() for p in rest.split(",") if p.strip()] if rest else []
    if kind == "model":
        if len(parts) != 1:
            raise InputError("--annotator", f"{raw!r}: expected model:NAME")
        return AnnotatorSpec("model", name=parts[0], text=raw)
    if kind == "onnx":
        paths = [p for p in parts if p.lower() not in ("flip", "bgr", "rgb")]
        if len(paths) != 1:
            raise InputError("--annotator", f"{raw!r}: expected onnx:PATH[,flip][,bgr]")
        opts = {p.lower(): "1" for p in parts if p.lower() in ("flip", "bgr")}
        return AnnotatorSpec("onnx", (paths[0],), opts, text=raw)
    if kind == "mmpose":
        if len(parts) != 2:
            raise InputError("--annotator", f"{raw!r}: expected mmpose:CONFIG.py,CHECKPOINT.pth")
        return AnnotatorSpec("mmpose", (parts[0], parts[1]), text=raw)
    options: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise InputError("--annotator", f"{raw!r}: option {part!r} must be key=value")
        options[key.strip().lower()] = value.strip()
    allowed = {"combined": {"spine", "body", "student"}, "spine-prior": {"body"},
               "blazepose": {"retry"}}.get(kind, set())
    unknown = set(options) - allowed
    if unknown:
        raise InputError("--annotator", f"{raw!r}: unknown option(s) {sorted(unknown)} for {kind}")
    if kind == "combined" and options.get("spine", "prior") not in ("prior", "student"):
        raise InputError("--annotator", f"{raw!r}: spine= must be prior or student")
    return AnnotatorSpec(kind, (), options, text=raw)


def _student_name(store: Store | None, student: str | None) -> str | None:
    if student:
        return student
    if store is None:
        return None
    return store.current_model()


def load_annotator(spec: str | AnnotatorSpec, store: Store | None = None, *, device: str = "cpu",
                   student: str | None = None, cache: bool = True) -> Annotator:
    """An annotator ready to predict. `store` is needed for registered models (and the student).

    With a store, the fixed experts (BlazePose, ONNX and mmpose files) remember their poses in
    the store's home (pipeline.annotators.cache): rounds, validation and the demo see each person
    through them once. `cache=False` runs them every time (speed benchmarks)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind in FIXED_EXPERTS and cache and store is not None:
        from pipeline.annotators.cache import CachedAnnotator, cache_path

        return CachedAnnotator(load_annotator(parsed, None, device=device, cache=False),
                               cache_path(store.home), settings={**parsed.options, "device": device})
    if parsed.kind == "model":
        if store is None:
            raise InputError("--annotator", f"{parsed.text!r}: a registered model needs the store")
        from pipeline.model.registry import get_version

        if parsed.name is None or get_version(store, parsed.name) is None:
            raise InputError("--annotator", f"{parsed.text!r}: no such annotator kind or registered "
                             f"model (kinds: {', '.join(KINDS)})")
        from pipeline.annotators.registered import registered_annotator

        return registered_annotator(store, parsed.name, device=device)
    if parsed.kind == "onnx":
        from pipeline.annotators.onnx import OnnxPoseAnnotator

        return OnnxPoseAnnotator(parsed.paths[0], device=device, flip_test="flip" in parsed.options,
                                 channels="bgr" if "bgr" in parsed.options else "rgb")
    if parsed.kind == "mmpose":
        from pipeline.annotators.mmpose_checkpoint import checkpoint_annotator

        return checkpoint_annotator(parsed.paths[0], parsed.paths[1], device=device)
    if parsed.kind == "blazepose":
        from pipeline.annotators.blazepose import BlazePoseAnnotator

        return BlazePoseAnnotator(retry=parsed.options.get("retry", "1") not in ("0", "no", "false"))
    if parsed.kind == "spine-prior":
        from pipeline.annotators.combined import CombinedAnnotator
        from pipeline.annotators.spine_prior import load_prior

        body = load_annotator(parsed.options.get("body", "blazepose"), store, device=device, cache=cache)
        return CombinedAnnotator(body=body, prior=load_prior(store), student=None, spine="prior",
                                 name="spine-prior")
    # combined
    from pipeline.annotators.combined import CombinedAnnotator
    from pipeline.annotators.spine_prior import load_prior

    name = _student_name(store, parsed.options.get("student") or student)
    student_annotator = None
    if name is not None and store is not None:
        from pipeline.annotators.registered import registered_annotator

        student_annotator = registered_annotator(store, name, device=device)
    body = _combined_body(parsed.options.get("body", AUTO_BODY), student_annotator, store, device, cache)
    from pipeline.annotators.combined import DEFAULT_SPINE_SOURCE

    spine = parsed.options.get("spine", DEFAULT_SPINE_SOURCE)
    return CombinedAnnotator(body=body, prior=load_prior(store), student=student_annotator, spine=spine)


def _combined_body(spec: str, student: Any, store: Store | None, device: str, cache: bool) -> Annotator:
    """The combined annotator's body expert: `auto` takes the student where it knows bodies
    (`ModelAnnotator.knows_bodies`), else BlazePose; `student` the student; anything else a spec."""
    if spec in (AUTO_BODY, "student") and student is not None and (spec == "student" or student.knows_bodies):
        return cast("Annotator", student)
    return load_annotator("blazepose" if spec in (AUTO_BODY, "student") else spec, store, device=device,
                          cache=cache)


def annotator_files(folders: list[Path] | None = None) -> dict[str, list[Path]]:
    """ONNX and mmpose (.pth + .py) files in $SPINETRACK_ANNOTATORS and $SPINETRACK_HOME/annotators."""
    from pipeline.store.store import spinetrack_home

    roots = list(folders or [])
    if os.environ.get(ANNOTATOR_DIR_ENV):
        roots += [Path(p) for p in os.environ[ANNOTATOR_DIR_ENV].split(os.pathsep) if p]
    roots.append(spinetrack_home() / "annotators")
    found: dict[str, list[Path]] = {"onnx": [], "mmpose": []}
    for root in roots:
        if not root.is_dir():
            continue
        found["onnx"] += sorted(root.rglob("*.onnx"))
        for ckpt in sorted(root.rglob("*.pth")):
            found["mmpose"].append(ckpt)
    return found


def available_annotators(store: Store | None = None,
                         folders: list[Path] | None = None) -> list[dict[str, Any]]:
    """What can annotate here: registered models, ONNX/mmpose files found, BlazePose when mediapipe
    is installed, the spine prior and the combined default; with covered points and identity."""
    from pipeline.annotators.base import covered_names
    from schemas.keypoints import NUM_KEYPOINTS

    out: list[dict[str, Any]] = []
    if store is not None:
        from pipeline.model.registry import list_versions

        for version in list_versions(store):
            out.append({"spec": f"model:{version.name}", "kind": "model", "name": f"model:{version.name}",
                        "sha256": version.checkpoint_sha256,
                        "covers": covered_names(range(NUM_KEYPOINTS))})
    files = annotator_files(folders)
    for path in files["onnx"]:
        try:
            ann = load_annotator(f"onnx:{path}")
            out.append({"spec": f"onnx:{path}", **ann.describe()})  # type: ignore[attr-defined]
        except InputError as exc:
            out.append({"spec": f"onnx:{path}", "kind": "onnx", "error": str(exc)})
    for ckpt in files["mmpose"]:
        configs = sorted(ckpt.parent.glob("*.py"))
        cfg = next((c for c in configs if c.stem == ckpt.stem), configs[0] if len(configs) == 1 else None)
        spec = f"mmpose:{cfg},{ckpt}" if cfg else f"mmpose:?,{ckpt}"
        entry: dict[str, Any] = {"spec": spec, "kind": "mmpose"}
        if cfg is None:
            entry["error"] = f"{ckpt}: no config (.py) next to it with the same name"
        else:
            from pipeline.annotators.mmpose_checkpoint import describe_checkpoint

            try:
                entry.update(describe_checkpoint(cfg, ckpt))
            except (InputError, ValueError) as exc:
                entry["error"] = str(exc)
        out.append(entry)
    from pipeline.annotators.blazepose import BLAZEPOSE_COVERS, blazepose_status

    status = blazepose_status()
    out.append({"spec": "blazepose", "kind": "blazepose", **status,
                "covers": covered_names(BLAZEPOSE_COVERS)})
    from pipeline.annotators.spine_prior import prior_status

    out.append({"spec": "spine-prior", "kind": "spine-prior", **prior_status(store)})
    out.append({"spec": DEFAULT_SPEC, "kind": "combined",
                "student": _student_name(store, None) if store is not None else None,
                "note": "body from BlazePose, spine from the prior, the rest from the student"})
    return out
