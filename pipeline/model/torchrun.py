"""Training on several GPUs or machines: the program torchrun starts once per device.

    torchrun --nproc_per_node 4 -m pipeline.model.torchrun --config rtmpose-s --iters 20000 \\
        --batch-size 64 --device cuda --name rtmpose-s-r3
    # several machines: the same on each, with --nnodes 2 --node_rank K --master_addr HOST

Each process trains with `pipeline.model.train` inside torchrun's process group
(`pipeline.model.distributed`: launcher, backend, DDP wrapper). `--batch-size` is per process.
Only rank 0 registers the model in the store; the other ranks train the same replica and write
their (identical) result to a scratch store that is thrown away.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch.distributed as dist

from pipeline.model.configs import DEFAULT_CONFIG
from pipeline.model.distributed import device_for_rank, init_process_group, rank, world_size
from pipeline.model.registry import get_version
from pipeline.model.train import train
from pipeline.store import Store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
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
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
