"""Plain on-policy distillation (student samples, teacher scores the same context) as hooks on
the shared online loop (harness.trainer): ``prepare`` scores the rollouts with the frozen teacher
(sampled-token log-probs, or hidden states for the full-vocabulary losses), ``loss`` is one of
methods.opd.loss on the update's single policy forward. No verifiable reward enters the loss;
when the config names one it is computed and logged."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness import losses
from harness.chunking import tokens_per_chunk
from harness.forward import Forward
from harness.models import resolve_model_name
from harness.reward_registry import make_reward_fn
from harness.scoring import logprobs_from_hidden, response_hidden_states, token_logprobs
from harness.trainer import Context, OnlineMethod, RewardFn, load_frozen, rollout_is_weight, run_online
from harness.types import Trajectories
from harness.update import Normalizers
from methods.grpo.data import load_rows, require
from methods.opd import loss as opd_loss  # noqa: F401  (registers the opd/* losses)
from methods.opd.config import OPDConfig
from methods.opd.loss import FULL_VOCAB, TOP_K


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the tokens where ``mask != 0`` (0 when there are none), detached."""
    valid = (mask != 0).to(x.dtype)
    return ((x.detach() * valid).sum() / valid.sum().clamp_min(1)).detach()


class OPD(OnlineMethod):
    cfg: OPDConfig
    needs_reward = False

    def setup(self, ctx: Context) -> None:
        self.teacher = load_frozen(ctx, resolve_model_name(self.cfg.teacher), self.cfg.teacher_dtype)
        self.teacher_weight: torch.Tensor | None = None

    @property
    def full_vocab(self) -> bool:
        return self.cfg.loss in FULL_VOCAB

    @property
    def teacher_top_k(self) -> int | None:
        """k when the loss reads the teacher as its top-k ids and log-probs (``loss=topk-jsd``)."""
        return self.cfg.top_k if self.cfg.loss in TOP_K else None

    def prepare(self, traj: Trajectories, ctx: Context, step: int) -> dict[str, float]:
        cfg = self.cfg
        mbs = cfg.teacher_micro_batch_size or cfg.micro_batch_size
        if self.full_vocab or cfg.log_full_rkl or self.teacher_top_k:
            hidden, weight = response_hidden_states(self.teacher, traj, cfg.teacher_view, grad=False,
                                                    micro_batch_size=mbs)
            self.teacher_weight = weight.detach()
            if self.full_vocab or cfg.log_full_rkl:
                traj.extras["teacher_hidden"] = hidden.detach()
            if self.teacher_top_k:  # the top-k approximation keeps k ids and log-probs a token, no hidden states
                top = losses.teacher_topk(losses.HiddenHead(hidden.detach(), weight.detach()), traj.response_mask,
                                          self.teacher_top_k, cfg.kl_chunk_size)
                traj.extras["teacher_topk_ids"] = top.ids.to(torch.int32)
                traj.extras["teacher_topk_logq"] = top.logq.float()
            with torch.no_grad():
                lp = logprobs_from_hidden(hidden, lambda h: h @ weight.t().to(h.dtype), traj.response_ids,
                                          chunk_tokens=tokens_per_chunk(weight.shape[0]))
            traj.extras["teacher_logp"] = lp * traj.response_mask.to(lp.dtype)
        else:
            traj.extras["teacher_logp"] = token_logprobs(self.teacher, traj, cfg.teacher_view, grad=False,
                                                         micro_batch_size=mbs).detach()
        # k1 estimate of the per-token reverse KL(pi_old || pi_T) on the student's own samples.
        metrics = {"rkl_k1": float(masked_mean(traj.old_logp - traj.extras["teacher_logp"], traj.response_mask))}
        if cfg.log_full_rkl:
            metrics["rkl_full"] = float(self._full_rkl(traj, ctx))
        return metrics

    def _full_rkl(self, traj: Trajectories, ctx: Context) -> torch.Tensor:
        """Mean over the rollouts' tokens of the exact KL(pi_theta || pi_T) at each prefix."""
        hidden, weight = response_hidden_states(ctx.policy, traj, self.cfg.view, grad=False,
                                                micro_batch_size=self.cfg.micro_batch_size)
        assert self.teacher_weight is not None
        kl = losses.full_kl(losses.HiddenHead(hidden, weight),
                            losses.HiddenHead(traj.extras["teacher_hidden"], self.teacher_weight),
                            traj.response_mask, "reverse", self.cfg.kl_chunk_size)
        return masked_mean(kl, traj.response_mask)

    def loss(self, fwd: Forward, mb: Trajectories, norm: Normalizers, step: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        out = fwd[cfg.view]
        mask, teacher_logp = mb.response_mask, mb.extras["teacher_logp"]
        glob = dict(global_tokens=norm.global_tokens, global_seqs=norm.global_seqs, max_len=norm.max_len)
        if cfg.loss == "k1-reward":
            loss, stats = losses.get_loss("opd/k1-reward")(
                out.logp, mb.old_logp, teacher_logp, mask, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                reward_logp=None if cfg.reward_logp == "current" else mb.old_logp, agg=cfg.loss_agg,
                ratio_level=cfg.ratio_level, token_weights=rollout_is_weight(mb), **glob)
        elif cfg.loss == "rkl-sampled":
            loss, stats = losses.get_loss("opd/rkl-sampled")(out.logp, mb.old_logp, teacher_logp, mask,
                                                             agg=cfg.loss_agg, token_weights=rollout_is_weight(mb),
                                                             **glob)
        elif cfg.loss in TOP_K:
            teacher_top = losses.TopKTeacher(mb.extras["teacher_topk_ids"].long(), mb.extras["teacher_topk_logq"])
            gkd_topk = losses.get_loss("opd/gkd-topk")
            loss, per_token = out.through_head(lambda head: gkd_topk(head, teacher_top, mask, chunk_size=cfg.kl_chunk_size,
                                                                     agg=cfg.loss_agg, **glob))
            stats = {"divergence": masked_mean(per_token, mask)}
        else:
            assert self.teacher_weight is not None
            teacher = losses.HiddenHead(mb.extras["teacher_hidden"], self.teacher_weight)
            gkd = losses.get_loss("opd/gkd")
            loss, per_token = out.through_head(lambda head: gkd(head, teacher, mask, cfg.loss, beta=cfg.jsd_beta,
                                                                chunk_size=cfg.kl_chunk_size, agg=cfg.loss_agg, **glob))
            stats = {"divergence": masked_mean(per_token, mask)}
        stats["token_reward"] = masked_mean(teacher_logp - out.logp, mask)
        return loss, stats


def load_opd_prompts(cfg: OPDConfig) -> list:
    """Prompts (a gold answer only when a reward is logged)."""
    rows = load_rows(cfg)
    if cfg.reward:
        return require(rows, "answer", cfg.data, f"the logged reward {cfg.reward!r} needs a gold answer")
    return require(rows, "prompt", cfg.data, "on-policy distillation needs prompts")


def train(cfg: OPDConfig, out_dir: str | Path, *, method: OPD | None = None, reward_fn: RewardFn | None = None,
          stop_after: int | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) on-policy distillation into ``out_dir``; returns the final model directory
    (None when ``stop_after`` ended the session early)."""
    method = method or OPD(cfg)
    if reward_fn is None and cfg.reward:
        reward_fn = make_reward_fn(cfg.reward)
    return run_online(method, cfg, out_dir, load_data=lambda: load_opd_prompts(cfg), reward_fn=reward_fn,
                      desc="opd", stop_after=stop_after, **hooks)


__all__ = ["OPD", "OPDConfig", "train"]
