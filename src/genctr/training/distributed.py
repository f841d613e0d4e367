"""Data-parallel training under ``torchrun``: which process this is, and the few collectives the loop needs.

``torchrun --nproc-per-node N [--nnodes M] ...`` starts one process per device and tells each its
place through ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`session` reads them when a run
starts (never at import), initialises the process group (NCCL on CUDA, gloo on CPU, chosen from
the device) and tears it down at the end. Without those variables a run is a plain single
process and none of this is touched.

What a data-parallel run keeps equal to a single-process one (see ``genctr.training.loop``):
every rank draws the same seeded permutation of the training rows per epoch and takes its
contiguous share of each global batch (:func:`shard`), the global batch size and learning rate
are the config's whatever N is, rank 0 alone evaluates, writes checkpoints and artifacts and
broadcasts every held-out value it measured, so early stopping sees one history on all ranks.

Why DistributedDataParallel and not FSDP: every rank holds a full replica of the model and its
optimizer state, and that is small here. The tables are ``vocab x embed_dim`` (16 by default)
and the decoder has one layer of width 64: the largest network (DGenCTR) has 0.9M parameters on
MovieLens, 4.7M on the throughput benchmark's world (20k users, 50k items) and 330M at Taobao
UserBehavior's vocabulary (~1.0M users, ~4.2M items; GenCTR 67M, DCN V2 & TA with integration
150M): 5.3 GB with its gradient and Adam's two moments in fp32, a few percent of one GPU. FSDP
would shard that memory, which nobody is short of, and pay for it every step with an all-gather
of the parameters before forward and backward on top of the gradient reduce-scatter; DDP's one
gradient all-reduce per step (bucketed, overlapped with the backward pass) moves the same bytes
as that reduce-scatter and nothing else.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from genctr.errors import ConfigError, describe

log = logging.getLogger(__name__)

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun sets in every process it starts
# Rank 0 evaluates and writes checkpoints while the other ranks wait at the next collective: the
# wait may last as long as one evaluation of the valid split (torch's NCCL default is 10 min).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place in a run: ``rank`` of ``size`` processes, ``local_rank`` on its node.

    ``active`` is true when a process group is initialised (a torchrun job, even with one process):
    only then do the loop's collectives run.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, logs epochs and writes files."""
        return self.rank == 0


SINGLE = World()  # a plain process: no group, rank 0 of 1


def launch_env(environ: Mapping[str, str] | None = None) -> World | None:
    """The World torchrun describes in ``environ`` (default ``os.environ``); None outside torchrun."""
    env = os.environ if environ is None else environ
    present = [k for k in LAUNCH_ENV if k in env]
    if not present:
        return None
    if len(present) < len(LAUNCH_ENV):
        missing = [k for k in LAUNCH_ENV if k not in env]
        raise ConfigError(f"{', '.join(present)} set but {', '.join(missing)} not: launch data-parallel training "
                          "with torchrun (which sets all three), or unset them for a single-process run")
    values = {}
    for k in LAUNCH_ENV:
        try:
            values[k] = int(env[k])
        except ValueError:
            raise ConfigError(f"${k} must be an integer, got {describe(env[k])}") from None
    rank, size, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={size}, "
                          f"LOCAL_RANK={local} (need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0)")
    return World(rank, size, local, active=False)


