"""VGS as hooks on the shared online loop (harness.trainer; arXiv 2606.00564 §4, §8).

Per step: the student samples ``tau ~ p_S(. | I, x)`` (the ``full`` view); ``prepare`` scores the
rollouts with the frozen teacher under both views, multimodal and text-only, without gradient
(hidden states; the full-vocabulary terms are computed chunk by chunk from them), computes the
Visual Dependency Score of every token (Eq. 12), its 40th / 70th percentiles over the step's
batch (G4), and the LP mask (Eq. 16) or the adaptive gamma_t (Eq. 25); with ``alpha`` it also
turns the rewards into GRPO group advantages (Eq. 22). ``loss`` gets the student's forward under
both views (``views = ("full", "text_only")``, one forward each, with gradient) and returns

- with a fixed eta (the paper: 0.41 / 0.36), one scalar ``eta (L_Std + gamma L_Vis + lambda L_LP)``
  (Eq. 18; mixed with GRPO by Eq. 22 when ``alpha`` is set): one backward;
- with ``eta_mode=exact``, or on a diagnostics step, named objectives (``std``, ``steer``, ``reg``,
  ``pg``, and zero-valued gradient carriers ``diag_*``: L_Vis, L_Lang, and the three parts on the
  top-30% VDS tokens) whose full-batch,
  rank-reduced gradients ``combine`` turns into the step: ``eta (g_std + g_steer + g_reg) + g_pg``
  with Eq. 15's eta, and the cosines of §3.2 / Fig. 3 (over all tokens, and ``*_top30`` over the
  tokens above the VDS 70th percentile, Fig. 3's bins 7-9).

With ``gamma = lambda = 0``, no diagnostics and no language steering this is standard on-policy
distillation (full-vocabulary reverse KL, Eqs. 3-4): the text-only views are then not computed.
The rollout-IS weights (``cfg.rollout_is``, harness.trainer.rollout_is_weight) multiply the GRPO
surrogate only; the full-vocabulary distillation terms are not importance-weighted samples.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

import torch

from harness import losses
from harness.forward import Forward
from harness.models import resolve_model_name
from harness.reward_registry import make_reward_fn
from harness.scoring import response_hidden_states
from harness.trainer import Context, OnlineMethod, RewardFn, load_frozen, rollout_is_weight, run_online
from harness.types import Trajectories
from harness.distributed import Strategy
from harness.update import Grads, Normalizers
from methods.grpo.data import load_rows, require
from methods.grpo.trainer import GRPO
from methods.vgs import loss as V
from methods.vgs.chunked import vgs_terms
from methods.vgs.config import TeacherGRPOConfig, VGSConfig

logger = logging.getLogger(__name__)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    valid = (mask != 0).to(x.dtype)
    return ((x.detach() * valid).sum() / valid.sum().clamp_min(1)).detach()


def prompts_over_cap(traj: Trajectories, cap: int) -> int:
    """Rollouts whose rendered prompt is longer than ``cap`` tokens (counted, never truncated)."""
    n = int((traj.prompt_mask.sum(-1) > cap).sum())
    if n:
        logger.warning("%d prompts are longer than max_prompt_length=%d tokens (not truncated)", n, cap)
    return n


def gather_valid(strategy: Strategy, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The values at ``mask != 0`` of every rank, concatenated in rank order (an all-gather of
    unequal lengths through the strategy's ``all_reduce``: each rank fills its own row of a
    zero (world, max count) buffer, then one sum). One process: its own values."""
    local = values.detach()[mask != 0].to(torch.float64)
    if strategy.world_size == 1:
        return local
    dev = strategy.device if strategy.device.startswith("cuda") else "cpu"
    counts = torch.zeros(strategy.world_size, dtype=torch.float64, device=dev)
    counts[strategy.rank] = local.numel()
    strategy.all_reduce(counts, "sum")
    buf = torch.zeros(strategy.world_size, int(counts.max()), dtype=torch.float64, device=dev)
    buf[strategy.rank, :local.numel()] = local.to(dev)
    strategy.all_reduce(buf, "sum")
    return torch.cat([buf[r, :int(n)] for r, n in enumerate(counts.tolist())]).cpu()


