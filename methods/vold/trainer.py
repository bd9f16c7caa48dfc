"""VOLD stage 2: GRPO plus on-policy distillation from a text-only teacher on the same rollouts
(arXiv 2510.23497 §3.2, Eqs. 5-6), as hooks on the shared online loop (harness.trainer).

Per step: the student samples K responses per prompt; the reward (binary ``\\boxed{}`` exact
match) gives group advantages (methods.grpo); the frozen teacher scores every response token
given the *text-only* view of the prompt, rendered with the teacher's own chat template, followed
by the student's response ids unchanged (harness.scoring) — one forward pass, no generation, no
gradient; then ``methods.vold.loss.vold_loss`` (Eq. 6 by default). The teacher must share the
student's vocabulary (§3.1); ``harness.models.load_teacher`` refuses one that does not.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch

from harness import losses
from harness.forward import Forward
from harness.models import resolve_model_name
from harness.routing import failure_weights
from harness.reward_registry import make_reward_fn
from harness.trainer import Context, load_frozen, online_step_builder, rollout_is_weight, run_training
from harness.types import Trajectories
from harness.update import Normalizers, reduce_floats, split_rows
from harness.validation import ValidatorFactory, with_validation
from methods.grpo.data import load_prompts
from methods.grpo.trainer import GRPO
from methods.vold.config import VOLDConfig
from methods.vold.loss import FULL_ESTIMATORS, vold_loss


class VOLD(GRPO):
    cfg: VOLDConfig

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.teacher = None
        self.teacher_weight: torch.Tensor | None = None
        if self.cfg.beta > 0:
            self.teacher = load_vold_teacher(self.cfg, ctx)

    @property
    def full_vocab(self) -> bool:
        return self.cfg.kl_estimator in FULL_ESTIMATORS

    def prepare(self, traj: Trajectories, ctx: Context, step: int) -> dict[str, float]:
        from harness.scoring import response_hidden_states, token_logprobs

        metrics = super().prepare(traj, ctx, step)
        cfg = self.cfg
        if self.teacher is None:
            return metrics
        mbs = cfg.teacher_micro_batch_size or cfg.micro_batch_size
        if self.full_vocab:
            hidden, weight = response_hidden_states(self.teacher, traj, cfg.teacher_view, grad=False,
                                                    micro_batch_size=mbs)
            traj.extras["teacher_hidden"], self.teacher_weight = hidden.detach(), weight.detach()
        else:
            traj.extras["teacher_logp"] = token_logprobs(self.teacher, traj, cfg.teacher_view, grad=False,
                                                         micro_batch_size=mbs).detach()
        assert traj.rewards is not None
        failed = failure_weights(traj.rewards, cfg.kl_mask)
        if cfg.kl_mask_norm == "failed-tokens":
            self._failed_counts(traj, failed, ctx)
        metrics["kl_active_frac"] = float(failed.mean())
        if not self.full_vocab:
            mask = traj.response_mask.bool()
            d = (traj.old_logp - traj.extras["teacher_logp"])[mask]
            metrics["teacher_logp_mean"] = float(traj.extras["teacher_logp"][mask].mean()) if mask.any() else 0.0
            metrics["k2_old_mean"] = float((0.5 * d.square()).mean()) if mask.any() else 0.0
        return metrics

    def _failed_counts(self, traj: Trajectories, failed: torch.Tensor, ctx: Context) -> None:
        """Per row: the (weighted) token and rollout counts of failed rollouts in its optimizer
        mini-batch over all ranks — the denominators of ``kl_mask_norm="failed-tokens"``."""
        tokens = torch.zeros(len(traj))
        seqs = torch.zeros(len(traj))
        w = failed.detach().cpu()
        lengths = traj.response_mask.sum(-1).float().cpu()
        for idx in split_rows(len(traj), self.cfg.mini_batches_per_step):
            t, s = reduce_floats(ctx.strategy, [float((w[idx] * lengths[idx]).sum()),
                                                float((w[idx] * (lengths[idx] > 0)).sum())], "sum")
            tokens[idx], seqs[idx] = max(t, 1.0), max(s, 1.0)
        dev = traj.response_ids.device
        traj.extras["kl_den_tokens"], traj.extras["kl_den_seqs"] = tokens.to(dev), seqs.to(dev)

    def kl_tokens(self, fwd: Forward, mb: Trajectories) -> Callable[[torch.Tensor], losses.FusedLoss]:
        """Full-vocabulary KL between the student (the update's own forward, with grad) and the
        teacher (hidden states scored in ``prepare``), on the fused path: a function of the
        distillation term's token weights (``vold_loss``) returning the weighted sum and the
        per-token values."""
        assert self.teacher_weight is not None
        out = fwd[self.cfg.view]
        teacher = losses.HiddenHead(mb.extras["teacher_hidden"], self.teacher_weight)
        kl = losses.get_loss("full_kl")
        return lambda w: out.through_head(lambda student: kl(student, teacher, mb.response_mask,
                                                             FULL_ESTIMATORS[self.cfg.kl_estimator],
                                                             self.cfg.kl_chunk_size, token_weights=w))

    def loss(self, fwd: Forward, mb: Trajectories, norm: Normalizers, step: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        logp = fwd[cfg.view].logp
        beta = cfg.beta if self.teacher is not None else 0.0
        teacher_logp = kl_tokens = None
        if beta > 0:
            if self.full_vocab:
                kl_tokens = self.kl_tokens(fwd, mb)
            else:
                teacher_logp = mb.extras["teacher_logp"]
        kl_den = {}
        if beta > 0 and cfg.kl_mask_norm == "failed-tokens":
            kl_den = dict(kl_global_tokens=float(mb.extras["kl_den_tokens"][0]),
                          kl_global_seqs=float(mb.extras["kl_den_seqs"][0]))
        assert mb.rewards is not None
        return vold_loss(logp, mb.old_logp, mb.extras["advantages"], mb.rewards, mb.response_mask, beta=beta,
                         teacher_logp=teacher_logp, kl_tokens=kl_tokens, masked=cfg.kl_mask,
                         estimator=cfg.kl_estimator, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                         agg=cfg.loss_agg, ratio_level=cfg.ratio_level, kl_agg=cfg.kl_agg,
                         kl_norm=cfg.kl_mask_norm, global_tokens=norm.global_tokens,
                         global_seqs=norm.global_seqs, max_len=norm.max_len, token_weights=rollout_is_weight(mb),
                         **kl_den)


def load_vold_teacher(cfg: VOLDConfig, ctx: Context) -> Any:
    """The frozen teacher (harness.trainer.load_frozen: sharded like the student under
    ``shard_frozen``); ``VocabularyMismatchError`` (from harness.models.load_teacher) when its
    vocabulary differs from the student's (§3.1)."""
    return load_frozen(ctx, resolve_model_name(cfg.teacher), cfg.teacher_dtype)


def train(cfg: VOLDConfig, out_dir: str | Path, *, method: VOLD | None = None, stop_after: int | None = None,
          validator: ValidatorFactory | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) VOLD stage 2 into ``out_dir``; returns the final model directory (None when
    ``stop_after`` ended the session early). ``validator`` (a harness.validation factory, e.g.
    evals.validation.benchmark_validator, passed by the caller) measures ``val_acc`` every
    ``cfg.val_every`` steps; without one there is no validation. ``hooks``: ``load_policy`` /
    ``make_engine`` for tests."""
    method = method or VOLD(cfg)
    builder_kw = {k: hooks.pop(k) for k in ("make_engine",) if k in hooks}
    build = online_step_builder(method, make_reward_fn(cfg.reward), **builder_kw)
    if validator is not None and cfg.val_every > 0:
        build = with_validation(build, validator(cfg), cfg.val_every, cfg.steps)
    elif cfg.val_every > 0:
        logging.getLogger(__name__).warning("val_every=%d but no validator was given: no validation "
                                            "(the caller injects one, e.g. evals.validation.benchmark_validator)",
                                            cfg.val_every)
    return run_training(cfg, out_dir, load_data=lambda: load_prompts(cfg), build_step=build,
                        samples_per_step=cfg.prompts_per_step, stop_after=stop_after, desc="vold", **hooks)


__all__ = ["VOLD", "VOLDConfig", "load_vold_teacher", "train"]
