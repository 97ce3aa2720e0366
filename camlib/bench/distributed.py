"""Scale-out for the benchmarks: the same command under ``torchrun --nproc-per-node N``.

A run is distributed when the launcher set ``WORLD_SIZE`` > 1 (torchrun sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). Then every rank joins a
``torch.distributed`` process group (NCCL when the rank computes on CUDA, gloo on the CPU), takes
the images ``r, r + N, r + 2N, ...`` of the run's image list, and appends its rows to its own file;
after a barrier rank 0 merges all files into the single CSV and writes the Markdown. Nothing else is
exchanged, so a distributed run computes exactly the rows a single process would.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Sequence, TypeVar

import torch

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: not distributed

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_environ(environ=None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's environment variables (defaults 0, 1, 0)."""
    environ = os.environ if environ is None else environ
    world = int(environ.get("WORLD_SIZE", "1") or 1)
    rank = int(environ.get("RANK", "0") or 0)
    local = int(environ.get("LOCAL_RANK", str(rank)) or rank)
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"bad distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def resolve_rank_device(device: str | None, local_rank: int, distributed: bool) -> torch.device:
    """The device of this rank: ``None``/"auto" -> CUDA when available (``cuda:LOCAL_RANK`` in a
    distributed run), else the CPU; a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` when distributed."""
    from camlib.devices import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1) if distributed else 0)
    return dev


def setup(device: str | None = None, timeout_s: float = 24 * 3600.0) -> tuple[DistEnv, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick this rank's device.

    The group's timeout is long (default 24 h) because ranks that finish their shard early wait
    at the final barrier for the slowest one.
    """
    rank, world, local = env_from_environ()
    dev = resolve_rank_device(device, local, world > 1)
    if world == 1:
        return DistEnv(), dev
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        kwargs = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, backend=backend), dev


def barrier(env: DistEnv) -> None:
    if not env.enabled:
        return
    import torch.distributed as dist

    if env.backend == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_ok(env: DistEnv, ok: bool) -> bool:
    """True when ``ok`` on every rank (a collective: every rank must call it)."""
    if not env.enabled:
        return ok
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if env.backend == "nccl" else torch.device("cpu")
    flag = torch.tensor([0 if ok else 1], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return int(flag.item()) == 0


def shard(items: Sequence[T], env: DistEnv) -> list[T]:
    """Items r, r + N, r + 2N, ... of the run's list for rank r of N."""
    return list(items[env.rank::env.world_size])


def teardown(env: DistEnv) -> None:
    if not env.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
