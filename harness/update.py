"""One optimizer update over a batch of trajectories, split into micro-batches and ranks, with
loss denominators that do not depend on the split.

A loss that divides by *local* counts (this micro-batch's tokens, this rank's sequences) changes
with the micro-batch size, the accumulation count and the number of ranks — a classic silent bug
in RL trainers. Here the token and sequence counts of the whole optimizer mini-batch are summed
over all ranks first (:func:`normalizers`); every micro-batch loss divides by those global counts,
so micro-batch losses (and gradients) add up to exactly the full-batch loss. Gradients are
therefore summed over micro-batches and sum-reduced over ranks (harness.distributed).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable

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


LogpFn = Callable[[Trajectories], torch.Tensor]
"""(micro-batch) -> (B, T) log-probs of the response tokens under the policy, with grad."""
LossFn = Callable[[torch.Tensor, Trajectories, Normalizers], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]
"""(logp, micro-batch, normalizers) -> (loss piece, stats). Loss pieces must sum to the batch loss;
stats are scalar means over the micro-batch's valid tokens (combined token-weighted; names ending
in ``_min`` / ``_max`` are combined by min / max)."""


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
                      batch: Trajectories, logp_fn: LogpFn, loss_fn: LossFn, micro_batch_size: int,
                      max_grad_norm: float | None, max_len: int | None = None) -> dict[str, float]:
    """Forward/backward ``batch`` (this rank's share of the mini-batch) in micro-batches, reduce,
    clip and step. Returns the global mini-batch loss and token-weighted means of the loss stats."""
    norm = normalizers(batch, strategy, max_len)
    sums: dict[str, float] = {}
    extremes: dict[str, float] = {}
    total = 0.0
    for idx in micro_batches(len(batch), micro_batch_size):
        mb = select_rows(batch, idx)
        logp = logp_fn(mb)
        loss, stats = loss_fn(logp, mb, norm)
        strategy.backward(loss)
        total += float(loss.detach())
        w = float(mb.response_mask.sum())
        for k, v in stats.items():
            v = float(torch.as_tensor(v).detach().float().mean())
            if k.endswith(("_min", "_max")):
                pick = min if k.endswith("_min") else max
                extremes[k] = pick(extremes.get(k, v), v)
            else:
                sums[k] = sums.get(k, 0.0) + v * w
    grad_norm = strategy.step(model, optimizer, max_grad_norm)
    out = {"loss": reduce_floats(strategy, [total], "sum")[0], "grad_norm": grad_norm, "tokens": norm.global_tokens}
    keys = sorted(sums)
    out.update({k: v / norm.global_tokens for k, v in zip(keys, reduce_floats(strategy, [sums[k] for k in keys], "sum"))})
    for op in ("min", "max"):
        keys = sorted(k for k in extremes if k.endswith(f"_{op}"))
        out.update(zip(keys, reduce_floats(strategy, [extremes[k] for k in keys], op)))
    return out


def reduce_floats(strategy: Strategy, values: list[float], op: str) -> list[float]:
    """All-reduce a few Python floats (on the strategy's device: NCCL needs CUDA tensors)."""
    if not values or strategy.world_size == 1:
        return values
    dev = strategy.device if strategy.device.startswith("cuda") else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    strategy.all_reduce(t, op)  # type: ignore[arg-type]
    return t.cpu().tolist()
