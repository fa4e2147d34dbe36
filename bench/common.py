"""What every benchmark shares: the repository on sys.path, where results go, machine info and load.

Numbers taken on a shared machine are only comparable with the load they were taken under, so
every result JSON carries `machine` (Python, CPUs, platform) and `load_average` (1-minute load at
the start and end of the run, plus the 1/5/15-minute load at the end).

Use: `from common import ...` works when a bench script runs as `python bench/NAME.py` (its folder
is sys.path[0]); `import bench.common` works from the repository root.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

if str(REPO) not in sys.path:  # the project's packages, whatever the working folder
    sys.path.insert(0, str(REPO))


def module_at_commit(commit: str, path: str, name: str, *, folder: Path | None = None) -> ModuleType | None:
    """The repository file `path` as it was at `commit`, imported as module `name` beside today's
    code (its own imports resolve to today's modules); None outside a git checkout or when the
    commit is unknown. Benches use it to time the code they replaced in the same run."""
    try:
        code = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"],
                              capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    target = (folder or Path(tempfile.mkdtemp(prefix="spinetrack-baseline-"))) / f"{name}.py"
    target.write_text(code)
    spec = importlib.util.spec_from_file_location(name, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def load_now() -> float:
    """1-minute load average now."""
    return round(os.getloadavg()[0], 2)


def machine_info() -> dict[str, Any]:
    """Python, CPU count, platform and processor of this machine."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


class Run:
    """One benchmark run: notes the load at the start, writes the result JSON with machine and load."""

    def __init__(self) -> None:
        self.load_before = load_now()

    def load_average(self) -> dict[str, Any]:
        one, five, fifteen = os.getloadavg()
        return {"before": self.load_before, "after": round(one, 2),
                "now_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)]}

    def annotate(self, result: dict[str, Any]) -> dict[str, Any]:
        """`result` with `load_average` and `machine` added (kept if the bench set them itself)."""
        result.setdefault("load_average", self.load_average())
        result.setdefault("machine", machine_info())
        return result

    def write(self, result: dict[str, Any], out: str | Path, *, indent: int = 1) -> Path:
        """Write the annotated result to `out` (a path, or a bare name under bench/results/)."""
        path = Path(out)
        if not path.suffix and path.parent == Path("."):
            path = RESULTS / f"{path}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.annotate(result), indent=indent, default=str)
        path.write_text(text + "\n", encoding="utf-8")
        return path


def time_opensim_track(add: Any) -> None:
    """Count the CPU seconds of OpenSim's own `InverseKinematicsSolver.track` (the solve, apart
    from the Python around it): each call's time is passed to `add(seconds)`. Import
    synthetic.alignment (or synthetic.opensim_runtime) first, so OpenSim is loaded its fast way."""
    import time

    import opensim

    solver_track = opensim.InverseKinematicsSolver.track

    def timed_track(self: Any, state: Any) -> Any:
        start = time.process_time()
        try:
            return solver_track(self, state)
        finally:
            add(time.process_time() - start)

    opensim.InverseKinematicsSolver.track = timed_track
