r"""Training on several processes with :class:`~torch.nn.parallel.DistributedDataParallel`.

``torchrun --nproc-per-node N -m pillargraph train ...`` starts ``N`` processes;
:func:`init_from_env` joins them into one process group (gloo on CPU, NCCL on
CUDA) from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

**One step.** Every process walks the same shuffled order of training items
(the :class:`~pillargraph.train.Trainer` seeds it from ``(seed, epoch)``) and
builds the same global batch of ``batch_size`` items with the same positive
sampling; :func:`local_range` gives each process a contiguous share of it,
whose four graph batches it scores with the model wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`. The scores are gathered
with an autograd-aware all-gather, so every process evaluates the loss of the
*whole* global batch (the losses average over the valid queries of a batch, and
only the whole batch knows how many there are). The all-gather's backward sums
the ``N`` identical gradients of each share and DDP's all-reduce averages them,
which leaves exactly the single-process gradient: with dropout 0, one step on
``N`` processes equals one step on one process up to rounding.

**Dropout.** Each process re-seeds dropout from the (shared) global generator
plus its rank before every step, so the processes draw different masks (the same
masks would correlate the shares) and a resumed run repeats an uninterrupted one.

**Writing.** Only rank 0 writes (``Trainer.writes_files`` is False elsewhere)
and only rank 0 reads the run folder: on resume it sends the checkpoint to the
other processes, so they neither need the folder nor can read it half-written
(a process that read ``last.pt`` before rank 0 had saved it would start from
another epoch and break the collectives). Every
process evaluates the dev split with identical weights, and :meth:`DistributedTrainer.fit`
broadcasts rank 0's selected epoch, fusion weights and weights at the end, so
all ranks agree. ``--resume`` continues an interrupted multi-process run.
"""
from __future__ import annotations

import gc
import io
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from ..graphs.batch import GraphBatch
from .trainer import Trainer, TrainingBatch, TrainResult

