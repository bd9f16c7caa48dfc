"""PTD-PO (arXiv 2606.07000 §2.3) as hooks on the shared online loop (harness.trainer).

Per step: the policy samples G responses per question in the question-only context x; the
composite reward (0.1 format + 0.9 accuracy) gives group advantages (Eq. 1); the binary accuracy
routes rollouts (Eq. 8); the frozen reference model, which is both the KL anchor (on x) and the
teacher (on x^h = [x; h], Eq. 9), scores the routed rollouts' response ids — one forward without
gradient, only for routed rows whose sample has privileged text (no hint, no teacher forward);
its final hidden states are kept ((B, T, H), not (B, T, V)). The update's policy forward on x
(Eq. 10) then gives the surrogate, the reference KL and, on the routed tokens, the top-K JSD
with a tail bucket against the teacher (Eqs. 11-17), all in ``methods.ptdpo.loss.ptdpo_loss``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from harness import losses
from harness.errors import DataError
from harness.forward import Forward
from harness.jsonl import iter_jsonl
from harness.models import is_sharded
from harness.reward_registry import make_reward_fn
from harness.scoring import response_hidden_states, token_logprobs
from harness.trainer import (Context, OnlineMethod, RewardFn, default_engine, load_frozen, online_step_builder,
                             rollout_is_weight, run_training)
from harness.types import Sample, Trajectories
from harness.update import Normalizers, reduce_floats, select_rows, split_rows
from methods.grpo.data import require
from methods.ptdpo.config import PTDPOConfig
from methods.ptdpo.context import privileged_text, teacher_view
from methods.ptdpo.dynamic import DynamicSamplingEngine
from methods.ptdpo.loss import group_stats, ptd_divergence, ptdpo_loss, routing_weights

logger = logging.getLogger(__name__)


class PTDPO(OnlineMethod):
    cfg: PTDPOConfig

    def __init__(self, cfg: PTDPOConfig):
        super().__init__(cfg)
        self.accuracy_fn = make_reward_fn(cfg.accuracy_reward)
        self.teacher_view = teacher_view(cfg.privileged, cfg.hint_position)
        self.ref: Any = None
        self.teacher_weight: torch.Tensor | None = None
        self.engine: DynamicSamplingEngine | None = None

    @property
    def needs_reward(self) -> bool:  # type: ignore[override]
        return self.cfg.pg_coef > 0

    def setup(self, ctx: Context) -> None:
        cfg = self.cfg
        if cfg.kl_coef > 0 or cfg.lambda_ptd > 0:  # pi_ref = the initial policy, frozen: KL anchor and teacher
            self.ref = load_frozen(ctx, ctx.policy.path, cfg.dtype, teacher=False)

    # ------------------------------------------------------------------ prepare

    def prepare(self, traj: Trajectories, ctx: Context, step: int) -> dict[str, float]:
        cfg = self.cfg
        dev = traj.response_ids.device
        metrics: dict[str, float] = dict(self.engine.last_stats) if self.engine is not None else {}
        rewards = traj.rewards if traj.rewards is not None else torch.zeros(len(traj))
        traj.extras["advantages"] = losses.group_advantages(
            rewards, traj.group_ids, eps=cfg.adv_eps, scale=cfg.adv_scale, unbiased=cfg.adv_std_unbiased).detach()
        accuracy = self.accuracy_fn(traj).to(torch.float32).to(dev)
        has_text = torch.tensor([privileged_text(traj.sample_of(i), cfg.privileged) is not None
                                 for i in range(len(traj))], dtype=torch.float32, device=dev)
        alpha = routing_weights(accuracy, traj.group_ids, cfg.tau_ptd, cfg.trajectory_selection).to(dev) * has_text
        traj.extras["accuracy"], traj.extras["alpha"] = accuracy, alpha
        if cfg.kl_coef > 0:
            traj.extras["ref_logp"] = token_logprobs(self.ref, traj, cfg.view, grad=False,
                                                     micro_batch_size=cfg.micro_batch_size).detach()
            if cfg.skip_ref_kl_routed_groups:  # [C] pid_group_mask (T6)
                routed_groups = set(traj.group_ids[alpha > 0].tolist())
                traj.extras["kl_row_weights"] = torch.tensor(
                    [0.0 if int(g) in routed_groups else 1.0 for g in traj.group_ids], device=dev)
        if cfg.lambda_ptd > 0:
            self._score_teacher(traj, alpha, ctx)
            self._routed_counts(traj, alpha, ctx)
        metrics.update(group_stats(accuracy, traj.group_ids))
        metrics.update(accuracy_mean=float(accuracy.mean()), routed_frac=float(alpha.mean()),
                       hinted_frac=float(has_text.mean()))
        return metrics

    def _score_teacher(self, traj: Trajectories, alpha: torch.Tensor, ctx: Context) -> None:
        """Hidden states of pi_ref on [x; h] followed by the routed rollouts' response ids (Eq. 9);
        zeros for the other rows (never read: their tokens are outside F)."""
        rows = alpha.nonzero().flatten().tolist()
        traj.extras["teacher_hidden"] = None
        scored = self._rows_to_score(rows, ctx)
        if not scored:
            return
        sub = select_rows(traj, scored)
        sub.extras = {}
        mbs = self.cfg.teacher_micro_batch_size or self.cfg.micro_batch_size
        hidden, weight = response_hidden_states(self.ref, sub, self.teacher_view, grad=False, micro_batch_size=mbs)
        if not rows:  # only the padding forwards of a sharded reference
            return
        hidden = hidden[:len(rows)]
        full = torch.zeros((len(traj), *hidden.shape[1:]), dtype=hidden.dtype, device=hidden.device)
        full[torch.tensor(rows, device=hidden.device)] = hidden.detach()
        traj.extras["teacher_hidden"], self.teacher_weight = full, weight.detach()

    def _rows_to_score(self, rows: list[int], ctx: Context) -> list[int]:
        """The routed rows; under a sharded reference (``shard_frozen``: its forwards and weight
        gather are collectives) padded with repeats of one row, discarded after scoring, to the
        most any rank routes, so that every rank runs the same forwards."""
        if not is_sharded(self.ref.model):
            return rows
        (most,) = reduce_floats(ctx.strategy, [float(len(rows))], "max")
        return rows + [rows[0] if rows else 0] * (int(most) - len(rows))

    def _routed_counts(self, traj: Trajectories, alpha: torch.Tensor, ctx: Context) -> None:
        """|F| of each row's optimizer mini-batch over all ranks (Eq. 11's denominator, T3)."""
        counts = torch.zeros(len(traj))
        routed_tokens = (alpha.cpu()[:, None] * (traj.response_mask.cpu() != 0)).sum(-1)
        for idx in split_rows(len(traj), self.cfg.mini_batches_per_step):
            (n,) = reduce_floats(ctx.strategy, [float(routed_tokens[idx].sum())], "sum")
            counts[idx] = max(n, 1.0)
        traj.extras["ptd_den_tokens"] = counts.to(traj.response_ids.device)

    # ------------------------------------------------------------------ loss

    def loss(self, fwd: Forward, mb: Trajectories, norm: Normalizers, step: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        out = fwd[cfg.view]
        alpha = mb.extras["alpha"]
        ptd_tokens = None
        if cfg.lambda_ptd > 0 and mb.extras.get("teacher_hidden") is not None and bool((alpha > 0).any()):
            assert self.teacher_weight is not None
            routed = mb.response_mask * (alpha[:, None] > 0).to(mb.response_mask.dtype)
            teacher = losses.HiddenHead(mb.extras["teacher_hidden"], self.teacher_weight)
            ptd_tokens = lambda w: out.through_head(  # noqa: E731 - the fused path (ptdpo_loss gives w)
                lambda head: ptd_divergence(head, teacher, routed, cfg.divergence, k=cfg.top_k,
                                            support=cfg.topk_support, chunk_size=cfg.kl_chunk_size, token_weights=w))
        loss, stats = ptdpo_loss(
            out.logp, mb.old_logp, mb.extras["advantages"], mb.response_mask, lambda_ptd=cfg.lambda_ptd,
            alpha=alpha, ptd_tokens=ptd_tokens, ref_logp=mb.extras.get("ref_logp"), kl_coef=cfg.kl_coef,
            kl_estimator=cfg.kl_estimator, kl_direction=cfg.kl_direction,
            kl_row_weights=mb.extras.get("kl_row_weights"), pg_coef=cfg.pg_coef, clip_low=cfg.clip_low,
            clip_high=cfg.clip_high, clip_ratio_c=cfg.clip_ratio_c or None, agg=cfg.loss_agg,
            ratio_level=cfg.ratio_level, global_tokens=norm.global_tokens, global_seqs=norm.global_seqs,
            max_len=norm.max_len, token_weights=rollout_is_weight(mb),
            ptd_global_tokens=float(mb.extras["ptd_den_tokens"][0]) if "ptd_den_tokens" in mb.extras else None)
        return loss, stats


# ---------------------------------------------------------------------- data and entry point


def load_hints(path: str | Path) -> dict[str, str]:
    """``{id: hint}`` from a hint set written by methods.ptdpo.hints (its accepted rows); ``path``
    is the job's directory or its ``hints.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / "hints.jsonl"
    out: dict[str, str] = {}
    for i, rec in enumerate(iter_jsonl(path, torn_tail=True)):
        if not isinstance(rec.get("id"), str) or not isinstance(rec.get("hint"), str):
            raise DataError(str(path), i, "id/hint", "every row needs a string id and hint")
        if rec.get("status", "accepted") == "accepted":
            out[rec["id"]] = rec["hint"]
    return out


