"""Training on several GPUs or machines through mmengine's own launcher (torchrun): what a
training process needs to know about its place in the group.

torchrun starts one process per device (`pipeline.model.torchrun`) and sets RANK/WORLD_SIZE/
LOCAL_RANK; `pipeline.model.train` then builds mmengine's Runner with `launcher="pytorch"`
(`launcher()` below), the NCCL backend on GPUs and gloo on CPUs (`env_cfg`; on CPU the gloo group
is joined by `init_process_group`), and a DistributedDataParallel wrapper without device ids on CPU
(`model_wrapper_cfg`). mmengine's DefaultSampler gives each rank its share of every shuffled
batch, so `--batch-size` is per process: 2 processes x 8 see the samples 1 process x 16 sees.
"""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def launcher() -> str:
    """mmengine's launcher: "pytorch" inside torchrun with more than one process, else "none"."""
    return "pytorch" if world_size() > 1 else "none"


def env_cfg(base: Any) -> Any:
    """The Runner's env_cfg, with the process-group backend this machine can use."""
    import torch

    if launcher() == "none":
        return base
    cfg = dict(base or {})
    dist = dict(cfg.get("dist_cfg") or {})
    dist["backend"] = "nccl" if torch.cuda.is_available() else "gloo"
    cfg["dist_cfg"] = dist
    return cfg


def model_wrapper_cfg() -> dict[str, Any] | None:
    """DistributedDataParallel settings: no device ids for CPU modules (mmengine passes LOCAL_RANK)."""
    import torch

    if launcher() == "none":
        return None
    out: dict[str, Any] = {"type": "MMDistributedDataParallel", "broadcast_buffers": False}
    if not torch.cuda.is_available():
        out["device_ids"] = None
    return out


def init_process_group() -> None:
    """Join torchrun's process group before mmengine does: mmengine's own init calls
    `torch.cuda.set_device` unconditionally, which a CPU-only torch cannot do (gloo on CPU)."""
    import torch
    import torch.distributed as dist

    if launcher() == "pytorch" and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo")


def device_for_rank(device: str) -> str:
    """`cuda` becomes this process's GPU (LOCAL_RANK); anything else is kept."""
    if device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
