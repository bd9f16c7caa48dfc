"""The data-parallel seam: one small ``Strategy`` interface, so the trainers never touch
torch.distributed (or DeepSpeed / FSDP) directly.

Gradient convention (the reason this module exists). Every loss the trainers build is already
divided by a *global* denominator: the token or sequence count of the whole optimizer
mini-batch summed over all ranks (``harness.trainer.Normalizers``). The full mini-batch loss is
then the plain *sum* of every micro-batch loss on every rank, and so is its gradient. So
gradients are accumulated by summation over micro-batches and **sum**-reduced over ranks —
never averaged (averaging, as ``DistributedDataParallel`` does, would divide the update by the
world size; normalising by local counts would weigh ranks with short responses more). The
data-parallel test (tests/test_trainer_distributed.py) checks 2 processes == 1 process.

Launch is torchrun-compatible: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` /
``MASTER_PORT`` from the environment.

Strategies (``TrainConfig.distributed``; docs/scale_out.md): ``single``, ``ddp`` (this module),
``fsdp`` (torch FSDP2, harness.fsdp), ``zero2`` / ``zero3`` (DeepSpeed ZeRO, harness.deepspeed_zero).
The sharded ones keep model and optimizer state in their own checkpoint formats
(``save_shards`` / ``load_shards``) and gather full weights for the final model (``full_state_dict``).
Frozen models (teacher, reference) are placed by ``shard_frozen``: replicated, or under ``fsdp`` /
``zero3`` sharded like the student (``TrainConfig.shard_frozen``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.distributed as dist
from torch import nn

StrategyName = Literal["auto", "single", "ddp", "fsdp", "zero2", "zero3"]
MakeOptimizer = Callable[[nn.Module], torch.optim.Optimizer]


def clip_and_step(params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                  max_grad_norm: float | None) -> torch.Tensor:
    """Clip the global gradient norm of ``params`` (when ``max_grad_norm`` > 0), step the optimizer
    and zero the gradients; returns the pre-clip norm (a DTensor under FSDP2)."""
    if max_grad_norm is not None and max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def freeze(model: nn.Module) -> nn.Module:
    """``model`` with every parameter's ``requires_grad`` off, in eval mode."""
    model.requires_grad_(False)
    return model.eval()


