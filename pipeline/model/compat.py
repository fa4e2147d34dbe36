"""Fill the few import gaps mmpose 1.3.2 has on a CPU stack without mmcv ops, mmdet or torchvision.

mmpose imports, at module level, code that RTMPose never runs: EDPose's deformable attention
(`mmcv.ops`, compiled; absent with mmcv-lite), RTMO's `mmdet.utils` helpers, and the SimCC
visualizer's `torchvision.transforms.ToPILImage`. Without them `import mmpose.apis` fails.

`install()` tries each real import first and adds a stand-in ONLY for the ones that fail. The
stand-ins exist just while mmpose's own modules are imported, then leave `sys.modules` again, so other
libraries in the process (FiftyOne, Prefect) still see "torchvision is not installed" and never
a half module. What mmpose bound during import keeps working:

* `mmcv.ops.MultiScaleDeformableAttention` is a class that raises a clear error when built
  (EDPose cannot run here; `isinstance` checks still work);
* `mmdet.utils.ConfigType/OptConfigType/reduce_mean` are the same definitions as mmdet's;
* `torchvision.transforms.ToPILImage` converts tensors like torchvision does.

`load_checkpoint_weights_only()` reads a third-party mmengine checkpoint under torch>=2.6 with
`weights_only=True`, allowing only numpy's array-reconstruction globals (plain data), never full
unpickling.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline import noise

#: mmpose modules that pull the missing imports; importing them while the stand-ins exist binds them.
MMPOSE_MODULES = (
    "mmpose",
    "mmpose.models",
    "mmpose.datasets",
    "mmpose.codecs",
    "mmpose.engine",
    "mmpose.evaluation",
    "mmpose.visualization",
    "mmpose.apis",
)

#: What `install()` did, by gap name: "real" (the real module imported) or "shim".
STATUS: dict[str, str] = {}


def _real_import_works(name: str) -> bool:
    """True when the real module imports; a failed attempt leaves no half-imported part of it behind."""
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except Exception:  # ImportError, or e.g. torchvision's "operator torchvision::nms does not exist"
        for mod in set(sys.modules) - before:
            if mod == name or mod.startswith(name + "."):
                sys.modules.pop(mod, None)
        return False
    return True


def _module(name: str, *, package: bool = False) -> types.ModuleType:
    mod = types.ModuleType(name, f"SpineTrack stand-in for {name} (pipeline/model/compat.py)")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        mod.__path__ = []
    mod.__dict__["__spinetrack_shim__"] = True
    return mod


# -- mmcv.ops ------------------------------------------------------------------------------------


class MultiScaleDeformableAttention:
    """Stand-in for mmcv's compiled op: importable, but building it says why it cannot run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "MultiScaleDeformableAttention needs compiled mmcv ops (full mmcv, not mmcv-lite); "
            "EDPose cannot run on this install. RTMPose does not need it."
        )


def _mmcv_ops() -> dict[str, types.ModuleType]:
    ops = _module("mmcv.ops")
    ops.__dict__["MultiScaleDeformableAttention"] = MultiScaleDeformableAttention
    return {"mmcv.ops": ops}


# -- mmdet.utils ---------------------------------------------------------------------------------


def reduce_mean(tensor: Any) -> Any:
    """mmdet.utils.reduce_mean: mean of a tensor over all distributed processes."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return tensor


def _mmdet_utils() -> dict[str, types.ModuleType]:
    from mmengine.config import ConfigDict

    config_type = ConfigDict | dict  # the alias mmdet defines (Union[ConfigDict, dict])
    utils = _module("mmdet.utils")
    utils.__dict__.update(
        ConfigType=config_type,
        OptConfigType=config_type | None,
        reduce_mean=reduce_mean,
    )
    root = _module("mmdet")  # not a package: `import mmdet.apis` still fails, so mmpose sees no mmdet
    root.__dict__["utils"] = utils
    return {"mmdet": root, "mmdet.utils": utils}


# -- torchvision ---------------------------------------------------------------------------------


class ToPILImage:
    """torchvision.transforms.ToPILImage for tensors/arrays: CHW or HW; floats are scaled by 255."""

    def __call__(self, pic: Any) -> Any:
        import numpy as np
        from PIL import Image

        arr = pic.detach().cpu().numpy() if hasattr(pic, "detach") else np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"pic should be 2 or 3 dimensional, got {arr.ndim} dimensions")
        if np.issubdtype(arr.dtype, np.floating):
            arr = (arr * 255).astype(np.uint8)  # what torchvision does: mul(255).byte()
        hwc = np.ascontiguousarray(np.transpose(arr, (1, 2, 0)))
        if hwc.shape[2] == 1:
            return Image.fromarray(hwc[:, :, 0], mode="L")
        return Image.fromarray(hwc)


def _torchvision() -> dict[str, types.ModuleType]:
    transforms = _module("torchvision.transforms")
    transforms.__dict__["ToPILImage"] = ToPILImage
    root = _module("torchvision", package=True)
    root.__dict__.update(__version__="0.0.0+spinetrack.shim", transforms=transforms)
    return {"torchvision": root, "torchvision.transforms": transforms}


GAPS: dict[str, tuple[str, Callable[[], dict[str, types.ModuleType]]]] = {
    "mmcv.ops": ("mmcv.ops", _mmcv_ops),
    "mmdet.utils": ("mmdet.utils", _mmdet_utils),
    "torchvision.transforms": ("torchvision.transforms", _torchvision),
}


@contextmanager
def _temporarily(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:  # pragma: no cover - nothing was there before a stand-in is made
                sys.modules[name] = previous


def install() -> dict[str, str]:
    """Import mmpose with stand-ins for exactly the imports that fail; idempotent."""
    if STATUS:
        return STATUS
    # before anything imports mmengine; for the process: mmpose's layers also warn when they run
    noise.quiet_warnings("mmengine")
    noise.quiet_warnings("mmpose")
    shims: dict[str, types.ModuleType] = {}
    status: dict[str, str] = {}
    for gap, (real, make) in GAPS.items():
        if _real_import_works(real):
            status[gap] = "real"
        else:
            shims.update(make())
            status[gap] = "shim"
    with _temporarily(shims), warnings.catch_warnings():
        # mmcv warns about the very op the shim stands in for; say it once, in STATUS, not on import
        warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
        for name in MMPOSE_MODULES:
            importlib.import_module(name)
    noise.quiet_mmengine_logs()
    STATUS.update(status)
    return STATUS


# -- checkpoints ---------------------------------------------------------------------------------


def load_checkpoint_weights_only(path: str | Path) -> dict[str, Any]:
    """Load a third-party mmengine/mmpose checkpoint with `weights_only=True`.

    mmengine stores numpy scalars/arrays in `meta`; torch>=2.6 refuses those globals. We allow only
    numpy's array and dtype reconstruction (data, no code), never unrestricted unpickling.
    Returns the state dict (the `state_dict` entry when the file is a full checkpoint).
    """
    import numpy as np
    import torch

    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool", "uint8")]
    with torch.serialization.safe_globals(allowed):
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise TypeError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj
