"""One optimizer update over a batch of trajectories, split into micro-batches and ranks, with
loss denominators that do not depend on the split.

A loss that divides by *local* counts (this micro-batch's tokens, this rank's sequences) changes
with the micro-batch size, the accumulation count and the number of ranks — a classic silent bug
in RL trainers. Here the token and sequence counts of the whole optimizer mini-batch are summed
over all ranks first (:func:`normalizers`); every micro-batch loss divides by those global counts,
so micro-batch losses (and gradients) add up to exactly the full-batch loss. Gradients are
therefore summed over micro-batches and sum-reduced over ranks (harness.distributed).

Named objectives. A loss may return ``{name: objective}`` instead of one scalar. Each
objective's gradient is then accumulated in its own buffer across micro-batches
(``torch.autograd.grad``), each buffer is sum-reduced over ranks, and a ``combine`` function
turns the buffers into the gradient the optimizer steps on (VGS's exact eta needs the norms of
and the dot product between two objectives' full-batch gradients). With one scalar objective the
update is plain ``backward`` accumulation, exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from harness.distributed import Strategy
from harness.types import Trajectories


@dataclass(frozen=True)
class Normalizers:
    """Global denominators of one optimizer mini-batch (all ranks): valid response tokens,
    sequences, and the constant length budget of ``seq-mean-token-sum-norm`` (Dr. GRPO)."""

    global_tokens: float
    global_seqs: float
    max_len: int | None = None


ForwardFn = Callable[[Trajectories], Any]
"""(micro-batch) -> the policy's forward with grad (``harness.forward.Forward``: view -> output)."""
Objective = Union[torch.Tensor, Mapping[str, torch.Tensor]]
LossFn = Callable[[Any, Trajectories, Normalizers], "tuple[Objective, dict[str, torch.Tensor]]"]
"""(forward, micro-batch, normalizers) -> (loss piece or named pieces, stats). Pieces must sum to
the batch loss (objective by objective); stats are scalar means over the micro-batch's valid
tokens (combined token-weighted; names ending in ``_min`` / ``_max`` are combined by min / max)."""
Grads = dict[str, list[Optional[torch.Tensor]]]
"""Objective name -> one gradient per trainable parameter (None: the objective does not reach it)."""
CombineFn = Callable[[Grads], "tuple[list[Optional[torch.Tensor]], dict[str, float]]"]
"""Full-batch, rank-reduced gradients of each named objective -> (the gradient to step on, stats)."""


def sum_objectives(grads: Grads) -> tuple[list[Optional[torch.Tensor]], dict[str, float]]:
    """The default ``combine``: the plain sum of the objectives' gradients (as if the loss had
    returned their sum)."""
    total: list[Optional[torch.Tensor]] = []
    for per_param in zip(*grads.values()):
        present = [g for g in per_param if g is not None]
        total.append(torch.stack(present).sum(0) if present else None)
    return total, {}


