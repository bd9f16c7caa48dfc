"""DeepSpeed ZeRO stage 2 (optimizer state and gradients sharded) and stage 3 (parameters too).

The engine is built around the trainer's torch AdamW (DeepSpeed's own CPU Adam would compile a
kernel) with ``managed_gradient_accumulation`` off: ``backward`` only accumulates locally and
``step`` reduces, clips and updates, so the trainer keeps choosing its micro-batches. ZeRO
*averages* gradients over ranks; the loss is scaled by the world size so that the reduced
gradient is the sum harness.distributed's global denominators need. Clipping is the trainer's
``max_grad_norm``, mapped to DeepSpeed's ``gradient_clipping`` (0: off — DeepSpeed's own
default of 1.0 is never used). The trainer keeps calling the plain module (``engine.module``);
ZeRO-3's hooks on it gather parameters per forward. Frozen models (teacher, reference) get a
ZeRO-3 inference engine of their own (``shard_frozen``). Checkpoints: the engine's own
(``save_checkpoint`` / ``load_checkpoint``, tag ``zero`` in the step directory).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.distributed import TorchDDP, freeze, named_objectives_unsupported

TAG = "zero"


def import_deepspeed() -> Any:
    """``deepspeed``, or a one-line error naming the install command."""
    try:
        import deepspeed
    except ImportError as e:
        raise ImportError("distributed=zero2/zero3 needs DeepSpeed: DS_BUILD_OPS=0 pip install "
                          "--no-build-isolation deepspeed==0.19.8 (or the project's `deepspeed` extra)") from e
    return deepspeed


def skip_shm_build() -> None:
    """Do not compile DeepSpeed's CPU shared-memory comm op (a speed-up of intra-node CPU
    collectives that needs a compiler and ~40 s on first use); gloo carries them instead."""
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # type: ignore[attr-defined]


def ds_config(stage: int, max_grad_norm: float | None, bf16: bool) -> dict[str, Any]:
    """The engine config: one micro-batch per engine step (the trainer accumulates), the
    trainer's clip, bf16 only when the weights are bf16 (DeepSpeed then keeps fp32 masters)."""
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": float(max_grad_norm or 0.0),
        "zero_optimization": {"stage": stage, "overlap_comm": False, "contiguous_gradients": True},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def frozen_ds_config(bf16: bool) -> dict[str, Any]:
    """The ZeRO-3 inference config of a frozen model: no optimizer, no clipping, bf16 only when
    the weights are bf16 (DeepSpeed casts the module to the enabled precision)."""
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3, "overlap_comm": False},
        "bf16": {"enabled": bf16},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class DeepSpeedZeRO(TorchDDP):
    """DeepSpeed ZeRO-2 / ZeRO-3 data parallel."""

    def __init__(self, device: str = "auto", stage: int = 2):
        if stage not in (2, 3):
            raise ValueError(f"DeepSpeed ZeRO stage must be 2 or 3, got {stage}")
        self.ds = import_deepspeed()  # before any process group is made
        super().__init__(device)
        self.stage, self.name = stage, f"zero{stage}"
        if not self.device.startswith("cuda"):
            skip_shm_build()
        self.ds.init_distributed(dist_backend="nccl" if self.device.startswith("cuda") else "gloo",
                                 auto_mpi_discovery=False)
        self.engine: Any = None
        self.frozen_engines: list[Any] = []
        self.max_grad_norm: float | None = None

    def wrap(self, model, make_optimizer, max_grad_norm=None):
        optimizer = make_optimizer(model)
        bf16 = next(model.parameters()).dtype == torch.bfloat16
        self.engine, *_ = self.ds.initialize(model=model, optimizer=optimizer,
                                             config=ds_config(self.stage, max_grad_norm, bf16))
        self.max_grad_norm = max_grad_norm
        return self.engine.module, optimizer  # the scheduler drives the torch optimizer's groups

    def shard_frozen(self, model: nn.Module) -> nn.Module:
        """ZeRO-3: an inference engine without optimizer (as TRL's ``prepare_deepspeed`` builds for
        its reference model) partitions the parameters over the ranks; its module's hooks gather
        them per forward. ZeRO-2 shards no parameters: a full copy, as ``single``."""
        freeze(model).to(self.device)
        if self.stage != 3:
            return model
        bf16 = next(model.parameters()).dtype == torch.bfloat16
        engine, *_ = self.ds.initialize(model=model, config=frozen_ds_config(bf16))
        self.frozen_engines.append(engine)  # keeps the engine (and its hooks) alive with the run
        return engine.module

    def backward(self, loss: torch.Tensor) -> None:
        # What engine.forward does first (the trainer calls the module itself): ZeRO-3 counts its
        # micro-steps here, and without it a second backward overwrites the first's gradients.
        self.engine.optimizer.clear_backward_seen_flag()
        self.engine.backward(loss * self.world_size)  # ZeRO averages; the convention sums

    def step(self, model, optimizer, max_grad_norm, reduce=True):
        if not reduce:
            raise named_objectives_unsupported(self.name)
        if (max_grad_norm or 0.0) != (self.max_grad_norm or 0.0):
            raise ValueError(f"distributed={self.name}: max_grad_norm {max_grad_norm} differs from the engine's "
                             f"gradient_clipping {self.max_grad_norm} set at wrap")
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def save_shards(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        self.engine.save_checkpoint(str(path), tag=TAG, save_latest=False)
        return True

    def load_shards(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        loaded, _ = self.engine.load_checkpoint(str(path), tag=TAG, load_optimizer_states=True,
                                                load_lr_scheduler_states=False)
        if loaded is None:
            raise RuntimeError(f"{path}: DeepSpeed could not load checkpoint tag {TAG!r}")
        return True

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if self.stage == 3:  # gathered module by module onto rank 0
            return dict(self.engine._zero3_consolidated_16bit_state_dict() or {})  # None off rank 0
        return model.state_dict()
