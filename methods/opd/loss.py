"""Plain on-policy distillation losses as pure tensor functions, registered by name in
``harness.losses.LOSSES`` (``opd/<name>``).

The student samples ``y ~ pi_theta``; the teacher scores the same tokens in the same context.
With ``lp^S = log pi_theta(y_t | h_t)`` and ``lp^T = log pi_T(y_t | h_t)`` the per-token *reward*
is ``R_t = lp^T - lp^S`` (REOPOLD Eq. 3; its expectation under the student is minus the reverse
KL, REOPOLD Eq. 2). Five readings of "minimise KL(pi_theta || pi_T) on the student's samples":

- ``k1-reward``  ``R_t`` detached, used as a per-token advantage in the clipped surrogate
  (REOPOLD's ``J_RKL^sg``; Thinking Machines' on-policy distillation; verl's
  ``use_policy_gradient`` distillation). Its expected gradient is the reverse-KL gradient
  (tests/test_opd.py checks it by Monte Carlo).
- ``rkl-sampled`` ``-rho_t R_t`` with the gradient through ``R`` as well (REOPOLD's ``J_RKL``, its
  "RKL" baseline). Same expected gradient, higher variance (REOPOLD Remark 3.1).
- ``full-rkl``, ``full-fkl``, ``jsd`` — GKD (Agarwal et al. 2024, arXiv 2306.13649) on-policy:
  the full-vocabulary reverse KL(p || q), forward KL(q || p) and generalised JSD(beta) at every
  sampled prefix, through ``harness.losses``' chunked primitives (no N x V logits kept).
- ``topk-jsd`` — GKD with the top-k approximation (REOPOLD App. D / Table 8 "GKD†": "the commonly
  used Top-5 approximation"): JSD(0.5) between student and teacher compressed onto the teacher's
  top-k tokens plus one tail bucket (``harness.losses.teacher_topk_jsd``); the teacher is kept
  only as its k ids and log-probs per token.

All of them aggregate with ``harness.losses.agg_loss`` over the mini-batch's global counts. The
rollout-IS weights (``cfg.rollout_is``) multiply the two sampled-token surrogates (``k1-reward``,
``rkl-sampled``); the GKD losses are expectations over the vocabulary at each prefix, not
importance-weighted samples, and take none.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from harness import losses

Number = Union[int, float, Tensor, None]
OPD_LOSSES = ("k1-reward", "rkl-sampled", "full-rkl", "full-fkl", "jsd", "topk-jsd")
FULL_VOCAB = ("full-rkl", "full-fkl", "jsd")
TOP_K = ("topk-jsd",)


def token_reward(teacher_logp: Tensor, student_logp: Tensor, mask: Tensor) -> Tensor:
    """``R_t = log pi_T(y_t) - log pi_theta(y_t)`` on the loss mask, 0 elsewhere (REOPOLD Eq. 3)."""
    valid = mask != 0
    return torch.where(valid, teacher_logp - student_logp, torch.zeros_like(student_logp))


@losses.register_loss("opd/k1-reward")
def k1_reward_loss(logp: Tensor, old_logp: Tensor, teacher_logp: Tensor, mask: Tensor, *,
                   reward_logp: Optional[Tensor] = None, clip_low: float = 0.2, clip_high: float = 0.2,
                   agg: str = "token-mean", ratio_level: str = "token", global_tokens: Number = None,
                   global_seqs: Number = None, max_len: Optional[int] = None, token_weights: Optional[Tensor] = None
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """REOPOLD Eq. 3 ``J_RKL^sg`` as a loss: ``policy_loss`` with the per-token advantage
    ``A_t = sg(lp^T_t - lp^S_t)``, ``lp^S`` the current policy's log-prob (``reward_logp=None``)
    or the given one (e.g. the sampler's, ``old_logp``). With one update per rollout batch the
    ratio is 1 and the gradient per token is ``-A_t grad lp^S_t / N``. ``token_weights`` (B, T):
    the rollout-IS weights (harness.losses.rollout_is_weights), multiplying the surrogate."""
    student = logp if reward_logp is None else reward_logp
    adv = token_reward(teacher_logp.detach(), student.detach(), mask)
    loss, stats = losses.policy_loss(logp, old_logp, adv, mask, clip_low=clip_low, clip_high=clip_high, agg=agg,
                                     ratio_level=ratio_level, global_tokens=global_tokens,
                                     global_seqs=global_seqs, max_len=max_len, token_weights=token_weights)
    return loss, {f"pg_{k}": v for k, v in stats.items()}


@losses.register_loss("opd/rkl-sampled")
def rkl_sampled_loss(logp: Tensor, old_logp: Tensor, teacher_logp: Tensor, mask: Tensor, *,
                     agg: str = "token-mean", global_tokens: Number = None, global_seqs: Number = None,
                     max_len: Optional[int] = None, token_weights: Optional[Tensor] = None
                     ) -> tuple[Tensor, dict[str, Tensor]]:
    """REOPOLD Eq. 3 ``J_RKL`` as a loss: ``-agg(rho_t R_t)`` with ``rho_t = exp(lp^S - lp^old)``
    and ``R_t = lp^T - lp^S`` both carrying the gradient (no clip: the paper's RKL baseline).
    ``token_weights`` (B, T): the rollout-IS weights, multiplying ``-rho_t R_t`` (a sampled,
    importance-weighted term) through ``harness.losses.weight_tokens``."""
    valid = mask != 0
    zero = torch.zeros_like(logp)
    lp = torch.where(valid, logp, zero)
    ratio = torch.exp((lp - torch.where(valid, old_logp.detach(), zero)).clamp(-20.0, 20.0))
    reward = token_reward(teacher_logp.detach(), lp, mask)
    loss = losses.agg_loss(losses.weight_tokens(-ratio * reward, token_weights), mask, agg,
                           global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len)
    return loss, {}


@losses.register_loss("opd/gkd")
def gkd_loss(student: losses.Side, teacher: losses.Side, mask: Tensor, divergence: str = "full-rkl", *,
             beta: float = 0.5, chunk_size: Optional[int] = None, agg: str = "token-mean",
             global_tokens: Number = None, global_seqs: Number = None, max_len: Optional[int] = None
             ) -> tuple[Tensor, Tensor]:
    """GKD on the student's own samples (Agarwal et al. 2024, on-policy fraction 1): the
    per-token full-vocabulary divergence — ``full-rkl`` KL(p || q), ``full-fkl`` KL(q || p), or
    ``jsd`` JSD(beta) (``harness.losses.jsd``) — aggregated by ``agg``. Returns
    ``(loss, per-token divergence)``; ``student`` / ``teacher`` are logits or ``HiddenHead``.
    Computed on the fused path (``token_weights = agg_weights(mask, agg, ...)``: the gradient is
    formed during the forward, so the loss's backward runs once); the per-token divergence is
    detached."""
    weights = losses.agg_weights(mask, agg, global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len)
    if divergence == "full-rkl":
        out = losses.get_loss("full_kl")(student, teacher, mask, "reverse", chunk_size, token_weights=weights)
    elif divergence == "full-fkl":
        out = losses.get_loss("full_kl")(student, teacher, mask, "forward", chunk_size, token_weights=weights)
    elif divergence == "jsd":
        out = losses.get_loss("jsd")(student, teacher, mask, chunk_size, beta=beta, token_weights=weights)
    else:
        raise ValueError(f"unknown GKD divergence {divergence!r}; expected one of {FULL_VOCAB}")
    return out.loss, out.values


@losses.register_loss("opd/gkd-topk")
def gkd_topk_loss(student: losses.Side, teacher: losses.TopKTeacher, mask: Tensor, *,
                  chunk_size: Optional[int] = None, agg: str = "token-mean", global_tokens: Number = None,
                  global_seqs: Number = None, max_len: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """GKD on the student's own samples with the top-k approximation (REOPOLD App. D, Table 8
    "GKD†": the full-vocabulary GKD ran out of memory, so the teacher is cut to its Top-5). Per
    sampled prefix, with S the teacher's top-k ids (``teacher``, from ``harness.losses.teacher_topk``):

        p~ = (p(S), 1 - p(S)),   q~ = (q(S), 1 - q(S)),   D = JSD(0.5)(q~, p~)

    (``harness.losses.teacher_topk_jsd``: the tail keeps the mass outside S, no renormalisation
    [A] — the paper states neither the divergence nor how the top-5 are renormalised), then
    aggregated by ``agg``. With k = V this is ``gkd_loss(..., "jsd")``. Returns
    ``(loss, per-token divergence)``; ``student`` is logits or ``HiddenHead``. Fused path and
    detached per-token divergence as ``gkd_loss``."""
    weights = losses.agg_weights(mask, agg, global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len)
    out = losses.get_loss("teacher_topk_jsd")(student, teacher, mask, chunk_size, token_weights=weights)
    return out.loss, out.values