def select_rows(traj: Trajectories, idx: torch.Tensor | list[int]) -> Trajectories:
    """The rows ``idx`` of ``traj``: every per-row field (a tensor whose first dimension is ``B``,
    a list of length ``B``), and every per-row entry of ``extras``, is indexed; ``samples`` is kept
    whole since ``group_ids`` index into it."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    n = len(traj)

    def pick(v):
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
            return v[idx.to(v.device)]
        if isinstance(v, list) and len(v) == n:
            return [v[i] for i in idx.tolist()]
        return v

    changes = {f.name: pick(getattr(traj, f.name)) for f in fields(traj) if f.name not in ("samples", "extras")}
    return replace(traj, **changes, extras={k: pick(v) for k, v in traj.extras.items()})


def split_rows(n: int, parts: int) -> list[torch.Tensor]:
    """``range(n)`` cut into ``parts`` contiguous pieces of (near-)equal size, in order."""
    if parts < 1 or parts > n:
        raise ValueError(f"cannot split {n} rows into {parts} parts")
    return list(torch.tensor_split(torch.arange(n), parts))


def micro_batches(n: int, size: int) -> list[torch.Tensor]:
    """``range(n)`` in consecutive chunks of at most ``size`` rows."""
    return list(torch.arange(n).split(size))


def normalizers(batch: Trajectories, strategy: Strategy, max_len: int | None = None) -> Normalizers:
    """Token and sequence counts of ``batch`` summed over all ranks (a collective). Sequences are
    counted as ``harness.losses.agg_loss`` counts N: rows with at least one response token."""
    seqs_with_tokens = float((batch.response_mask.sum(dim=-1) > 0).sum())
    tokens, seqs = reduce_floats(strategy, [float(batch.response_mask.sum()), seqs_with_tokens], "sum")
    return Normalizers(global_tokens=max(tokens, 1.0), global_seqs=max(seqs, 1.0), max_len=max_len)


def accumulate_update(model: nn.Module, optimizer: torch.optim.Optimizer, strategy: Strategy,
                      batch: Trajectories, forward_fn: ForwardFn, loss_fn: LossFn, micro_batch_size: int,
                      max_grad_norm: float | None, max_len: int | None = None,
                      combine: CombineFn = sum_objectives) -> dict[str, float]:
    """Forward/backward ``batch`` (this rank's share of the mini-batch) in micro-batches, reduce,
    clip and step. Returns the global mini-batch loss (the sum of the named objectives, if any,
    each also as ``obj_<name>``) and token-weighted means of the loss stats."""
    norm = normalizers(batch, strategy, max_len)
    sums: dict[str, float] = {}
    extremes: dict[str, float] = {}
    totals: dict[str, float] = {}
    buffers: Grads = {}
    params = [p for p in model.parameters() if p.requires_grad]
    for idx in micro_batches(len(batch), micro_batch_size):
        mb = select_rows(batch, idx)
        loss, stats = loss_fn(forward_fn(mb), mb, norm)
        if isinstance(loss, Mapping):
            _accumulate_named(loss, params, buffers, totals)
        else:
            strategy.backward(loss)
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
        w = float(mb.response_mask.sum())
        for k, v in stats.items():
            v = float(torch.as_tensor(v).detach().float().mean())
            if k.endswith(("_min", "_max")):
                pick = min if k.endswith("_min") else max
                extremes[k] = pick(extremes.get(k, v), v)
            else:
                sums[k] = sums.get(k, 0.0) + v * w
    out: dict[str, float] = {}
    if buffers:
        for grads in buffers.values():
            if strategy.world_size > 1:  # identical collectives on every rank (as _reduce_gradients)
                grads[:] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            strategy.reduce_tensors([g for g in grads if g is not None])
        step_grads, combine_stats = combine(buffers)
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.to(p.dtype)
        out.update(combine_stats)
        grad_norm = strategy.step(model, optimizer, max_grad_norm, reduce=False)
    else:
        grad_norm = strategy.step(model, optimizer, max_grad_norm)
    names = sorted(totals)
    reduced = dict(zip(names, reduce_floats(strategy, [totals[k] for k in names], "sum")))
    if buffers:
        out.update({f"obj_{k}": v for k, v in reduced.items()})
        out["loss"] = sum(reduced.values())
    else:
        out["loss"] = reduced.get("loss", 0.0)
    out.update(grad_norm=grad_norm, tokens=norm.global_tokens)
    keys = sorted(sums)
    out.update({k: v / norm.global_tokens for k, v in zip(keys, reduce_floats(strategy, [sums[k] for k in keys], "sum"))})
    for op in ("min", "max"):
        keys = sorted(k for k in extremes if k.endswith(f"_{op}"))
        out.update(zip(keys, reduce_floats(strategy, [extremes[k] for k in keys], op)))
    return out


def _accumulate_named(objectives: Mapping[str, torch.Tensor], params: list[nn.Parameter], buffers: Grads,
                      totals: dict[str, float]) -> None:
    """Add each objective's gradient (w.r.t. ``params``) to its own buffer."""
    names = list(objectives)
    if buffers and set(names) != set(buffers):
        raise ValueError(f"micro-batches returned different objectives: {sorted(names)} vs {sorted(buffers)}")
    for j, name in enumerate(names):
        obj = objectives[name]
        totals[name] = totals.get(name, 0.0) + float(obj.detach())
        grads = (torch.autograd.grad(obj, params, retain_graph=j < len(names) - 1, allow_unused=True)
                 if obj.requires_grad else [None] * len(params))
        acc = buffers.setdefault(name, [None] * len(params))
        for i, g in enumerate(grads):
            if g is not None:
                acc[i] = g.detach() if acc[i] is None else acc[i].add_(g)


def reduce_floats(strategy: Strategy, values: list[float], op: str) -> list[float]:
    """All-reduce a few Python floats (on the strategy's device: NCCL needs CUDA tensors)."""
    if not values or strategy.world_size == 1:
        return values
    dev = strategy.device if strategy.device.startswith("cuda") else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    strategy.all_reduce(t, op)  # type: ignore[arg-type]
    return t.cpu().tolist()
