"""Load OpenSim's native libraries so that they call their own optimised code (import before opensim).

The opensim wheel's SWIG modules (``_simbody.so``, ``_simulation.so`` ...) carry their own, unoptimised
copies of Simbody's small inline templates (``Vec3::operator=``, ``Mat33::Mat``, ``Impl::copy`` ...).
When ``import opensim`` loads them, the dynamic linker binds every library of that load — Simbody
and OpenSim included — to the first copy in the load order, the SWIG module's. Simbody's kinematics
(``realizePosition``, run some 60 times per IK frame) then spend half their time in those copies:
measured 140 µs per ``realizePosition`` of the default model against 45-60 µs bound to the
libraries' own code, and about 1.5x faster IK, with bit-identical results (bench/ingest.py).

Loading the libraries themselves first (RTLD_LOCAL: nothing becomes visible to other libraries),
in dependency order, binds each to its own code; the SWIG modules then reuse the loaded libraries.
Importing this module has that effect once, if it runs before the first ``import opensim`` of the
process (later, it changes nothing). Any failure leaves the normal ``import opensim`` path.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path

#: OpenSim's native libraries in dependency order (each after the ones it needs), Linux names.
NATIVE_LIBRARIES: tuple[str, ...] = (
    "libSimTKcommon.so.3.9",
    "libSimTKmath.so.3.9",
    "libSimTKsimbody.so.3.9",
    "libosimLepton.so",
    "libosimCommon.so",
    "libosimSimulation.so",
    "libosimActuators.so",
    "libosimAnalyses.so",
    "libosimTools.so",
)

_loaded: list[ctypes.CDLL] = []  # kept referenced: the libraries stay loaded for the process


def preload_native_libraries() -> list[str]:
    """Load `NATIVE_LIBRARIES` from the opensim package folder; the names loaded (empty if none).

    Does nothing once opensim is imported (its libraries are bound already) or off Linux.
    """
    if "opensim" in sys.modules or not sys.platform.startswith("linux") or _loaded:
        return []
    spec = importlib.util.find_spec("opensim")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations)))
    names = []
    for name in NATIVE_LIBRARIES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            _loaded.append(ctypes.CDLL(str(path), mode=os.RTLD_NOW | os.RTLD_LOCAL))
        except OSError:
            break  # the normal import still works: it loads what is missing itself
        names.append(name)
    return names


PRELOADED = preload_native_libraries()
