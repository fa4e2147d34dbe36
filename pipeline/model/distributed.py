"""Training on several GPUs or machines through mmengine's own launcher (torchrun).

    torchrun --nproc_per_node 4 -m pipeline.model.distributed --config rtmpose-s --iters 20000 \\
        --batch-size 64 --device cuda --name rtmpose-s-r3
    # several machines: the same on each, with --nnodes 2 --node_rank K --master_addr HOST

torchrun starts one process per device and sets RANK/WORLD_SIZE/LOCAL_RANK; `pipeline.model.train`
then builds mmengine's Runner with `launcher="pytorch"` (`launcher()` below), the NCCL backend on
GPUs and gloo on CPUs (`env_cfg`; on CPU the gloo group is joined here, `init_process_group`), and a
DistributedDataParallel wrapper without device ids on CPU
(`model_wrapper_cfg`). mmengine's DefaultSampler gives each rank its share of every shuffled
batch, so `--batch-size` is per process: 2 processes x 8 see the samples 1 process x 16 sees.
Only rank 0 registers the model in the store; the other ranks train the same replica and write
their (identical) result to a scratch store that is thrown away.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
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


def main(argv: list[str] | None = None) -> None:
    from pipeline.model.train import train
    from pipeline.store import Store

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (each rank takes its LOCAL_RANK GPU)")
    parser.add_argument("--parent", default=None)
    parser.add_argument("--name", required=True, help="the model's name (the same on every rank)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    args = parser.parse_args(argv)

    init_process_group()
    store = Store()
    labels = store.current_labels()
    scratch: Path | None = None
    if rank() != 0:  # the same training, registered nowhere
        scratch = Path(tempfile.mkdtemp(prefix=f"spinetrack-rank{rank()}-"))
        if args.parent is not None:
            shutil.copytree(store.home / "models", scratch / "models", dirs_exist_ok=True)
        target = Store(f"sqlite:///{scratch / 'store.sqlite'}", home=scratch)
        if args.parent is not None:  # the parent's registry row, so fine-tuning finds it
            from pipeline.model.registry import get_version

            parent_row = get_version(store, args.parent)
            if parent_row is not None:
                with target.session() as s:
                    s.merge(parent_row)
    else:
        target = store
    try:
        version = train(target, config=args.config, iters=args.iters, batch_size=args.batch_size,
                        seed=args.seed, device=device_for_rank(args.device), parent=args.parent,
                        labels=labels, name=args.name, threads=args.threads)
        if rank() == 0:
            print(f"registered {version.name} ({world_size()} processes)")
    finally:
        if scratch is not None:
            target.engine.dispose()
            shutil.rmtree(scratch, ignore_errors=True)
        store.engine.dispose()
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