class VGS(OnlineMethod):
    cfg: VGSConfig

    def __init__(self, cfg: VGSConfig):
        super().__init__(cfg)
        self._diag_step = False

    # ---- what the method needs
    @property
    def needs_reward(self) -> bool:  # type: ignore[override]
        return self.cfg.alpha is not None

    @property
    def needs_text(self) -> bool:
        """Whether the text-only views enter the loss or the diagnostics."""
        c = self.cfg
        return c.gamma > 0 or c.lambda_lp > 0 or c.diag_every > 0 or c.steer == "language"

    @property
    def views(self) -> tuple[str, ...]:
        return (self.cfg.view, self.cfg.text_view) if self.needs_text else (self.cfg.view,)

    @property
    def uses_eta(self) -> bool:
        """eta scales the distillation loss (Eq. 18); inside Eq. 22 only with ``mix_eta`` (G9)."""
        return self.cfg.alpha is None or self.cfg.mix_eta

    def is_diag_step(self, step: int) -> bool:
        return self.cfg.diag_every > 0 and step % self.cfg.diag_every == 0

    def named(self, step: int) -> bool:
        """Named objectives (several backward passes) are needed for exact eta and diagnostics."""
        return self.cfg.eta_mode == "exact" or self.is_diag_step(step)

    # ---- hooks
    def setup(self, ctx: Context) -> None:
        self.teacher = load_frozen(ctx, resolve_model_name(self.cfg.teacher), self.cfg.teacher_dtype)
        self.teacher_weight: Optional[torch.Tensor] = None

    def prepare(self, traj: Trajectories, ctx: Context, step: int) -> dict[str, float]:
        cfg = self.cfg
        metrics: dict[str, float] = {"prompts_over_cap": float(prompts_over_cap(traj, cfg.max_prompt_length))}
        if cfg.alpha is not None:
            assert traj.rewards is not None
            traj.extras["advantages"] = losses.group_advantages(traj.rewards, traj.group_ids, eps=cfg.adv_eps).detach()
        mbs = cfg.teacher_micro_batch_size or cfg.micro_batch_size
        mask = traj.response_mask
        hidden, weight = response_hidden_states(self.teacher, traj, cfg.view, grad=False, micro_batch_size=mbs)
        traj.extras["teacher_hidden"], self.teacher_weight = hidden.detach(), weight.detach()
        if not self.needs_text:
            return metrics
        hidden_t, _ = response_hidden_states(self.teacher, traj, cfg.text_view, grad=False, micro_batch_size=mbs)
        traj.extras["teacher_text_hidden"] = hidden_t.detach()
        with torch.no_grad():  # Eq. 12: VDS_t = KL(Q_t || Qt_t), teacher only
            vds = losses.full_kl(losses.HiddenHead(hidden, weight), losses.HiddenHead(hidden_t, weight), mask,
                                 "reverse", cfg.kl_chunk_size)
        everyone = gather_valid(ctx.strategy, vds, mask)  # G4: the step's whole batch, all ranks
        q_low, q_high = (float(x) for x in V.vds_quantiles(everyone, torch.ones_like(everyone),
                                                           (cfg.adaptive_low_quantile, cfg.lp_quantile)))
        traj.extras["reg_mask"] = V.above(vds, mask, q_high)
        if cfg.adaptive_gamma:
            traj.extras["gamma_t"] = V.adaptive_gamma(vds, mask, cfg.gamma, q_low, q_high)
        metrics.update(vds_mean=float(masked_mean(vds, mask)), vds_q70=q_high, vds_q40=q_low,
                       lp_frac=float(masked_mean(traj.extras["reg_mask"], mask)))
        return metrics

    def loss(self, fwd: Forward, mb: Trajectories, norm: Normalizers, step: int):
        cfg = self.cfg
        mask = mb.response_mask
        glob = dict(global_tokens=norm.global_tokens, global_seqs=norm.global_seqs, max_len=norm.max_len)
        assert self.teacher_weight is not None
        teacher = losses.HiddenHead(mb.extras["teacher_hidden"], self.teacher_weight)
        student = fwd[cfg.view]
        stats: dict[str, torch.Tensor] = {}
        if self.needs_text:
            t = vgs_terms(student.head, fwd[cfg.text_view].head, teacher,
                          losses.HiddenHead(mb.extras["teacher_text_hidden"], self.teacher_weight), mask,
                          detach_qstar=cfg.detach_qstar, chunk_size=cfg.kl_chunk_size)
            objs = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, mb.extras["reg_mask"], mask, gamma=cfg.gamma,
                                    lam=cfg.lambda_lp, steer=cfg.steer, gamma_t=mb.extras.get("gamma_t"),
                                    kl_vp=t.kl_vp_txt if cfg.vp_form == "literal" else None, agg=cfg.loss_agg, **glob)
            stats.update(kl_std=masked_mean(t.kl_std, mask), kl_vis=masked_mean(t.kl_vis, mask),
                         kl_lang=masked_mean(t.kl_lang, mask))
        else:
            kl_std = losses.full_kl(student.head, teacher, mask, "reverse", cfg.kl_chunk_size)
            objs = {"std": losses.agg_loss(kl_std, mask, cfg.loss_agg, **glob)}
            stats["kl_std"] = masked_mean(kl_std, mask)
        scale = 1.0 if cfg.alpha is None else cfg.alpha
        pg = None
        if cfg.alpha is not None:
            pg, pg_stats = losses.policy_loss(student.logp, mb.old_logp, mb.extras["advantages"], mask,
                                              clip_low=cfg.clip_low, clip_high=cfg.clip_high, agg="token-mean",
                                              token_weights=rollout_is_weight(mb), **glob)
            stats.update({f"pg_{k}": v for k, v in pg_stats.items()})
        self._diag_step = self.is_diag_step(step)
        # A fixed eta multiplies the distillation part here (so the logged loss is the same with
        # or without named objectives); the exact eta is applied in ``combine``.
        fixed = cfg.eta_value if (self.uses_eta and cfg.eta_mode != "exact") else 1.0
        if not self.named(step):
            distill = fixed * sum(objs.values())
            return (distill if pg is None else V.mix_grpo(pg, distill, cfg.alpha)), stats
        named = {k: scale * fixed * v for k, v in objs.items()}
        if pg is not None:
            named["pg"] = (1.0 - scale) * pg
        if self._diag_step:  # value 0, gradient = that of the unweighted part (times the same factors)
            top = mb.extras["reg_mask"]  # the top-30% VDS tokens (Fig. 3's bins 7-9)
            parts = {"diag_vis": t.kl_vis, "diag_lang": t.kl_lang, "diag_std_top": top * t.kl_std,
                     "diag_vis_top": top * t.kl_vis, "diag_lang_top": top * t.kl_lang}
            for name, x in parts.items():
                part = losses.agg_loss(x, mask, cfg.loss_agg, **glob)
                named[name] = scale * fixed * (part - part.detach())
        return named, stats

    def combine(self, grads: Grads) -> tuple[list[Optional[torch.Tensor]], dict[str, float]]:
        cfg = self.cfg
        n = len(next(iter(grads.values())))
        none = [None] * n
        g_std, g_steer, g_reg = grads["std"], grads.get("steer", none), grads.get("reg", none)
        exact = V.eta_exact(g_std, g_steer)  # Eq. 15 (scale-free: a fixed eta in both parts cancels)
        step_eta = exact if (self.uses_eta and cfg.eta_mode == "exact") else 1.0
        applied = (exact if cfg.eta_mode == "exact" else float(cfg.eta_value or 1.0)) if self.uses_eta else 1.0
        stats = {"eta": applied, "eta_exact": exact}
        if self._diag_step:
            g_vis, g_lang = grads["diag_vis"], grads["diag_lang"]
            s_norm, v_norm = float(V.grad_dot(g_std, g_std)) ** 0.5, float(V.grad_dot(g_vis, g_vis)) ** 0.5
            cos_sv = V.cosine(g_std, g_vis)
            stats.update(cos_std_vis=cos_sv, cos_std_lang=V.cosine(g_std, g_lang), cos_lang_vis=V.cosine(g_lang, g_vis),
                         norm_std=s_norm, norm_vis=v_norm, norm_lang=float(V.grad_dot(g_lang, g_lang)) ** 0.5,
                         eta_at_gamma=V.eta_from_norms(s_norm, v_norm, cos_sv,
                                                       cfg.gamma if cfg.diag_gamma is None else cfg.diag_gamma))
            s_top, v_top, l_top = grads["diag_std_top"], grads["diag_vis_top"], grads["diag_lang_top"]
            stats.update(cos_std_vis_top30=V.cosine(s_top, v_top), cos_std_lang_top30=V.cosine(s_top, l_top),
                         cos_lang_vis_top30=V.cosine(l_top, v_top))
        return V.steered_update(g_std, g_steer, g_reg, step_eta, grads.get("pg")), stats