class Strategy:
    """Single process. Subclasses override what differs; the trainers only call these methods."""

    name = "single"

    def __init__(self, device: str = "auto"):
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        self.device = _pick_device(device, self.local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, make_optimizer: MakeOptimizer, max_grad_norm: float | None = None
             ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Prepare the model (shard it, for the sharded strategies), then build its optimizer with
        ``make_optimizer``; returns the model to call and the torch optimizer (for the scheduler).
        ``max_grad_norm`` is the clip the engine applies where it clips itself (DeepSpeed)."""
        return model, make_optimizer(model)

    def shard_frozen(self, model: nn.Module) -> nn.Module:
        """Prepare a frozen model (teacher, reference) for inference under no_grad: every parameter
        frozen, eval mode; returns the module to call. Here replicated: a full copy on this
        rank's device. ``fsdp`` / ``zero3`` shard its parameters over the ranks like the student's
        (collective: every rank must then run the same forwards, see docs/scale_out.md)."""
        return freeze(model).to(self.device)

    def save_shards(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        """Write model and optimizer state in this engine's sharded format under ``path``
        (collective); False: the strategy uses the plain files of harness.checkpoint instead."""
        return False

    def load_shards(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        """Read back what ``save_shards`` wrote (collective); False as ``save_shards``."""
        return False

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full (unsharded) weights on the main rank, for ``save_pretrained`` (collective;
        other ranks may get an empty dict)."""
        return model.state_dict()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float | None,
             reduce: bool = True) -> float:
        """Reduce gradients over ranks (unless the caller already did: ``reduce=False``), clip the
        global norm, step, zero the gradients; returns the pre-clip gradient norm."""
        params = [p for p in model.parameters() if p.requires_grad]
        if reduce:
            self._reduce_gradients(params)
        return float(clip_and_step(params, optimizer, max_grad_norm))

    def _reduce_gradients(self, params: list[nn.Parameter]) -> None:
        pass

    def reduce_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor over ranks, in place (gradient buffers kept outside ``.grad``)."""

    def all_reduce(self, tensor: torch.Tensor, op: Literal["sum", "max", "min"] = "sum") -> torch.Tensor:
        """In place and returned; identity in one process."""
        return tensor

    def barrier(self) -> None:
        pass

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        return obj

    def shutdown(self) -> None:
        pass


class TorchDDP(Strategy):
    """Data parallel over ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

    The model is not wrapped in ``DistributedDataParallel``: gradients are sum-reduced in
    flattened buckets after accumulation (see the module docstring), so scoring code keeps
    seeing the plain Hugging Face model. Initial weights are broadcast from rank 0.
    """

    name = "ddp"

    def __init__(self, device: str = "auto", bucket_mb: float = 25.0):
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        self.device = _pick_device(device, self.local_rank)
        if self.world_size == 1 and "MASTER_ADDR" not in os.environ:
            _single_process_rendezvous()  # not launched by torchrun: a group of one (a sharded strategy on one GPU)
        if not dist.is_initialized():
            backend = "nccl" if self.device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)
        self._owns_group = True
        self.bucket_numel = int(bucket_mb * 2**20 / 4)

    def wrap(self, model, make_optimizer, max_grad_norm=None):
        self.broadcast_weights(model)
        return model, make_optimizer(model)

    @staticmethod
    def broadcast_weights(model: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)

    def _reduce_gradients(self, params):
        # Every rank must issue identical collectives: a parameter that got no gradient on this
        # rank (unused in its micro-batches) contributes zeros rather than being skipped.
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.reduce_tensors([p.grad for p in params])

    def reduce_tensors(self, tensors):
        bucket: list[torch.Tensor] = []
        size = 0
        for t in tensors:
            bucket.append(t)
            size += t.numel()
            if size >= self.bucket_numel:
                self._reduce_bucket(bucket)
                bucket, size = [], 0
        if bucket:
            self._reduce_bucket(bucket)

    @staticmethod
    def _reduce_bucket(grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def all_reduce(self, tensor, op="sum"):
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(tensor, op=ops[op])
        return tensor

    def barrier(self):
        dist.barrier()

    def broadcast_object(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self):
        if dist.is_initialized():
            dist.destroy_process_group()


def _fsdp(device: str = "auto") -> Strategy:
    from harness.fsdp import FSDP2

    return FSDP2(device)


def _zero(stage: int) -> Callable[[str], Strategy]:
    def make(device: str = "auto") -> Strategy:
        from harness.deepspeed_zero import DeepSpeedZeRO

        return DeepSpeedZeRO(device, stage=stage)

    return make


STRATEGIES: dict[str, Callable[[str], Strategy]] = {"single": Strategy, "ddp": TorchDDP, "fsdp": _fsdp,
                                                   "zero2": _zero(2), "zero3": _zero(3)}
SHARDED = ("fsdp", "zero2", "zero3")


def make_strategy(name: StrategyName = "auto", device: str = "auto") -> Strategy:
    """``auto``: ``ddp`` when launched with ``WORLD_SIZE`` > 1 (torchrun), else ``single``.
    The sharded strategies (``fsdp``, ``zero2``, ``zero3``) are imported only when selected."""
    if name == "auto":
        name = "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "single"
    if name not in STRATEGIES:
        raise ValueError(f"distributed={name!r}: expected one of {sorted(STRATEGIES)} or 'auto'")
    return STRATEGIES[name](device)


def named_objectives_unsupported(name: str) -> NotImplementedError:
    """The error of a sharded strategy given a method with named objectives (``combine``)."""
    return NotImplementedError(f"distributed={name}: methods with named objectives (a custom combine, e.g. "
                               f"VGS) need whole gradients on every rank; use distributed=ddp or single")


def _single_process_rendezvous() -> None:
    """The env:// rendezvous variables of a one-process group on this host (a free port), as
    torchrun would set them, for a strategy chosen without a launcher (``distributed: zero3`` in a
    recipe run on one GPU). DeepSpeed reads the same variables."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port)), ("RANK", "0"),
                       ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)


def _pick_device(device: str, local_rank: int) -> str:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return device
