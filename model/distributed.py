"""Training on several processes (``torchrun``): who this process is, and the few collectives training needs.

``torchrun --nproc-per-node N -m bot train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. Each copy trains on its
own slice of every batch's rows (``DistributedDataParallel`` averages the gradients, so the
step is the one a single process takes on the whole batch); rank 0 validates, saves and
reports, and tells the others what it found. On CUDA each rank uses the GPU of its local
rank and NCCL; on CPU, gloo.

Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op, so one
process trains exactly as it always did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates, saves and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def rows(self, n_seqs: int) -> slice:
        """This rank's rows of a batch of ``n_seqs`` sequences (an equal share each)."""
        if n_seqs % self.world:
            raise ValueError(f"{n_seqs} sequences per batch cannot be shared equally by {self.world} processes: "
                             f"use a multiple of {self.world} (--batch-seqs)")
        share = n_seqs // self.world
        return slice(self.rank * share, (self.rank + 1) * share)


SINGLE = Ranks()


def ranks_from_env(environ: dict[str, str] | None = None) -> Ranks:
    """The ranks torchrun set, or :data:`SINGLE` when this process was started on its own."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return Ranks(rank, world, local) if world > 1 else SINGLE


def device_for(ranks: Ranks, requested: str) -> str:
    """The device this rank trains on: with several processes, each CUDA rank gets its own local GPU.

    NCCL cannot run two ranks on one GPU, so more processes than GPUs is refused here with what
    to do instead, rather than failing inside NCCL.
    """
    if ranks.distributed and requested in ("auto", "cuda") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if ranks.local_rank >= gpus:
            raise ValueError(f"{ranks.local_rank + 1} or more training processes on this machine but {gpus} GPU(s): "
                             f"use --nproc-per-node {gpus}, or --device cpu for processes on the CPU")
        return f"cuda:{ranks.local_rank}"
    return requested


def join(ranks: Ranks, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, gloo for CPU); nothing for a single process."""
    if ranks.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def max_over_ranks(ranks: Ranks, values: list[float], device: torch.device) -> list[float]:
    """The largest of each of ``values`` over all ranks, on every rank: how the ranks agree on
    when to stop and on the elapsed time that sets the learning rate."""
    if not ranks.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def from_main(ranks: Ranks, value: float | None, device: torch.device) -> float | None:
    """Rank 0's ``value`` on every rank (a validation loss, a final figure)."""
    if not ranks.distributed:
        return value
    t = torch.tensor([float("nan") if value is None else value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    got = t.item()
    return None if got != got else got  # NaN stands for None


def gather_rows(ranks: Ranks, t: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's slice of ``t`` along ``dim``, in rank order (the whole batch's hidden state)."""
    if not ranks.distributed:
        return t
    parts = [torch.empty_like(t) for _ in range(ranks.world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def gather_states(ranks: Ranks, state: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's random-generator state (a CPU byte tensor of the same size on every rank)."""
    if not ranks.distributed:
        return [state]
    parts = [torch.empty_like(state, device=device) for _ in range(ranks.world)]
    dist.all_gather(parts, state.to(device))
    return [p.cpu() for p in parts]


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()