def with_system(rows: list, system: Optional[str]) -> list:
    """Rows with ``system`` as their system turn (App. B.4) where they have none."""
    if not system:
        return rows
    return [r if r.system else dataclasses.replace(r, system=system) for r in rows]


def load_vgs_prompts(cfg: VGSConfig) -> list:
    rows = with_system(load_rows(cfg), cfg.system_prompt)
    if cfg.reward:
        return require(rows, "answer", cfg.data, f"the reward {cfg.reward!r} needs a gold answer")
    return require(rows, "prompt", cfg.data, "on-policy distillation needs prompts")


def train(cfg: VGSConfig, out_dir: str | Path, *, method: VGS | None = None, reward_fn: RewardFn | None = None,
          stop_after: int | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) VGS into ``out_dir``; returns the final model directory (None when
    ``stop_after`` ended the session early)."""
    method = method or VGS(cfg)
    if reward_fn is None and cfg.reward:
        reward_fn = make_reward_fn(cfg.reward)
    return run_online(method, cfg, out_dir, load_data=lambda: load_vgs_prompts(cfg), reward_fn=reward_fn,
                      desc="vgs", stop_after=stop_after, **hooks)


class TeacherGRPO(GRPO):
    """methods.grpo with Table 3's prompt cap counted (``prompts_over_cap``)."""

    cfg: TeacherGRPOConfig

    def prepare(self, traj: Trajectories, ctx: Context, step: int) -> dict[str, float]:
        metrics = super().prepare(traj, ctx, step)
        metrics["prompts_over_cap"] = float(prompts_over_cap(traj, self.cfg.max_prompt_length))
        return metrics


def train_teacher(cfg: TeacherGRPOConfig, out_dir: str | Path, *, stop_after: int | None = None,
                  **hooks: Any) -> Path | None:
    """The teacher stage (App. B.1, Table 3): GRPO of the teacher into ``out_dir``."""
    from methods.grpo.data import load_prompts

    return run_online(TeacherGRPO(cfg), cfg, out_dir, load_data=lambda: with_system(load_prompts(cfg), cfg.system_prompt),
                      reward_fn=make_reward_fn(cfg.reward), desc="vgs-teacher", stop_after=stop_after, **hooks)


__all__ = ["TeacherGRPO", "VGS", "VGSConfig", "load_vgs_prompts", "teacher_stage", "train", "train_teacher"]


def teacher_stage(overrides: dict, out_dir: str | Path, profile: str = "smoke") -> Path:
    """The registry's ``vgs_teacher`` trainer: ``TeacherGRPOConfig`` from ``profile`` + ``overrides``."""
    from methods.registry import load_method_config
    from methods.vgs.config import TEACHER_PROFILES

    final = train_teacher(load_method_config(TeacherGRPOConfig, TEACHER_PROFILES, profile, None, overrides), out_dir)
    assert final is not None
    return final
