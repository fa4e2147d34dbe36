"""FiftyOne set-up: its MongoDB under the store's home, dataset names, the SpineTrack skeletons.

FiftyOne keeps its datasets in a MongoDB it starts itself (mongod from the fiftyone-db package,
stopped when the last Python process using it exits). The database lives under
$SPINETRACK_HOME/fiftyone/db unless FIFTYONE_DATABASE_DIR is set; the location must be chosen before
fiftyone is imported, which is why every module here imports it through `fiftyone_module()`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from schemas.keypoints import KEYPOINTS, NAMES, SKELETON, SPINE_CHAIN

log = logging.getLogger(__name__)

#: The keypoints drawn in the spine colour (the `spine` group: the chain, the neck points, head top).
SPINE_POINTS: tuple[int, ...] = tuple(k.index for k in KEYPOINTS if k.group == "spine")


def database_dir(home: Path) -> Path:
    return Path(os.environ.get("FIFTYONE_DATABASE_DIR") or home / "fiftyone" / "db")


def database_name(home: Path) -> str:
    """MongoDB database name of a home: `spinetrack-<hash of its path>`."""
    return "spinetrack-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def fiftyone_module(home: Path) -> ModuleType:
    """Import fiftyone with its database under `home` (or $FIFTYONE_DATABASE_DIR) and no telemetry.

    The first import in a process fixes the database for that process; a later call for another
    home keeps the first one and says so in the log.
    """
    wanted = database_dir(home).resolve()
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    if "fiftyone" not in sys.modules:
        wanted.mkdir(parents=True, exist_ok=True)
        os.environ["FIFTYONE_DATABASE_DIR"] = str(wanted)
        # FiftyOne may attach to another home's running mongod: a database name per home keeps
        # the datasets of two homes apart even then
        os.environ.setdefault("FIFTYONE_DATABASE_NAME", database_name(home))
    fiftyone = _import_fiftyone()

    active = Path(fiftyone.config.database_dir).resolve()
    if active != wanted:
        log.warning("fiftyone already uses the database in %s (not %s): one per process", active, wanted)
    for other in running_database_dirs():
        if other != active:
            log.warning("a FiftyOne database service for %s is running; FiftyOne attaches to it instead of "
                        "starting one for %s (close the other FiftyOne session to keep them apart)",
                        other, active)
    return fiftyone


def running_database_dirs() -> list[Path]:
    """--dbpath of every FiftyOne database service of this user (FiftyOne reuses any of them)."""
    import psutil

    me = psutil.Process().username()
    found = []
    for proc in psutil.process_iter(["cmdline", "username"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("username") != me or "--51-service" not in cmd or "db" not in cmd:
            continue
        if "--dbpath" in cmd[:-1] and os.path.basename(cmd[0]) != "mongod":
            found.append(Path(cmd[cmd.index("--dbpath") + 1]).resolve())
    return sorted(set(found))


def dataset_name(release: str | None = None) -> str:
    """`spinetrack-working` for the store's working set, `spinetrack-VERSION` for a release."""
    return f"spinetrack-{release}" if release else "spinetrack-working"


def skeleton(fo: ModuleType) -> Any:
    """The SpineTrack skeleton as a fo.KeypointSkeleton (37 named points in schema order)."""
    return fo.KeypointSkeleton(labels=list(NAMES), edges=[[a, b] for a, b in SKELETON])


def spine_skeleton(fo: ModuleType) -> Any:
    """The skeleton of the `spine` overlay: SPINE_POINTS in that order, linked sacrum to skull to head top."""
    position = {index: n for n, index in enumerate(SPINE_POINTS)}
    chain = [*SPINE_CHAIN, next(k.index for k in KEYPOINTS if k.name == "head")]
    edges = [[position[a], position[b]] for a, b in itertools.pairwise(chain)]
    return fo.KeypointSkeleton(labels=[NAMES[i] for i in SPINE_POINTS], edges=edges)


def _import_fiftyone() -> Any:
    """`import fiftyone`, also in a process that imported dask first.

    dask imports the `importlib_metadata` backport, which takes over distribution lookups from the
    stdlib; its metadata messages raise KeyError for a field a package leaves out, where the stdlib's
    (Python 3.11) answer None. FiftyOne's `eta` reads `author`, which its wheel does not have, so its
    import fails after dask. For FiftyOne's first import only, missing fields answer None again.
    """
    if "fiftyone" in sys.modules:
        return sys.modules["fiftyone"]
    if "importlib_metadata" not in sys.modules:
        import fiftyone

        return fiftyone
    from importlib_metadata._adapters import Message as message
    strict = message.__getitem__

    def tolerant(self: Any, item: str) -> Any:
        try:
            return strict(self, item)
        except KeyError:
            return None

    setattr(message, "__getitem__", tolerant)  # noqa: B010
    try:
        import fiftyone
    finally:
        setattr(message, "__getitem__", strict)  # noqa: B010
    return fiftyone