def current() -> World:
    """This process's World: from the initialised process group, else :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), active=True)


def rank_device(device: str, world: World) -> str:
    """The device this rank trains on: ``cuda:<local_rank>`` (made current) for CUDA, else ``device``."""
    if not device.startswith("cuda"):
        return device
    n = torch.cuda.device_count()
    if world.local_rank >= n:
        raise ConfigError(f"LOCAL_RANK {world.local_rank} has no GPU: this node has {n}; start torchrun with "
                          f"--nproc-per-node {n} or fewer")
    torch.cuda.set_device(world.local_rank)
    return f"cuda:{world.local_rank}"


@contextmanager
def session(device: str) -> Iterator[tuple[World, str]]:
    """Within a torchrun job, initialise the process group for ``device`` ("cpu" | "cuda") and yield
    (World, this rank's device); outside one, yield (:data:`SINGLE`, ``device``) and do nothing.

    A group the caller initialised already is used as it is and left to the caller to destroy.
    """
    env = launch_env()
    if env is None:
        yield SINGLE, device
        return
    if dist.is_initialized():
        world = current()
        yield world, rank_device(device, world)
        return
    dev = rank_device(device, env)
    cuda = dev.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    extra: dict[str, Any] = {"device_id": torch.device(dev)} if cuda else {}
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, **extra)
    world = current()
    log.info("data-parallel rank %d of %d (local rank %d) on %s, backend %s", world.rank, world.size,
             world.local_rank, dev, backend)
    try:
        yield world, dev
    finally:
        dist.destroy_process_group()


def check_batch(batch_size: int, world: World) -> None:
    """The global batch must split evenly: every full batch then gives each rank batch_size / N rows."""
    if batch_size % world.size:
        raise ConfigError(f"train.batch_size {batch_size} is the global batch and must be divisible by the "
                          f"{world.size} data-parallel processes; choose a multiple of {world.size} "
                          f"(e.g. {batch_size - batch_size % world.size or world.size})")


def shard(idx: Tensor, world: World) -> tuple[Tensor, float]:
    """This rank's contiguous share of a global batch ``idx`` (B,), and the weight of its mean loss.

    Rank r takes rows ``[B r / N, B (r + 1) / N)``. DDP averages the ranks' gradients, so a rank's
    mean loss is weighted by ``n_r N / B``: the average is then the gradient of the global batch's
    mean loss, also for a short last batch. That weight is exactly 1 for every full batch (the
    global batch divides by N). A rank whose share of a short batch is empty computes the loss of
    one row with weight 0, so that it still joins the gradient all-reduce.
    """
    if not world.active:
        return idx, 1.0
    m = len(idx)
    lo, hi = m * world.rank // world.size, m * (world.rank + 1) // world.size
    if hi == lo:
        return idx[:1], 0.0
    return idx[lo:hi], (hi - lo) * world.size / m


def _comm_device() -> torch.device:
    """Where a collective's tensors must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64); unchanged outside a group."""
    if not world.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_json(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` (anything JSON can hold) on every rank; unchanged outside a group.

    Sent as JSON text (never pickle): a float survives exactly, so every rank decides from the
    same numbers.
    """
    if not world.active:
        return obj
    dev = _comm_device()
    data = json.dumps(obj).encode() if world.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    dist.broadcast(size, src=0)
    buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev) if world.is_main
           else torch.empty(int(size.item()), dtype=torch.uint8, device=dev))
    dist.broadcast(buf, src=0)
    return json.loads(bytes(buf.cpu().tolist()).decode())


def broadcast_module(module: nn.Module, world: World) -> None:
    """Overwrite every parameter and buffer with rank 0's values, in place."""
    if not world.active:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


class ObjectiveModule(nn.Module):
    """``objective(model, batch, generator)`` as a module, so DDP's forward runs it.

    DDP synchronises gradients only for a backward that follows its own ``forward``; the
    objectives call methods other than ``forward`` (``pretrain_logits``), so the whole objective
    is what DDP wraps. ``model`` stays a submodule: its parameters are the ones synchronised.
    """

    def __init__(self, model: nn.Module, objective: Any, eager: Any = None) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.eager = objective if eager is None else eager

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator, short: bool = False) -> Tensor:
        # ``short``: a batch of another shape (the epoch's last) runs ``eager``, see ``loop.fit``
        return (self.eager if short else self.objective)(self.model, batch, generator)


def data_parallel(model: nn.Module, objective: Any, world: World, eager: Any = None) -> nn.Module:
    """``objective`` over ``model`` wrapped in DistributedDataParallel (call on every rank at once).

    The constructor broadcasts rank 0's parameters, so every replica starts identical. ``eager``:
    the uncompiled objective, for the short batches (``ObjectiveModule``).
    ``find_unused_parameters``: some configurations leave parameters out of every step (the
    integrated decoder's next-item head under ``transfer=integrate``), and DDP would otherwise
    wait for their gradients and fail at the next step; with it they keep no gradient (None), as in
    one process, so Adam leaves them alone (where every parameter is used, torch logs once per rank
    that the flag found nothing). Buffers are not synchronised per step: the models hold no running
    statistics, only constant tables.
    """
    from torch.nn.parallel import DistributedDataParallel

    wrapped = ObjectiveModule(model, objective, eager)
    device = next(model.parameters()).device
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" \
        else None
    # forward_sync_buffers=False: buffers are synced once, at construction, and never per step
    return DistributedDataParallel(wrapped, device_ids=ids, find_unused_parameters=True, forward_sync_buffers=False)


__all__ = ["COLLECTIVE_TIMEOUT", "LAUNCH_ENV", "SINGLE", "ObjectiveModule", "World", "all_sum", "barrier",
           "broadcast_json", "broadcast_module", "check_batch", "current", "data_parallel", "launch_env",
           "rank_device", "session", "shard"]