def load_ptdpo_prompts(cfg: PTDPOConfig) -> list[Sample]:
    """Training questions with gold answers (format instruction ``cfg.instruction``), with the
    hints of ``cfg.hints`` attached by id when given."""
    from harness.data import load_training_set

    rows = load_training_set(cfg.data, split=cfg.data_split, limit=cfg.data_limit, instruction=cfg.instruction)
    rows = require(rows, "answer", cfg.data, "the reward needs a gold answer")
    if cfg.hints:
        hints = load_hints(cfg.hints)
        for s in rows:
            s.hint = hints.get(s.id)
        missing = sum(s.hint is None for s in rows)
        if missing:
            logger.warning("%d of %d training rows have no hint in %s: they get no teacher (alpha = 0)",
                           missing, len(rows), cfg.hints)
    return rows


def train(cfg: PTDPOConfig, out_dir: str | Path, *, method: PTDPO | None = None, reward_fn: RewardFn | None = None,
          stop_after: int | None = None, samples: list[Sample] | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) PTD-PO into ``out_dir``; returns the final model directory (None when
    ``stop_after`` ended the session early). ``samples`` replaces loading ``cfg.data`` (benches,
    tests: ``cfg.data`` then only names them); ``hooks``: ``load_policy`` / ``make_engine``."""
    method = method or PTDPO(cfg)
    make_engine = hooks.pop("make_engine", default_engine)
    data: list[Sample] = []

    def load() -> list[Sample]:
        data[:] = load_ptdpo_prompts(cfg) if samples is None else samples
        return data

    def engine(ctx: Context) -> Any:
        inner = make_engine(ctx)
        if not cfg.dynamic_sampling:
            return inner
        method.engine = DynamicSamplingEngine(inner, method.accuracy_fn, data, cfg.max_gen_batches)
        return method.engine

    if reward_fn is None and cfg.reward:
        reward_fn = make_reward_fn(cfg.reward)
    step = online_step_builder(method, reward_fn, make_engine=engine)
    return run_training(cfg, out_dir, load_data=load, build_step=step, samples_per_step=cfg.prompts_per_step,
                        stop_after=stop_after, desc="ptdpo", **hooks)


__all__ = ["PTDPO", "PTDPOConfig", "load_hints", "load_ptdpo_prompts", "train"]
