"""DistributedDataParallel switched on from torchrun's environment variables.

``torchrun --nproc_per_node=N [--nnodes M ...] -m vaekit train ...`` sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; :func:`setup_distributed` joins the process group with gloo
(CPU tensors) and, when CUDA is available, NCCL for CUDA tensors. In one process every
helper here is a no-op.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor

from vaekit.config import ConfigError

__all__ = [
    "DistInfo",
    "setup_distributed",
    "teardown_distributed",
    "all_reduce_sum",
    "any_rank",
    "gather_objects",
    "all_gather_objects",
    "shard",
]


@dataclass
class DistInfo:
    """Where this process stands: its rank among ``world_size`` processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False


def _env_int(name: str, default: str | None = None) -> int:
    value = os.environ.get(name, default)
    if value is None or not value.strip().lstrip("-").isdigit():
        raise ConfigError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} asks for distributed training, but {name}={value!r}; "
            "start it with `torchrun --nproc_per_node=N -m vaekit train ...`"
        )
    return int(value)


def setup_distributed() -> DistInfo:
    """Join the process group when started by torchrun; ``DistInfo()`` otherwise."""
    world = _env_int("WORLD_SIZE", "1")
    if world <= 1:
        return DistInfo()
    rank = _env_int("RANK")
    local = _env_int("LOCAL_RANK", "0")
    if tdist.is_initialized():
        return DistInfo(rank, local, world, False)
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        # One group that runs CUDA collectives on NCCL and CPU ones (objects, a CPU run) on gloo.
        backend = "cuda:nccl,cpu:gloo"
    else:
        backend = "gloo"
    tdist.init_process_group(backend=backend)
    return DistInfo(rank, local, world, True)


def teardown_distributed(info: DistInfo, ok: bool = True) -> None:
    """Leave the process group if :func:`setup_distributed` joined it.

    ``ok``: every rank got here the same way (training finished or stopped together). Then
    the ranks meet at a barrier first, so that no rank tears down gloo's connections while
    another still has collectives in flight (which can abort the process at exit). After
    a failure on some ranks only, destroying the group could hang: it is left to the exit.
    """
    if not (info.initialized_here and tdist.is_initialized()) or not ok:
        return
    # The DDP wrapper and its reducer sit in reference cycles; collect them now, while the
    # interpreter is whole. Left to interpreter exit, their gloo work can be destroyed
    # after Python is gone, and the process aborts ("terminate called without an active
    # exception", exit -6) after training has finished (seen once in CI under load).
    gc.collect()
    tdist.barrier()
    tdist.destroy_process_group()


def all_reduce_sum(tensors: list[Tensor], info: DistInfo) -> list[Tensor]:
    """Scalar tensors summed across ranks (one flat all-reduce in float64); in one process
    the tensors themselves. New tensors are returned, so inference tensors work too."""
    if info.world_size <= 1 or not tensors:
        return list(tensors)
    flat = torch.stack([t.detach().reshape(()).to(torch.float64) for t in tensors])
    tdist.all_reduce(flat)
    return list(flat.unbind())


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (a collective call)."""
    if info.world_size <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` (picklable, CPU tensors) as a list on rank 0; None on the others."""
    if info.world_size <= 1:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.rank == 0 else None
    tdist.gather_object(obj, out, dst=0)
    return out


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` as a list on every rank."""
    if info.world_size <= 1:
        return [obj]
    out: list[Any] = [None] * info.world_size
    tdist.all_gather_object(out, obj)
    return out


def shard(order: Tensor, info: DistInfo) -> Tensor:
    """This rank's share of an epoch's order: every ``world_size``-th index from ``rank``.

    All ranks get ``len(order) // world_size`` indices, so they take the same number of
    steps (DDP needs that); the ``len(order) % world_size`` indices at the end are left out,
    different ones each epoch. With per-process batch b, the ranks' batches at step i are
    together ``order[i*b*N : (i+1)*b*N]``: the batch a single process with batch b*N takes.

    Example:
        >>> shard(torch.arange(7), DistInfo(rank=1, world_size=3))
        tensor([1, 4])
    """
    per_rank = len(order) // info.world_size
    return order[info.rank : per_rank * info.world_size : info.world_size]
