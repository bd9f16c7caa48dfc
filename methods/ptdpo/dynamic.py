"""DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476 §3.2) as a rollout-engine wrapper.

A group whose rollouts are all correct or all wrong has zero advantage and no policy-gradient
signal. Dynamic sampling drops such groups and keeps sampling fresh questions until the rollout
batch holds as many informative groups as it asked for. Here: up to ``max_gen_batches``
generation rounds per step (verl's ``max_num_gen_batches``); the extra questions are drawn from
the training set with the step's sampling seed (so a resumed run samples the same ones); if the
rounds run out, the batch is completed with the dropped groups, in the order they came (verl
stops with an error there; completing keeps the step's batch size) and ``dapo_filled`` counts them.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable

import torch

from harness.types import Sample, SamplingParams, Trajectories
from harness.update import select_rows


def informative_groups(accuracy: torch.Tensor, group_ids: torch.Tensor) -> list[int]:
    """Group ids (in order) whose accuracies are not all equal (0 < m < G)."""
    out = []
    for g in torch.unique(group_ids).tolist():
        a = accuracy[group_ids == g]
        if bool((a != a[0]).any()):
            out.append(int(g))
    return out


def _pad_to(x: torch.Tensor, width: int, left: bool, value: float = 0) -> torch.Tensor:
    extra = width - x.shape[1]
    if extra <= 0:
        return x
    pad = torch.full((x.shape[0], extra, *x.shape[2:]), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], 1)


def concat_trajectories(parts: list[Trajectories]) -> Trajectories:
    """One batch from several (prompts left-padded, responses right-padded to common widths;
    group ids offset; per-call caches in ``extras`` dropped)."""
    if len(parts) == 1:
        return parts[0]
    p_w = max(t.prompt_ids.shape[1] for t in parts)
    r_w = max(t.response_ids.shape[1] for t in parts)
    offset, groups, samples = 0, [], []
    for t in parts:
        groups.append(t.group_ids + offset)
        samples += t.samples
        offset += len(t.samples)
    cat = lambda name, w, left: torch.cat([_pad_to(getattr(t, name), w, left) for t in parts])
    valid = None
    if any(t.response_valid is not None for t in parts):
        valid = torch.cat([_pad_to(t.attention_mask, r_w, False) for t in parts])
    images = None
    if any(t.response_images is not None for t in parts):
        images = [im for t in parts for im in (t.response_images or [[] for _ in range(len(t))])]
    return Trajectories(samples=samples, prompt_ids=cat("prompt_ids", p_w, True), prompt_mask=cat("prompt_mask", p_w, True),
                        response_ids=cat("response_ids", r_w, False), response_mask=cat("response_mask", r_w, False),
                        old_logp=cat("old_logp", r_w, False), group_ids=torch.cat(groups),
                        texts=[x for t in parts for x in t.texts], response_valid=valid, response_images=images)


def take_groups(traj: Trajectories, groups: list[int]) -> Trajectories:
    """The rows of ``groups`` (in that order), renumbered 0..len(groups)-1. ``extras`` are dropped:
    an engine's output has none the loop needs; the rollout-IS weights (harness.trainer
    ``rollout_mismatch``) are computed after ``generate`` returns, from this batch's ``old_logp``."""
    rows = [i for g in groups for i in (traj.group_ids == g).nonzero().flatten().tolist()]
    out = select_rows(traj, rows)
    remap = {g: j for j, g in enumerate(groups)}
    out.group_ids = torch.tensor([remap[int(g)] for g in out.group_ids], dtype=traj.group_ids.dtype,
                                 device=traj.group_ids.device)
    out.samples = [traj.samples[g] for g in groups]
    out.extras = {}
    return out


class DynamicSamplingEngine:
    """Wraps a rollout engine; ``accuracy_fn(traj) -> (B,)`` decides which groups are informative."""

    def __init__(self, inner: Any, accuracy_fn: Callable[[Trajectories], torch.Tensor], pool: list[Sample],
                 max_gen_batches: int):
        self.inner, self.accuracy_fn, self.pool, self.max_gen_batches = inner, accuracy_fn, pool, max_gen_batches
        self.last_stats: dict[str, float] = {}

    def sync_weights(self, model: object) -> None:
        self.inner.sync_weights(model)

    def generate(self, samples: list[Sample], sampling: SamplingParams) -> Trajectories:
        need = len(samples)
        rng = random.Random(sampling.seed)
        parts, kept, dropped = [], [], []
        batch = samples
        for round_ in range(self.max_gen_batches):
            seed = None if sampling.seed is None else sampling.seed + round_
            traj = self.inner.generate(batch, dataclasses.replace(sampling, seed=seed))
            good = set(informative_groups(self.accuracy_fn(traj).to(traj.group_ids.device), traj.group_ids))
            base = sum(len(p.samples) for p in parts)
            parts.append(traj)
            for g in range(len(traj.samples)):
                (kept if g in good else dropped).append(base + g)
            if len(kept) >= need:
                break
            batch = rng.sample(self.pool, min(need, len(self.pool)))
        chosen = kept[:need]
        filled = dropped[:need - len(chosen)]
        self.last_stats = {"dapo_gen_rounds": float(len(parts)), "dapo_filled": float(len(filled))}
        return take_groups(concat_trajectories(parts), sorted(chosen + filled))