__all__ = ["DistributedContext", "init_from_env", "shutdown", "local_range", "local_batch", "gather_rows",
           "check_batches", "DistributedTrainer"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the process group.

    Args:
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: number of processes (1: not distributed).
        local_rank: rank on this machine (picks the CUDA device).
        backend: the process group's backend, ``None`` when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group of more than one process is running."""
        return self.world_size > 1


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer in the environment, got {value!r}") from None


def init_from_env(device: Union[str, torch.device, None] = None, backend: Optional[str] = None,
                  env: Optional[Mapping[str, str]] = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment (nothing to do for one process).

    Args:
        device: where this process trains; CUDA selects NCCL and the device
            ``cuda:LOCAL_RANK``, anything else gloo.
        backend: force a backend (``'gloo'``, ``'nccl'``).
        env: the environment to read (default: :data:`os.environ`).

    Raises:
        ValueError: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` are not integers
            or the rank is out of range.
    """
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    rank, local = _env_int(env, "RANK", 0), _env_int(env, "LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK: expected 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    if world == 1:
        return DistributedContext()
    cuda = device is not None and torch.device(device).type == "cuda"
    backend = backend or ("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistributedContext(rank, world, local, backend)


def shutdown(context: DistributedContext) -> None:
    """Leave the process group :func:`init_from_env` joined (nothing to do for one process).

    On a normal exit every process first waits for the others: a gloo process
    that tears the group down while another still talks to it can abort either of
    them (``terminate called without an active exception``). Called while an
    exception propagates (from a ``finally`` block), it leaves at once, since the
    other processes may never arrive. Trainers the caller no longer holds are
    collected first: a :class:`~torch.nn.parallel.DistributedDataParallel`
    wrapper freed only at interpreter exit, after the group is gone, aborts the
    process about one time in ten.
    """
    if context.distributed and dist.is_initialized():
        gc.collect()
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def local_range(num_items: int, rank: int, world_size: int) -> Tuple[int, int]:
    """The share ``[start, stop)`` of rank ``rank`` in ``num_items`` items (contiguous, sizes differ by at most 1)."""
    return rank * num_items // world_size, (rank + 1) * num_items // world_size


def check_batches(num_items: int, batch_size: int, world_size: int) -> None:
    """Check that every global batch of an epoch gives each of the ``world_size`` processes an item.

    Raises:
        ValueError: the batch size, or the last batch of an epoch, is smaller
            than the number of processes.
    """
    last = num_items % batch_size
    smallest = min(batch_size, num_items) if last == 0 else last
    if smallest < world_size:
        raise ValueError(f"batch_size: a batch of {smallest} training items (of {num_items}, batch size "
                         f"{batch_size}) leaves some of the {world_size} processes without items; choose a "
                         f"batch size whose last batch holds at least {world_size}")


def local_batch(batch: TrainingBatch, rank: int, world_size: int) -> TrainingBatch:
    """Rank ``rank``'s contiguous share of every graph batch of a global :class:`TrainingBatch`."""
    start, stop = local_range(batch.i2t.num_graphs, rank, world_size)
    return TrainingBatch(*(None if g is None else g[start:stop]
                           for g in (batch.i2t, batch.t2i, batch.mirror_t2i, batch.mirror_i2t)))


def gather_rows(local: Tensor, num_rows: int, world_size: int) -> Tensor:
    """The ``num_rows`` rows of all ranks' :func:`local_range` shares, in rank order, differentiably.

    The shares are padded to one size for the all-gather and cut back after it.
    Gradients flow back to each rank's own rows, summed over the ranks (see the
    module docstring for why that is the right scale under DDP).
    """
    from torch.distributed.nn.functional import all_gather

    size = -(-num_rows // world_size)
    pad = local.new_zeros((size - local.shape[0],) + tuple(local.shape[1:]))
    pieces = all_gather(torch.cat([local, pad]))
    return torch.cat([p[:b - a] for p, (a, b) in
                      zip(pieces, (local_range(num_rows, r, world_size) for r in range(world_size)))])


class _Scorer(torch.nn.Module):
    """The model applied to a step's graph batches: what DDP wraps (one forward per backward)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *graphs: Optional[GraphBatch]) -> Tuple[Optional[Tensor], ...]:
        return tuple(None if g is None else self.model(g) for g in graphs)


class DistributedTrainer(Trainer):
    """A :class:`~pillargraph.train.Trainer` whose steps are shared by the processes of a group.

    Takes :class:`~pillargraph.train.Trainer`'s arguments plus ``context``
    (from :func:`init_from_env`); ``out_dir`` is used on rank 0 only. With one
    process it trains exactly like :class:`~pillargraph.train.Trainer`.
    """

    def __init__(self, *args: Any, context: Optional[DistributedContext] = None, **kwargs: Any) -> None:
        self.context = context or DistributedContext()
        super().__init__(*args, **kwargs)
        self.writes_files = self.context.is_main
        self.scorer = None
        if self.context.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.scorer = DistributedDataParallel(_Scorer(self.model), device_ids=ids)

    def step_loss(self, batch: TrainingBatch) -> tuple:
        """The loss of the whole global ``batch``; this process scores only its share (see the module docstring)."""
        if self.scorer is None:
            return super().step_loss(batch)
        ctx = self.context
        if self.model.training:  # different dropout masks per rank, reproducible from the epoch's seed
            torch.manual_seed(int(torch.randint(2 ** 62, ())) + ctx.rank)
        graphs = (batch.i2t, batch.t2i, batch.mirror_t2i, batch.mirror_i2t)
        mine = local_batch(batch, ctx.rank, ctx.world_size)
        local = self.scorer(mine.i2t, mine.t2i, mine.mirror_t2i, mine.mirror_i2t)
        s = [None if x is None else gather_rows(x, g.num_graphs, ctx.world_size) for x, g in zip(local, graphs)]
        return self.loss_fn(s[0], s[1], s[2], s[3], y_i2t=batch.i2t.y, y_t2i=batch.t2i.y,
                            mask_i2t=batch.i2t.candidate_mask, mask_t2i=batch.t2i.candidate_mask,
                            base_i2t=batch.i2t.base_score, base_t2i=batch.t2i.base_score)

    def _open_run(self, resume: bool) -> Optional[Dict[str, Any]]:
        """Rank 0 opens the run folder and sends what it resumed from (or its error) to every process."""
        if not self.context.distributed:
            return super()._open_run(resume)
        box: list = [None, None]  # the resumed checkpoint's bytes, rank 0's error
        state = None
        if self.context.is_main:
            try:
                state = super()._open_run(resume)
            except Exception as err:
                box[1] = f"{type(err).__name__}: {err}"
                dist.broadcast_object_list(box, src=0)
                raise
            if state is not None:
                buffer = io.BytesIO()
                torch.save(state, buffer)
                box[0] = buffer.getvalue()
        dist.broadcast_object_list(box, src=0)
        if self.context.is_main or box[0] is None:
            if box[1] is not None:
                raise RuntimeError(f"rank 0 could not open the run in {self.out_dir}: {box[1]}")
            return state
        state = torch.load(io.BytesIO(box[0]), map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return state

    def fit(self, train: Any, dev: Any, resume: bool = True, **kwargs: Any) -> TrainResult:
        """:meth:`Trainer.fit` on every process; rank 0's selection and weights are then broadcast.

        Raises:
            ValueError: a global batch would leave a process without items.
        """
        ctx = self.context
        if ctx.distributed:
            check_batches(train.num_texts, self.config.batch_size, ctx.world_size)
        result = super().fit(train, dev, resume=resume, **kwargs)
        if ctx.distributed:
            shared = [result.best_epoch, result.best_dev_rsum, result.fusion]
            dist.broadcast_object_list(shared, src=0)
            result.best_epoch, result.best_dev_rsum, result.fusion = shared
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, src=0)
            self.model.fusion_weights = result.fusion
        return result

