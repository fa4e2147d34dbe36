"""BENCHMARK TOOL: a simulated annotator that fills Label Studio tasks from KNOWN ground truth.

Never use it on real data: it does not look at images, it copies the truth it is given (plus noise).
It exists so the active-learning loop and `bench/` can measure selection strategies and the Label
Studio round trip end to end without people: it talks to a real server through the same API and
result format a person's browser does (keypoint regions, per-region "occluded" choices, skips).
Seeded: the same seed, tasks and truth give the same annotations.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from label_studio_sdk import LabelStudio

from annotation.labelstudio.convert import to_result
from annotation.labelstudio.view import task_view
from schemas.keypoint_array import KeypointArray

#: instance id -> (37 x (x, y, v) pixels, bbox [x, y, w, h]) or None when the truth is unknown.
Truth = Callable[[int], "tuple[Sequence[float], Sequence[float]] | None"]


@dataclass(frozen=True)
class AnnotatorProfile:
    """How one simulated person works."""

    email: str = "sim-annotator@spinetrack.local"
    pixel_noise: float = 1.5  # std of the Gaussian click error, px
    occlusion_recall: float = 1.0  # chance a truly occluded point is ticked "occluded"
    skip_rate: float = 0.0  # chance a task is skipped
    seconds_per_task: float = 40.0  # lead time reported to Label Studio


@dataclass
class SimulationReport:
    annotated: dict[int, list[float]] = field(default_factory=dict)  # task id -> keypoints submitted
    skipped: list[int] = field(default_factory=list)
    no_truth: list[int] = field(default_factory=list)
    annotation_ids: list[int] = field(default_factory=list)


def ensure_user(client: LabelStudio, email: str) -> int:
    """The Label Studio user id for `email` (created as an organisation member when missing)."""
    for user in client.users.list():
        if user.email == email and user.id is not None:
            return int(user.id)
    created = client.users.create(email=email, username=email, first_name=email.split("@")[0])
    assert created.id is not None
    return int(created.id)


def simulated_keypoints(
    truth: Sequence[float], width: int, height: int, profile: AnnotatorProfile, rng: random.Random
) -> list[float]:
    """Truth + click noise, clipped to the image, quantised to 1/100 px (a click on a zoomed image)."""
    out = KeypointArray.zeros()
    for k, (x, y, v) in enumerate(KeypointArray.from_flat(truth).data.tolist()):
        if v <= 0:
            continue  # not visible in truth: the annotator deletes the point
        x = min(max(x + rng.gauss(0.0, profile.pixel_noise), 0.0), float(width))
        y = min(max(y + rng.gauss(0.0, profile.pixel_noise), 0.0), float(height))
        occluded = v < 2 and rng.random() < profile.occlusion_recall
        out.data[k] = [round(x, 2), round(y, 2), 1.0 if occluded else 2.0]
    return [float(v) for v in out.data.ravel()]


def _author(annotation: Any) -> int | None:
    """Who made an annotation; the API gives a dict or a typed object, the author as id or object."""
    who = annotation.get("completed_by") if isinstance(annotation, dict) else getattr(
        annotation, "completed_by", None)
    if isinstance(who, dict):
        who = who.get("id")
    elif who is not None and not isinstance(who, int):
        who = getattr(who, "id", who)
    return int(who) if isinstance(who, int | str) and str(who).isdigit() else None


def annotate_tasks(
    client: LabelStudio,
    project_id: int,
    truth: Truth,
    *,
    profile: AnnotatorProfile | None = None,
    seed: int = 0,
    task_ids: Sequence[int] | None = None,
) -> SimulationReport:
    """Annotate (or skip) every task of the project this annotator has not annotated yet."""
    profile = profile or AnnotatorProfile()
    user_id = ensure_user(client, profile.email)
    wanted = set(task_ids) if task_ids is not None else None
    report = SimulationReport()
    tasks: Any = (
        (client.tasks.get(id=str(t)) for t in sorted(wanted))
        if wanted is not None
        else client.tasks.list(project=project_id, fields="all", page_size=500)
    )
    for task in tasks:
        if task.id is None:
            continue
        # ask the annotations endpoint: a single task's payload may not list them
        if any(_author(a) == user_id for a in client.annotations.list(id=task.id)):
            continue
        data = task.data or {}
        rng = random.Random(f"{seed}:{profile.email}:{task.id}")
        known = truth(int(data["instance_id"]))
        if known is None:
            report.no_truth.append(task.id)
            continue
        if rng.random() < profile.skip_rate:
            ann = client.annotations.create(
                id=task.id, result=[], was_cancelled=True, completed_by=user_id, lead_time=5.0
            )
            report.skipped.append(task.id)
        else:
            width, height = int(data["width"]), int(data["height"])
            keypoints = simulated_keypoints(known[0], width, height, profile, rng)
            ann = client.annotations.create(
                id=task.id,
                # on the task's crop, as a person in the browser draws (pull maps it back)
                result=to_result(keypoints, list(known[1]), width, height,
                                 view=task_view(data, f"task {task.id}")),
                completed_by=user_id,
                lead_time=profile.seconds_per_task,
            )
            report.annotated[task.id] = keypoints
        if ann.id is not None:
            report.annotation_ids.append(int(ann.id))
    return report
