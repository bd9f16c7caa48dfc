"""GRPO (Shao et al. 2024, arXiv 2402.03300) with DAPO's asymmetric clip, as VOLD Eq. 2 uses it.

The method is two hooks on the shared online loop (harness.trainer): ``prepare`` turns rewards
into group-normalised advantages (and, with ``kl_coef > 0``, scores the rollouts under a frozen
reference), ``loss`` is the clipped surrogate plus the optional reference KL, each divided by the
mini-batch's global counts; the rollout-IS weights (``cfg.rollout_is``) multiply the surrogate
only, not the KL. VOLD and the other on-policy distillation methods subclass it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness import losses
from harness.reward_registry import make_reward_fn
from harness.scoring import token_logprobs
from harness.forward import Forward
from harness.trainer import Context, OnlineMethod, RewardFn, load_frozen, rollout_is_weight, run_online
from harness.types import Trajectories
from harness.update import Normalizers
from methods.grpo.config import GRPOConfig
from methods.grpo.data import load_prompts


class GRPO(OnlineMethod):
    cfg: GRPOConfig

    def setup(self, ctx: Context) -> None:
        self.ref = None
        if self.cfg.kl_coef > 0:  # pi_ref = the initial policy, frozen (read from the policy's source)
            self.ref = load_frozen(ctx, ctx.policy.path, self.cfg.dtype, teacher=False)

    def prepare(self, traj: Trajectories, ctx: Context, step: int) -> dict[str, float]:
        cfg = self.cfg
        assert traj.rewards is not None
        traj.extras["advantages"] = losses.group_advantages(
            traj.rewards, traj.group_ids, eps=cfg.adv_eps, scale=cfg.adv_scale,
            unbiased=cfg.adv_std_unbiased).detach()
        if self.ref is not None:
            traj.extras["ref_logp"] = token_logprobs(self.ref, traj, cfg.view, grad=False,
                                                     micro_batch_size=cfg.micro_batch_size).detach()
        # Share of groups whose rollouts all got the same reward (zero advantage, no signal).
        g = traj.group_ids
        flat = torch.zeros(int(g.max()) + 1, dtype=torch.bool, device=g.device)
        for gid in g.unique():
            r = traj.rewards[g == gid]
            flat[gid] = bool((r == r[0]).all())
        return {"groups_flat_frac": float(flat[g.unique()].float().mean())}

    def loss(self, fwd: Forward, mb: Trajectories, norm: Normalizers, step: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        logp = fwd[cfg.view].logp
        glob = dict(global_tokens=norm.global_tokens, global_seqs=norm.global_seqs, max_len=norm.max_len)
        pg, stats = losses.get_loss("policy_loss")(
            logp, mb.old_logp, mb.extras["advantages"], mb.response_mask, clip_low=cfg.clip_low,
            clip_high=cfg.clip_high, agg=cfg.loss_agg, ratio_level=cfg.ratio_level,
            token_weights=rollout_is_weight(mb), **glob)
        stats = {f"pg_{k}": v for k, v in stats.items()}
        total = pg
        if cfg.kl_coef > 0:
            kl_tok = losses.kl_estimate(logp, mb.extras["ref_logp"], cfg.kl_estimator)
            total = total + cfg.kl_coef * losses.agg_loss(kl_tok, mb.response_mask, cfg.loss_agg, **glob)
            m = mb.response_mask.to(kl_tok.dtype)
            stats["kl_ref"] = ((kl_tok * m).sum() / m.sum().clamp(min=1)).detach()  # local token mean
        return total, stats


def train(cfg: GRPOConfig, out_dir: str | Path, *, method: GRPO | None = None, reward_fn: RewardFn | None = None,
          stop_after: int | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) ``method`` (default plain GRPO) into ``out_dir``; returns the final model
    directory (None when ``stop_after`` ended the session early). ``reward_fn`` defaults to
    ``cfg.reward`` from harness.reward_registry; ``hooks`` (``load_policy``, ``make_engine``) replace
    the model loader / rollout engine (tests, other engines)."""
    method = method or GRPO(cfg)
    return run_online(method, cfg, out_dir, load_data=lambda: load_prompts(cfg),
                      reward_fn=reward_fn or make_reward_fn(cfg.reward), desc=type(method).__name__.lower(),
                      stop_after=stop_after, **hooks)


__all__ = ["GRPO", "GRPOConfig", "train"]
