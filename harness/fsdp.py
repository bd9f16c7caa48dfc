"""FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and optimizer state
sharded over the ranks.

Each block the model names in ``_no_split_modules`` (its transformer layers) is its own shard
group, and so is every other module owning parameters (``shard_groups``). Gradients follow harness.distributed's convention: the
reduce-scatter *sums* over ranks (gradient divide factor 1), and accumulates over micro-batches
in the sharded gradient. Every rank must run the same number of forwards and backwards (the
trainer's even shards and micro-batch counts give that; the HF rollout engine runs ``generate``
with ``synced_gpus``, harness.rollout.hf). Checkpoints: torch.distributed.checkpoint of the sharded model and
optimizer state dicts (``dcp/`` in the step directory). Frozen models (teacher, reference) are
sharded the same way without an optimizer (``shard_frozen``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from harness.distributed import TorchDDP, clip_and_step, freeze, named_objectives_unsupported

DCP_DIR = "dcp"
logger = logging.getLogger(__name__)


class TiedParametersError(ValueError):
    """A model whose modules share parameters (tied embeddings) under distributed=fsdp."""


def shard_groups(model: nn.Module) -> list[list[nn.Module]]:
    """The FSDP2 groups: each block the model names in ``_no_split_modules`` (its decoder /
    vision layers), then every other module that owns parameters directly (embeddings, norms,
    ``lm_head``, projectors), modules sharing a parameter (tied embeddings) in one group.

    There is deliberately no root group: the scorers call the backbone and ``lm_head`` directly
    (harness.scoring), so parameters unsharded only by the top-level forward would stay sharded.
    """
    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks: list[nn.Module] = []
    inside: set[int] = set()
    for m in model.modules():
        if type(m).__name__ in names and id(m) not in inside:
            blocks.append(m)
            inside.update(id(x) for x in m.modules())
    groups: list[list[nn.Module]] = []
    group_of: dict[int, int] = {}  # parameter id -> index in groups
    for m in model.modules():
        own = [id(p) for p in m.parameters(recurse=False)]
        if id(m) in inside or not own:
            continue
        hit = sorted({group_of[i] for i in own if i in group_of})
        if hit:  # shares a parameter with earlier groups: merge them into the first
            first = groups[hit[0]]
            for j in reversed(hit[1:]):
                first += groups[j]
                groups[j] = []
            first.append(m)
        else:
            groups.append([m])
        idx = next(k for k, g in enumerate(groups) if m in g)
        for g_mod in groups[idx]:
            for q in g_mod.parameters(recurse=False):
                group_of[id(q)] = idx
    return [[b] for b in blocks] + [g for g in groups if g]


class FSDP2(TorchDDP):
    """Fully sharded data parallel (FSDP2) over the gloo / NCCL process group."""

    name = "fsdp"
    _mesh = None  # the 1-D device mesh over all ranks, made at the first sharding

    def wrap(self, model, make_optimizer, max_grad_norm=None):
        self.broadcast_weights(model)  # the same initial weights on every rank, then shard them
        for group in self._shard(model):
            for module in group:  # sum over ranks (losses carry global denominators)
                assert isinstance(module, FSDPModule)
                module.set_gradient_divide_factor(1.0)
                module.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM / AVG
        return model, make_optimizer(model)

    def shard_frozen(self, model: nn.Module) -> nn.Module:
        """``fully_shard`` each of ``shard_groups(model)`` on the student's mesh, parameters frozen,
        no optimizer: every forward (top level, or the scorers' direct calls into the backbone and
        ``lm_head``) all-gathers a group's parameters and frees them after it. The weights must be
        the same on every rank (loaded from one checkpoint)."""
        freeze(model).to(self.device)
        try:
            self._shard(model)
        except TiedParametersError as e:  # a frozen model still runs, as a full copy on each rank
            logger.warning("%s; keeping a full copy of the frozen %s on every rank", e, type(model).__name__)
        return model

    def _shard(self, model: nn.Module) -> list[list[nn.Module]]:
        """``fully_shard`` every group of ``shard_groups(model)`` over all ranks; returns the groups.
        Each group reshards after its forward: with no root group every group is an FSDP root,
        which by default stays gathered after forward until a backward (never, for no-grad
        forwards: rollouts, scoring, a frozen model)."""
        groups = shard_groups(model)
        tied = [g for g in groups if len(g) > 1]
        if tied:
            names = {id(m): n for n, m in model.named_modules()}
            listed = "; ".join(" + ".join(names.get(id(m), type(m).__name__) for m in g) for g in tied)
            raise TiedParametersError(
                f"distributed=fsdp: {type(model).__name__} shares parameters between modules ({listed}; "
                "tie_word_embeddings), which this FSDP2 layout cannot shard (a group of several modules "
                "must be an FSDP root, and the scorers call them directly); use distributed=zero3")
        if self._mesh is None:
            self._mesh = init_device_mesh(self.device.split(":")[0], (self.world_size,))
        for group in groups:
            fully_shard(group if len(group) > 1 else group[0], mesh=self._mesh, reshard_after_forward=True)
        return groups

    def step(self, model, optimizer, max_grad_norm, reduce=True):
        if not reduce:
            raise named_objectives_unsupported(self.name)
        norm = clip_and_step([p for p in model.parameters() if p.requires_grad], optimizer, max_grad_norm)
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)

    def _reduce_gradients(self, params):
        pass  # reduce-scattered by FSDP2 in each backward

    def save_shards(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        msd, osd = get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path / DCP_DIR))
        return True

    def load_shards(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=str(path / DCP_DIR))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        return True

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
