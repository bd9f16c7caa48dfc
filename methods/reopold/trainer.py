"""REOPOLD on the shared online loop (harness.trainer), as an extension of plain on-policy
distillation (methods.opd): the teacher scores the rollouts in ``prepare`` exactly as OPD does;
REOPOLD adds the token selection of step ``k`` (Eq. 6) and its own loss (Eq. 4).

Per step: rollout -> teacher log-probs (no grad) -> selection ``M`` from the sampler
(exploration ``1[R_old >= c_lambda]``; refinement ``1[H_old >= tau_beta]``, the entropies from a
no-grad policy forward through the seam's ``ViewOutput.entropy()``, the threshold over every
valid token of the rollout batch on all ranks) -> ``sum M`` of each optimizer mini-batch (all
ranks) -> updates with ``methods.reopold.loss.reopold_loss``. The step index comes from the loop,
so the phase survives a resume. No verifiable reward enters the loss."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness import losses
from harness.forward import Forward, policy_forward
from harness.reward_registry import make_reward_fn
from harness.trainer import Context, RewardFn, rollout_is_weight, run_online
from harness.types import Trajectories
from harness.update import Normalizers, micro_batches, reduce_floats, select_rows, split_rows
from methods.opd.trainer import OPD, load_opd_prompts, masked_mean
from methods.reopold import loss as rl
from methods.reopold.config import REOPOLDConfig


class REOPOLD(OPD):
    cfg: REOPOLDConfig  # type: ignore[assignment]

    @property
    def full_vocab(self) -> bool:
        return False

    @property
    def teacher_top_k(self) -> int | None:
        return self.cfg.top_k

    def uses_entropy(self, step: int) -> bool:
        cfg = self.cfg
        return cfg.entropy_sampling and not rl.in_exploration(step, cfg.t_switch, cfg.multistage)

    def prepare(self, traj: Trajectories, ctx: Context, step: int) -> dict[str, float]:
        metrics = super().prepare(traj, ctx, step)  # teacher_logp, rkl_k1 (and rkl_full)
        cfg = self.cfg
        self.strategy = ctx.strategy
        metrics["phase_refine"] = 0.0 if rl.in_exploration(step, cfg.t_switch, cfg.multistage) else 1.0
        if cfg.select_policy == "current":
            return metrics  # chosen in ``loss`` from the update's forward
        mask = traj.response_mask
        reward_old = rl.token_reward(traj.extras["teacher_logp"], traj.old_logp, mask)
        entropy, tau = None, None
        if self.uses_entropy(step):
            entropy = self._old_entropy(traj, ctx)
            tau = self._threshold(entropy, mask, ctx)
            metrics["entropy_threshold"] = float(tau)
            metrics["entropy_mean"] = float(masked_mean(entropy, mask))
        select = rl.selection_mask(step, reward=reward_old, entropy=entropy, mask=mask, lam=cfg.clip_coef,
                                   beta=cfg.entropy_top, t_switch=cfg.t_switch, multistage=cfg.multistage,
                                   entropy_sampling=cfg.entropy_sampling, explore_rule=cfg.explore_mask,
                                   threshold=tau).to(traj.old_logp.device)
        traj.extras["select"] = select
        traj.extras["selected_norm"] = self._minibatch_counts(select, ctx)
        tokens, chosen = reduce_floats(ctx.strategy, [float(mask.sum()), float(select.sum())], "sum")
        metrics["selected_frac_step"] = chosen / max(tokens, 1.0)
        return metrics

    def _old_entropy(self, traj: Trajectories, ctx: Context) -> torch.Tensor:
        """(B, T) entropies of the sampler's policy at every response token (no grad)."""
        pieces = []
        for idx in micro_batches(len(traj), self.cfg.micro_batch_size):
            out = policy_forward(ctx.policy, select_rows(traj, idx), (self.cfg.view,), grad=False)[self.cfg.view]
            pieces.append(out.entropy(self.cfg.entropy_chunk_size).float().detach())
        return torch.cat(pieces, 0).to(traj.old_logp.device)

    def _threshold(self, entropy: torch.Tensor, mask: torch.Tensor, ctx: Context | None = None
                   ) -> torch.Tensor | float:
        """``tau_beta`` over every valid token of ``entropy`` on all ranks."""
        strategy = ctx.strategy if ctx is not None else self.strategy
        if strategy.world_size == 1:
            return rl.entropy_threshold(entropy, mask, self.cfg.entropy_top)
        values = entropy[mask != 0].double()
        (n,) = reduce_floats(strategy, [float(values.numel())], "sum")
        k = rl.top_count(int(n), self.cfg.entropy_top)
        return rl.threshold_by_bisection(values, k, lambda x: reduce_floats(strategy, [x], "sum")[0],
                                         lambda x: reduce_floats(strategy, [x], "min")[0],
                                         lambda x: reduce_floats(strategy, [x], "max")[0])

    def _minibatch_counts(self, select: torch.Tensor, ctx: Context) -> torch.Tensor:
        """(B,) ``sum M`` of the optimizer mini-batch each row belongs to (all ranks), using the
        loop's own split (``harness.update.split_rows``), so the normaliser is Eq. 4's exactly."""
        parts = split_rows(select.shape[0], self.cfg.mini_batches_per_step)
        counts = reduce_floats(ctx.strategy, [float(select[idx].sum()) for idx in parts], "sum")
        out = torch.empty(select.shape[0], dtype=torch.float64, device=select.device)
        for idx, c in zip(parts, counts):
            out[idx.to(select.device)] = c
        return out

    def loss(self, fwd: Forward, mb: Trajectories, norm: Normalizers, step: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        out = fwd[cfg.view]
        if cfg.select_policy == "current":
            select, n_selected = self._current_selection(out, mb, step)
        else:
            select, n_selected = mb.extras["select"], float(mb.extras["selected_norm"][0])
        if cfg.top_k is None:  # the paper's sampled-token reward
            loss, stats = rl.reopold_loss(
                out.logp, mb.old_logp, mb.extras["teacher_logp"], select, lam=cfg.clip_coef,
                stop_grad=cfg.stop_grad, reward_clip=cfg.reward_clip, ppo_clip=cfg.ppo_clip, clip_low=cfg.clip_low,
                clip_high=cfg.clip_high, reward_logp=None if cfg.reward_logp == "current" else mb.old_logp,
                global_selected=n_selected, token_weights=rollout_is_weight(mb))
        else:  # Reopold† (App. D): expected reward over the teacher's top-k tokens
            teacher = losses.TopKTeacher(mb.extras["teacher_topk_ids"].long(), mb.extras["teacher_topk_logq"])
            sampled = rl.token_reward(mb.extras["teacher_logp"], out.logp.detach(), select)
            loss, stats = out.through_head(lambda head: rl.reopold_topk_loss(
                head, teacher, select, lam=cfg.clip_coef, reward_clip=cfg.reward_clip, chunk_size=cfg.kl_chunk_size,
                global_selected=n_selected, sampled_reward=sampled))
        stats["token_reward"] = masked_mean(mb.extras["teacher_logp"] - out.logp, mb.response_mask)
        return loss, stats

    def _current_selection(self, out: Any, mb: Trajectories, step: int) -> tuple[torch.Tensor, float]:
        """``M`` from the update's own forward (``select_policy=current``): ``R`` of the current
        policy, entropies from ``ViewOutput.entropy()``, the threshold over this mini-batch (one
        micro-batch per rank, checked by the config) on all ranks; and ``sum M`` on all ranks."""
        cfg, mask = self.cfg, mb.response_mask
        reward = rl.token_reward(mb.extras["teacher_logp"], out.logp.detach(), mask)
        entropy = tau = None
        if self.uses_entropy(step):
            entropy = out.entropy(cfg.entropy_chunk_size).detach()
            tau = self._threshold(entropy, mask)
        select = rl.selection_mask(step, reward=reward, entropy=entropy, mask=mask, lam=cfg.clip_coef,
                                   beta=cfg.entropy_top, t_switch=cfg.t_switch, multistage=cfg.multistage,
                                   entropy_sampling=cfg.entropy_sampling, explore_rule=cfg.explore_mask,
                                   threshold=tau).to(out.logp.device)
        (n_selected,) = reduce_floats(self.strategy, [float(select.sum())], "sum")
        return select, n_selected


def train(cfg: REOPOLDConfig, out_dir: str | Path, *, method: REOPOLD | None = None,
          reward_fn: RewardFn | None = None, stop_after: int | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) REOPOLD into ``out_dir``; returns the final model directory (None when
    ``stop_after`` ended the session early)."""
    method = method or REOPOLD(cfg)
    if reward_fn is None and cfg.reward:
        reward_fn = make_reward_fn(cfg.reward)
    return run_online(method, cfg, out_dir, load_data=lambda: load_opd_prompts(cfg),  # type: ignore[arg-type]
                      reward_fn=reward_fn, desc="reopold", stop_after=stop_after, **hooks)


__all__ = ["REOPOLD", "REOPOLDConfig", "train"]
