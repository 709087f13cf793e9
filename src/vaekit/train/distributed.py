"""DistributedDataParallel switched on from torchrun's environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import Tensor

__all__ = ["DistInfo", "setup_distributed", "teardown_distributed", "all_reduce_sum"]


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False


def setup_distributed() -> DistInfo:
    """Join the process group when started by torchrun (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if tdist.is_initialized():
        return DistInfo(rank, local, world, False)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    tdist.init_process_group(backend=backend)
    return DistInfo(rank, local, world, True)


def teardown_distributed(info: DistInfo) -> None:
    if info.initialized_here and tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_sum(tensors: list[Tensor], info: DistInfo) -> None:
    """Sum tensors across ranks in place (one flat all-reduce); a no-op in one process."""
    if info.world_size <= 1 or not tensors:
        return
    flat = torch.stack([t.reshape(()).to(torch.float64) for t in tensors])
    tdist.all_reduce(flat)
    for t, v in zip(tensors, flat, strict=True):
        t.copy_(v.to(t.dtype))
